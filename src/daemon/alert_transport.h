// SPDX-License-Identifier: MIT
#pragma once
// AlertTransport: how an alert leaves the host — a webhook POST and a mail handed to the
// host's sendmail — behind an interface, so AlertSender's queue, retries and backoff are
// tested with a fake and the real network and sendmail are used only by the daemon.
//
// This module is: the interface, and NetAlertTransport, the real one: the webhook through
// net::http_request (TLS verified against the system's CAs, or the pinned webhook-sha256),
// delivered on a 2xx status, any other status or no response an error naming it; the mail
// through `SENDMAIL -t -oi` (recipients from the message's To:, a lone "." line is not the
// end), the message on its stdin, bounded by the timeout (run_tool's deadline).
// It is not: retries (AlertSender's) or the message's text (alerts.h builds it).
//
// Thread-safety: NetAlertTransport's methods may be called from several threads.

#include <chrono>
#include <string_view>

#include "common/error.h"
#include "daemon/job_config.h"

namespace vmshadow::daemon {

class AlertTransport {
  public:
    virtual ~AlertTransport() = default;
    // POSTs json_body to targets.webhook; success only on a 2xx response.
    virtual Status post_webhook(const AlertTargets& targets, std::string_view json_body,
                                std::chrono::milliseconds timeout) = 0;
    // Hands a complete message (headers, blank line, body) to targets.sendmail.
    virtual Status send_mail(const AlertTargets& targets, std::string_view message,
                             std::chrono::milliseconds timeout) = 0;
};

class NetAlertTransport final : public AlertTransport {
  public:
    Status post_webhook(const AlertTargets& targets, std::string_view json_body,
                        std::chrono::milliseconds timeout) override;
    Status send_mail(const AlertTargets& targets, std::string_view message,
                     std::chrono::milliseconds timeout) override;
};

}  // namespace vmshadow::daemon
