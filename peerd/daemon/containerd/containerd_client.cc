#include "peerd/daemon/containerd/containerd_client.h"

#include <grpcpp/grpcpp.h>

#include <optional>

#include "github.com/containerd/containerd/api/services/content/v1/content.grpc.pb.h"
#include "github.com/containerd/containerd/api/services/events/v1/events.grpc.pb.h"
#include "github.com/containerd/containerd/api/services/images/v1/images.grpc.pb.h"

namespace peerd::daemon::containerd {

namespace content_api = ::containerd::services::content::v1;
namespace events_api = ::containerd::services::events::v1;
namespace images_api = ::containerd::services::images::v1;

struct Client::Stubs {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<content_api::Content::Stub> content;
  std::unique_ptr<images_api::Images::Stub> images;
  std::unique_ptr<events_api::Events::Stub> events;
};

namespace {

ClientError error_of(const grpc::Status& status) {
  ClientError error;
  error.message = status.error_message().empty() ? "grpc status " + std::to_string(status.error_code())
                                                 : status.error_message();
  switch (status.error_code()) {
    case grpc::StatusCode::NOT_FOUND:
      error.kind = ClientError::Kind::kNotFound;
      break;
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
    case grpc::StatusCode::CANCELLED:
      error.kind = ClientError::Kind::kUnavailable;
      break;
    default:
      error.kind = ClientError::Kind::kOther;
  }
  return error;
}

ClientError not_connected() {
  return ClientError{ClientError::Kind::kUnavailable, "not connected to containerd"};
}

void prepare(grpc::ClientContext& context, const std::string& name_space,
             std::optional<std::chrono::milliseconds> timeout) {
  context.AddMetadata("containerd-namespace", name_space);
  if (timeout) context.set_deadline(std::chrono::system_clock::now() + *timeout);
}

class GrpcContentReader final : public ContentReader {
 public:
  GrpcContentReader(std::shared_ptr<Client::Stubs> stubs, const std::string& name_space,
                    const content_api::ReadContentRequest& request)
      : stubs_(std::move(stubs)) {
    prepare(context_, name_space, std::nullopt);
    reader_ = stubs_->content->Read(&context_, request);
  }
  ~GrpcContentReader() override {
    if (!finished_) {
      context_.TryCancel();
      while (reader_->Read(&response_)) {
      }
      reader_->Finish();
    }
  }
  bool next(std::string& out) override {
    if (finished_) return false;
    if (reader_->Read(&response_)) {
      out = std::move(*response_.mutable_data());
      return true;
    }
    finished_ = true;
    const grpc::Status status = reader_->Finish();
    if (!status.ok()) error_ = error_of(status).message;
    return false;
  }
  std::string error() const override { return error_; }
  void cancel() override { context_.TryCancel(); }

 private:
  std::shared_ptr<Client::Stubs> stubs_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReader<content_api::ReadContentResponse>> reader_;
  content_api::ReadContentResponse response_;
  bool finished_ = false;
  std::string error_;
};

class GrpcEventStream final : public EventStream {
 public:
  GrpcEventStream(std::shared_ptr<Client::Stubs> stubs, const std::string& name_space,
                  const events_api::SubscribeRequest& request)
      : stubs_(std::move(stubs)) {
    prepare(context_, name_space, std::nullopt);
    reader_ = stubs_->events->Subscribe(&context_, request);
  }
  ~GrpcEventStream() override {
    if (!finished_) {
      context_.TryCancel();
      while (reader_->Read(&envelope_)) {
      }
      reader_->Finish();
    }
  }
  bool next(std::string& topic) override {
    if (finished_) return false;
    if (reader_->Read(&envelope_)) {
      topic = envelope_.topic();
      return true;
    }
    finished_ = true;
    reader_->Finish();
    return false;
  }
  void cancel() override { context_.TryCancel(); }

 private:
  std::shared_ptr<Client::Stubs> stubs_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReader<events_api::Envelope>> reader_;
  events_api::Envelope envelope_;
  bool finished_ = false;
};

std::chrono::system_clock::time_point time_of(const google::protobuf::Timestamp& timestamp) {
  return std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(
          std::chrono::seconds(timestamp.seconds()) + std::chrono::nanoseconds(timestamp.nanos())));
}

}  // namespace

Client::Client(std::string socket_path, std::string name_space, std::chrono::milliseconds call_timeout)
    : socket_path_(std::move(socket_path)), name_space_(std::move(name_space)), call_timeout_(call_timeout) {}

Client::~Client() = default;

std::shared_ptr<Client::Stubs> Client::stubs() const {
  std::lock_guard lock(mutex_);
  return stubs_;
}

bool Client::connect(std::chrono::milliseconds timeout) {
  grpc::ChannelArguments arguments;
  arguments.SetMaxReceiveMessageSize(16 << 20);
  // Fail fast while containerd is away; the store's own loop retries with its backoff.
  arguments.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  auto stubs = std::make_shared<Stubs>();
  stubs->channel =
      grpc::CreateCustomChannel("unix:" + socket_path_, grpc::InsecureChannelCredentials(), arguments);
  if (!stubs->channel->WaitForConnected(std::chrono::system_clock::now() + timeout)) return false;
  stubs->content = content_api::Content::NewStub(stubs->channel);
  stubs->images = images_api::Images::NewStub(stubs->channel);
  stubs->events = events_api::Events::NewStub(stubs->channel);
  std::lock_guard lock(mutex_);
  stubs_ = std::move(stubs);
  return true;
}

Result<std::vector<Image>, ClientError> Client::list_images() {
  auto current = stubs();
  if (!current) return fail(not_connected());
  grpc::ClientContext context;
  prepare(context, name_space_, std::optional<std::chrono::milliseconds>(call_timeout_));
  images_api::ListImagesRequest request;
  images_api::ListImagesResponse response;
  const grpc::Status status = current->images->List(&context, request, &response);
  if (!status.ok()) return fail(error_of(status));
  std::vector<Image> images;
  images.reserve(static_cast<size_t>(response.images_size()));
  for (const auto& image : response.images()) {
    Image out;
    out.name = image.name();
    out.digest = image.target().digest();
    out.media_type = image.target().media_type();
    out.size = image.target().size() > 0 ? static_cast<uint64_t>(image.target().size()) : 0;
    out.updated_at = time_of(image.updated_at());
    images.push_back(std::move(out));
  }
  return images;
}

Result<ContentInfo, ClientError> Client::info(const std::string& digest) {
  auto current = stubs();
  if (!current) return fail(not_connected());
  grpc::ClientContext context;
  prepare(context, name_space_, std::optional<std::chrono::milliseconds>(call_timeout_));
  content_api::InfoRequest request;
  request.set_digest(digest);
  content_api::InfoResponse response;
  const grpc::Status status = current->content->Info(&context, request, &response);
  if (!status.ok()) return fail(error_of(status));
  ContentInfo info;
  info.digest = response.info().digest();
  info.size = response.info().size() > 0 ? static_cast<uint64_t>(response.info().size()) : 0;
  return info;
}

Result<std::string, ClientError> Client::read_all(const std::string& digest, uint64_t max_bytes) {
  auto current = stubs();
  if (!current) return fail(not_connected());
  grpc::ClientContext context;
  prepare(context, name_space_, std::optional<std::chrono::milliseconds>(call_timeout_));
  content_api::ReadContentRequest request;
  request.set_digest(digest);
  auto reader = current->content->Read(&context, request);
  content_api::ReadContentResponse response;
  std::string bytes;
  bool too_large = false;
  while (reader->Read(&response)) {
    if (bytes.size() + response.data().size() > max_bytes) {
      too_large = true;
      context.TryCancel();
      break;
    }
    bytes += response.data();
  }
  while (too_large && reader->Read(&response)) {
  }
  const grpc::Status status = reader->Finish();
  if (too_large) {
    return fail(
        ClientError{ClientError::Kind::kOther, digest + " is larger than " + std::to_string(max_bytes)});
  }
  if (!status.ok()) return fail(error_of(status));
  return bytes;
}

std::unique_ptr<ContentReader> Client::read(const std::string& digest, uint64_t offset, uint64_t length) {
  auto current = stubs();
  if (!current) return nullptr;
  content_api::ReadContentRequest request;
  request.set_digest(digest);
  request.set_offset(static_cast<int64_t>(offset));
  request.set_size(static_cast<int64_t>(length));
  return std::make_unique<GrpcContentReader>(std::move(current), name_space_, request);
}

std::unique_ptr<EventStream> Client::subscribe(const std::string& topic_prefix) {
  auto current = stubs();
  if (!current) return nullptr;
  events_api::SubscribeRequest request;
  // One filter: its comma-separated terms must all hold.
  request.add_filters("topic~=\"^" + topic_prefix + "\",namespace==\"" + name_space_ + "\"");
  return std::make_unique<GrpcEventStream>(std::move(current), name_space_, request);
}

}  // namespace peerd::daemon::containerd
