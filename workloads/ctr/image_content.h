#pragma once
// Pure parsing of what `ctr` prints for an image: the image's digest from `ctr images ls`, and the OCI/Docker
// index or manifest JSON from `ctr content get <digest>`. From the manifest come the image's size (config
// plus layers: the bytes a pull transfers) and its largest layer (the file peerd-ctr reads back).
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "peerd/core/common/result.h"

namespace peerd::workload {

struct Descriptor {
  std::string media_type;
  std::string digest;  // "sha256:<hex>"
  uint64_t size_bytes = 0;
  // Only in an index's entries:
  std::string os;
  std::string architecture;
  std::string variant;
};

struct ImageDocument {
  bool is_index = false;
  std::vector<Descriptor> manifests;  // index only
  Descriptor config;                  // manifest only
  std::vector<Descriptor> layers;     // manifest only
};

struct Platform {
  std::string os = "linux";
  std::string architecture;
  std::string variant;  // optional
};

// The DIGEST column of the `ctr images ls` row whose REF is exactly `ref`.
std::optional<std::string> image_digest_from_list(std::string_view list_output, std::string_view ref);

// An image index (OCI index or Docker manifest list) or an image manifest. Bounded: at most 1024 entries.
Result<ImageDocument, std::string> parse_image_document(std::string_view json);

// "linux/amd64" or "linux/arm64/v8". An error for anything else.
Result<Platform, std::string> parse_platform(std::string_view text);
// uname's machine name as an OCI architecture: x86_64 -> amd64, aarch64 -> arm64, armv7l -> arm, ...
std::string oci_architecture(std::string_view machine);
// The index entry for `platform`: os and architecture must match; a variant, when given, must match too.
std::optional<Descriptor> select_manifest(const ImageDocument& index, const Platform& platform);

// A manifest's transfer size (config plus every layer) and its largest layer.
uint64_t image_bytes(const ImageDocument& manifest);
std::optional<Descriptor> largest_layer(const ImageDocument& manifest);

}  // namespace peerd::workload
