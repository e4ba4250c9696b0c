#pragma once
// ContainerdClient: the few calls of containerd's gRPC API (1.6) peerd needs, over its unix socket, in one
// namespace (metadata "containerd-namespace"): list images, content info, read content at an offset
// (streamed), and image events. gRPC types stay in the .cc; every unary call has a deadline.
//
// connect() makes a fresh channel each time it is called (so a restarted containerd is reached at once,
// without gRPC's own reconnect backoff) and waits for it. Calls are thread-safe.
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "peerd/core/common/result.h"

namespace peerd::daemon::containerd {

struct ClientError {
  enum class Kind { kNotFound, kUnavailable, kOther };
  Kind kind = Kind::kOther;
  std::string message;
};

struct Image {
  std::string name;  // "registry.example:5000/team/app:1.0"
  std::string digest;
  std::string media_type;
  uint64_t size = 0;
  std::chrono::system_clock::time_point updated_at;
};

struct ContentInfo {
  std::string digest;
  uint64_t size = 0;
};

// A streamed ReadContent. next() blocks for the next message (true with bytes in `out`), false at the end or
// on an error (error() says which: empty at a clean end).
class ContentReader {
 public:
  virtual ~ContentReader() = default;
  virtual bool next(std::string& out) = 0;
  virtual std::string error() const = 0;
  // Any thread: makes a blocked next() return false.
  virtual void cancel() = 0;
};

// A Subscribe stream. next() blocks for the next event's topic ("/images/create"); false when the stream
// broke (containerd went away) or was cancelled.
class EventStream {
 public:
  virtual ~EventStream() = default;
  virtual bool next(std::string& topic) = 0;
  virtual void cancel() = 0;
};

class Client {
 public:
  Client(std::string socket_path, std::string name_space, std::chrono::milliseconds call_timeout);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // A new channel to the socket; true once it is connected (within `timeout`).
  bool connect(std::chrono::milliseconds timeout);

  Result<std::vector<Image>, ClientError> list_images();
  Result<ContentInfo, ClientError> info(const std::string& digest);
  // The whole blob, refused above `max_bytes` (manifests and indexes).
  Result<std::string, ClientError> read_all(const std::string& digest, uint64_t max_bytes);
  // Bytes [offset, offset + length) (length 0: to the end).
  std::unique_ptr<ContentReader> read(const std::string& digest, uint64_t offset, uint64_t length);
  // Events whose topic starts with `topic_prefix`, in this client's namespace.
  std::unique_ptr<EventStream> subscribe(const std::string& topic_prefix);

  const std::string& socket_path() const { return socket_path_; }
  const std::string& name_space() const { return name_space_; }

  struct Stubs;

 private:
  std::shared_ptr<Stubs> stubs() const;

  const std::string socket_path_;
  const std::string name_space_;
  const std::chrono::milliseconds call_timeout_;
  mutable std::mutex mutex_;
  std::shared_ptr<Stubs> stubs_;
};

}  // namespace peerd::daemon::containerd
