#pragma once
// LocalContent: blobs and tags this node can serve to peers from a store other than its chunk cache
// (containerd's content store, see containerd_store.h). EngineContentService depends only on this interface,
// so gRPC stays inside peerd/daemon/containerd and unit tests use a fake.
//
// Every call is cheap and thread-safe: lookups read an in-memory snapshot (refreshed by the store's own
// thread), open_blob() opens a file or starts a bounded stream.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "peerd/core/content/digest.h"
#include "peerd/core/content/range.h"
#include "peerd/daemon/http_message.h"

namespace peerd::daemon {

struct LocalBlob {
  uint64_t size = 0;
  std::string media_type = "application/octet-stream";
};

// What a tag names in the local image store (the image's target: an index or a manifest).
struct LocalTag {
  std::string digest;  // "sha256:…"
  uint64_t size = 0;
  std::string media_type;
};

class LocalContent {
 public:
  virtual ~LocalContent() = default;
  // A blob this node advertises (manifest, config or layer of a local image), or nullopt.
  virtual std::optional<LocalBlob> find_blob(const content::Digest& digest) const = 0;
  // Bytes `range` of a blob find_blob() knows, streamed; nullptr when it cannot be read now (left the
  // store, the store is unreachable, too many open streams): the caller falls back to its cache.
  virtual std::shared_ptr<BodySource> open_blob(const content::Digest& digest,
                                                const content::ByteRange& range) = 0;
  // The digest `host/repository:tag` names locally, when the freshness policy lets peers rely on it
  // (--resolve-tags); nullopt otherwise.
  virtual std::optional<LocalTag> resolve_tag(std::string_view host, std::string_view repository,
                                              std::string_view tag) const = 0;
};

}  // namespace peerd::daemon
