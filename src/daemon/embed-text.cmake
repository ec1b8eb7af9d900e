# Writes OUT, a header holding IN's bytes as a raw string literal (kOpenApiJson).
file(READ ${IN} text)
file(WRITE ${OUT} "// Generated from openapi.json; do not edit.\n#pragma once\n#include <string_view>\nnamespace vmshadow::daemon {\ninline constexpr std::string_view kOpenApiJson = R\"vmshadow_json(${text})vmshadow_json\";\n}\n")
