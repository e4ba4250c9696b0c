#pragma once
// The request router: validates every request before anything acts on it and answers the small routes
// itself; content routes go to the ContentService.
//
//   GET|HEAD /v2/, /v2                       200 {} (registry API version check)
//   GET|HEAD /v2/<name>/manifests/<ref>      -> ContentService::serve_mirror   (?ns=<registry>)
//   GET|HEAD /v2/<name>/blobs/<digest>       -> ContentService::serve_mirror   (Range)
//   GET|HEAD /blobs/<http(s) URL>            -> ContentService::serve_file     (Range)
//   GET /metrics, /healthz, /readyz
//
// Errors are OCI JSON: malformed name/digest/tag/Range/query -> 400; "." / ".." segments, raw or
// percent-encoded, and encoded separators -> 400; upstream host not allowed -> 403; other methods -> 405;
// unknown paths -> 404. Header-size (431) and body-size (413) limits are enforced by the HTTP server.
#include <string>

#include "peerd/daemon/allowed_upstreams.h"
#include "peerd/daemon/content_service.h"
#include "peerd/daemon/http_message.h"
#include "peerd/daemon/log.h"
#include "peerd/daemon/metrics.h"
#include "peerd/daemon/readiness.h"

namespace peerd::daemon {

class Router final : public RequestHandler {
 public:
  // Everything referenced must outlive the router.
  Router(ContentService& content, const AllowedUpstreams& allowed, const MetricsRegistry& metrics,
         const Readiness& readiness, Logger logger);

  void handle(const Request& request, Respond respond) override;

 private:
  void handle_mirror(const Request& request, std::string_view path, std::string_view query, Respond respond);
  void handle_file(const Request& request, Respond respond);

  ContentService& content_;
  const AllowedUpstreams& allowed_;
  const MetricsRegistry& metrics_;
  const Readiness& readiness_;
  Logger logger_;
};

// True when `path` (no query) has a "." or ".." segment, raw or percent-encoded, an encoded '/' or '\', or an
// escape that decodes to a control byte. Pure; exposed for tests.
bool path_is_traversal(std::string_view path);

}  // namespace peerd::daemon
