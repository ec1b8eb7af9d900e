// SPDX-License-Identifier: MIT
// `vmshadow cert ca|issue|show`, run through run_cli() as the binary would, in a temp dir:
// a CA and a host certificate made, shown and verified; an expired or foreign certificate,
// an existing file and an out-of-range --days each refused with their exit code and one line.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli/app.h"
#include "cli/exit_code.h"

namespace vmshadow::cli {
namespace {

class CertCommand : public ::testing::Test {
  protected:
    void SetUp() override {
        std::string pattern = (std::filesystem::temp_directory_path() / "cert-cli-XXXXXX").string();
        ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
        dir_ = pattern;
        ::setenv("VMSHADOW_CONFIG", (dir_ / "none.conf").c_str(), 1);
    }
    void TearDown() override { std::filesystem::remove_all(dir_); }

    // Runs `vmshadow args...`; the exit code, stdout in `out`, stderr in `err`.
    int run(std::vector<std::string> args, std::string& out, std::string& err) {
        args.insert(args.begin(), "vmshadow");
        std::vector<char*> argv;
        for (auto& a : args) argv.push_back(a.data());
        ::testing::internal::CaptureStdout();
        ::testing::internal::CaptureStderr();
        int code = run_cli(static_cast<int>(argv.size()), argv.data());
        out = ::testing::internal::GetCapturedStdout();
        err = ::testing::internal::GetCapturedStderr();
        return code;
    }
    int run(std::vector<std::string> args) {
        std::string out, err;
        return run(std::move(args), out, err);
    }
    std::string at(const char* name) const { return (dir_ / name).string(); }

    std::filesystem::path dir_;
};

TEST_F(CertCommand, CaAndHostCertificateAreMadeShownAndVerified) {
    std::string out, err;
    ASSERT_EQ(run({"cert", "ca", at("ca"), "--name", "lab CA"}, out, err), exit_ok) << err;
    EXPECT_NE(out.find("CN=lab CA"), std::string::npos) << out;
    ASSERT_EQ(run({"cert", "issue", "--ca", at("ca"), "--name", "hosta", "--ip", "127.0.0.2",
                   "--dns", "hosta.example", "--days", "30", at("hosta")},
                  out, err),
              exit_ok)
        << err;
    EXPECT_NE(out.find("subject = \"CN=hosta\""), std::string::npos) << out;

    std::string host_crt = at("hosta") + "/host.crt";
    ASSERT_EQ(run({"cert", "show", host_crt, "--ca", at("ca") + "/ca.crt"}, out, err), exit_ok)
        << err;
    EXPECT_NE(out.find("subject:    CN=hosta"), std::string::npos) << out;
    EXPECT_NE(out.find("DNS:hosta, DNS:hosta.example, IP:127.0.0.2"), std::string::npos) << out;
    EXPECT_NE(out.find("verified:"), std::string::npos) << out;

    ASSERT_EQ(run({"cert", "show", host_crt, "--json"}, out, err), exit_ok) << err;
    auto facts = nlohmann::json::parse(out);
    EXPECT_EQ(facts["subject"], "CN=hosta");
    EXPECT_EQ(facts["issuer"], "CN=lab CA");
    EXPECT_EQ(facts["ips"], nlohmann::json::array({"127.0.0.2"}));
    EXPECT_EQ(facts["is_ca"], false);
}

TEST_F(CertCommand, ShowWithAnotherCaExitsNonZeroSayingWhy) {
    ASSERT_EQ(run({"cert", "ca", at("ca")}), exit_ok);
    ASSERT_EQ(run({"cert", "ca", at("other"), "--name", "other CA"}), exit_ok);
    ASSERT_EQ(run({"cert", "issue", "--ca", at("other"), "--name", "intruder", at("intruder")}),
              exit_ok);
    std::string out, err;
    int code =
        run({"cert", "show", at("intruder") + "/host.crt", "--ca", at("ca") + "/ca.crt"}, out, err);
    EXPECT_EQ(code, exit_code_for(ErrorKind::permission));
    EXPECT_NE(err.find("CN=intruder"), std::string::npos) << err;
    EXPECT_NE(err.find("CN=other CA"), std::string::npos) << err;
    EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;

    code =
        run({"cert", "show", at("intruder") + "/host.crt", "--ca", at("ca") + "/ca.crt", "--json"},
            out, err);
    EXPECT_EQ(code, exit_code_for(ErrorKind::permission));
    auto reply = nlohmann::json::parse(out);
    EXPECT_EQ(reply["verified"], false);
    EXPECT_EQ(reply["kind"], "permission");
    EXPECT_EQ(reply["subject"], "CN=intruder");
}

TEST_F(CertCommand, ExistingFilesAndBadNumbersAreRefusedWithOneLine) {
    ASSERT_EQ(run({"cert", "ca", at("ca")}), exit_ok);
    std::string out, err;
    EXPECT_EQ(run({"cert", "ca", at("ca")}, out, err), exit_code_for(ErrorKind::conflict));
    EXPECT_NE(err.find("ca.crt already exists"), std::string::npos) << err;

    EXPECT_EQ(
        run({"cert", "issue", "--ca", at("ca"), "--name", "h", "--days", "0", at("h")}, out, err),
        exit_code_for(ErrorKind::invalid_argument));
    EXPECT_NE(err.find("--days"), std::string::npos) << err;
    EXPECT_EQ(
        run({"cert", "issue", "--ca", at("ca"), "--name", "h", "--ip", "1.2.3", at("h")}, out, err),
        exit_code_for(ErrorKind::invalid_argument));
    EXPECT_NE(err.find("'1.2.3'"), std::string::npos) << err;
    EXPECT_FALSE(std::filesystem::exists(dir_ / "h"));

    EXPECT_EQ(run({"cert", "show", at("missing.crt")}, out, err),
              exit_code_for(ErrorKind::not_found));
    EXPECT_NE(err.find("missing.crt"), std::string::npos) << err;
}

}  // namespace
}  // namespace vmshadow::cli
