#include "peerd/core/content/reference.h"

#include <algorithm>

#include "peerd/core/common/endpoint.h"

namespace peerd::content {

std::string_view describe(ReferenceError error) {
  switch (error) {
    case ReferenceError::kEmpty:
      return "reference is empty";
    case ReferenceError::kTooLong:
      return "reference is too long";
    case ReferenceError::kNameTooLong:
      return "repository name must not be more than 255 characters";
    case ReferenceError::kHexIdentifier:
      return "a 64-byte hexadecimal string is an image id, not a repository name";
    case ReferenceError::kBadHost:
      return "registry host must be a DNS name, an IPv4 address or a bracketed IPv6 address";
    case ReferenceError::kBadPort:
      return "registry port must be 1..65535";
    case ReferenceError::kEmptyComponent:
      return "repository path has an empty component";
    case ReferenceError::kUpperCase:
      return "repository path must be lowercase";
    case ReferenceError::kBadComponent:
      return "repository path components must match [a-z0-9]+((.|_|__|-+)[a-z0-9]+)*";
    case ReferenceError::kBadTag:
      return "tag must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}";
    case ReferenceError::kBadDigest:
      return "digest must be sha256:<64 lowercase hex>";
  }
  return "invalid reference";
}

namespace {

bool is_lower_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}
bool is_alnum(char c) {
  return is_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}
bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
bool is_upper(char c) {
  return c >= 'A' && c <= 'Z';
}
bool is_word(char c) {
  return is_alnum(c) || c == '_';
}
bool is_hex(char c) {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

Result<uint16_t, ReferenceError> parse_port(std::string_view digits) {
  if (digits.empty() || digits.size() > 5 || !std::all_of(digits.begin(), digits.end(), is_digit)) {
    return fail(ReferenceError::kBadPort);
  }
  uint32_t value = 0;
  for (const char c : digits) value = value * 10 + static_cast<uint32_t>(c - '0');
  if (value == 0 || value > 65535) return fail(ReferenceError::kBadPort);
  return static_cast<uint16_t>(value);
}

// A DNS label: [A-Za-z0-9] or [A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9], at most 63 bytes.
bool is_label(std::string_view label) {
  if (label.empty() || label.size() > kHostLabelBytesMax) return false;
  if (!is_alnum(label.front()) || !is_alnum(label.back())) return false;
  return std::all_of(label.begin(), label.end(), [](char c) { return is_alnum(c) || c == '-'; });
}

bool is_host_name(std::string_view name) {
  bool all_numeric = true;
  size_t start = 0;
  while (true) {
    const size_t dot = name.find('.', start);
    const std::string_view label = name.substr(start, dot == std::string_view::npos ? dot : dot - start);
    if (!is_label(label)) return false;
    all_numeric = all_numeric && std::all_of(label.begin(), label.end(), is_digit);
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  // "10.0.0.1" is an IPv4 address and must be a valid one; "1.2.3" or "300.1.1.1" is neither.
  if (all_numeric) return Endpoint::parse(std::string(name) + ":1").ok();
  return true;
}

bool is_bracketed_ipv6(std::string_view text) {
  if (text.size() < 3 || text.front() != '[' || text.back() != ']') return false;
  const std::string_view inside = text.substr(1, text.size() - 2);
  if (!std::all_of(inside.begin(), inside.end(), [](char c) { return is_hex(c) || c == ':'; })) return false;
  return Endpoint::parse(std::string(text) + ":1").ok();
}

// [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
std::optional<ReferenceError> component_error(std::string_view component) {
  if (component.empty()) return ReferenceError::kEmptyComponent;
  if (std::any_of(component.begin(), component.end(), is_upper)) return ReferenceError::kUpperCase;
  size_t i = 0;
  const size_t size = component.size();
  while (true) {
    const size_t run_start = i;
    while (i < size && is_lower_alnum(component[i])) ++i;
    if (i == run_start) return ReferenceError::kBadComponent;
    if (i == size) return std::nullopt;
    const size_t separator_start = i;
    if (component[i] == '.') {
      ++i;
    } else if (component[i] == '_') {
      ++i;
      if (i < size && component[i] == '_') ++i;
    } else if (component[i] == '-') {
      while (i < size && component[i] == '-') ++i;
    }
    if (i == separator_start) return ReferenceError::kBadComponent;
  }
}

bool is_hex_identifier(std::string_view text) {
  return text.size() == 64 &&
         std::all_of(text.begin(), text.end(), [](char c) { return is_digit(c) || (c >= 'a' && c <= 'f'); });
}

// docker's splitDockerDomain: is the first component of a name a registry host?
bool looks_like_domain(std::string_view first_component) {
  return first_component.find_first_of(".:") != std::string_view::npos || first_component == "localhost" ||
         std::any_of(first_component.begin(), first_component.end(), is_upper);
}

std::string_view normalise_domain(std::string_view domain) {
  return domain == kDockerHubLegacyDomain ? kDockerHubDomain : domain;
}

std::string normalise_path(std::string_view domain, std::string_view path) {
  if (domain == kDockerHubDomain && path.find('/') == std::string_view::npos)
    return "library/" + std::string(path);
  return std::string(path);
}

struct NameParts {
  std::string_view name;  // host and path
  std::string_view tag;
  std::string_view digest;
  bool has_tag = false;
  bool has_digest = false;
};

NameParts split_reference(std::string_view text) {
  NameParts parts;
  parts.name = text;
  if (const size_t at = parts.name.find('@'); at != std::string_view::npos) {
    parts.digest = parts.name.substr(at + 1);
    parts.has_digest = true;
    parts.name = parts.name.substr(0, at);
  }
  const size_t slash = parts.name.rfind('/');
  const size_t colon = parts.name.rfind(':');
  if (colon != std::string_view::npos && (slash == std::string_view::npos || colon > slash)) {
    parts.tag = parts.name.substr(colon + 1);
    parts.has_tag = true;
    parts.name = parts.name.substr(0, colon);
  }
  return parts;
}

}  // namespace

Result<HostPort, ReferenceError> parse_host(std::string_view text) {
  HostPort result;
  std::string_view port_text;
  bool has_port = false;
  if (!text.empty() && text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string_view::npos) return fail(ReferenceError::kBadHost);
    result.host = text.substr(0, close + 1);
    const std::string_view rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return fail(ReferenceError::kBadHost);
      port_text = rest.substr(1);
      has_port = true;
    }
    if (!is_bracketed_ipv6(result.host)) return fail(ReferenceError::kBadHost);
  } else {
    const size_t colon = text.find(':');
    result.host = text.substr(0, colon);
    if (colon != std::string_view::npos) {
      port_text = text.substr(colon + 1);
      has_port = true;
    }
    if (!is_host_name(result.host)) return fail(ReferenceError::kBadHost);
  }
  if (has_port) {
    auto port = parse_port(port_text);
    if (!port) return fail(port.error());
    result.port = *port;
  }
  return result;
}

std::optional<ReferenceError> host_error(std::string_view host) {
  auto parsed = parse_host(host);
  if (!parsed) return parsed.error();
  return std::nullopt;
}

std::optional<ReferenceError> repository_path_error(std::string_view path) {
  if (path.size() > kNameBytesMax) return ReferenceError::kNameTooLong;
  size_t start = 0;
  while (true) {
    const size_t slash = path.find('/', start);
    const auto component = path.substr(start, slash == std::string_view::npos ? slash : slash - start);
    if (auto error = component_error(component)) return error;
    if (slash == std::string_view::npos) return std::nullopt;
    start = slash + 1;
  }
}

std::optional<ReferenceError> tag_error(std::string_view tag) {
  if (tag.empty() || tag.size() > kTagBytesMax || !is_word(tag.front())) return ReferenceError::kBadTag;
  const bool valid =
      std::all_of(tag.begin(), tag.end(), [](char c) { return is_word(c) || c == '.' || c == '-'; });
  if (!valid) return ReferenceError::kBadTag;
  return std::nullopt;
}

std::string_view registry_host_for(std::string_view domain) {
  return domain == kDockerHubDomain ? kDockerHubRegistryHost : domain;
}

std::string Reference::manifest_reference() const {
  return digest ? digest->to_string() : tag;
}

std::string Reference::to_string() const {
  std::string text = name();
  if (!tag.empty()) text += ":" + tag;
  if (digest) text += "@" + digest->to_string();
  return text;
}

std::string Reference::tag_key() const {
  return name() + ":" + tag;
}

Result<Reference, ReferenceError> parse_reference(std::string_view text) {
  if (text.empty()) return fail(ReferenceError::kEmpty);
  if (text.size() > kReferenceBytesMax) return fail(ReferenceError::kTooLong);
  if (is_hex_identifier(text)) return fail(ReferenceError::kHexIdentifier);
  const NameParts parts = split_reference(text);

  Reference reference;
  std::string_view path = parts.name;
  std::string_view domain = kDockerHubDomain;
  if (const size_t slash = parts.name.find('/');
      slash != std::string_view::npos && looks_like_domain(parts.name.substr(0, slash))) {
    domain = normalise_domain(parts.name.substr(0, slash));
    if (auto error = host_error(domain)) return fail(*error);
    path = parts.name.substr(slash + 1);
  }
  reference.domain = std::string(domain);
  reference.path = normalise_path(domain, path);
  if (auto error = repository_path_error(reference.path)) return fail(*error);
  if (reference.domain.size() + 1 + reference.path.size() > kNameBytesMax) {
    return fail(ReferenceError::kNameTooLong);
  }

  if (parts.has_tag) {
    if (auto error = tag_error(parts.tag)) return fail(*error);
    reference.tag = std::string(parts.tag);
  }
  if (parts.has_digest) {
    auto digest = Digest::parse(parts.digest);
    if (!digest) return fail(ReferenceError::kBadDigest);
    reference.digest = *digest;
  }
  if (!parts.has_tag && !parts.has_digest) reference.tag = std::string(kDefaultTag);
  return reference;
}

Result<UpstreamRepository, ReferenceError> resolve_mirror_repository(std::string_view repository_path,
                                                                     std::string_view ns) {
  if (auto error = repository_path_error(repository_path)) return fail(*error);
  const std::string_view domain = ns.empty() ? kDockerHubDomain : normalise_domain(ns);
  if (auto error = host_error(domain)) return fail(*error);
  UpstreamRepository upstream;
  upstream.domain = std::string(domain);
  upstream.registry_host = std::string(registry_host_for(domain));
  upstream.path = normalise_path(domain, repository_path);
  if (upstream.domain.size() + 1 + upstream.path.size() > kNameBytesMax)
    return fail(ReferenceError::kNameTooLong);
  return upstream;
}

}  // namespace peerd::content
