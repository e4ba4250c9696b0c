#include "peerd/daemon/allowed_upstreams.h"

#include <algorithm>
#include <cctype>
#include <charconv>

namespace peerd::daemon {
namespace {

std::string lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

std::optional<uint16_t> parse_port(std::string_view text) {
  unsigned value = 0;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || ptr != text.data() + text.size() || value == 0 || value > 65535) {
    return std::nullopt;
  }
  return static_cast<uint16_t>(value);
}

// "host", "host:port", "[v6]", "[v6]:port" -> host (lower case, brackets kept) and port. nullopt on a bad
// port.
std::optional<std::pair<std::string, std::optional<uint16_t>>> split_host_port(std::string_view text) {
  if (text.starts_with("[")) {
    const auto close = text.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    const std::string_view rest = text.substr(close + 1);
    if (rest.empty()) return std::make_pair(lower(text.substr(0, close + 1)), std::optional<uint16_t>{});
    if (!rest.starts_with(":")) return std::nullopt;
    auto port = parse_port(rest.substr(1));
    if (!port) return std::nullopt;
    return std::make_pair(lower(text.substr(0, close + 1)), port);
  }
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos) return std::make_pair(lower(text), std::optional<uint16_t>{});
  auto port = parse_port(text.substr(colon + 1));
  if (!port) return std::nullopt;
  return std::make_pair(lower(text.substr(0, colon)), port);
}

}  // namespace

std::optional<UrlAuthority> parse_url_authority(std::string_view url) {
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return std::nullopt;
  const std::string scheme = lower(url.substr(0, scheme_end));
  if (scheme != "http" && scheme != "https") return std::nullopt;
  std::string_view authority = url.substr(scheme_end + 3);
  authority = authority.substr(0, authority.find_first_of("/?#"));
  if (authority.empty() || authority.find('@') != std::string_view::npos) return std::nullopt;
  auto split = split_host_port(authority);
  if (!split || split->first.empty()) return std::nullopt;
  return UrlAuthority{scheme, std::move(split->first), split->second};
}

std::optional<AllowedUpstreams::Pattern> AllowedUpstreams::parse_pattern(std::string_view text) {
  Pattern pattern;
  if (text.starts_with("*.")) {
    pattern.wildcard = true;
    text.remove_prefix(2);
  }
  auto split = split_host_port(text);
  if (!split || split->first.empty()) return std::nullopt;
  pattern.host = std::move(split->first);
  pattern.port = split->second;
  return pattern;
}

bool AllowedUpstreams::matches(const Pattern& pattern, std::string_view host, std::optional<uint16_t> port) {
  if (pattern.port && pattern.port != port) return false;
  if (!pattern.wildcard) return host == pattern.host;
  return host.size() > pattern.host.size() + 1 && host.ends_with(pattern.host) &&
         host[host.size() - pattern.host.size() - 1] == '.';
}

AllowedUpstreams::AllowedUpstreams(const std::vector<std::string>& patterns,
                                   const std::vector<RegistryHost>& registries)
    : explicit_mode_(!patterns.empty()), registries_(registries) {
  if (explicit_mode_) {
    for (const auto& text : patterns) {
      if (auto pattern = parse_pattern(text)) patterns_.push_back(std::move(*pattern));
    }
    return;
  }
  for (const auto& registry : registries) {
    if (auto pattern = parse_pattern(registry.authority)) patterns_.push_back(*pattern);
    const std::string server = registry.server_url();
    if (auto authority = parse_url_authority(server)) {
      patterns_.push_back(Pattern{authority->host, authority->port, false});
    }
  }
}

bool AllowedUpstreams::allows(std::string_view host, std::optional<uint16_t> port) const {
  const std::string name = lower(host);
  for (const auto& pattern : patterns_) {
    if (matches(pattern, name, port)) return true;
  }
  if (explicit_mode_) return false;
  std::lock_guard lock(mutex_);
  return std::find(learned_.begin(), learned_.end(), name) != learned_.end();
}

bool AllowedUpstreams::allows_url(std::string_view url) const {
  const auto authority = parse_url_authority(url);
  return authority && allows(authority->host, authority->port);
}

void AllowedUpstreams::learn_redirect_host(std::string_view host) {
  if (explicit_mode_ || host.empty()) return;
  const std::string name = lower(host);
  std::lock_guard lock(mutex_);
  if (std::find(learned_.begin(), learned_.end(), name) != learned_.end()) return;
  if (learned_.size() >= kLearnedHostsMax) learned_.pop_front();
  learned_.push_back(name);
}

std::optional<RegistryHost> AllowedUpstreams::registry_for(std::string_view domain) const {
  const std::string name = lower(domain);
  for (const auto& registry : registries_) {
    if (registry.authority == name) return registry;
  }
  return std::nullopt;
}

}  // namespace peerd::daemon
