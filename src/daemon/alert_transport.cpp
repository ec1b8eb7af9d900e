// SPDX-License-Identifier: MIT
#include "daemon/alert_transport.h"

#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/child_process.h"
#include "common/process.h"
#include "common/unique_fd.h"
#include "net/http_client.h"

namespace vmshadow::daemon {
namespace {

// A private temporary file holding the mail, removed when it goes out of scope.
class MessageFile {
  public:
    Status write(std::string_view message) {
        std::string tmpl =
            (std::filesystem::temp_directory_path() / "vmshadow-alert-XXXXXX").string();
        UniqueFd fd(::mkstemp(tmpl.data()));  // mode 0600
        if (!fd)
            return fail(ErrorKind::io, "cannot create a temporary file for the alert mail: " +
                                           std::string(std::strerror(errno)));
        path_ = tmpl;
        while (!message.empty()) {
            ssize_t n = ::write(fd.get(), message.data(), message.size());
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0)
                return fail(ErrorKind::io, "cannot write " + path_ + ": " + std::strerror(errno));
            message.remove_prefix(static_cast<std::size_t>(n));
        }
        return {};
    }
    const std::string& path() const { return path_; }
    ~MessageFile() {
        if (!path_.empty()) ::unlink(path_.c_str());
    }

  private:
    std::string path_;
};

}  // namespace

Status NetAlertTransport::post_webhook(const AlertTargets& targets, std::string_view json_body,
                                       std::chrono::milliseconds timeout) {
    auto endpoint = net::HttpEndpoint::parse(targets.webhook);
    if (!endpoint) return fail(endpoint.error().with_context("webhook " + targets.webhook));
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
    if (!response) return fail(response.error().with_context("webhook " + targets.webhook));
    if (response->status < 200 || response->status > 299)
        return fail(ErrorKind::unavailable, "webhook " + targets.webhook + " answered " +
                                                std::to_string(response->status) + " " +
                                                std::string(net::status_reason(response->status)));
    return {};
}

Status NetAlertTransport::send_mail(const AlertTargets& targets, std::string_view message,
                                    std::chrono::milliseconds timeout) {
    // run_tool gives a child no stdin, so a fixed shell line redirects it from a private
    // file; the sendmail path and the file are arguments ($0, $1), never parsed as shell.
    MessageFile file;
    if (auto written = file.write(message); !written) return written;
    const std::string sendmail = targets.sendmail.string();
    auto run =
        run_tool({"/bin/sh", "-c", "exec \"$0\" -t -oi < \"$1\"", sendmail, file.path()}, timeout);
    if (!run) return fail(run.error().with_context("sendmail"));
    if (run->exit_code == 127)
        return fail(ErrorKind::unavailable, sendmail +
                                                " could not be run (is a mail transfer "
                                                "agent installed?)");
    if (run->exit_code != 0) {
        std::string why = last_line_of(run->err);
        return fail(ErrorKind::unavailable, sendmail + " -t -oi exited with " +
                                                std::to_string(run->exit_code) +
                                                (why.empty() ? "" : ": " + why));
    }
    return {};
}

}  // namespace vmshadow::daemon
