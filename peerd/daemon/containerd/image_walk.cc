#include "peerd/daemon/containerd/image_walk.h"

#include <set>

#include <nlohmann/json.hpp>

#include "peerd/core/content/digest.h"

namespace peerd::daemon::containerd {

namespace {

constexpr int kIndexDepthMax = 4;

std::optional<Descriptor> descriptor_of(const nlohmann::json& json) {
  if (!json.is_object()) return std::nullopt;
  const auto digest = json.find("digest");
  const auto size = json.find("size");
  if (digest == json.end() || !digest->is_string() || size == json.end() || !size->is_number_unsigned()) {
    return std::nullopt;
  }
  if (!content::Digest::parse(digest->get<std::string>())) return std::nullopt;  // sha256 only
  Descriptor descriptor;
  descriptor.digest = digest->get<std::string>();
  descriptor.size = size->get<uint64_t>();
  if (auto type = json.find("mediaType"); type != json.end() && type->is_string()) {
    descriptor.media_type = type->get<std::string>();
  }
  return descriptor;
}

std::string text_field(const nlohmann::json& json, const char* name) {
  auto it = json.find(name);
  return it != json.end() && it->is_string() ? it->get<std::string>() : std::string();
}

class Walker {
 public:
  Walker(const Platform& platform, const std::function<std::optional<std::string>(const Descriptor&)>& fetch,
         size_t blobs_max)
      : platform_(platform), fetch_(fetch), blobs_max_(blobs_max) {}

  void walk(const Descriptor& descriptor, int depth) {
    if (!add(descriptor)) return;
    const bool index = is_index_media_type(descriptor.media_type);
    const bool manifest = is_manifest_media_type(descriptor.media_type);
    if (!index && !manifest && !descriptor.media_type.empty()) return;  // a config or a layer
    auto bytes = fetch_(descriptor);
    if (!bytes) {
      result.errors.push_back(descriptor.digest + ": not in the content store");
      return;
    }
    const nlohmann::json json = nlohmann::json::parse(*bytes, nullptr, false);
    if (!json.is_object()) {
      result.errors.push_back(descriptor.digest + ": not a JSON object");
      return;
    }
    if (auto manifests = json.find("manifests"); manifests != json.end() && manifests->is_array()) {
      if (depth >= kIndexDepthMax) {
        result.errors.push_back(descriptor.digest + ": indexes nested too deep");
        return;
      }
      for (const auto& entry : *manifests) {
        auto child = descriptor_of(entry);
        if (!child) continue;
        if (auto platform = entry.find("platform"); platform != entry.end() && platform->is_object()) {
          if (!platform_.matches(text_field(*platform, "os"), text_field(*platform, "architecture"),
                                 text_field(*platform, "variant"))) {
            continue;
          }
        }
        walk(*child, depth + 1);
      }
      return;
    }
    if (auto config = json.find("config"); config != json.end()) {
      if (auto child = descriptor_of(*config)) add(*child);
    }
    if (auto layers = json.find("layers"); layers != json.end() && layers->is_array()) {
      for (const auto& entry : *layers) {
        if (auto child = descriptor_of(entry)) add(*child);
      }
    }
  }

  ImageBlobs result;

 private:
  bool add(const Descriptor& descriptor) {
    if (seen_.contains(descriptor.digest)) return false;
    if (result.blobs.size() >= blobs_max_) {
      if (!cut_) result.errors.push_back("more than " + std::to_string(blobs_max_) + " blobs");
      cut_ = true;
      return false;
    }
    seen_.insert(descriptor.digest);
    result.blobs.push_back(descriptor);
    return true;
  }

  const Platform& platform_;
  const std::function<std::optional<std::string>(const Descriptor&)>& fetch_;
  const size_t blobs_max_;
  std::set<std::string> seen_;
  bool cut_ = false;
};

}  // namespace

bool Platform::matches(const std::string& other_os, const std::string& other_architecture,
                       const std::string& other_variant) const {
  if (other_os != os || other_architecture != architecture) return false;
  return variant.empty() || other_variant.empty() || other_variant == variant;
}

Platform host_platform() {
  Platform platform;
#if defined(__x86_64__)
  platform.architecture = "amd64";
#elif defined(__aarch64__)
  platform.architecture = "arm64";
#elif defined(__arm__)
  platform.architecture = "arm";
  platform.variant = "v7";
#elif defined(__i386__)
  platform.architecture = "386";
#elif defined(__powerpc64__)
  platform.architecture = "ppc64le";
#elif defined(__s390x__)
  platform.architecture = "s390x";
#elif defined(__riscv)
  platform.architecture = "riscv64";
#else
  platform.architecture = "unknown";
#endif
  return platform;
}

bool is_index_media_type(const std::string& media_type) {
  return media_type == "application/vnd.oci.image.index.v1+json" ||
         media_type == "application/vnd.docker.distribution.manifest.list.v2+json";
}

bool is_manifest_media_type(const std::string& media_type) {
  return media_type == "application/vnd.oci.image.manifest.v1+json" ||
         media_type == "application/vnd.docker.distribution.manifest.v2+json";
}

ImageBlobs walk_image(const Descriptor& target, const Platform& platform,
                      const std::function<std::optional<std::string>(const Descriptor&)>& fetch,
                      size_t blobs_max) {
  Walker walker(platform, fetch, blobs_max);
  walker.walk(target, 0);
  return std::move(walker.result);
}

}  // namespace peerd::daemon::containerd
