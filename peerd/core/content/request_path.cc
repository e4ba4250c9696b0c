#include "peerd/core/content/request_path.h"

#include <algorithm>

#include "peerd/core/content/reference.h"

namespace peerd::content {

std::string_view describe(QueryError error) {
  switch (error) {
    case QueryError::kTooLong:
      return "query string is too long";
    case QueryError::kBadCharacter:
      return "query string has a forbidden character";
    case QueryError::kBadEscape:
      return "query string has a malformed percent escape";
    case QueryError::kDuplicate:
      return "query parameter appears more than once";
  }
  return "invalid query string";
}

std::string_view describe(MirrorPathError error) {
  switch (error) {
    case MirrorPathError::kTooLong:
      return "request path is too long";
    case MirrorPathError::kBadCharacter:
      return "request path has a forbidden character";
    case MirrorPathError::kPercentEncoded:
      return "registry paths must not be percent-encoded";
    case MirrorPathError::kNotApiV2:
      return "registry paths start with /v2/";
    case MirrorPathError::kTraversal:
      return "request path has a . or .. segment";
    case MirrorPathError::kUnknownEndpoint:
      return "only /v2/<name>/manifests/<reference> and /v2/<name>/blobs/<digest> are served";
    case MirrorPathError::kBadName:
      return "invalid repository name";
    case MirrorPathError::kBadTag:
      return "invalid tag";
    case MirrorPathError::kBadDigest:
      return "digest must be sha256:<64 lowercase hex>";
  }
  return "invalid registry path";
}

std::string_view describe(BlobPathError error) {
  switch (error) {
    case BlobPathError::kTooLong:
      return "blob URL is too long";
    case BlobPathError::kNotBlobs:
      return "blob paths start with /blobs/";
    case BlobPathError::kBadCharacter:
      return "blob URL has a forbidden character";
    case BlobPathError::kBadScheme:
      return "blob URL must start with http:// or https://";
    case BlobPathError::kBadHost:
      return "blob URL needs a DNS name, IPv4 or bracketed IPv6 host";
    case BlobPathError::kBadPort:
      return "blob URL port must be 1..65535";
    case BlobPathError::kUserInfo:
      return "blob URL must not carry credentials";
    case BlobPathError::kFragment:
      return "blob URL must not have a fragment";
    case BlobPathError::kBadEscape:
      return "blob URL has a malformed percent escape";
    case BlobPathError::kTraversal:
      return "blob URL path has a . or .. segment or an escaped separator";
  }
  return "invalid blob URL";
}

namespace {

bool is_control_space_or_non_ascii(char c) {
  const auto byte = static_cast<unsigned char>(c);
  return byte <= 0x20 || byte >= 0x7f;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The byte of the escape at text[i] ('%'), or -1 when it is not '%' followed by two hex digits.
int escape_at(std::string_view text, size_t i) {
  if (i + 2 >= text.size()) return -1;
  const int high = hex_value(text[i + 1]);
  const int low = hex_value(text[i + 2]);
  if (high < 0 || low < 0) return -1;
  return high << 4 | low;
}

char lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

std::string to_lower(std::string_view text) {
  std::string result(text);
  std::transform(result.begin(), result.end(), result.begin(), lower);
  return result;
}

// Calls visit(segment) for each '/'-separated segment of text; stops at the first true.
template <typename Visit>
bool any_segment(std::string_view text, Visit visit) {
  size_t start = 0;
  while (true) {
    const size_t slash = text.find('/', start);
    if (visit(text.substr(start, slash == std::string_view::npos ? slash : slash - start))) return true;
    if (slash == std::string_view::npos) return false;
    start = slash + 1;
  }
}

bool is_dot_segment(std::string_view segment) {
  return segment == "." || segment == "..";
}

Result<std::string, QueryError> form_decode(std::string_view text) {
  std::string decoded;
  decoded.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '+') {
      c = ' ';
    } else if (c == '%') {
      const int byte = escape_at(text, i);
      if (byte < 0) return fail(QueryError::kBadEscape);
      if (byte < 0x20 || byte == 0x7f) return fail(QueryError::kBadCharacter);
      c = static_cast<char>(byte);
      i += 2;
    }
    decoded.push_back(c);
  }
  return decoded;
}

// RFC 3986 unreserved / sub-delims / ":" / "@" (pchar without the escape).
bool is_pchar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("-._~!$&'()*+,;=:@").find(c) != std::string_view::npos;
}

// Checks the characters and escapes of a URL path ('/' allowed) or query ('/' and '?' allowed).
std::optional<BlobPathError> url_part_error(std::string_view text, bool is_query) {
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '%') {
      const int byte = escape_at(text, i);
      if (byte < 0 || byte == 0) return BlobPathError::kBadEscape;
      // Escaped separators and dots let "..%2f" slip past segment checks here and be decoded upstream.
      if (!is_query && (byte == '.' || byte == '/' || byte == '\\')) return BlobPathError::kTraversal;
      i += 2;
      continue;
    }
    if (is_pchar(c) || c == '/' || (is_query && c == '?')) continue;
    return BlobPathError::kBadCharacter;
  }
  return std::nullopt;
}

Result<std::string_view, BlobPathError> strip_scheme(std::string_view url, std::string& scheme) {
  const size_t separator = url.find("://");
  if (separator == std::string_view::npos) return fail(BlobPathError::kBadScheme);
  scheme = to_lower(url.substr(0, separator));
  if (scheme != "http" && scheme != "https") return fail(BlobPathError::kBadScheme);
  return url.substr(separator + 3);
}

std::optional<BlobPathError> parse_authority(std::string_view authority, BlobUrl& url) {
  if (authority.find('@') != std::string_view::npos) return BlobPathError::kUserInfo;
  if (authority.empty()) return BlobPathError::kBadHost;
  auto host = parse_host(authority);
  if (!host)
    return host.error() == ReferenceError::kBadPort ? BlobPathError::kBadPort : BlobPathError::kBadHost;
  url.host = to_lower(host->host);
  url.port = host->port ? *host->port : (url.scheme == "https" ? 443 : 80);
  return std::nullopt;
}

}  // namespace

RequestTarget split_target(std::string_view target) {
  const size_t question = target.find('?');
  if (question == std::string_view::npos) return RequestTarget{target, {}};
  return RequestTarget{target.substr(0, question), target.substr(question + 1)};
}

Result<std::optional<std::string>, QueryError> query_parameter(std::string_view query, std::string_view key) {
  if (query.size() > kQueryBytesMax) return fail(QueryError::kTooLong);
  if (std::any_of(query.begin(), query.end(),
                  [](char c) { return is_control_space_or_non_ascii(c) || c == '#'; })) {
    return fail(QueryError::kBadCharacter);
  }
  std::optional<std::string> found;
  size_t start = 0;
  while (start <= query.size()) {
    const size_t ampersand = std::min(query.find('&', start), query.size());
    const std::string_view pair = query.substr(start, ampersand - start);
    start = ampersand + 1;
    if (pair.empty()) continue;
    const size_t equals = pair.find('=');
    auto name = form_decode(pair.substr(0, equals));
    if (!name) return fail(name.error());
    auto value = form_decode(equals == std::string_view::npos ? std::string_view() : pair.substr(equals + 1));
    if (!value) return fail(value.error());
    if (*name != key) continue;
    if (found) return fail(QueryError::kDuplicate);
    found = std::move(*value);
  }
  return found;
}

Result<MirrorRoute, MirrorPathError> parse_mirror_path(std::string_view path) {
  if (path.size() > kMirrorPathBytesMax) return fail(MirrorPathError::kTooLong);
  for (const char c : path) {
    if (c == '%') return fail(MirrorPathError::kPercentEncoded);
    if (is_control_space_or_non_ascii(c) || c == '\\' || c == '?' || c == '#') {
      return fail(MirrorPathError::kBadCharacter);
    }
  }
  if (path == "/v2" || path == "/v2/") return MirrorRoute{};
  constexpr std::string_view kPrefix = "/v2/";
  if (!path.starts_with(kPrefix)) return fail(MirrorPathError::kNotApiV2);
  const std::string_view rest = path.substr(kPrefix.size());
  if (any_segment(rest, is_dot_segment)) return fail(MirrorPathError::kTraversal);

  // The reference and the endpoint never contain '/', so they are the last two segments; the name (which may
  // itself contain a "manifests" component) is everything before.
  const size_t reference_slash = rest.rfind('/');
  if (reference_slash == std::string_view::npos || reference_slash == 0) {
    return fail(MirrorPathError::kUnknownEndpoint);
  }
  const size_t endpoint_slash = rest.rfind('/', reference_slash - 1);
  if (endpoint_slash == std::string_view::npos) return fail(MirrorPathError::kUnknownEndpoint);
  const std::string_view name = rest.substr(0, endpoint_slash);
  const std::string_view endpoint = rest.substr(endpoint_slash + 1, reference_slash - endpoint_slash - 1);
  const std::string_view reference = rest.substr(reference_slash + 1);

  MirrorRoute route;
  if (endpoint == "manifests") {
    route.kind = MirrorRouteKind::kManifest;
  } else if (endpoint == "blobs") {
    route.kind = MirrorRouteKind::kBlob;
  } else {
    return fail(MirrorPathError::kUnknownEndpoint);
  }
  if (repository_path_error(name)) return fail(MirrorPathError::kBadName);
  route.name = std::string(name);
  if (route.kind == MirrorRouteKind::kManifest && reference.find(':') == std::string_view::npos) {
    if (tag_error(reference)) return fail(MirrorPathError::kBadTag);
    route.tag = std::string(reference);
    return route;
  }
  auto digest = Digest::parse(reference);
  if (!digest) return fail(MirrorPathError::kBadDigest);
  route.digest = *digest;
  return route;
}

std::string BlobUrl::url_without_query() const {
  std::string text = scheme + "://" + host;
  if (!default_port()) text += ":" + std::to_string(port);
  return text + path;
}

std::string BlobUrl::url() const {
  return query.empty() ? url_without_query() : url_without_query() + "?" + query;
}

Result<BlobUrl, BlobPathError> parse_blob_path(std::string_view target) {
  if (target.size() > kBlobTargetBytesMax) return fail(BlobPathError::kTooLong);
  constexpr std::string_view kPrefix = "/blobs/";
  if (!target.starts_with(kPrefix)) return fail(BlobPathError::kNotBlobs);
  const std::string_view text = target.substr(kPrefix.size());
  if (std::any_of(text.begin(), text.end(), is_control_space_or_non_ascii))
    return fail(BlobPathError::kBadCharacter);
  if (text.find('#') != std::string_view::npos) return fail(BlobPathError::kFragment);

  BlobUrl url;
  auto after_scheme = strip_scheme(text, url.scheme);
  if (!after_scheme) return fail(after_scheme.error());
  const std::string_view rest = *after_scheme;
  const size_t authority_end = std::min(rest.find_first_of("/?"), rest.size());
  if (auto error = parse_authority(rest.substr(0, authority_end), url)) return fail(*error);

  const std::string_view path_and_query = rest.substr(authority_end);
  const RequestTarget parts = split_target(path_and_query);
  if (auto error = url_part_error(parts.path, false)) return fail(*error);
  if (any_segment(parts.path, is_dot_segment)) return fail(BlobPathError::kTraversal);
  if (auto error = url_part_error(parts.query, true)) return fail(*error);
  url.path = parts.path.empty() ? "/" : std::string(parts.path);
  url.query = std::string(parts.query);
  return url;
}

}  // namespace peerd::content
