#pragma once
// Which blobs of a local image this node offers: the image's target, and for an index the manifests of the
// node's platform (nested indexes followed, depth-limited), then each manifest's config and layers. Pure
// logic over a `fetch` callback (manifest bytes by descriptor), so it is tested without containerd.
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace peerd::daemon::containerd {

struct Descriptor {
  std::string digest;
  std::string media_type;
  uint64_t size = 0;

  bool operator==(const Descriptor&) const = default;
};

struct Platform {
  std::string os = "linux";
  std::string architecture;  // GOARCH names: amd64, arm64, arm, 386, ppc64le, s390x, riscv64
  std::string variant;       // "v7" for arm; empty matches any

  bool matches(const std::string& other_os, const std::string& other_architecture,
               const std::string& other_variant) const;
};

// The platform this binary runs on.
Platform host_platform();

struct ImageBlobs {
  std::vector<Descriptor> blobs;    // target first; no duplicates
  std::vector<std::string> errors;  // unreadable or malformed manifests (that branch is skipped)
};

// `fetch` returns the bytes of an index or manifest, or nullopt when the store does not have it. At most
// `blobs_max` descriptors are returned (an error says so when cut).
ImageBlobs walk_image(const Descriptor& target, const Platform& platform,
                      const std::function<std::optional<std::string>(const Descriptor&)>& fetch,
                      size_t blobs_max = 4096);

bool is_index_media_type(const std::string& media_type);
bool is_manifest_media_type(const std::string& media_type);

}  // namespace peerd::daemon::containerd
