#pragma once
// The types between the HTTP server (sessions, sockets) and whatever answers requests (the router, the
// content service). A handler sees a parsed Request and calls Respond exactly once, from any thread, now or
// later. A Response is either small (its body is in the message) or streamed from a BodySource, whose pieces
// are bytes or file regions; file regions are sent with sendfile(2) (zero-copy from the page cache).
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include "peerd/core/content/range.h"
#include "peerd/daemon/daemon_metrics.h"

namespace peerd::daemon {

namespace http = boost::beast::http;

using HttpRequest = http::request<http::string_body>;
using HttpResponse = http::response<http::string_body>;

// Marks a request sent by another peerd (loop guard): a peer request is answered from this node's cache (or
// upstream, as the engine decides) but never forwarded to further peers.
inline constexpr std::string_view kPeerRequestHeader = "X-Peerd-Peer";
// On a peer request: the size of the whole item, and leave to fetch the chunk from the upstream.
inline constexpr std::string_view kPeerContentLengthHeader = "X-Peerd-Content-Length";
inline constexpr std::string_view kPeerFetchThroughHeader = "X-Peerd-Fetch-Through";

struct Request {
  HttpRequest message;
  std::string remote;  // "ip:port" of the client, for logs

  bool from_peer() const { return message.find(kPeerRequestHeader) != message.end(); }
  bool is_head() const { return message.method() == http::verb::head; }
};

// Bytes [offset, offset + length) of an open file. `owner` keeps the descriptor open (and, for cache chunks,
// the chunk pinned against eviction) until the session has sent the region.
struct FileRegion {
  int fd = -1;
  uint64_t offset = 0;
  uint64_t length = 0;
  std::shared_ptr<const void> owner;
};

struct BodyChunk {
  enum class Kind { kBytes, kFile, kEnd, kError };
  Kind kind = Kind::kEnd;
  std::string bytes;  // kBytes
  FileRegion file;    // kFile
  std::string error;  // kError: logged; the connection is closed (the client sees a short body)

  static BodyChunk data(std::string bytes) { return BodyChunk{Kind::kBytes, std::move(bytes), {}, {}}; }
  static BodyChunk region(FileRegion file) { return BodyChunk{Kind::kFile, {}, std::move(file), {}}; }
  static BodyChunk end() { return BodyChunk{}; }
  static BodyChunk failure(std::string why) { return BodyChunk{Kind::kError, {}, {}, std::move(why)}; }
};

// A streamed response body. The session asks for one piece at a time (so a slow client slows the producer)
// and never calls next() again after kEnd or kError.
class BodySource {
 public:
  virtual ~BodySource() = default;
  // `deliver` must be called exactly once, from any thread.
  virtual void next(std::function<void(BodyChunk)> deliver) = 0;
  // The connection is gone before the body ended. Called at most once, on the session's strand.
  virtual void cancel() {}
};

// Yields the given file regions in order, then kEnd: the cache-hit path (pinned chunk files, sendfile).
class FileRegionsBodySource final : public BodySource {
 public:
  explicit FileRegionsBodySource(std::vector<FileRegion> regions) : regions_(std::move(regions)) {}
  void next(std::function<void(BodyChunk)> deliver) override;
  void cancel() override { regions_.clear(); }

 private:
  std::vector<FileRegion> regions_;
  size_t next_index_ = 0;
};

struct Response {
  HttpResponse message;
  // Streamed body. When null, message.body() is the body (or, for HEAD, only its length is sent).
  std::shared_ptr<BodySource> body;
  // Content-Length of a streamed body or of a HEAD answer without a body; absent with `body`: chunked.
  std::optional<uint64_t> body_bytes;
  // For peerd_bytes_served_total{source}.
  ByteSource source = ByteSource::kCache;
  // For peerd_requests_total{route}; the router sets it.
  std::string route = "other";
};

using Respond = std::function<void(Response)>;

class RequestHandler {
 public:
  virtual ~RequestHandler() = default;
  // Called on the connection's strand. Must arrange for `respond` to be called exactly once; if every copy of
  // `respond` is dropped without a call, the session answers 500.
  virtual void handle(const Request& request, Respond respond) = 0;
};

// {"errors":[{"code":"BLOB_UNKNOWN","message":"...","detail":...}]}, the OCI distribution error shape. peerd
// uses it for every error, including non-registry routes, so clients parse one format.
Response oci_error(http::status status, std::string_view code, std::string_view message,
                   const nlohmann::json& detail = nullptr);
Response json_response(http::status status, const nlohmann::json& body);
Response text_response(http::status status, std::string body, std::string_view content_type = "text/plain");

// Head of a blob or manifest being served: what the content service knows before the bytes.
struct ContentHead {
  uint64_t content_bytes = 0;
  std::string media_type = "application/octet-stream";
  std::string digest;  // "sha256:..." for registry content; empty for /blobs/ files
};

// 200 (whole content) or 206 with Content-Range (when `range` is set), with Content-Type, Content-Length,
// Accept-Ranges and Docker-Content-Digest. `body` may be null for HEAD.
Response content_response(const ContentHead& head, const std::optional<content::ByteRange>& range,
                          std::shared_ptr<BodySource> body, ByteSource source);
// 416 with "Content-Range: bytes */<size>".
Response range_not_satisfiable(uint64_t content_bytes);

}  // namespace peerd::daemon
