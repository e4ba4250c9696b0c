#include "peerd/daemon/bearer_token.h"

#include <algorithm>
#include <cctype>

#include <nlohmann/json.hpp>

namespace peerd::daemon {
namespace {

bool is_token_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

class ChallengeScanner {
 public:
  explicit ChallengeScanner(std::string_view text) : text_(text) {}

  void skip_separators() {
    while (position_ < text_.size() &&
           (text_[position_] == ' ' || text_[position_] == '\t' || text_[position_] == ',')) {
      ++position_;
    }
  }
  void skip_spaces() {
    while (position_ < text_.size() && (text_[position_] == ' ' || text_[position_] == '\t')) ++position_;
  }
  bool done() const { return position_ >= text_.size(); }
  char peek() const { return done() ? '\0' : text_[position_]; }
  void advance() { ++position_; }
  size_t position() const { return position_; }
  void rewind(size_t position) { position_ = position; }

  std::string_view token() {
    const size_t start = position_;
    while (position_ < text_.size() && is_token_char(text_[position_])) ++position_;
    return text_.substr(start, position_ - start);
  }

  std::optional<std::string> quoted_or_token() {
    if (peek() != '"') return std::string(token());
    advance();
    std::string value;
    while (!done() && peek() != '"') {
      if (peek() == '\\') {
        advance();
        if (done()) return std::nullopt;
      }
      value += peek();
      advance();
    }
    if (done()) return std::nullopt;  // unterminated
    advance();
    return value;
  }

 private:
  std::string_view text_;
  size_t position_ = 0;
};

}  // namespace

std::optional<BearerChallenge> parse_bearer_challenge(std::string_view header_value) {
  ChallengeScanner scanner(header_value);
  while (true) {
    scanner.skip_separators();
    if (scanner.done()) return std::nullopt;
    const std::string_view scheme = scanner.token();
    if (scheme.empty()) return std::nullopt;  // not a token: malformed
    const bool bearer = iequals(scheme, "bearer");
    BearerChallenge challenge;
    // auth-params: name = value, separated by commas; a token not followed by '=' starts the next challenge.
    while (true) {
      scanner.skip_separators();
      const size_t param_start = scanner.position();
      const std::string_view name = scanner.token();
      scanner.skip_spaces();
      if (name.empty() || scanner.peek() != '=') {
        scanner.rewind(param_start);
        break;
      }
      scanner.advance();
      scanner.skip_spaces();
      auto value = scanner.quoted_or_token();
      if (!value) return std::nullopt;
      if (iequals(name, "realm"))
        challenge.realm = std::move(*value);
      else if (iequals(name, "service"))
        challenge.service = std::move(*value);
      else if (iequals(name, "scope"))
        challenge.scope = std::move(*value);
    }
    if (bearer) {
      if (challenge.realm.empty()) return std::nullopt;
      return challenge;
    }
    // Another scheme's challenge: go on with the next one. Each round consumes at least the scheme token.
  }
}

std::optional<BearerToken> parse_token_response(std::string_view body) {
  const auto json = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object()) return std::nullopt;
  BearerToken token;
  if (auto it = json.find("token"); it != json.end() && it->is_string() && !it->get<std::string>().empty()) {
    token.token = it->get<std::string>();
  } else if (auto alias = json.find("access_token"); alias != json.end() && alias->is_string()) {
    token.token = alias->get<std::string>();
  }
  if (token.token.empty()) return std::nullopt;
  if (auto it = json.find("expires_in");
      it != json.end() && it->is_number_integer() && it->get<int64_t>() > 0) {
    token.expires_in = std::chrono::seconds(std::min<int64_t>(it->get<int64_t>(), 24 * 3600));
  }
  return token;
}

void TokenCache::put(const std::string& key, const BearerToken& token, Clock::time_point now) {
  if (entries_.size() >= kEntriesMax && !entries_.contains(key)) {
    // Drop expired entries first; if none, the one expiring soonest.
    std::erase_if(entries_, [&](const auto& entry) { return entry.second.usable_until <= now; });
    if (entries_.size() >= kEntriesMax) {
      auto soonest = std::min_element(entries_.begin(), entries_.end(), [](const auto& a, const auto& b) {
        return a.second.usable_until < b.second.usable_until;
      });
      entries_.erase(soonest);
    }
  }
  const auto lifetime = std::chrono::duration_cast<Clock::duration>(token.expires_in) * 9 / 10;
  entries_[key] = Entry{token.token, now + lifetime};
}

std::optional<std::string> TokenCache::get(const std::string& key, Clock::time_point now) {
  const auto it = entries_.find(key);
  if (it == entries_.end()) return std::nullopt;
  if (it->second.usable_until <= now) {
    entries_.erase(it);
    return std::nullopt;
  }
  return it->second.token;
}

std::string scope_hint_key(std::string_view url) {
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return std::string(url);
  const auto path_start = url.find('/', scheme_end + 3);
  const std::string_view origin = url.substr(0, path_start);
  if (path_start == std::string_view::npos) return std::string(origin);
  std::string_view path = url.substr(path_start);
  path = path.substr(0, path.find_first_of("?#"));
  if (!path.starts_with("/v2/")) return std::string(origin);
  const std::string_view rest = path.substr(4);
  for (std::string_view endpoint : {"/manifests/", "/blobs/"}) {
    const auto at = rest.rfind(endpoint);
    if (at != std::string_view::npos && at > 0)
      return std::string(origin) + "/" + std::string(rest.substr(0, at));
  }
  return std::string(origin);
}

}  // namespace peerd::daemon
