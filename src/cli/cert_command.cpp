// SPDX-License-Identifier: MIT
// `vmshadow cert ca|issue|show`: a small certificate authority for Replica's mutual TLS
// (net/cert_authority.h), run locally, no daemon involved. `ca` makes the CA, `issue` a host
// certificate signed by it (what a daemon's [replica] certificate/key/ca point at), `show`
// prints a certificate's facts and, with --ca, checks it as the TLS handshake would.
#include <unistd.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/app.h"
#include "cli/numeric_option.h"
#include "net/cert_authority.h"

namespace vmshadow::cli {
namespace {

using nlohmann::json;

constexpr int kDefaultCaDays = 3650;
constexpr int kDefaultHostDays = 825;
constexpr int kMaxDays = 36500;

struct CaOptions {
    std::string dir;
    std::string name;
    int days = kDefaultCaDays;
};

struct IssueOptions {
    std::string ca_dir;
    std::string name;
    std::vector<std::string> dns, ips;
    int days = kDefaultHostDays;
    std::string out;
};

struct ShowOptions {
    std::string file;
    std::string ca_file;
};

std::string default_ca_name() {
    char host[256] = {};
    std::string name = "vmshadow CA";
    if (::gethostname(host, sizeof host - 1) == 0 && host[0] != '\0')
        name += " " + std::string(host);
    return name.substr(0, 64);
}

json facts_json(const net::CertificateFacts& f) {
    return json{{"subject", f.subject},
                {"issuer", f.issuer},
                {"not_before", f.not_before},
                {"not_after", f.not_after},
                {"sha256", f.sha256},
                {"dns", f.dns},
                {"ips", f.ips},
                {"is_ca", f.is_ca}};
}

std::string join(const std::vector<std::string>& items, const std::string& prefix) {
    std::string out;
    for (const auto& item : items) out += (out.empty() ? "" : ", ") + prefix + item;
    return out;
}

void print_facts(const net::CertificateFacts& f) {
    std::cout << "subject:    " << f.subject << "\n"
              << "issuer:     " << f.issuer << "\n"
              << "valid:      " << f.not_before << " to " << f.not_after << "\n"
              << "sha256:     " << f.sha256 << "\n"
              << "CA:         " << (f.is_ca ? "yes" : "no") << "\n";
    std::string names = join(f.dns, "DNS:");
    std::string ips = join(f.ips, "IP:");
    if (!ips.empty()) names += (names.empty() ? "" : ", ") + ips;
    if (!names.empty()) std::cout << "names:      " << names << "\n";
}

Status run_ca(const GlobalOptions& global, const CaOptions& o) {
    net::CertificateRequest request;
    request.common_name = o.name.empty() ? default_ca_name() : o.name;
    request.days = o.days;
    if (auto st = net::create_certificate_authority(o.dir, request); !st) return st;
    auto facts = net::read_certificate(std::filesystem::path(o.dir) / "ca.crt");
    if (!facts) return std::unexpected(facts.error());
    std::filesystem::path dir = o.dir;
    if (global.json) {
        auto out = facts_json(*facts);
        out["certificate"] = (dir / "ca.crt").string();
        out["key"] = (dir / "ca.key").string();
        std::cout << out.dump() << std::endl;
        return {};
    }
    std::cout << "made CA " << facts->subject << " (valid until " << facts->not_after << ")\n"
              << "  " << (dir / "ca.crt").string() << ": every host's [replica] ca\n"
              << "  " << (dir / "ca.key").string()
              << ": keep it private; only `vmshadow cert issue` needs it\n";
    return {};
}

Status run_issue(const GlobalOptions& global, const IssueOptions& o) {
    net::CertificateRequest request;
    request.common_name = o.name;
    request.dns = o.dns;
    request.ips = o.ips;
    request.days = o.days;
    if (auto st = net::issue_host_certificate(o.ca_dir, o.out, request); !st) return st;
    std::filesystem::path out = o.out;
    auto facts = net::read_certificate(out / "host.crt");
    if (!facts) return std::unexpected(facts.error());
    if (global.json) {
        auto j = facts_json(*facts);
        j["certificate"] = (out / "host.crt").string();
        j["key"] = (out / "host.key").string();
        j["ca"] = (out / "ca.crt").string();
        std::cout << j.dump() << std::endl;
        return {};
    }
    std::string names = join(facts->dns, "DNS:");
    std::string ips = join(facts->ips, "IP:");
    if (!ips.empty()) names += (names.empty() ? "" : ", ") + ips;
    std::cout << "issued " << facts->subject << " (" << names << "), valid until "
              << facts->not_after << "\n"
              << "  [replica] certificate = \"" << (out / "host.crt").string() << "\"\n"
              << "  [replica] key = \"" << (out / "host.key").string() << "\"\n"
              << "  [replica] ca = \"" << (out / "ca.crt").string() << "\"\n"
              << "  the peer allows it with [[replica.allow]] subject = \"" << facts->subject
              << "\"\n";
    return {};
}

Status run_show(GlobalOptions& global, const ShowOptions& o) {
    auto facts = net::read_certificate(o.file);
    if (!facts) return std::unexpected(facts.error());
    Status verified;
    if (!o.ca_file.empty()) verified = net::verify_certificate(o.file, o.ca_file);
    if (global.json) {
        auto j = facts_json(*facts);
        if (!o.ca_file.empty()) {
            j["verified"] = verified.has_value();
            if (!verified) {
                j["error"] = verified.error().message();
                j["kind"] = kind_name(verified.error().kind());
                global.error_reported = true;
            }
        }
        std::cout << j.dump() << std::endl;
        return verified;
    }
    print_facts(*facts);
    if (!o.ca_file.empty() && verified)
        std::cout << "verified:   signed by " << o.ca_file << " and valid now\n";
    std::cout << std::flush;
    return verified;
}

}  // namespace

void add_cert_commands(CLI::App& app, GlobalOptions& global, Action& action) {
    CLI::App* cert = app.add_subcommand(
        "cert", "a small CA for Replica's mutual TLS: make it, issue host certificates, show one");
    cert->require_subcommand(1);
    const std::string days_range = "1-" + std::to_string(kMaxDays);

    auto ca = std::make_shared<CaOptions>();
    CLI::App* ca_cmd = cert->add_subcommand(
        "ca", "make a CA: DIR/ca.crt (give to every host) and DIR/ca.key (0600); never overwrites");
    ca_cmd->add_option("dir", ca->dir, "directory for ca.crt and ca.key (made 0700)")->required();
    ca_cmd->add_option("--name", ca->name,
                       "the CA's common name (default: \"vmshadow CA <this host>\")");
    add_whole_number_option(
        *ca_cmd, "--days", ca->days, 1, kMaxDays,
        "validity in days, " + days_range + " (default: " + std::to_string(kDefaultCaDays) + ")");
    ca_cmd->callback(
        [&global, &action, ca] { action = [&global, ca] { return run_ca(global, *ca); }; });

    auto issue = std::make_shared<IssueOptions>();
    CLI::App* issue_cmd = cert->add_subcommand(
        "issue",
        "issue a host certificate (server and client) signed by the CA: OUT_DIR/host.crt, "
        "host.key (0600) and a copy of ca.crt; never overwrites");
    issue_cmd->add_option("--ca", issue->ca_dir, "the CA's directory (from `vmshadow cert ca`)")
        ->required();
    issue_cmd
        ->add_option("--name", issue->name,
                     "the host's name: its subject is CN=NAME and it is also a DNS (or IP) entry")
        ->required();
    issue_cmd->add_option("--dns", issue->dns, "another DNS name the host is reached by");
    issue_cmd->add_option("--ip", issue->ips, "an IP address the host is reached by");
    add_whole_number_option(
        *issue_cmd, "--days", issue->days, 1, kMaxDays,
        "validity in days, " + days_range + " (default: " + std::to_string(kDefaultHostDays) + ")");
    issue_cmd->add_option("out_dir", issue->out, "directory for the host's files")->required();
    issue_cmd->callback([&global, &action, issue] {
        action = [&global, issue] { return run_issue(global, *issue); };
    });

    auto show = std::make_shared<ShowOptions>();
    CLI::App* show_cmd = cert->add_subcommand(
        "show", "print a certificate's subject, issuer, validity, names and fingerprint");
    show_cmd->add_option("file", show->file, "a PEM certificate")->required();
    show_cmd->add_option("--ca", show->ca_file,
                         "also check it chains to this CA certificate and is valid now (exit "
                         "non-zero saying why not)");
    show_cmd->callback(
        [&global, &action, show] { action = [&global, show] { return run_show(global, *show); }; });
}

}  // namespace vmshadow::cli
