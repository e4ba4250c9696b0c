#pragma once
// The registry token flow's pure parts (docker "token authentication specification"): parsing a
// `WWW-Authenticate: Bearer realm=...,service=...,scope=...` challenge, parsing the token endpoint's JSON,
// and a bounded cache of anonymous tokens keyed by (realm, service, scope) with expiry. No I/O; time is
// passed in.
#include <chrono>
#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace peerd::daemon {

struct BearerChallenge {
  std::string realm;
  std::string service;
  std::string scope;

  // Cache key: the three fields joined by newlines.
  std::string key() const { return realm + "\n" + service + "\n" + scope; }
  auto operator<=>(const BearerChallenge&) const = default;
};

// Finds a Bearer challenge in one WWW-Authenticate value (which may list several challenges, e.g.
// `Basic realm="x", Bearer realm="y"`). nullopt when there is none or it has no realm.
std::optional<BearerChallenge> parse_bearer_challenge(std::string_view header_value);

struct BearerToken {
  std::string token;
  std::chrono::seconds expires_in{60};  // the spec's default when the field is absent
};

// {"token": "...", "access_token": "...", "expires_in": 300}: "token" wins, "access_token" is the OAuth2
// alias. nullopt when the body is not JSON or carries neither.
std::optional<BearerToken> parse_token_response(std::string_view body);

class TokenCache {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr size_t kEntriesMax = 1024;

  // A token stays usable until 90% of its lifetime has passed (clock skew, request latency).
  void put(const std::string& key, const BearerToken& token, Clock::time_point now);
  std::optional<std::string> get(const std::string& key, Clock::time_point now);
  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    std::string token;
    Clock::time_point usable_until;
  };
  std::map<std::string, Entry> entries_;
};

// A cache key for "which challenge did this repository get last time", so later requests can send a cached
// token at once instead of taking a 401 first: "<scheme>://<authority>/<repository>" for registry paths
// (/v2/<repository>/manifests|blobs/...), else "<scheme>://<authority>".
std::string scope_hint_key(std::string_view url);

}  // namespace peerd::daemon
