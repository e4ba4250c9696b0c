#pragma once
// The seam between the HTTP front (router) and the transfer engine. The router has already validated the
// request (path grammar, digest, ns, Range syntax, allowed upstream) and hands over typed requests; the
// service answers through Respond, typically with content_response() and a BodySource (FileRegionsBodySource
// over pinned DiskChunkStore chunks for cached data).
//
// EngineContentService (engine_service.h) is the production implementation.
#include <optional>
#include <string>

#include "peerd/core/content/range.h"
#include "peerd/core/content/reference.h"
#include "peerd/core/content/request_path.h"
#include "peerd/daemon/http_message.h"

namespace peerd::daemon {

// What a peer says about its request (headers next to kPeerRequestHeader): which chunk server asks, the size
// of the whole item (a chunk request carries it, so the server needs no lookup), and whether the server may
// fetch the chunk from the upstream for it (the rendezvous owner's fetch-through).
struct PeerHints {
  std::string node_id_hex;                // the X-Peerd-Peer value (the requester's node id), may be empty
  std::optional<uint64_t> content_bytes;  // X-Peerd-Content-Length
  bool fetch_through = false;             // X-Peerd-Fetch-Through: 1
};

// GET|HEAD /v2/<name>/manifests/<ref> and /v2/<name>/blobs/<digest> (containerd mirror, or a peer).
struct MirrorRequest {
  content::MirrorRoute route;              // kManifest or kBlob, with the tag or digest
  content::UpstreamRepository repository;  // resolved from ?ns= (docker.io when absent)
  std::string upstream_base_url;           // "https://ghcr.io", "http://127.0.0.1:5000" (from --hosts)
  bool head = false;
  std::optional<content::RangeSpec> range;  // blobs only; resolve against the size (416 if unsatisfiable)
  std::string accept;                       // the client's Accept (manifests)
  std::string authorization;  // the client's Authorization, passed through upstream; never logged
  bool from_peer = false;     // loop guard: never forward to other peers
  PeerHints peer;
  std::string remote;  // client "ip:port", for logs
};

// GET|HEAD /blobs/<http(s) URL>: a byte range of any allowed HTTP(S) file; no Range means the whole body.
struct FileRequest {
  content::BlobUrl url;  // url.url() is fetched (query kept); url.content_id() is the shared key (no query)
  bool head = false;
  std::optional<content::RangeSpec> range;
  std::string authorization;
  bool from_peer = false;
  PeerHints peer;
  std::string remote;
};

class ContentService {
 public:
  virtual ~ContentService() = default;
  // Both may answer now or later, from any thread; exactly one Respond call each.
  virtual void serve_mirror(MirrorRequest request, Respond respond) = 0;
  virtual void serve_file(FileRequest request, Respond respond) = 0;
};

}  // namespace peerd::daemon
