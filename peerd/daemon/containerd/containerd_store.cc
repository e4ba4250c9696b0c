#include "peerd/daemon/containerd/containerd_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <deque>

#include "peerd/core/content/content_key.h"
#include "peerd/core/content/reference.h"

namespace peerd::daemon::containerd {

namespace {

constexpr size_t kStreamQueueMessages = 4;  // ReadContent messages (1 MiB each) buffered ahead of the socket
constexpr std::chrono::seconds kStreamsDrainWait{5};  // stop() waits this long for cancelled streams to end

// The file descriptor of a blob file, closed when the last region using it is sent.
struct OpenFile {
  int fd = -1;
  ~OpenFile() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

// Open ReadContent streams: counted against streams_max, cancelled on stop(), which waits for their pump
// threads to end (a pump may hold the HTTP session's last reference, which must not outlive the daemon's
// io_context).
struct Store::Streams {
  std::mutex mutex;
  std::condition_variable drained;
  std::map<std::shared_ptr<ContentReader>, std::weak_ptr<BodySource>> readers;
  bool stopped = false;
};

namespace {

// A range of a blob over a ReadContent stream: a detached pump thread reads ahead at most
// kStreamQueueMessages messages; the session takes them one at a time.
class StreamBody final : public BodySource, public std::enable_shared_from_this<StreamBody> {
 public:
  StreamBody(std::shared_ptr<ContentReader> reader, std::shared_ptr<Store::Streams> streams,
             uint64_t expected_bytes)
      : reader_(std::move(reader)), streams_(std::move(streams)), expected_(expected_bytes) {}

  void start() {
    std::thread([self = shared_from_this()] { self->pump(); }).detach();
  }

  void next(std::function<void(BodyChunk)> deliver) override {
    std::unique_lock lock(mutex_);
    if (queue_.empty() && !done_) {
      waiting_ = std::move(deliver);
      return;
    }
    BodyChunk chunk = take_locked();
    lock.unlock();
    room_.notify_one();
    deliver(std::move(chunk));
  }

  void cancel() override {
    {
      std::lock_guard lock(mutex_);
      cancelled_ = true;
      waiting_ = nullptr;
    }
    reader_->cancel();
    room_.notify_one();
  }

 private:
  BodyChunk take_locked() {
    if (!queue_.empty()) {
      std::string bytes = std::move(queue_.front());
      queue_.pop_front();
      return BodyChunk::data(std::move(bytes));
    }
    if (error_.empty()) return BodyChunk::end();
    return BodyChunk::failure(error_);
  }

  void pump() {
    uint64_t received = 0;
    for (;;) {
      {
        std::unique_lock lock(mutex_);
        room_.wait(lock, [&] { return cancelled_ || queue_.size() < kStreamQueueMessages; });
        if (cancelled_) break;
      }
      std::string bytes;
      const bool more = reader_->next(bytes);
      if (more && received + bytes.size() > expected_) bytes.resize(expected_ - received);
      received += bytes.size();
      std::function<void(BodyChunk)> deliver;
      BodyChunk chunk;
      {
        std::lock_guard lock(mutex_);
        if (!more || received >= expected_) {
          done_ = true;
          if (received < expected_) {
            error_ = "containerd stream ended early: " + std::to_string(received) + " of " +
                     std::to_string(expected_) + " bytes" +
                     (reader_->error().empty() ? "" : " (" + reader_->error() + ")");
          }
        }
        if (more && !bytes.empty()) queue_.push_back(std::move(bytes));
        if (waiting_ && (!queue_.empty() || done_)) {
          deliver = std::move(waiting_);
          waiting_ = nullptr;
          chunk = take_locked();
        }
      }
      if (deliver) deliver(std::move(chunk));
      std::lock_guard lock(mutex_);
      if (done_ || cancelled_) break;
    }
    if (received < expected_) reader_->cancel();
    std::lock_guard lock(streams_->mutex);
    streams_->readers.erase(reader_);
    streams_->drained.notify_all();
  }

  const std::shared_ptr<ContentReader> reader_;
  const std::shared_ptr<Store::Streams> streams_;
  const uint64_t expected_;
  std::mutex mutex_;
  std::condition_variable room_;
  std::deque<std::string> queue_;
  bool done_ = false;
  bool cancelled_ = false;
  std::string error_;
  std::function<void(BodyChunk)> waiting_;
};

}  // namespace

Store::Store(StoreOptions options, Advertiser advertiser, std::function<void(bool)> on_connection,
             Logger logger)
    : options_(std::move(options)),
      advertiser_(std::move(advertiser)),
      on_connection_(std::move(on_connection)),
      logger_(std::move(logger)),
      client_(options_.socket_path, options_.name_space, options_.call_timeout),
      streams_(std::make_shared<Streams>()) {}

Store::~Store() {
  stop();
}

void Store::start() {
  if (thread_.joinable()) return;
  thread_ = std::thread([this] { run(); });
}

void Store::stop() {
  {
    std::lock_guard lock(wake_mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  std::vector<std::shared_ptr<BodySource>> bodies;
  {
    std::lock_guard lock(streams_->mutex);
    streams_->stopped = true;
    for (const auto& [reader, body] : streams_->readers) {
      if (auto open = body.lock()) bodies.push_back(std::move(open));
      reader->cancel();
    }
  }
  for (const auto& body : bodies) body->cancel();  // also wakes a pump waiting for the session to read
  bodies.clear();
  {
    std::unique_lock lock(streams_->mutex);
    if (!streams_->drained.wait_for(lock, kStreamsDrainWait, [&] { return streams_->readers.empty(); })) {
      logger_.warn("containerd streams still open at stop", {{"streams", streams_->readers.size()}});
    }
  }
  if (thread_.joinable()) thread_.join();
}

void Store::readvertise() {
  {
    std::lock_guard lock(wake_mutex_);
    reprovide_wanted_ = true;
  }
  wake_.notify_all();
}

void Store::set_connected(bool connected) {
  if (connected_.exchange(connected) == connected) return;
  if (on_connection_) on_connection_(connected);
}

void Store::wait_for(std::chrono::milliseconds delay) {
  std::unique_lock lock(wake_mutex_);
  wake_.wait_for(lock, delay, [&] { return stopping_; });
}

void Store::run() {
  std::chrono::milliseconds backoff = options_.retry_min;
  uint64_t failures = 0;
  for (;;) {
    {
      std::lock_guard lock(wake_mutex_);
      if (stopping_) break;
    }
    if (!client_.connect(options_.connect_timeout)) {
      // The first failure and then every tenth: loud enough to see, quiet enough for a long outage.
      if (failures++ % 10 == 0) {
        logger_.warn("containerd not reachable, retrying",
                     {{"socket", options_.socket_path},
                      {"attempts", failures},
                      {"retry_ms", static_cast<int64_t>(backoff.count())}});
      }
      wait_for(backoff);
      backoff = std::min(backoff * 2, options_.retry_max);
      continue;
    }
    logger_.info("containerd connected",
                 {{"socket", options_.socket_path}, {"namespace", options_.name_space}, {"after", failures}});
    failures = 0;
    backoff = options_.retry_min;

    std::shared_ptr<EventStream> events = client_.subscribe("/images/");
    {
      std::lock_guard lock(wake_mutex_);
      events_broken_ = events == nullptr;
      rescan_wanted_ = false;
    }
    std::thread watcher;
    if (events) {
      watcher = std::thread([this, events] {
        std::string topic;
        while (events->next(topic)) {
          logger_.debug("containerd event", {{"topic", topic}});
          std::lock_guard lock(wake_mutex_);
          rescan_wanted_ = true;
          wake_.notify_all();
        }
        std::lock_guard lock(wake_mutex_);
        events_broken_ = true;
        wake_.notify_all();
      });
    }
    bool healthy = scan(true);
    if (healthy) set_connected(true);
    auto next_refresh = std::chrono::steady_clock::now() + options_.refresh_interval;
    while (healthy) {
      bool rescan = false;
      bool reprovide = false;
      {
        std::unique_lock lock(wake_mutex_);
        wake_.wait_until(lock, next_refresh,
                         [&] { return stopping_ || rescan_wanted_ || events_broken_ || reprovide_wanted_; });
        if (stopping_ || events_broken_) break;
        rescan = rescan_wanted_;
        reprovide = reprovide_wanted_ || std::chrono::steady_clock::now() >= next_refresh;
      }
      // Events come in bursts (a pull creates, then updates): one scan for the burst.
      if (rescan) wait_for(options_.event_debounce);
      {
        std::lock_guard lock(wake_mutex_);
        rescan_wanted_ = false;
        reprovide_wanted_ = false;
      }
      if (reprovide) next_refresh = std::chrono::steady_clock::now() + options_.refresh_interval;
      healthy = scan(reprovide);
    }
    if (events) events->cancel();
    if (watcher.joinable()) watcher.join();
    set_connected(false);
    std::lock_guard lock(wake_mutex_);
    if (stopping_) break;
    logger_.warn("containerd connection lost, reconnecting", {{"socket", options_.socket_path}});
  }
}

std::optional<std::string> Store::manifest_bytes(const Descriptor& descriptor) {
  if (auto it = manifests_.find(descriptor.digest); it != manifests_.end()) return it->second;
  auto bytes = client_.read_all(descriptor.digest, options_.manifest_bytes_max);
  if (!bytes) return std::nullopt;
  const auto digest = content::Digest::parse(descriptor.digest);
  if (!digest || content::Digest::of_bytes(*bytes) != *digest) return std::nullopt;
  if (manifests_.size() >= options_.manifests_cached_max) manifests_.clear();
  manifests_[descriptor.digest] = *bytes;
  return std::move(*bytes);
}

bool Store::scan(bool reprovide_all) {
  auto images = client_.list_images();
  if (!images) {
    logger_.warn("containerd: cannot list images", {{"error", images.error().message}});
    return images.error().kind != ClientError::Kind::kUnavailable;
  }
  std::map<content::Digest, LocalBlob> blobs;
  std::map<std::string, TagRecord, std::less<>> tags;
  size_t offered = 0;
  for (const Image& image : *images) {
    if (offered >= options_.images_max) {
      logger_.warn("containerd: too many images, the rest are not offered",
                   {{"images_max", options_.images_max}});
      break;
    }
    auto reference = content::parse_reference(image.name);
    if (!reference) continue;  // names that are not references (containerd allows any string)
    if (std::find(options_.hosts.begin(), options_.hosts.end(), reference->domain) == options_.hosts.end()) {
      continue;
    }
    ++offered;
    const Descriptor target{image.digest, image.media_type, image.size};
    const ImageBlobs walked = walk_image(
        target, options_.platform,
        [this](const Descriptor& descriptor) { return manifest_bytes(descriptor); }, options_.blobs_max);
    for (const auto& error : walked.errors) {
      logger_.debug("containerd: image partly offered", {{"image", image.name}, {"reason", error}});
    }
    for (const Descriptor& descriptor : walked.blobs) {
      if (blobs.size() >= options_.blobs_max) break;
      auto digest = content::Digest::parse(descriptor.digest);
      if (!digest || blobs.contains(*digest)) continue;
      auto info = client_.info(descriptor.digest);
      if (!info) {
        if (info.error().kind == ClientError::Kind::kUnavailable) return false;
        continue;  // not in the store (a layer discarded after unpacking, another platform)
      }
      if (info->size != descriptor.size) continue;  // not what the manifest names
      LocalBlob blob;
      blob.size = info->size;
      if (!descriptor.media_type.empty()) blob.media_type = descriptor.media_type;
      blobs.emplace(*digest, std::move(blob));
    }
    auto target_digest = content::Digest::parse(image.digest);
    if (options_.tag_ttl && !reference->tag.empty() && !reference->digest && target_digest &&
        blobs.contains(*target_digest)) {
      tags[reference->tag_key()] =
          TagRecord{LocalTag{image.digest, image.size, image.media_type}, image.updated_at};
    }
  }

  std::set<NodeId> keys;
  for (const auto& [digest, blob] : blobs) keys.insert(content::ContentId::blob(digest).dht_id());
  for (const auto& [key, tag] : tags) keys.insert(content::tag_dht_id(key));
  std::vector<NodeId> added;
  std::vector<NodeId> removed;
  {
    std::lock_guard lock(snapshot_mutex_);
    std::set_difference(keys.begin(), keys.end(), keys_.begin(), keys_.end(), std::back_inserter(added));
    std::set_difference(keys_.begin(), keys_.end(), keys.begin(), keys.end(), std::back_inserter(removed));
    blobs_ = std::move(blobs);
    tags_ = std::move(tags);
    keys_ = keys;
    images_ = offered;
    ++scans_;
  }
  // Withdrawn content is already gone from the snapshot, so this node answers 404 for it from now on.
  for (const NodeId& key : removed) advertiser_.withdraw(key);
  for (const NodeId& key : reprovide_all ? std::vector<NodeId>(keys.begin(), keys.end()) : added) {
    advertiser_.provide(key);
  }
  if (!added.empty() || !removed.empty() || reprovide_all) {
    const Counts now = counts();
    logger_.info("containerd content advertised", {{"images", now.images},
                                                   {"blobs", now.blobs},
                                                   {"tags", now.tags},
                                                   {"added", added.size()},
                                                   {"withdrawn", removed.size()},
                                                   {"reprovided", reprovide_all}});
  }
  return true;
}

Store::Counts Store::counts() const {
  Counts counts;
  {
    std::lock_guard lock(snapshot_mutex_);
    counts = Counts{images_, blobs_.size(), tags_.size(), scans_, 0};
  }
  std::lock_guard lock(streams_->mutex);
  counts.streams = streams_->readers.size();
  return counts;
}

std::optional<LocalBlob> Store::find_blob(const content::Digest& digest) const {
  std::lock_guard lock(snapshot_mutex_);
  auto it = blobs_.find(digest);
  if (it == blobs_.end()) return std::nullopt;
  return it->second;
}

std::shared_ptr<BodySource> Store::open_blob(const content::Digest& digest, const content::ByteRange& range) {
  auto blob = find_blob(digest);
  if (!blob || range.end() > blob->size) return nullptr;
  if (!options_.content_root.empty()) {
    // containerd writes blobs/sha256/<hex> once, complete and verified, by rename: a file of the right size
    // is the blob.
    const std::string path = options_.content_root + "/blobs/sha256/" + digest.hex();
    auto file = std::make_shared<OpenFile>();
    file->fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    struct stat status {};
    if (file->fd >= 0 && ::fstat(file->fd, &status) == 0 &&
        static_cast<uint64_t>(status.st_size) == blob->size) {
      if (range.length == 0) return std::make_shared<FileRegionsBodySource>(std::vector<FileRegion>{});
      return std::make_shared<FileRegionsBodySource>(
          std::vector<FileRegion>{FileRegion{file->fd, range.offset, range.length, file}});
    }
  }
  if (range.length == 0) return std::make_shared<FileRegionsBodySource>(std::vector<FileRegion>{});
  std::shared_ptr<ContentReader> reader;
  std::shared_ptr<StreamBody> body;
  {
    std::lock_guard lock(streams_->mutex);
    if (streams_->stopped || streams_->readers.size() >= options_.streams_max) return nullptr;
    reader = client_.read(digest.to_string(), range.offset, range.length);
    if (!reader) return nullptr;
    body = std::make_shared<StreamBody>(reader, streams_, range.length);
    streams_->readers.emplace(reader, body);
  }
  body->start();
  return body;
}

std::optional<LocalTag> Store::resolve_tag(std::string_view host, std::string_view repository,
                                           std::string_view tag) const {
  if (!options_.tag_ttl) return std::nullopt;
  const std::string key = std::string(host) + "/" + std::string(repository) + ":" + std::string(tag);
  std::lock_guard lock(snapshot_mutex_);
  auto it = tags_.find(key);
  if (it == tags_.end()) return std::nullopt;
  if (std::chrono::system_clock::now() - it->second.updated_at > *options_.tag_ttl) return std::nullopt;
  return it->second.tag;
}

}  // namespace peerd::daemon::containerd
