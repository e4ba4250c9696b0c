#include "peerd/daemon/containerd/image_walk.h"

#include <gtest/gtest.h>

#include <map>

#include "peerd/core/content/digest.h"

namespace peerd::daemon::containerd {
namespace {

constexpr const char* kIndex = "application/vnd.oci.image.index.v1+json";
constexpr const char* kManifest = "application/vnd.oci.image.manifest.v1+json";
constexpr const char* kLayer = "application/vnd.oci.image.layer.v1.tar+gzip";
constexpr const char* kConfig = "application/vnd.oci.image.config.v1+json";

std::string digest_of(const std::string& text) {
  return content::Digest::of_bytes(text).to_string();
}

// An in-memory content store of manifests and indexes.
class Blobs {
 public:
  Descriptor add(const std::string& media_type, const std::string& bytes) {
    const Descriptor descriptor{digest_of(bytes), media_type, bytes.size()};
    bytes_[descriptor.digest] = bytes;
    return descriptor;
  }
  std::optional<std::string> fetch(const Descriptor& descriptor) const {
    auto it = bytes_.find(descriptor.digest);
    if (it == bytes_.end()) return std::nullopt;
    return it->second;
  }

 private:
  std::map<std::string, std::string> bytes_;
};

std::string descriptor_json(const Descriptor& descriptor) {
  return R"({"mediaType":")" + descriptor.media_type + R"(","digest":")" + descriptor.digest +
         R"(","size":)" + std::to_string(descriptor.size) + "}";
}

Descriptor blob(const std::string& media_type, const std::string& seed, uint64_t size) {
  return Descriptor{digest_of(seed), media_type, size};
}

std::string manifest_json(const Descriptor& config, const std::vector<Descriptor>& layers) {
  std::string json = R"({"schemaVersion":2,"mediaType":")" + std::string(kManifest) + R"(","config":)" +
                     descriptor_json(config) + R"(,"layers":[)";
  for (size_t i = 0; i < layers.size(); ++i) json += (i ? "," : "") + descriptor_json(layers[i]);
  return json + "]}";
}

std::string platform_entry(const Descriptor& manifest, const std::string& os,
                           const std::string& architecture) {
  std::string entry = descriptor_json(manifest);
  entry.pop_back();
  return entry + R"(,"platform":{"os":")" + os + R"(","architecture":")" + architecture + R"("}})";
}

Platform amd64() {
  Platform platform;
  platform.architecture = "amd64";
  return platform;
}

TEST(ImageWalk, ManifestGivesItselfItsConfigAndItsLayers) {
  Blobs blobs;
  const Descriptor config = blob(kConfig, "config", 10);
  const Descriptor layer1 = blob(kLayer, "layer1", 1000);
  const Descriptor layer2 = blob(kLayer, "layer2", 2000);
  const Descriptor manifest = blobs.add(kManifest, manifest_json(config, {layer1, layer2, layer1}));
  const ImageBlobs walked =
      walk_image(manifest, amd64(), [&](const Descriptor& d) { return blobs.fetch(d); });
  EXPECT_TRUE(walked.errors.empty());
  EXPECT_EQ(walked.blobs, (std::vector<Descriptor>{manifest, config, layer1, layer2}));
}

TEST(ImageWalk, IndexKeepsOnlyTheNodePlatformAndEntriesWithoutPlatform) {
  Blobs blobs;
  const Descriptor amd_layer = blob(kLayer, "amd", 5);
  const Descriptor arm_layer = blob(kLayer, "arm", 6);
  const Descriptor config = blob(kConfig, "config", 7);
  const Descriptor amd = blobs.add(kManifest, manifest_json(config, {amd_layer}));
  const Descriptor arm = blobs.add(kManifest, manifest_json(config, {arm_layer}));
  const Descriptor index =
      blobs.add(kIndex, R"({"schemaVersion":2,"manifests":[)" + platform_entry(arm, "linux", "arm64") + "," +
                            platform_entry(amd, "linux", "amd64") + "]}");
  const ImageBlobs walked = walk_image(index, amd64(), [&](const Descriptor& d) { return blobs.fetch(d); });
  EXPECT_EQ(walked.blobs, (std::vector<Descriptor>{index, amd, config, amd_layer}));

  Platform arm64;
  arm64.architecture = "arm64";
  const ImageBlobs on_arm = walk_image(index, arm64, [&](const Descriptor& d) { return blobs.fetch(d); });
  EXPECT_EQ(on_arm.blobs, (std::vector<Descriptor>{index, arm, config, arm_layer}));
}

TEST(ImageWalk, MissingOrMalformedManifestsAreSkippedWithAnError) {
  Blobs blobs;
  const Descriptor absent = blob(kManifest, "absent", 100);
  const Descriptor garbage = blobs.add(kManifest, "not json {");
  const Descriptor index =
      blobs.add(kIndex, R"({"manifests":[)" + descriptor_json(absent) + "," + descriptor_json(garbage) +
                            R"(,{"digest":"sha256:bad","size":1}]})");
  const ImageBlobs walked = walk_image(index, amd64(), [&](const Descriptor& d) { return blobs.fetch(d); });
  EXPECT_EQ(walked.blobs, (std::vector<Descriptor>{index, absent, garbage}));
  EXPECT_EQ(walked.errors.size(), 2u);
}

TEST(ImageWalk, StopsAtTheBlobLimit) {
  Blobs blobs;
  std::vector<Descriptor> layers;
  for (int i = 0; i < 50; ++i) layers.push_back(blob(kLayer, "layer" + std::to_string(i), 1));
  const Descriptor manifest = blobs.add(kManifest, manifest_json(blob(kConfig, "c", 1), layers));
  const ImageBlobs walked = walk_image(
      manifest, amd64(), [&](const Descriptor& d) { return blobs.fetch(d); }, 10);
  EXPECT_EQ(walked.blobs.size(), 10u);
  EXPECT_EQ(walked.errors.size(), 1u);
}

TEST(ImageWalk, NestedIndexesAreFollowedToADepthLimit) {
  Blobs blobs;
  const Descriptor layer = blob(kLayer, "l", 3);
  Descriptor inner = blobs.add(kManifest, manifest_json(blob(kConfig, "c", 2), {layer}));
  for (int depth = 0; depth < 6; ++depth) {
    inner = blobs.add(kIndex, R"({"manifests":[)" + descriptor_json(inner) + "]}");
  }
  const ImageBlobs walked = walk_image(inner, amd64(), [&](const Descriptor& d) { return blobs.fetch(d); });
  EXPECT_FALSE(walked.errors.empty());
  EXPECT_EQ(std::count(walked.blobs.begin(), walked.blobs.end(), layer), 0);
}

TEST(ImageWalk, HostPlatformIsKnown) {
  EXPECT_EQ(host_platform().os, "linux");
  EXPECT_FALSE(host_platform().architecture.empty());
  EXPECT_NE(host_platform().architecture, "unknown");
}

}  // namespace
}  // namespace peerd::daemon::containerd
