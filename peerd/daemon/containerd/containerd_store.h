#pragma once
// ContainerdStore: containerd's content store as LocalContent, and the advertiser that announces it.
//
// Its thread connects to containerd (a missing socket or a restart: clear log, retry with backoff, readiness
// false until connected), subscribes to /images/ events, and scans: every image whose registry is one of
// --hosts contributes its target, the node platform's manifests, configs and layers (those present in the
// content store) and, when tags may be resolved for peers, its tag key ("host/repo:tag"). Keys new since the
// last scan are provided on the DHT, keys gone are withdrawn (the DHT stops re-providing them; other nodes'
// records lapse with their ttl, and this node answers 404 for them at once). A scan runs on start, after
// every image event (create/update/delete) and every refresh interval (which also re-provides every key).
//
// Serving: the blob file under --containerd-content-root when readable and of the size containerd reports
// (sendfile, like cached chunks), else a bounded ReadContent stream.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "peerd/core/common/node_id.h"
#include "peerd/daemon/containerd/containerd_client.h"
#include "peerd/daemon/containerd/image_walk.h"
#include "peerd/daemon/containerd/local_content.h"
#include "peerd/daemon/log.h"

namespace peerd::daemon::containerd {

struct StoreOptions {
  std::string socket_path = "/run/containerd/containerd.sock";
  std::string name_space = "k8s.io";
  // containerd's content directory ("<root>/io.containerd.content.v1.content"); empty: gRPC reads only.
  std::string content_root;
  std::vector<std::string> hosts;  // registry domains whose images are offered ("ghcr.io", "host:5000")
  // Tags answered for peers when the image was created or updated within this; nullopt: digests only.
  std::optional<std::chrono::milliseconds> tag_ttl;
  std::chrono::milliseconds refresh_interval{std::chrono::minutes(5)};
  std::chrono::milliseconds call_timeout{std::chrono::seconds(5)};
  std::chrono::milliseconds connect_timeout{std::chrono::seconds(2)};
  std::chrono::milliseconds retry_min{std::chrono::milliseconds(500)};
  std::chrono::milliseconds retry_max{std::chrono::seconds(10)};
  std::chrono::milliseconds event_debounce{std::chrono::milliseconds(100)};
  size_t images_max = 10000;
  size_t blobs_max = 200000;
  size_t streams_max = 64;                // concurrent ReadContent streams
  uint64_t manifest_bytes_max = 4 << 20;  // indexes and manifests read to walk an image
  size_t manifests_cached_max = 4096;     // manifest bytes kept between scans (content is immutable)
  Platform platform = host_platform();
};

// How keys reach the DHT (CoreDriver::provide / withdraw in the daemon; a recorder in tests).
struct Advertiser {
  std::function<void(const NodeId& key)> provide;
  std::function<void(const NodeId& key)> withdraw;
};

class Store final : public LocalContent {
 public:
  Store(StoreOptions options, Advertiser advertiser, std::function<void(bool connected)> on_connection,
        Logger logger);
  ~Store() override;
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  void start();
  // Withdraws nothing (the process is going away), cancels open streams and joins the thread.
  void stop();
  // Provides every advertised key again (the DHT just joined its network). Any thread.
  void readvertise();

  // LocalContent.
  std::optional<LocalBlob> find_blob(const content::Digest& digest) const override;
  std::shared_ptr<BodySource> open_blob(const content::Digest& digest,
                                        const content::ByteRange& range) override;
  std::optional<LocalTag> resolve_tag(std::string_view host, std::string_view repository,
                                      std::string_view tag) const override;

  bool connected() const { return connected_.load(); }
  struct Counts {
    size_t images = 0;
    size_t blobs = 0;
    size_t tags = 0;
    uint64_t scans = 0;
    size_t streams = 0;  // open ReadContent streams
  };
  Counts counts() const;

  struct TagRecord {
    LocalTag tag;
    std::chrono::system_clock::time_point updated_at;
  };
  struct Streams;

 private:
  void run();
  // False when containerd went away mid-scan.
  bool scan(bool reprovide_all);
  std::optional<std::string> manifest_bytes(const Descriptor& descriptor);
  void set_connected(bool connected);
  void wait_for(std::chrono::milliseconds delay);

  const StoreOptions options_;
  const Advertiser advertiser_;
  const std::function<void(bool)> on_connection_;
  const Logger logger_;
  Client client_;
  std::shared_ptr<Streams> streams_;

  std::thread thread_;
  std::mutex wake_mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;       // wake_mutex_
  bool rescan_wanted_ = false;  // wake_mutex_
  bool events_broken_ = false;  // wake_mutex_
  bool reprovide_wanted_ = false;
  std::atomic<bool> connected_{false};

  // The run thread only.
  std::map<std::string, std::string> manifests_;

  // The snapshot requests read.
  mutable std::mutex snapshot_mutex_;
  std::map<content::Digest, LocalBlob> blobs_;
  std::map<std::string, TagRecord, std::less<>> tags_;  // "host/repo:tag"
  std::set<NodeId> keys_;
  size_t images_ = 0;
  uint64_t scans_ = 0;
};

}  // namespace peerd::daemon::containerd
