#include "peerd/daemon/engine_service.h"

#include <openssl/evp.h>

#include <algorithm>
#include <utility>

#include <boost/asio/post.hpp>

namespace peerd::daemon {

namespace net = boost::asio;
using content::ByteRange;
using content::ChunkKey;
using content::ContentId;

namespace {

// Bytes written to a chunk before the engine hears of them (it only needs progress for stall detection,
// hedging and streaming, so one input per 256 KiB keeps the strand free).
constexpr uint64_t kProgressBytes = 256 * 1024;
// Bytes gathered from the transfer before one write to the chunk file.
constexpr size_t kWriteBytes = 256 * 1024;

constexpr std::string_view kManifestAccept =
    "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.docker.distribution.manifest.v2+json, */*";

Response not_found(bool manifest, std::string_view why, const nlohmann::json& detail = nullptr) {
  return oci_error(http::status::not_found, manifest ? "MANIFEST_UNKNOWN" : "BLOB_UNKNOWN", why, detail);
}

// An item's head from a HEAD answer that has a Content-Length.
ContentHead head_of(const UpstreamHead& answer, const std::string& digest) {
  ContentHead head;
  head.content_bytes = *answer.content_length;
  head.digest = digest;
  const std::string type = answer.header("content-type");
  if (!type.empty()) head.media_type = type;
  return head;
}

transfer::FetchFailure failure_of(const UpstreamResult& result, bool from_peer) {
  switch (result.error) {
    case UpstreamError::kConnect:
      return from_peer ? transfer::FetchFailure::kUnreachable : transfer::FetchFailure::kUpstreamError;
    case UpstreamError::kOverloaded:
      return transfer::FetchFailure::kRefused;
    case UpstreamError::kNone:
      break;
    default:
      return from_peer ? transfer::FetchFailure::kBroken : transfer::FetchFailure::kUpstreamError;
  }
  if (!from_peer) return transfer::FetchFailure::kUpstreamError;
  if (result.head.status == 404) return transfer::FetchFailure::kMiss;
  if (result.head.status == 503 || result.head.status == 429) return transfer::FetchFailure::kRefused;
  return transfer::FetchFailure::kBroken;
}

}  // namespace

// ---- request state ----

struct EngineContentService::Wanted {
  ContentId content;
  Locator locator;
  std::string digest;  // Docker-Content-Digest, registry content only
  bool head = false;
  std::optional<content::RangeSpec> range;
  bool from_peer = false;
  PeerHints peer;
  std::string remote;
  Respond respond;
};

// Streams an engine read: file regions of pinned chunks as the engine reports bytes ready.
class EngineContentService::ReadBody final : public BodySource {
 public:
  ReadBody(DiskChunkStore& store, ContentId content, uint64_t content_bytes, uint64_t chunk_bytes,
           ByteRange range)
      : store_(store),
        content_(std::move(content)),
        content_bytes_(content_bytes),
        chunk_bytes_(chunk_bytes),
        range_(range) {}

  // Runs once, when the body ended, failed or was abandoned: releases the engine read.
  void set_release(std::function<void()> release) { release_ = std::move(release); }

  void next(std::function<void(BodyChunk)> deliver) override {
    std::unique_lock lock(mutex_);
    if (!can_produce_locked()) {
      waiting_ = std::move(deliver);
      return;
    }
    BodyChunk chunk = produce_locked();
    lock.unlock();
    finish_if_ended(chunk);
    deliver(std::move(chunk));
  }

  void cancel() override {
    {
      std::lock_guard lock(mutex_);
      waiting_ = nullptr;
      state_ = State::kFailed;
    }
    release_once();
  }

  void progress(uint64_t ready_bytes) {
    update([&] { ready_ = std::max(ready_, ready_bytes); });
  }
  void complete() {
    update([&] {
      ready_ = range_.length;
      if (state_ == State::kRunning) state_ = State::kComplete;
    });
  }
  void fail(std::string why) {
    update([&] {
      if (state_ != State::kRunning) return;
      state_ = State::kFailed;
      failure_ = std::move(why);
    });
  }
  uint64_t ready() const {
    std::lock_guard lock(mutex_);
    return ready_;
  }

  // Strand only.
  bool responded = false;
  Respond respond;
  ContentHead head;
  std::optional<ByteRange> response_range;
  ByteSource source = ByteSource::kCache;

 private:
  enum class State { kRunning, kComplete, kFailed };

  bool can_produce_locked() const { return sent_ < ready_ || state_ != State::kRunning; }

  BodyChunk produce_locked() {
    if (sent_ < ready_) {
      const uint64_t absolute = range_.offset + sent_;
      const uint64_t index = absolute / chunk_bytes_;
      const uint64_t offset_in_chunk = absolute - index * chunk_bytes_;
      const uint64_t chunk_length = std::min(chunk_bytes_, content_bytes_ - index * chunk_bytes_);
      const uint64_t take = std::min(chunk_length - offset_in_chunk, ready_ - sent_);
      auto handle = store_.open_for_read(ChunkKey{content_, index, chunk_bytes_});
      if (!handle || handle->length_bytes() < offset_in_chunk + take) {
        state_ = State::kFailed;
        return BodyChunk::failure("chunk " + std::to_string(index) + " left the cache mid-read");
      }
      sent_ += take;
      return BodyChunk::region(DiskChunkStore::region(handle, offset_in_chunk, take));
    }
    if (state_ == State::kComplete) return BodyChunk::end();
    return BodyChunk::failure(failure_.empty() ? "read abandoned" : failure_);
  }

  void finish_if_ended(const BodyChunk& chunk) {
    if (chunk.kind == BodyChunk::Kind::kEnd || chunk.kind == BodyChunk::Kind::kError) release_once();
  }

  template <typename Change>
  void update(Change change) {
    std::function<void(BodyChunk)> deliver;
    BodyChunk chunk;
    {
      std::lock_guard lock(mutex_);
      change();
      if (!waiting_ || !can_produce_locked()) return;
      deliver = std::move(waiting_);
      waiting_ = nullptr;
      chunk = produce_locked();
    }
    finish_if_ended(chunk);
    deliver(std::move(chunk));
  }

  void release_once() {
    if (released_.exchange(true)) return;
    if (release_) release_();
  }

  DiskChunkStore& store_;
  const ContentId content_;
  const uint64_t content_bytes_;
  const uint64_t chunk_bytes_;
  const ByteRange range_;
  mutable std::mutex mutex_;
  uint64_t ready_ = 0;
  uint64_t sent_ = 0;
  State state_ = State::kRunning;
  std::string failure_;
  std::function<void(BodyChunk)> waiting_;
  std::function<void()> release_;
  std::atomic<bool> released_{false};
};

// Answers a peer's chunk request: one file region once the engine has the chunk, then the end.
class EngineContentService::ServeBody final : public BodySource {
 public:
  ServeBody(DiskChunkStore& store, ChunkKey chunk, uint64_t offset_in_chunk, uint64_t length)
      : store_(store), chunk_(std::move(chunk)), offset_in_chunk_(offset_in_chunk), length_(length) {}

  void set_done(std::function<void(uint64_t bytes_sent)> done) { done_ = std::move(done); }

  void next(std::function<void(BodyChunk)> deliver) override {
    std::unique_lock lock(mutex_);
    if (state_ == State::kWaiting) {
      waiting_ = std::move(deliver);
      return;
    }
    BodyChunk chunk = produce_locked();
    lock.unlock();
    deliver(std::move(chunk));
  }
  void cancel() override {
    {
      std::lock_guard lock(mutex_);
      waiting_ = nullptr;
      if (state_ != State::kSent) state_ = State::kFailed;
    }
    finish(0);
  }

  // Strand: the engine has the chunk (pinned) or cannot get it.
  void ready() { resolve(State::kReady); }
  void miss() { resolve(State::kFailed); }

  // Strand only.
  bool responded = false;
  Respond respond;
  ContentHead head;
  ByteRange range;

 private:
  enum class State { kWaiting, kReady, kSent, kFailed };

  BodyChunk produce_locked() {
    switch (state_) {
      case State::kReady: {
        state_ = State::kSent;
        auto handle = store_.open_for_read(chunk_);
        if (!handle || handle->length_bytes() < offset_in_chunk_ + length_) {
          state_ = State::kFailed;
          return BodyChunk::failure("chunk left the cache");
        }
        return BodyChunk::region(DiskChunkStore::region(handle, offset_in_chunk_, length_));
      }
      case State::kSent:
        finish(length_);  // posts to the strand: safe under the lock
        return BodyChunk::end();
      default:
        finish(0);
        return BodyChunk::failure("the chunk could not be fetched");
    }
  }

  void resolve(State state) {
    std::function<void(BodyChunk)> deliver;
    BodyChunk chunk;
    {
      std::lock_guard lock(mutex_);
      if (state_ != State::kWaiting) return;
      state_ = state;
      if (!waiting_) return;
      deliver = std::move(waiting_);
      waiting_ = nullptr;
      chunk = produce_locked();
    }
    deliver(std::move(chunk));
  }

  void finish(uint64_t bytes) {
    if (finished_.exchange(true)) return;
    if (done_) done_(bytes);
  }

  DiskChunkStore& store_;
  const ChunkKey chunk_;
  const uint64_t offset_in_chunk_;
  const uint64_t length_;
  std::mutex mutex_;
  State state_ = State::kWaiting;
  std::function<void(BodyChunk)> waiting_;
  std::function<void(uint64_t)> done_;
  std::atomic<bool> finished_{false};
};

struct EngineContentService::Fetch {
  transfer::FetchId id;
  ChunkKey chunk;
  uint64_t begin = 0;  // in the chunk
  uint64_t end = 0;
  bool from_peer = false;
  std::atomic<bool> cancelled{false};
  // Transfer thread only.
  uint64_t skip = 0;      // bytes to drop first (an upstream that ignored Range answered 200)
  uint64_t received = 0;  // written into the chunk
  uint64_t reported = 0;  // told to the engine
  bool write_failed = false;
  bool lost_race = false;  // another fetch of the same chunk was writing it
  std::string buffered;    // received, not yet written
  uint64_t expected() const { return end - begin; }
};

// ---- construction ----

EngineContentService::EngineContentService(EngineServiceOptions options, CoreDriver& driver,
                                           DiskChunkStore& store, UpstreamClient& upstream,
                                           AllowedUpstreams& allowed, Logger logger, DaemonMetrics* metrics)
    : options_(options),
      driver_(driver),
      store_(store),
      upstream_(upstream),
      allowed_(allowed),
      logger_(std::move(logger)),
      metrics_(metrics),
      local_bytes_served_(
          metrics == nullptr ? nullptr
                             : &metrics->registry.counter("peerd_containerd_bytes_served_total",
                                                          "Bytes answered to peers from containerd's content "
                                                          "store (response lengths).")),
      workers_(options.worker_threads) {}

EngineContentService::~EngineContentService() {
  shutdown();
}

void EngineContentService::shutdown() {
  stopping_ = true;
  workers_.join();
}

// ---- requests ----

namespace {

// What mirror and file requests have alike.
template <typename ClientRequest>
void take_request_fields(EngineContentService::Wanted& wanted, ClientRequest& request, Respond respond) {
  wanted.locator.authorization = std::move(request.authorization);
  wanted.head = request.head;
  wanted.range = request.range;
  wanted.from_peer = request.from_peer;
  wanted.peer = std::move(request.peer);
  wanted.remote = std::move(request.remote);
  wanted.respond = std::move(respond);
}

}  // namespace

// Registries redirect blob downloads to storage hosts: in default mode those become allowed (for /blobs/ and
// fetch-through); with --allowed-upstreams only the listed hosts may be followed.
std::function<bool(std::string_view)> EngineContentService::upstream_redirect_policy() {
  return [this](std::string_view url) {
    if (allowed_.explicit_mode()) return allowed_.allows_url(url);
    if (auto authority = parse_url_authority(url)) allowed_.learn_redirect_host(authority->host);
    return true;
  };
}

void EngineContentService::serve_mirror(MirrorRequest request, Respond respond) {
  const bool manifest = request.route.kind == content::MirrorRouteKind::kManifest;
  // Peers first get what containerd's content store holds (images on this node), then the cache.
  if (request.from_peer && local_ != nullptr && serve_local(request, respond)) return;
  if (!request.route.digest) {
    // A tag: mutable, so it is resolved at the upstream; peers answer only from their local images and only
    // under their --resolve-tags policy (serve_local above); never from the cache.
    if (request.from_peer) {
      return respond(not_found(true, "tags are not resolved for peers", {{"reference", request.route.tag}}));
    }
    return pass_manifest_through(std::move(request), std::move(respond));
  }
  auto wanted = std::make_shared<Wanted>();
  wanted->content = ContentId::blob(*request.route.digest);
  wanted->digest = request.route.digest->to_string();
  const std::string kind = manifest ? "/manifests/" : "/blobs/";
  wanted->locator.upstream_url =
      request.upstream_base_url + "/v2/" + request.repository.path + kind + wanted->digest;
  wanted->locator.peer_target =
      "/v2/" + request.route.name + kind + wanted->digest + "?ns=" + request.repository.domain;
  wanted->locator.manifest = manifest;
  take_request_fields(*wanted, request, std::move(respond));
  driver_.run([this, wanted](transfer::Engine&, Instant) { start(wanted); });
}

void EngineContentService::serve_file(FileRequest request, Respond respond) {
  auto wanted = std::make_shared<Wanted>();
  wanted->content = request.url.content_id();
  wanted->locator.upstream_url = request.url.url();
  wanted->locator.peer_target = "/blobs/" + request.url.url();
  take_request_fields(*wanted, request, std::move(respond));
  driver_.run([this, wanted](transfer::Engine&, Instant) { start(wanted); });
}

void EngineContentService::start(std::shared_ptr<Wanted> wanted) {
  Locator& locator = locators_[wanted->content];
  const std::string authorization = locator.authorization;
  locator = wanted->locator;
  // A peer never brings credentials; keep the last client's for this node's own upstream fetches.
  if (wanted->from_peer) locator.authorization = authorization;

  if (wanted->from_peer && !wanted->head && wanted->range && wanted->peer.content_bytes) {
    return serve_chunk(wanted);
  }
  if (wanted->from_peer && !wanted->head) {
    return wanted->respond(
        oci_error(http::status::bad_request, "BAD_REQUEST",
                  "a peer GET names one chunk: Range and " + std::string(kPeerContentLengthHeader)));
  }
  if (auto head = known_head(wanted->content)) return with_head(wanted, *head);
  if (wanted->from_peer) {
    // Loop guard: a peer asking for what this node does not know is not sent on to further peers.
    return wanted->respond(not_found(wanted->locator.manifest, "not known to this peer"));
  }
  driver_.find_providers(wanted->content.dht_id(), [this, wanted](std::vector<transfer::Peer> providers) {
    resolve_head(wanted, 0, std::move(providers));
  });
}

// The item's size from a holder (HEAD with the peer header), trying up to peer_heads_max of them, then from
// the upstream.
void EngineContentService::resolve_head(std::shared_ptr<Wanted> wanted, size_t providers_tried,
                                        std::vector<transfer::Peer> providers) {
  if (auto head = known_head(wanted->content)) return with_head(wanted, *head);
  if (providers_tried >= std::min(providers.size(), options_.peer_heads_max) || stopping_) {
    return head_from_upstream(wanted);
  }
  const transfer::Peer peer = providers[providers_tried];
  UpstreamRequest request;
  request.method = UpstreamMethod::kHead;
  request.url =
      std::string(upstream_.peer_scheme()) + "://" + peer.endpoint.to_string() + wanted->locator.peer_target;
  request.to_peer = true;
  request.headers = {{std::string(kPeerRequestHeader), driver_.self().id.to_hex()}};
  request.retries_max = 0;
  request.connect_timeout = options_.peer_connect_timeout;
  request.total_timeout = options_.peer_head_timeout;
  request.allow_redirect = [](std::string_view) { return false; };
  upstream_.start(std::move(request), [this, wanted, providers_tried,
                                       providers = std::move(providers)](UpstreamResult result) mutable {
    driver_.run([this, wanted, providers_tried, providers = std::move(providers), result = std::move(result)](
                    transfer::Engine&, Instant) mutable {
      if (result.ok() && result.head.content_length && *result.head.content_length > 0) {
        const ContentHead head = head_of(result.head, wanted->digest);
        remember_head(wanted->content, head);
        return with_head(wanted, head);
      }
      resolve_head(wanted, providers_tried + 1, std::move(providers));
    });
  });
}

void EngineContentService::head_from_upstream(std::shared_ptr<Wanted> wanted) {
  UpstreamRequest request;
  request.method = UpstreamMethod::kHead;
  request.url = wanted->locator.upstream_url;
  request.authorization = wanted->locator.authorization;
  if (wanted->locator.manifest) request.headers = {{"Accept", std::string(kManifestAccept)}};
  request.allow_redirect = upstream_redirect_policy();
  upstream_.start(std::move(request), [this, wanted](UpstreamResult result) {
    driver_.run([this, wanted, result = std::move(result)](transfer::Engine&, Instant) {
      if (!result.ok() || !result.head.content_length || *result.head.content_length == 0) {
        logger_.info("neither peers nor upstream can serve",
                     {{"content", wanted->content.key_string().substr(0, 80)},
                      {"upstream_status", result.head.status},
                      {"error", std::string(describe(result.error))}});
        return wanted->respond(not_found(wanted->locator.manifest, "neither peers nor the upstream have it",
                                         {{"upstream_status", result.head.status}}));
      }
      const ContentHead head = head_of(result.head, wanted->digest);
      remember_head(wanted->content, head);
      with_head(wanted, head);
    });
  });
}

void EngineContentService::with_head(std::shared_ptr<Wanted> wanted, const ContentHead& head) {
  std::optional<ByteRange> range;
  if (wanted->range) {
    auto resolved = content::resolve_range(*wanted->range, head.content_bytes);
    if (!resolved) return wanted->respond(range_not_satisfiable(head.content_bytes));
    range = *resolved;
  }
  if (wanted->head) return wanted->respond(content_response(head, range, nullptr, ByteSource::kCache));
  const ByteRange whole{0, head.content_bytes};
  start_read(wanted, head, range.value_or(whole), !range.has_value());
}

void EngineContentService::start_read(std::shared_ptr<Wanted> wanted, const ContentHead& head,
                                      const ByteRange& range, bool whole) {
  driver_.run([this, wanted, head, range, whole](transfer::Engine& engine, Instant now) {
    const auto before = engine.stats();
    auto read = engine.read(now, transfer::ContentRef{wanted->content, head.content_bytes, true},
                            range.offset, range.length);
    if (!read) {
      logger_.warn("read refused", {{"error", std::string(transfer::describe(read.error()))}});
      const bool busy = read.error() == transfer::ReadError::kTooManyReads ||
                        read.error() == transfer::ReadError::kTooManyContents;
      return wanted->respond(busy ? oci_error(http::status::service_unavailable, "TOOMANYREQUESTS",
                                              transfer::describe(read.error()))
                                  : not_found(wanted->locator.manifest, transfer::describe(read.error())));
    }
    auto body =
        std::make_shared<ReadBody>(store_, wanted->content, head.content_bytes, options_.chunk_bytes, range);
    const transfer::ReadId id = *read;
    body->set_release([this, id] {
      driver_.run([this, id](transfer::Engine& later_engine, Instant later) {
        reads_.erase(id);
        later_engine.release_read(later, id);
      });
    });
    body->respond = std::move(wanted->respond);
    body->head = head;
    if (!whole) body->response_range = range;
    // Events for this read may already be queued; they are delivered after this returns (same flush).
    body->source =
        engine.stats().bytes_from_cache > before.bytes_from_cache ? ByteSource::kCache : ByteSource::kPeer;
    reads_[id] = std::move(body);
  });
}

void EngineContentService::serve_chunk(std::shared_ptr<Wanted> wanted) {
  const uint64_t content_bytes = *wanted->peer.content_bytes;
  auto resolved = content::resolve_range(*wanted->range, content_bytes);
  if (!resolved) return wanted->respond(range_not_satisfiable(content_bytes));
  const ByteRange range = *resolved;
  const uint64_t index = range.offset / options_.chunk_bytes;
  const uint64_t chunk_end = std::min((index + 1) * options_.chunk_bytes, content_bytes);
  if (range.end() > chunk_end) {
    return wanted->respond(oci_error(http::status::bad_request, "RANGE_INVALID",
                                     "a peer request must stay inside one chunk",
                                     {{"chunk_bytes", options_.chunk_bytes}}));
  }
  if (!known_head(wanted->content)) {
    // Only for the digest check of chunks fetched for peers; never answered to a HEAD (a peer might lie).
    if (size_hints_.size() >= options_.heads_known_max) size_hints_.erase(size_hints_.begin());
    size_hints_[wanted->content] = content_bytes;
  }
  ChunkKey chunk{wanted->content, index, options_.chunk_bytes};
  transfer::ServeRequest request;
  request.from.id = wanted->peer.node_id_hex.empty() ? NodeId::hash_of(wanted->remote)
                                                     : NodeId::hash_of(wanted->peer.node_id_hex);
  if (auto endpoint = Endpoint::parse(wanted->remote)) request.from.endpoint = *endpoint;
  request.chunk = chunk;
  request.content_bytes = content_bytes;
  request.fetch_through = wanted->peer.fetch_through;

  driver_.run([this, wanted, request, range](transfer::Engine& engine, Instant now) {
    auto serve = engine.serve(now, request);
    if (!serve) {
      const bool busy = serve.error() == transfer::ServeError::kTooManyServes;
      return wanted->respond(oci_error(busy ? http::status::service_unavailable : http::status::bad_request,
                                       busy ? "TOOMANYREQUESTS" : "BAD_REQUEST",
                                       transfer::describe(serve.error())));
    }
    const transfer::ServeId id = *serve;
    auto body = std::make_shared<ServeBody>(store_, request.chunk, range.offset - request.chunk.offset(),
                                            range.length);
    body->set_done([this, id](uint64_t bytes_sent) {
      driver_.run([this, id, bytes_sent](transfer::Engine& later_engine, Instant later) {
        serves_.erase(id);
        later_engine.serve_done(later, id, bytes_sent);
      });
    });
    body->respond = std::move(wanted->respond);
    body->head = ContentHead{request.content_bytes, "application/octet-stream", wanted->digest};
    body->range = range;
    serves_[id] = std::move(body);
  });
}

bool EngineContentService::serve_local(MirrorRequest& request, Respond& respond) {
  std::optional<content::Digest> digest = request.route.digest;
  std::optional<LocalBlob> blob;
  if (!digest) {
    const auto tag =
        local_->resolve_tag(request.repository.domain, request.repository.path, request.route.tag);
    if (!tag) return false;
    auto parsed = content::Digest::parse(tag->digest);
    if (!parsed) return false;
    digest = *parsed;
    blob = LocalBlob{tag->size, tag->media_type};
  }
  if (auto found = local_->find_blob(*digest)) {
    if (!blob || blob->media_type.empty()) blob = *found;
    blob->size = found->size;
  } else {
    return false;
  }
  const ContentHead head{blob->size, blob->media_type, digest->to_string()};
  std::optional<ByteRange> range;
  if (request.range) {
    auto resolved = content::resolve_range(*request.range, head.content_bytes);
    if (!resolved) {
      respond(range_not_satisfiable(head.content_bytes));
      return true;
    }
    range = *resolved;
  }
  if (request.head) {
    respond(content_response(head, range, nullptr, ByteSource::kCache));
    return true;
  }
  auto body = local_->open_blob(*digest, range.value_or(ByteRange{0, head.content_bytes}));
  if (!body) return false;  // not readable now: the cache may still have it
  if (local_bytes_served_ != nullptr) local_bytes_served_->inc(range ? range->length : head.content_bytes);
  respond(content_response(head, range, std::move(body), ByteSource::kCache));
  return true;
}

// Manifests by tag: one upstream request, answered as the upstream answered (the digest header is what
// containerd pulls next, by digest, through the engine).
void EngineContentService::pass_manifest_through(MirrorRequest request, Respond respond) {
  struct Collected {
    std::string body;
    bool too_large = false;
  };
  auto collected = std::make_shared<Collected>();
  UpstreamRequest upstream_request;
  upstream_request.method = request.head ? UpstreamMethod::kHead : UpstreamMethod::kGet;
  upstream_request.url =
      request.upstream_base_url + "/v2/" + request.repository.path + "/manifests/" + request.route.tag;
  upstream_request.headers = {
      {"Accept", request.accept.empty() ? std::string(kManifestAccept) : request.accept}};
  upstream_request.authorization = request.authorization;
  const size_t limit = options_.manifest_bytes_max;
  upstream_request.on_body = [collected, limit](std::string_view bytes) {
    if (collected->body.size() + bytes.size() > limit) {
      collected->too_large = true;
      return false;
    }
    collected->body.append(bytes);
    return true;
  };
  const std::string reference = request.route.tag;
  const std::string name = request.repository.name();
  const std::string domain = request.repository.domain;
  const std::string route_name = request.route.name;
  const std::string base = request.upstream_base_url;
  const std::string path = request.repository.path;
  const bool head_only = request.head;
  upstream_.start(
      std::move(upstream_request), [this, collected, respond = std::move(respond), reference, name, domain,
                                    route_name, base, path, head_only](UpstreamResult result) {
        if (!result.ok() || collected->too_large) {
          logger_.info("tag not resolved upstream", {{"name", name},
                                                     {"reference", reference},
                                                     {"upstream_status", result.head.status},
                                                     {"error", std::string(describe(result.error))}});
          // An unreachable or failing registry (not one that says no): the nodes holding the tag may answer.
          const bool upstream_down =
              result.error != UpstreamError::kNone || result.head.status >= 500 || result.head.status == 429;
          if (options_.resolve_tags_from_peers && upstream_down && !collected->too_large) {
            return resolve_tag_from_peers(TagQuery{route_name, domain, path, reference, head_only}, respond);
          }
          return respond(
              not_found(true, "the upstream did not resolve the tag",
                        {{"name", name}, {"reference", reference}, {"upstream_status", result.head.status}}));
        }
        ContentHead head;
        head.media_type = result.head.header("content-type");
        if (head.media_type.empty()) head.media_type = "application/vnd.oci.image.manifest.v1+json";
        head.digest = result.head.header("docker-content-digest");
        if (!head_only) {
          head.content_bytes = collected->body.size();
          if (head.digest.empty()) head.digest = content::Digest::of_bytes(collected->body).to_string();
        } else {
          head.content_bytes = result.head.content_length.value_or(0);
        }
        if (auto digest = content::Digest::parse(head.digest); digest && head.content_bytes > 0) {
          // containerd asks for this digest next: remember how to reach it and its head.
          const ContentId content = ContentId::blob(*digest);
          remember_head(content, head);
          driver_.run([this, content, base, path, route_name, domain, digest = head.digest](transfer::Engine&,
                                                                                            Instant) {
            Locator& locator = locators_[content];
            locator.upstream_url = base + "/v2/" + path + "/manifests/" + digest;
            locator.peer_target = "/v2/" + route_name + "/manifests/" + digest + "?ns=" + domain;
            locator.manifest = true;
          });
        }
        Response response = content_response(head, std::nullopt, nullptr, ByteSource::kUpstream);
        if (!head_only) {
          response.message.body() = std::move(collected->body);
          response.body_bytes.reset();
        }
        respond(std::move(response));
      });
}

void EngineContentService::resolve_tag_from_peers(TagQuery query, Respond respond) {
  auto shared = std::make_shared<const TagQuery>(std::move(query));
  const NodeId key = content::tag_dht_id(shared->domain + "/" + shared->path + ":" + shared->tag);
  driver_.find_providers(key,
                         [this, shared, respond = std::move(respond)](std::vector<transfer::Peer> providers) {
                           ask_tag_provider(shared, respond, 0, std::move(providers));
                         });
}

// GET (or HEAD) of the tag at one provider; the answer is taken only when its bytes match its
// Docker-Content-Digest (a GET) and it names a digest at all.
void EngineContentService::ask_tag_provider(std::shared_ptr<const TagQuery> query, Respond respond,
                                            size_t tried, std::vector<transfer::Peer> providers) {
  if (tried >= std::min(providers.size(), options_.peer_heads_max) || stopping_) {
    logger_.info("tag not resolved by peers", {{"name", query->domain + "/" + query->path},
                                               {"reference", query->tag},
                                               {"providers", providers.size()}});
    return respond(not_found(true, "neither the upstream nor peers resolved the tag",
                             {{"reference", query->tag}, {"providers", providers.size()}}));
  }
  const transfer::Peer peer = providers[tried];
  struct Collected {
    std::string body;
    bool too_large = false;
  };
  auto collected = std::make_shared<Collected>();
  UpstreamRequest request;
  request.method = query->head ? UpstreamMethod::kHead : UpstreamMethod::kGet;
  request.url = std::string(upstream_.peer_scheme()) + "://" + peer.endpoint.to_string() + "/v2/" +
                query->route_name + "/manifests/" + query->tag + "?ns=" + query->domain;
  request.to_peer = true;
  request.headers = {{std::string(kPeerRequestHeader), driver_.self().id.to_hex()},
                     {"Accept", std::string(kManifestAccept)}};
  request.retries_max = 0;
  request.connect_timeout = options_.peer_connect_timeout;
  request.total_timeout = options_.peer_head_timeout;
  request.allow_redirect = [](std::string_view) { return false; };
  const size_t limit = options_.manifest_bytes_max;
  request.on_body = [collected, limit](std::string_view bytes) {
    if (collected->body.size() + bytes.size() > limit) {
      collected->too_large = true;
      return false;
    }
    collected->body.append(bytes);
    return true;
  };
  upstream_.start(std::move(request), [this, query, respond, tried, collected,
                                       providers = std::move(providers)](UpstreamResult result) mutable {
    ContentHead head;
    head.media_type = result.head.header("content-type");
    head.digest = result.head.header("docker-content-digest");
    const auto digest = content::Digest::parse(head.digest);
    bool good = result.ok() && result.head.status == 200 && digest && !collected->too_large;
    if (good && !query->head) {
      good = content::Digest::of_bytes(collected->body) == *digest;
      head.content_bytes = collected->body.size();
    } else if (good) {
      head.content_bytes = result.head.content_length.value_or(0);
      good = head.content_bytes > 0;
    }
    if (!good) {
      return driver_.run([this, query, respond, tried, providers = std::move(providers)](transfer::Engine&,
                                                                                         Instant) mutable {
        ask_tag_provider(query, respond, tried + 1, std::move(providers));
      });
    }
    logger_.info("tag resolved by a peer", {{"name", query->domain + "/" + query->path},
                                            {"reference", query->tag},
                                            {"digest", head.digest},
                                            {"peer", providers[tried].endpoint.to_string()}});
    if (head.media_type.empty()) head.media_type = "application/vnd.oci.image.manifest.v1+json";
    Response response = content_response(head, std::nullopt, nullptr, ByteSource::kPeer);
    if (!query->head) {
      response.message.body() = std::move(collected->body);
      response.body_bytes.reset();
    }
    respond(std::move(response));
  });
}

void EngineContentService::remember_head(const ContentId& content, const ContentHead& head) {
  std::lock_guard lock(heads_mutex_);
  if (heads_.size() >= options_.heads_known_max && !heads_.contains(content)) heads_.erase(heads_.begin());
  heads_[content] = head;
}

std::optional<ContentHead> EngineContentService::known_head(const ContentId& content) const {
  std::lock_guard lock(heads_mutex_);
  auto it = heads_.find(content);
  if (it == heads_.end()) return std::nullopt;
  return it->second;
}

// ---- engine outputs ----

void EngineContentService::on_action(transfer::Action action) {
  if (auto* start = std::get_if<transfer::StartFetch>(&action)) return start_fetch(*start);
  if (auto* cancel = std::get_if<transfer::CancelFetch>(&action)) {
    auto it = fetches_.find(cancel->fetch);
    if (it == fetches_.end()) return;
    it->second->cancelled = true;
    fetches_.erase(it);
    return;
  }
  if (auto* verify_content = std::get_if<transfer::VerifyContent>(&action))
    return verify(verify_content->content);
}

namespace {

// The response headers of a read go out once, with its first ready bytes (or its completion).
void answer_read(const std::shared_ptr<EngineContentService::ReadBody>& body) {
  if (body->responded) return;
  body->responded = true;
  body->respond(content_response(body->head, body->response_range, body, body->source));
}

}  // namespace

void EngineContentService::on_event(transfer::Event event) {
  if (auto* progress = std::get_if<transfer::ReadProgress>(&event)) {
    auto it = reads_.find(progress->read);
    if (it == reads_.end()) return;
    auto& body = it->second;
    body->progress(progress->ready_bytes);
    if (progress->ready_bytes > 0) answer_read(body);
    return;
  }
  if (auto* complete = std::get_if<transfer::ReadComplete>(&event)) {
    auto it = reads_.find(complete->read);
    if (it == reads_.end()) return;
    auto body = it->second;
    body->complete();
    answer_read(body);
    return;
  }
  if (auto* failed = std::get_if<transfer::ReadFailed>(&event)) {
    auto it = reads_.find(failed->read);
    if (it == reads_.end()) return;
    auto body = it->second;
    const std::string why(transfer::describe(failed->reason));
    logger_.warn("read failed", {{"reason", why}});
    if (!body->responded) {
      // Nothing sent yet: a 404 sends containerd to its next host.
      body->responded = true;
      body->respond(not_found(false, why));
      body->cancel();  // releases the read
    } else {
      body->fail(why);
    }
    return;
  }
  if (auto* ready = std::get_if<transfer::ServeReady>(&event)) {
    auto it = serves_.find(ready->serve);
    if (it == serves_.end()) return;
    auto body = it->second;
    body->ready();
    if (!body->responded) {
      body->responded = true;
      body->respond(content_response(body->head, body->range, body, ByteSource::kCache));
    }
    return;
  }
  if (auto* pending = std::get_if<transfer::ServePending>(&event)) {
    auto it = serves_.find(pending->serve);
    if (it == serves_.end() || it->second->responded) return;
    auto body = it->second;
    body->responded = true;
    body->respond(content_response(body->head, body->range, body, ByteSource::kUpstream));
    return;
  }
  if (auto* miss = std::get_if<transfer::ServeMiss>(&event)) {
    auto it = serves_.find(miss->serve);
    if (it == serves_.end()) return;
    auto body = it->second;
    serves_.erase(it);
    if (!body->responded) {
      body->responded = true;
      body->respond(not_found(false, "this peer does not hold the chunk"));
    } else {
      body->miss();
    }
    return;
  }
  if (auto* integrity = std::get_if<transfer::IntegrityFailure>(&event)) {
    logger_.warn("content failed its digest check, repairing",
                 {{"content", integrity->content.key_string().substr(0, 80)},
                  {"round", integrity->round},
                  {"suppliers", integrity->suppliers.size()}});
    // Bytes already streamed may be wrong: abort those responses (the client retries and gets repaired data).
    for (auto& [id, body] : reads_) {
      if (body->responded && body->ready() > 0 && body->head.digest == integrity->content.key_string()) {
        body->fail("content failed its digest check");
      }
    }
    return;
  }
  if (auto* banned = std::get_if<transfer::PeerBanned>(&event)) {
    logger_.warn("peer banned", {{"peer", banned->peer.endpoint.to_string()},
                                 {"reason", std::string(transfer::describe(banned->reason))}});
    return;
  }
  if (auto* verified = std::get_if<transfer::ContentVerified>(&event)) {
    logger_.debug("content verified", {{"content", verified->content.key_string().substr(0, 80)}});
  }
}

// ---- fetches ----

void EngineContentService::start_fetch(const transfer::StartFetch& start) {
  auto fetch = std::make_shared<Fetch>();
  fetch->id = start.fetch;
  fetch->chunk = start.chunk;
  fetch->begin = start.begin_in_chunk;
  fetch->end = start.end_in_chunk;
  fetch->from_peer = !start.source.is_upstream();
  fetches_[start.fetch] = fetch;

  auto locator = locators_.find(start.chunk.content);
  if (locator == locators_.end()) {
    // Only content some request named gets fetched, so this is an engine/adapter mismatch: fail the fetch.
    logger_.error("fetch of content with no locator", {{"content", start.chunk.content.key_string()}});
    driver_.run([fetch](transfer::Engine& engine, Instant now) {
      engine.handle_fetch_failed(now, fetch->id, transfer::FetchFailure::kUpstreamError);
    });
    return;
  }
  UpstreamRequest request;
  request.method = UpstreamMethod::kGet;
  request.range = content::OpenByteRange{start.chunk.offset() + start.begin_in_chunk,
                                         start.end_in_chunk - start.begin_in_chunk};
  if (fetch->from_peer) {
    request.url = std::string(upstream_.peer_scheme()) + "://" + start.source.peer.endpoint.to_string() +
                  locator->second.peer_target;
    request.to_peer = true;
    request.headers = {{std::string(kPeerRequestHeader), driver_.self().id.to_hex()},
                       {std::string(kPeerContentLengthHeader), std::to_string(start.content_bytes)}};
    if (start.fetch_through) request.headers.emplace_back(std::string(kPeerFetchThroughHeader), "1");
    request.retries_max = 0;  // the engine picks another source instead
    request.connect_timeout = options_.peer_connect_timeout;
    request.allow_redirect = [](std::string_view) { return false; };
  } else {
    request.url = locator->second.upstream_url;
    request.authorization = locator->second.authorization;
    if (locator->second.manifest) request.headers = {{"Accept", std::string(kManifestAccept)}};
    request.allow_redirect = upstream_redirect_policy();
  }
  request.on_head = [this, fetch](const UpstreamHead& head) {
    if (fetch->cancelled) return false;
    if (head.status == 200) {
      // The server ignored Range and sends the whole item: drop the bytes before the range.
      if (fetch->from_peer) return false;
      fetch->skip = fetch->chunk.offset() + fetch->begin;
    }
    driver_.run([fetch](transfer::Engine& engine, Instant now) {
      if (!fetch->cancelled) engine.handle_fetch_data(now, fetch->id, 0);
    });
    return true;
  };
  request.on_body = [this, fetch](std::string_view bytes) {
    if (fetch->cancelled) return false;
    if (fetch->skip > 0) {
      const uint64_t drop = std::min<uint64_t>(fetch->skip, bytes.size());
      fetch->skip -= drop;
      bytes.remove_prefix(drop);
    }
    const uint64_t room = fetch->expected() - fetch->received - fetch->buffered.size();
    const bool overflow = bytes.size() > room;
    if (overflow) bytes = bytes.substr(0, room);
    if (!bytes.empty()) {
      // One writer per chunk: a hedge and its original may both deliver before the engine cancels the loser.
      auto [writer, claimed] = chunk_writers_.try_emplace(fetch->chunk, fetch.get());
      if (!claimed && writer->second != fetch.get()) {
        fetch->lost_race = true;
        return false;
      }
      // libcurl hands over 16 KiB at a time: batch the disk writes.
      fetch->buffered.append(bytes);
      if (fetch->buffered.size() >= kWriteBytes && !flush_fetch_buffer(*fetch)) return false;
    }
    if (fetch->received - fetch->reported >= kProgressBytes && fetch->received < fetch->expected()) {
      const uint64_t delta = fetch->received - fetch->reported;
      fetch->reported = fetch->received;
      driver_.run([fetch, delta](transfer::Engine& engine, Instant now) {
        if (!fetch->cancelled) engine.handle_fetch_data(now, fetch->id, delta);
      });
    }
    // A whole-item answer to a range request: stop once the range is in.
    return fetch->received + fetch->buffered.size() < fetch->expected() || !overflow;
  };
  upstream_.start(std::move(request),
                  [this, fetch](UpstreamResult result) { finish_fetch(fetch, std::move(result)); });
}

bool EngineContentService::flush_fetch_buffer(Fetch& fetch) {
  if (fetch.buffered.empty()) return true;
  auto written = store_.write_at(fetch.chunk, fetch.begin + fetch.received, fetch.buffered);
  if (!written) {
    fetch.write_failed = true;
    logger_.warn("chunk write failed", {{"error", std::string(describe(written.error()))}});
    return false;
  }
  fetch.received += fetch.buffered.size();
  if (metrics_) {
    metrics_->bytes_fetched(fetch.from_peer ? ByteSource::kPeer : ByteSource::kUpstream)
        .inc(fetch.buffered.size());
  }
  fetch.buffered.clear();
  return true;
}

void EngineContentService::finish_fetch(const std::shared_ptr<Fetch>& fetch, UpstreamResult result) {
  if (!fetch->cancelled && !fetch->lost_race && !fetch->write_failed) flush_fetch_buffer(*fetch);
  if (auto writer = chunk_writers_.find(fetch->chunk);
      writer != chunk_writers_.end() && writer->second == fetch.get()) {
    chunk_writers_.erase(writer);
  }
  if (fetch->cancelled) return;
  const uint64_t delta = fetch->received - fetch->reported;
  fetch->reported = fetch->received;
  if (fetch->received == fetch->expected() && !fetch->write_failed) {
    // Durable and fingerprinted off the strand (fdatasync), then complete.
    net::post(workers_, [this, fetch, delta] {
      const auto sealed = store_.seal(fetch->chunk);
      const auto fingerprint = store_.fingerprint(fetch->chunk);
      driver_.run([this, fetch, delta, sealed, fingerprint](transfer::Engine& engine, Instant now) {
        fetches_.erase(fetch->id);
        if (fetch->cancelled) return;
        if (delta > 0) engine.handle_fetch_data(now, fetch->id, delta);
        if (sealed != transfer::StoreStatus::kOk || !fingerprint) {
          return engine.handle_fetch_failed(now, fetch->id, transfer::FetchFailure::kBroken);
        }
        engine.handle_fetch_complete(now, fetch->id, *fingerprint);
      });
    });
    return;
  }
  transfer::FetchFailure failure = failure_of(result, fetch->from_peer);
  if (result.ok())
    failure = fetch->from_peer ? transfer::FetchFailure::kBroken : transfer::FetchFailure::kUpstreamError;
  if (fetch->lost_race) failure = transfer::FetchFailure::kRefused;  // not the source's fault
  if (!fetch->from_peer && result.head.status == 401) {
    logger_.warn("upstream refused credentials", {{"url", result.final_url_redacted}});
  }
  driver_.run([this, fetch, delta, failure](transfer::Engine& engine, Instant now) {
    fetches_.erase(fetch->id);
    if (fetch->cancelled) return;
    if (delta > 0) engine.handle_fetch_data(now, fetch->id, delta);
    engine.handle_fetch_failed(now, fetch->id, failure);
  });
}

// Hashes the item's chunks in order on a worker (sha256 at disk speed, off the strand).
void EngineContentService::verify(const ContentId& content) {
  std::optional<uint64_t> size;
  if (const auto head = known_head(content)) size = head->content_bytes;
  if (auto hint = size_hints_.find(content); !size && hint != size_hints_.end()) size = hint->second;
  const auto* digest = std::get_if<content::Digest>(&content.id);
  if (!size || !digest) {
    // The engine only verifies items some request sized, so this is an adapter bug; say so and let it pass
    // rather than hang the reads waiting for the answer.
    logger_.error("verification skipped: size unknown", {{"content", content.key_string().substr(0, 80)}});
    return driver_.run([content](transfer::Engine& engine, Instant now) {
      engine.handle_verify_result(now, content, true);
    });
  }
  const uint64_t chunk_bytes = options_.chunk_bytes;
  const content::Digest expected = *digest;
  net::post(workers_, [this, content, size = *size, chunk_bytes, expected] {
    EVP_MD_CTX* context = EVP_MD_CTX_new();
    bool ok = context != nullptr && EVP_DigestInit_ex(context, EVP_sha256(), nullptr) == 1;
    std::string buffer;
    const uint64_t count = content::chunk_count(size, chunk_bytes);
    for (uint64_t index = 0; ok && index < count && !stopping_; ++index) {
      auto handle = store_.open_for_read(ChunkKey{content, index, chunk_bytes});
      const uint64_t length = content::chunk_length(index, size, chunk_bytes);
      ok = handle && DiskChunkStore::read(*handle, 0, length, buffer) &&
           EVP_DigestUpdate(context, buffer.data(), buffer.size()) == 1;
    }
    std::array<uint8_t, 32> actual{};
    unsigned int actual_bytes = 0;
    ok = ok && EVP_DigestFinal_ex(context, actual.data(), &actual_bytes) == 1 && actual_bytes == 32;
    EVP_MD_CTX_free(context);
    const bool matched = ok && actual == expected.bytes;
    driver_.run([content, matched](transfer::Engine& engine, Instant now) {
      engine.handle_verify_result(now, content, matched);
    });
  });
}

}  // namespace peerd::daemon
