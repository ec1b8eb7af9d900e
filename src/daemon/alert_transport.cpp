// SPDX-License-Identifier: MIT
#include "daemon/alert_transport.h"

#include "daemon/alerts.h"
#include "net/http_client.h"

namespace vmshadow::daemon {

Status NetAlertTransport::post_webhook(const AlertTargets& targets, std::string_view json_body,
                                       std::chrono::milliseconds timeout) {
    // Errors name the host only: a webhook's path and query often hold its secret.
    auto endpoint = net::HttpEndpoint::parse(targets.webhook);
    if (!endpoint) return fail(ErrorKind::invalid_argument, "the webhook URL is not valid");
    const std::string name = "webhook " + endpoint->host;
    endpoint->pinned_sha256 = targets.webhook_sha256;
    net::HttpClientRequest request;
    request.method = "POST";
    // The URL's path is the request's whole target.
    request.target = endpoint->base_path.empty() ? "/" : endpoint->base_path;
    endpoint->base_path.clear();
    request.body = std::string(json_body);
    request.content_type = "application/json";
    request.timeout = timeout;
    request.max_response_bytes = 64 * 1024;  // the answer is only read for its status
    auto response = net::http_request(*endpoint, request);
    if (!response) return fail(response.error().with_context(name));
    if (response->status < 200 || response->status > 299)
        return fail(ErrorKind::unavailable, name + " answered " + std::to_string(response->status) +
                                                " " +
                                                std::string(net::status_reason(response->status)));
    return {};
}

Status NetAlertTransport::send_mail(const AlertTargets& targets, std::string_view message,
                                    std::chrono::milliseconds timeout) {
    return sendmail_message(targets.sendmail, message, timeout);
}

}  // namespace vmshadow::daemon
