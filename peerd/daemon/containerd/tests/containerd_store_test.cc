// Store against an in-process fake of containerd's gRPC API (images, content, events) on a unix socket:
// what is advertised and withdrawn, the tag freshness policy, and streamed reads.
#include "peerd/daemon/containerd/containerd_store.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "github.com/containerd/containerd/api/services/content/v1/content.grpc.pb.h"
#include "github.com/containerd/containerd/api/services/events/v1/events.grpc.pb.h"
#include "github.com/containerd/containerd/api/services/images/v1/images.grpc.pb.h"
#include "peerd/core/content/content_key.h"

namespace peerd::daemon::containerd {
namespace {

namespace content_api = ::containerd::services::content::v1;
namespace events_api = ::containerd::services::events::v1;
namespace images_api = ::containerd::services::images::v1;

constexpr const char* kManifestType = "application/vnd.oci.image.manifest.v1+json";

// The fake's state: images (name -> target, age) and blobs (digest -> bytes); every change is an event.
class FakeContainerd final : public images_api::Images::Service,
                             public content_api::Content::Service,
                             public events_api::Events::Service {
 public:
  struct FakeImage {
    std::string digest;
    uint64_t size = 0;
    std::chrono::system_clock::time_point updated_at;
  };

  std::string add_blob(const std::string& bytes) {
    const std::string digest = content::Digest::of_bytes(bytes).to_string();
    std::lock_guard lock(mutex_);
    blobs_[digest] = bytes;
    return digest;
  }
  void set_image(const std::string& name, const FakeImage& image) {
    std::lock_guard lock(mutex_);
    images_[name] = image;
    ++events_;
    changed_.notify_all();
  }
  void delete_image(const std::string& name) {
    std::lock_guard lock(mutex_);
    images_.erase(name);
    ++events_;
    changed_.notify_all();
  }
  void shut_down() {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    changed_.notify_all();
  }
  std::string namespace_seen() {
    std::lock_guard lock(mutex_);
    return namespace_seen_;
  }

  grpc::Status List(grpc::ServerContext* context, const images_api::ListImagesRequest*,
                    images_api::ListImagesResponse* response) override {
    std::lock_guard lock(mutex_);
    note_namespace(*context);
    for (const auto& [name, image] : images_) {
      auto* out = response->add_images();
      out->set_name(name);
      out->mutable_target()->set_digest(image.digest);
      out->mutable_target()->set_size(static_cast<int64_t>(image.size));
      out->mutable_target()->set_media_type(kManifestType);
      const auto seconds =
          std::chrono::duration_cast<std::chrono::seconds>(image.updated_at.time_since_epoch()).count();
      out->mutable_updated_at()->set_seconds(seconds);
    }
    return grpc::Status::OK;
  }
  grpc::Status Info(grpc::ServerContext*, const content_api::InfoRequest* request,
                    content_api::InfoResponse* response) override {
    std::lock_guard lock(mutex_);
    auto it = blobs_.find(request->digest());
    if (it == blobs_.end()) return grpc::Status(grpc::StatusCode::NOT_FOUND, "not found");
    response->mutable_info()->set_digest(it->first);
    response->mutable_info()->set_size(static_cast<int64_t>(it->second.size()));
    return grpc::Status::OK;
  }
  grpc::Status Read(grpc::ServerContext*, const content_api::ReadContentRequest* request,
                    grpc::ServerWriter<content_api::ReadContentResponse>* writer) override {
    std::string bytes;
    {
      std::lock_guard lock(mutex_);
      auto it = blobs_.find(request->digest());
      if (it == blobs_.end()) return grpc::Status(grpc::StatusCode::NOT_FOUND, "not found");
      bytes = it->second;
    }
    const size_t offset = static_cast<size_t>(request->offset());
    size_t end = request->size() > 0 ? offset + static_cast<size_t>(request->size()) : bytes.size();
    end = std::min(end, bytes.size());
    for (size_t at = offset; at < end; at += 3) {  // small messages: the reader must join them
      content_api::ReadContentResponse response;
      response.set_offset(static_cast<int64_t>(at));
      response.set_data(bytes.substr(at, std::min<size_t>(3, end - at)));
      if (!writer->Write(response)) break;
    }
    return grpc::Status::OK;
  }
  grpc::Status Subscribe(grpc::ServerContext* context, const events_api::SubscribeRequest*,
                         grpc::ServerWriter<events_api::Envelope>* writer) override {
    std::unique_lock lock(mutex_);
    uint64_t seen = events_;
    while (!stopping_ && !context->IsCancelled()) {
      changed_.wait_for(lock, std::chrono::milliseconds(50));
      if (events_ == seen) continue;
      seen = events_;
      events_api::Envelope envelope;
      envelope.set_topic("/images/update");
      lock.unlock();
      writer->Write(envelope);
      lock.lock();
    }
    return grpc::Status::OK;
  }

 private:
  void note_namespace(const grpc::ServerContext& context) {
    auto it = context.client_metadata().find("containerd-namespace");
    if (it != context.client_metadata().end())
      namespace_seen_ = std::string(it->second.data(), it->second.size());
  }

  std::mutex mutex_;
  std::condition_variable changed_;
  std::map<std::string, FakeImage> images_;
  std::map<std::string, std::string> blobs_;
  uint64_t events_ = 0;
  bool stopping_ = false;
  std::string namespace_seen_;
};

// The keys the store provided and withdrew.
struct Recorder {
  std::mutex mutex;
  std::set<NodeId> provided;
  std::set<NodeId> withdrawn;
  Advertiser advertiser() {
    return Advertiser{[this](const NodeId& key) {
                        std::lock_guard lock(mutex);
                        provided.insert(key);
                        withdrawn.erase(key);
                      },
                      [this](const NodeId& key) {
                        std::lock_guard lock(mutex);
                        withdrawn.insert(key);
                        provided.erase(key);
                      }};
  }
  bool has_provided(const NodeId& key) {
    std::lock_guard lock(mutex);
    return provided.contains(key);
  }
  bool has_withdrawn(const NodeId& key) {
    std::lock_guard lock(mutex);
    return withdrawn.contains(key);
  }
};

template <typename Condition>
bool eventually(Condition condition) {
  for (int i = 0; i < 500; ++i) {  // 10 s guard against hangs, not a timing assertion
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

class ContainerdStore : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("peerd-fake-containerd-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
    socket_ = (dir_ / "containerd.sock").string();
    grpc::ServerBuilder builder;
    builder.AddListeningPort("unix:" + socket_, grpc::InsecureServerCredentials());
    builder.RegisterService(static_cast<images_api::Images::Service*>(&fake_));
    builder.RegisterService(static_cast<content_api::Content::Service*>(&fake_));
    builder.RegisterService(static_cast<events_api::Events::Service*>(&fake_));
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);

    config_ = fake_.add_blob(R"({"architecture":"amd64","os":"linux"})");
    layer_ = fake_.add_blob("layer bytes 0123456789 abcdefghijklmnopqrstuvwxyz");
    manifest_bytes_ = R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",)"
                      R"("config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":")" +
                      config_ +
                      R"(","size":37},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar",)"
                      R"("digest":")" +
                      layer_ + R"(","size":49}]})";
    manifest_ = fake_.add_blob(manifest_bytes_);
  }
  void TearDown() override {
    if (store_) store_->stop();
    fake_.shut_down();
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  void start_store(std::optional<std::chrono::milliseconds> tag_ttl) {
    StoreOptions options;
    options.socket_path = socket_;
    options.name_space = "test-ns";
    options.hosts = {"registry.test:5000"};
    options.tag_ttl = tag_ttl;
    options.event_debounce = std::chrono::milliseconds(10);
    options.platform.architecture = "amd64";
    store_ = std::make_unique<Store>(options, recorder_.advertiser(), nullptr, Logger(LogLevel::kError));
    store_->start();
  }

  FakeContainerd::FakeImage image_now() {
    return {manifest_, manifest_bytes_.size(), std::chrono::system_clock::now()};
  }
  NodeId blob_key(const std::string& digest) {
    return content::ContentId::blob(*content::Digest::parse(digest)).dht_id();
  }

  std::filesystem::path dir_;
  std::string socket_;
  FakeContainerd fake_;
  std::unique_ptr<grpc::Server> server_;
  std::string config_, layer_, manifest_, manifest_bytes_;
  Recorder recorder_;
  std::unique_ptr<Store> store_;
};

TEST_F(ContainerdStore, OffersImagesOfTheMirroredHostsAndWithdrawsDeletedOnes) {
  fake_.set_image("other.test/app:1", image_now());
  start_store(std::chrono::hours(1));
  ASSERT_TRUE(eventually([&] { return store_->connected() && store_->counts().scans > 0; }));
  EXPECT_EQ(store_->counts().images, 0u);  // other.test is not mirrored
  EXPECT_EQ(fake_.namespace_seen(), "test-ns");

  fake_.set_image("registry.test:5000/team/app:1.0", image_now());
  ASSERT_TRUE(eventually([&] { return recorder_.has_provided(blob_key(layer_)); }));
  EXPECT_TRUE(recorder_.has_provided(blob_key(manifest_)));
  EXPECT_TRUE(recorder_.has_provided(blob_key(config_)));
  EXPECT_TRUE(recorder_.has_provided(content::tag_dht_id("registry.test:5000/team/app:1.0")));
  const auto layer = store_->find_blob(*content::Digest::parse(layer_));
  ASSERT_TRUE(layer.has_value());
  EXPECT_EQ(layer->size, 49u);
  EXPECT_EQ(layer->media_type, "application/vnd.oci.image.layer.v1.tar");
  EXPECT_EQ(store_->find_blob(*content::Digest::parse(manifest_))->media_type, kManifestType);

  fake_.delete_image("registry.test:5000/team/app:1.0");
  ASSERT_TRUE(eventually([&] { return recorder_.has_withdrawn(blob_key(layer_)); }));
  EXPECT_TRUE(recorder_.has_withdrawn(content::tag_dht_id("registry.test:5000/team/app:1.0")));
  EXPECT_FALSE(store_->find_blob(*content::Digest::parse(layer_)).has_value());
}

TEST_F(ContainerdStore, TagsAreResolvedOnlyWhenYoungerThanTheTtl) {
  fake_.set_image("registry.test:5000/team/app:fresh", image_now());
  auto old = image_now();
  old.updated_at -= std::chrono::hours(2);
  fake_.set_image("registry.test:5000/team/app:stale", old);
  start_store(std::chrono::hours(1));
  ASSERT_TRUE(eventually([&] { return store_->counts().tags == 2; }));
  const auto fresh = store_->resolve_tag("registry.test:5000", "team/app", "fresh");
  ASSERT_TRUE(fresh.has_value());
  EXPECT_EQ(fresh->digest, manifest_);
  EXPECT_EQ(fresh->media_type, kManifestType);
  EXPECT_FALSE(store_->resolve_tag("registry.test:5000", "team/app", "stale").has_value());
  EXPECT_FALSE(store_->resolve_tag("registry.test:5000", "team/app", "absent").has_value());
}

TEST_F(ContainerdStore, DigestOnlyPolicyNeverResolvesTagsNorAdvertisesThem) {
  fake_.set_image("registry.test:5000/team/app:latest", image_now());
  start_store(std::nullopt);
  ASSERT_TRUE(eventually([&] { return recorder_.has_provided(blob_key(layer_)); }));
  EXPECT_EQ(store_->counts().tags, 0u);
  EXPECT_FALSE(recorder_.has_provided(content::tag_dht_id("registry.test:5000/team/app:latest")));
  EXPECT_FALSE(store_->resolve_tag("registry.test:5000", "team/app", "latest").has_value());
}

// Collects a body to the end (bounded).
std::string drain(BodySource& body, std::string* error) {
  std::string bytes;
  for (int i = 0; i < 10000; ++i) {
    std::promise<BodyChunk> promise;
    auto future = promise.get_future();
    body.next([&promise](BodyChunk chunk) { promise.set_value(std::move(chunk)); });
    if (future.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
      *error = "timed out";
      return bytes;
    }
    BodyChunk chunk = future.get();
    if (chunk.kind == BodyChunk::Kind::kBytes) bytes += chunk.bytes;
    if (chunk.kind == BodyChunk::Kind::kEnd) return bytes;
    if (chunk.kind == BodyChunk::Kind::kError) {
      *error = chunk.error;
      return bytes;
    }
  }
  *error = "too many pieces";
  return bytes;
}

TEST_F(ContainerdStore, StreamsARangeOverGrpcWithoutAContentRoot) {
  fake_.set_image("registry.test:5000/team/app:1.0", image_now());
  start_store(std::nullopt);
  ASSERT_TRUE(eventually([&] { return store_->find_blob(*content::Digest::parse(layer_)).has_value(); }));
  auto body = store_->open_blob(*content::Digest::parse(layer_), content::ByteRange{6, 20});
  ASSERT_NE(body, nullptr);
  std::string error;
  EXPECT_EQ(drain(*body, &error),
            std::string("layer bytes 0123456789 abcdefghijklmnopqrstuvwxyz").substr(6, 20));
  EXPECT_EQ(error, "");
  // Outside the blob, or a blob it does not offer: nothing to stream.
  EXPECT_EQ(store_->open_blob(*content::Digest::parse(layer_), content::ByteRange{40, 20}), nullptr);
  EXPECT_EQ(store_->open_blob(content::Digest::of_bytes("other"), content::ByteRange{0, 1}), nullptr);
}

// Shows stop() ends every open stream before it returns, even one whose reader never asks for more (its pump
// waits for room in the queue): a pump that outlived the daemon could drop an HTTP session after the
// io_context.
TEST_F(ContainerdStore, StopEndsStreamsNobodyReads) {
  fake_.set_image("registry.test:5000/team/app:1.0", image_now());
  start_store(std::nullopt);
  ASSERT_TRUE(eventually([&] { return store_->find_blob(*content::Digest::parse(layer_)).has_value(); }));
  auto body = store_->open_blob(*content::Digest::parse(layer_), content::ByteRange{0, 49});
  ASSERT_NE(body, nullptr);  // 17 three-byte messages: the pump fills its queue of 4 and waits
  EXPECT_EQ(store_->counts().streams, 1u);
  // Gives the pump time to fill its queue; shorter on a slow machine only makes the case easier.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  store_->stop();
  EXPECT_EQ(store_->counts().streams, 0u);
  EXPECT_EQ(store_->open_blob(*content::Digest::parse(layer_), content::ByteRange{0, 49}), nullptr);
}

}  // namespace
}  // namespace peerd::daemon::containerd
