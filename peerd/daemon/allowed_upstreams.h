#pragma once
// Which upstream hosts peerd may contact for /blobs/ reads and registry fetch-through. Anything else is 403,
// so a peerd cannot be used as an open proxy into the node's network.
//
// Explicit mode (--allowed-upstreams given): exactly the listed patterns — "host" (any port), "host:port",
// "*.suffix" (any subdomain of suffix, not suffix itself).
// Default mode: the --hosts registries, plus the storage hosts those registries redirect blob downloads to,
// learned at run time (bounded by kLearnedHostsMax; the oldest learned host is forgotten first).
// Thread-safe.
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "peerd/daemon/options.h"

namespace peerd::daemon {

class AllowedUpstreams {
 public:
  static constexpr size_t kLearnedHostsMax = 256;

  AllowedUpstreams(const std::vector<std::string>& patterns, const std::vector<RegistryHost>& registries);

  // `host` as in a URL: a DNS name or IPv4 address, or an IPv6 address in brackets. Case-insensitive.
  bool allows(std::string_view host, std::optional<uint16_t> port) const;
  // "scheme://host[:port]/..." (anything after the authority is ignored). False when it does not parse.
  bool allows_url(std::string_view url) const;
  // A registry redirected to `host`: allow it from now on (default mode only; ignored in explicit mode).
  void learn_redirect_host(std::string_view host);
  bool explicit_mode() const { return explicit_mode_; }

  // The registry entry (from --hosts) for a registry domain as containerd names it in ?ns= ("docker.io",
  // "127.0.0.1:5000"), or nullopt.
  std::optional<RegistryHost> registry_for(std::string_view domain) const;

 private:
  struct Pattern {
    std::string host;  // lower case; for wildcards the suffix without "*."
    std::optional<uint16_t> port;
    bool wildcard = false;
  };
  static std::optional<Pattern> parse_pattern(std::string_view text);
  static bool matches(const Pattern& pattern, std::string_view host, std::optional<uint16_t> port);

  bool explicit_mode_ = false;
  std::vector<Pattern> patterns_;
  std::vector<RegistryHost> registries_;
  mutable std::mutex mutex_;
  std::deque<std::string> learned_;
};

// Splits "scheme://host[:port]/rest" into lower-case host (brackets kept for IPv6) and optional port.
struct UrlAuthority {
  std::string scheme;
  std::string host;
  std::optional<uint16_t> port;
};
std::optional<UrlAuthority> parse_url_authority(std::string_view url);

}  // namespace peerd::daemon
