#pragma once
// EngineContentService: the ContentService behind the router, driving the transfer engine (through the
// CoreDriver) with the daemon's real parts: DiskChunkStore for bytes, UpstreamClient (libcurl) for the
// registry, file origins and other peers' chunk servers, a worker pool for disk syncs and digest checks.
//
// A client read (containerd or a block driver):
//   1. the item's head (size, media type) comes from memory, else from a peer the DHT lists as a holder
//      (HEAD with the peer header), else from the upstream (HEAD); none of them -> 404 at once, so
//      containerd tries its next host (the registry) itself;
//   2. HEAD is answered from the head; GET starts an engine read of the range and answers as soon as the
//      first bytes are in the store (a read that fails before any byte is a 404, same reason), then streams
//      the rest with sendfile from pinned chunk files as the engine reports progress.
// A peer's chunk request (a Range inside one chunk, with X-Peerd-Content-Length) is an engine serve: the
// chunk from the store, or, for the rendezvous owner asked to fetch through, from the upstream once for all
// askers (the response headers go out at once, the body when the chunk lands).
// Tags are resolved at the upstream (never from peers, see the containerd issue) and manifests by tag are
// passed through; everything addressed by digest is content-addressed and comes through the engine.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include <boost/asio/thread_pool.hpp>

#include "peerd/daemon/allowed_upstreams.h"
#include "peerd/daemon/containerd/local_content.h"
#include "peerd/daemon/content_service.h"
#include "peerd/daemon/core_driver.h"
#include "peerd/daemon/disk_chunk_store.h"
#include "peerd/daemon/log.h"
#include "peerd/daemon/upstream_client.h"

namespace peerd::daemon {

struct EngineServiceOptions {
  uint64_t chunk_bytes = content::kDefaultChunkBytes;
  std::chrono::milliseconds peer_connect_timeout{std::chrono::seconds(2)};
  std::chrono::milliseconds peer_head_timeout{std::chrono::seconds(3)};
  size_t peer_heads_max = 2;            // holders asked for an item's size before the upstream
  size_t heads_known_max = 65536;       // remembered item heads (size, media type)
  size_t manifest_bytes_max = 4 << 20;  // manifests passed through from the upstream
  uint32_t worker_threads = 2;          // chunk syncs and digest checks
  // When the upstream cannot resolve a tag, ask the nodes that advertise it (their local image store,
  // under their --resolve-tags policy).
  bool resolve_tags_from_peers = false;
};

class EngineContentService final : public ContentService, public CoreDriver::Listener {
 public:
  EngineContentService(EngineServiceOptions options, CoreDriver& driver, DiskChunkStore& store,
                       UpstreamClient& upstream, AllowedUpstreams& allowed, Logger logger,
                       DaemonMetrics* metrics);
  ~EngineContentService() override;

  // ContentService (any thread).
  void serve_mirror(MirrorRequest request, Respond respond) override;
  void serve_file(FileRequest request, Respond respond) override;

  // CoreDriver::Listener (the driver's strand).
  void on_action(transfer::Action action) override;
  void on_event(transfer::Event event) override;

  // Stops issuing work and waits for the workers (call before destroying the driver and the store).
  void shutdown();
  // Peers' requests for content in `local` (containerd's content store) are answered from it before the
  // cache, and their tag lookups from its images. Set before serving; `local` must outlive the service.
  void set_local_content(LocalContent* local) { local_ = local; }

  struct Wanted;
  class ReadBody;
  class ServeBody;
  struct Fetch;

 private:
  // How to reach an item: at the upstream, and at a peer (path and query of the same API).
  struct Locator {
    std::string upstream_url;
    std::string peer_target;
    std::string authorization;  // the last client's, passed to the upstream only; never to peers
    bool manifest = false;
  };

  void start(std::shared_ptr<Wanted> wanted);  // on the strand
  void resolve_head(std::shared_ptr<Wanted> wanted, size_t providers_tried,
                    std::vector<transfer::Peer> providers);
  void head_from_upstream(std::shared_ptr<Wanted> wanted);
  void with_head(std::shared_ptr<Wanted> wanted, const ContentHead& head);
  void start_read(std::shared_ptr<Wanted> wanted, const ContentHead& head, const content::ByteRange& range,
                  bool whole);
  void serve_chunk(std::shared_ptr<Wanted> wanted);
  void pass_manifest_through(MirrorRequest request, Respond respond);
  // A peer's request answered from LocalContent; false when it has nothing for it (the caller goes on).
  bool serve_local(MirrorRequest& request, Respond& respond);
  struct TagQuery {
    std::string route_name;  // as in the request path
    std::string domain;      // ?ns=
    std::string path;        // repository path at the registry
    std::string tag;
    bool head = false;
  };
  // The tag from the nodes advertising it (the upstream could not resolve it), trying up to peer_heads_max.
  void resolve_tag_from_peers(TagQuery query, Respond respond);
  void ask_tag_provider(std::shared_ptr<const TagQuery> query, Respond respond, size_t tried,
                        std::vector<transfer::Peer> providers);
  void remember_head(const content::ContentId& content, const ContentHead& head);
  std::optional<ContentHead> known_head(const content::ContentId& content) const;

  std::function<bool(std::string_view url)> upstream_redirect_policy();
  void start_fetch(const transfer::StartFetch& fetch);
  bool flush_fetch_buffer(Fetch& fetch);  // transfer thread
  void finish_fetch(const std::shared_ptr<Fetch>& fetch, UpstreamResult result);
  void verify(const content::ContentId& content);

  const EngineServiceOptions options_;
  CoreDriver& driver_;
  DiskChunkStore& store_;
  UpstreamClient& upstream_;
  AllowedUpstreams& allowed_;
  const Logger logger_;
  DaemonMetrics* const metrics_;
  LocalContent* local_ = nullptr;
  Counter* const local_bytes_served_;
  boost::asio::thread_pool workers_;
  std::atomic<bool> stopping_{false};

  // Strand only.
  std::map<content::ContentId, Locator> locators_;
  std::map<transfer::ReadId, std::shared_ptr<ReadBody>> reads_;
  std::map<transfer::ServeId, std::shared_ptr<ServeBody>> serves_;
  std::map<transfer::FetchId, std::shared_ptr<Fetch>> fetches_;
  std::map<content::ContentId, uint64_t> size_hints_;  // sizes peers named in chunk requests

  // The fetch writing each chunk (the upstream client's transfer thread only: every body and completion
  // callback runs there).
  std::map<content::ChunkKey, const Fetch*> chunk_writers_;

  // Heads are read by HTTP threads too.
  mutable std::mutex heads_mutex_;
  std::map<content::ContentId, ContentHead> heads_;
};

}  // namespace peerd::daemon
