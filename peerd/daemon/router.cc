#include "peerd/daemon/router.h"

#include <charconv>

#include <cctype>

namespace peerd::daemon {
namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool is_dot_segment(std::string_view segment) {
  return segment == "." || segment == "..";
}

Response with_route(Response response, std::string_view route) {
  response.route = std::string(route);
  return response;
}

// Wraps `respond` so every answer carries the route name used by peerd_requests_total.
Respond routed(Respond respond, std::string_view route) {
  return [respond = std::move(respond), route = std::string(route)](Response response) {
    response.route = route;
    respond(std::move(response));
  };
}

Response bad_request(std::string_view code, std::string_view message) {
  return oci_error(http::status::bad_request, code, message);
}

std::string_view mirror_error_code(content::MirrorPathError error) {
  switch (error) {
    case content::MirrorPathError::kBadDigest:
      return "DIGEST_INVALID";
    case content::MirrorPathError::kBadTag:
      return "TAG_INVALID";
    default:
      return "NAME_INVALID";
  }
}

// A missing header is nullopt; an unsupported unit is ignored (RFC 9110: serve the whole content);
// everything else malformed is a 400. Satisfiability needs the size: the content service answers 416.
Result<std::optional<content::RangeSpec>, Response> parse_range_header(const Request& request) {
  const auto field = request.message.find(http::field::range);
  if (field == request.message.end()) return std::optional<content::RangeSpec>{};
  auto spec = content::parse_range_spec(field->value());
  if (spec) return std::optional<content::RangeSpec>{*spec};
  if (spec.error() == content::RangeError::kUnsupportedUnit) return std::optional<content::RangeSpec>{};
  return fail(oci_error(http::status::bad_request, "RANGE_INVALID", content::describe(spec.error())));
}

std::string header_value(const Request& request, http::field field) {
  const auto it = request.message.find(field);
  return it == request.message.end() ? std::string() : std::string(it->value());
}

// The peer headers of a request from another peerd (none for other clients). A malformed size is a 400: a
// peer that sends one is broken, and guessing would serve the wrong last chunk.
Result<PeerHints, Response> peer_hints(const Request& request) {
  PeerHints hints;
  if (!request.from_peer()) return hints;
  hints.node_id_hex = std::string(request.message[kPeerRequestHeader]);
  if (hints.node_id_hex.size() > 64) hints.node_id_hex.clear();
  const auto size_field = request.message.find(kPeerContentLengthHeader);
  if (size_field != request.message.end()) {
    const std::string_view text = size_field->value();
    uint64_t value = 0;
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (error != std::errc() || end != text.data() + text.size() || value == 0) {
      return fail(oci_error(http::status::bad_request, "BAD_REQUEST",
                            std::string(kPeerContentLengthHeader) + " must be a positive integer"));
    }
    hints.content_bytes = value;
  }
  hints.fetch_through = request.message[kPeerFetchThroughHeader] == "1";
  return hints;
}

}  // namespace

bool path_is_traversal(std::string_view path) {
  std::string decoded;
  decoded.reserve(path.size());
  for (size_t i = 0; i < path.size(); ++i) {
    if (path[i] != '%') {
      decoded += path[i] == '\\' ? '/' : path[i];
      continue;
    }
    if (i + 2 >= path.size()) return true;  // truncated escape
    const int high = hex_value(path[i + 1]);
    const int low = hex_value(path[i + 2]);
    if (high < 0 || low < 0) return true;
    const char byte = static_cast<char>(high * 16 + low);
    if (byte == '/' || byte == '\\' || static_cast<unsigned char>(byte) < 0x20 || byte == 0x7f) return true;
    decoded += byte;
    i += 2;
  }
  size_t start = 0;
  while (start <= decoded.size()) {
    const size_t end = std::min(decoded.find('/', start), decoded.size());
    if (is_dot_segment(std::string_view(decoded).substr(start, end - start))) return true;
    start = end + 1;
  }
  return false;
}

Router::Router(ContentService& content, const AllowedUpstreams& allowed, const MetricsRegistry& metrics,
               const Readiness& readiness, Logger logger)
    : content_(content),
      allowed_(allowed),
      metrics_(metrics),
      readiness_(readiness),
      logger_(std::move(logger)) {}

void Router::handle(const Request& request, Respond respond) {
  const auto method = request.message.method();
  const std::string_view target = request.message.target();
  logger_.debug("request", {{"method", std::string(request.message.method_string())},
                            {"target", redact_url(target)},
                            {"remote", request.remote},
                            {"peer", request.from_peer()}});
  if (method != http::verb::get && method != http::verb::head) {
    Response response =
        oci_error(http::status::method_not_allowed, "UNSUPPORTED", "only GET and HEAD are served");
    response.message.set(http::field::allow, "GET, HEAD");
    return respond(with_route(std::move(response), "other"));
  }
  if (!target.starts_with("/")) {
    return respond(
        with_route(bad_request("BAD_REQUEST", "request target must be an origin-form path"), "invalid"));
  }
  const auto [path, query] = content::split_target(target);
  if (path.starts_with("/blobs/")) return handle_file(request, routed(std::move(respond), "file"));
  if (path_is_traversal(path)) {
    return respond(with_route(
        bad_request("BAD_REQUEST", "path has a . or .. segment or an encoded separator"), "invalid"));
  }
  if (path == "/healthz") return respond(with_route(text_response(http::status::ok, "ok\n"), "healthz"));
  if (path == "/readyz") {
    const auto pending = readiness_.pending();
    const auto status = pending.empty() ? http::status::ok : http::status::service_unavailable;
    return respond(
        with_route(json_response(status, {{"ready", pending.empty()}, {"pending", pending}}), "readyz"));
  }
  if (path == "/metrics") {
    return respond(with_route(
        text_response(http::status::ok, metrics_.render(), "text/plain; version=0.0.4; charset=utf-8"),
        "metrics"));
  }
  if (path == "/v2" || path.starts_with("/v2/"))
    return handle_mirror(request, path, query, std::move(respond));
  respond(with_route(oci_error(http::status::not_found, "NOT_FOUND", "no such route"), "other"));
}

void Router::handle_mirror(const Request& request, std::string_view path, std::string_view query,
                           Respond respond) {
  auto route = content::parse_mirror_path(path);
  if (!route) {
    if (route.error() == content::MirrorPathError::kUnknownEndpoint) {
      return respond(with_route(
          oci_error(http::status::not_found, "UNSUPPORTED", content::describe(route.error())), "other"));
    }
    return respond(with_route(bad_request(mirror_error_code(route.error()), content::describe(route.error())),
                              "invalid"));
  }
  if (route->kind == content::MirrorRouteKind::kApiBase) {
    Response response = json_response(http::status::ok, nlohmann::json::object());
    response.message.set("Docker-Distribution-API-Version", "registry/2.0");
    return respond(with_route(std::move(response), "v2"));
  }
  const std::string_view route_name =
      route->kind == content::MirrorRouteKind::kManifest ? "manifest" : "blob";
  respond = routed(std::move(respond), route_name);

  auto ns = content::query_parameter(query, "ns");
  if (!ns) return respond(bad_request("NAME_INVALID", content::describe(ns.error())));
  auto repository = content::resolve_mirror_repository(route->name, ns->value_or(""));
  if (!repository) return respond(bad_request("NAME_INVALID", content::describe(repository.error())));

  logger_.debug("mirror request", {{"registry", repository->domain},
                                   {"name", repository->path},
                                   {"reference", route->reference()},
                                   {"head", request.is_head()},
                                   {"peer", request.from_peer()}});
  auto host = content::parse_host(repository->registry_host);
  if (!host || !allowed_.allows(host->host, host->port)) {
    return respond(oci_error(http::status::forbidden, "DENIED", "upstream registry is not allowed",
                             {{"registry", repository->domain}}));
  }

  MirrorRequest mirror;
  // Blobs take Range (containerd resumes with it); so do manifests by digest, which peers fetch as chunks.
  if (route->kind == content::MirrorRouteKind::kBlob || route->digest) {
    auto range = parse_range_header(request);
    if (!range) return respond(range.error());
    mirror.range = *range;
  }
  const auto registry = allowed_.registry_for(repository->domain);
  mirror.upstream_base_url = registry ? registry->server_url() : "https://" + repository->registry_host;
  mirror.route = std::move(*route);
  mirror.repository = std::move(*repository);
  mirror.head = request.is_head();
  mirror.accept = header_value(request, http::field::accept);
  mirror.authorization = header_value(request, http::field::authorization);
  mirror.from_peer = request.from_peer();
  auto hints = peer_hints(request);
  if (!hints) return respond(hints.error());
  mirror.peer = std::move(*hints);
  mirror.remote = request.remote;
  content_.serve_mirror(std::move(mirror), std::move(respond));
}

void Router::handle_file(const Request& request, Respond respond) {
  auto url = content::parse_blob_path(request.message.target());
  if (!url) return respond(bad_request("BAD_REQUEST", content::describe(url.error())));
  if (!allowed_.allows(url->host, url->port)) {
    return respond(
        oci_error(http::status::forbidden, "DENIED", "upstream host is not allowed", {{"host", url->host}}));
  }
  auto range = parse_range_header(request);
  if (!range) return respond(range.error());
  FileRequest file;
  file.url = std::move(*url);
  file.head = request.is_head();
  file.range = *range;
  file.authorization = header_value(request, http::field::authorization);
  file.from_peer = request.from_peer();
  auto hints = peer_hints(request);
  if (!hints) return respond(hints.error());
  file.peer = std::move(*hints);
  file.remote = request.remote;
  content_.serve_file(std::move(file), std::move(respond));
}

}  // namespace peerd::daemon
