#include "workloads/ctr/image_content.h"

#include <cctype>

#include <nlohmann/json.hpp>

namespace peerd::workload {
namespace {

constexpr size_t kDocumentEntriesMax = 1024;

std::vector<std::string_view> columns(std::string_view line) {
  std::vector<std::string_view> words;
  size_t at = 0;
  while (at < line.size()) {
    while (at < line.size() && std::isspace(static_cast<unsigned char>(line[at]))) ++at;
    const size_t start = at;
    while (at < line.size() && !std::isspace(static_cast<unsigned char>(line[at]))) ++at;
    if (at > start) words.push_back(line.substr(start, at - start));
  }
  return words;
}

// The string at `key`, or "" when absent or not a string (value() would throw on a wrong type).
std::string string_field(const nlohmann::json& json, const char* key) {
  const auto found = json.find(key);
  return found != json.end() && found->is_string() ? found->get<std::string>() : std::string();
}

Result<Descriptor, std::string> parse_descriptor(const nlohmann::json& json, std::string_view where) {
  if (!json.is_object() || !json.contains("digest") || !json["digest"].is_string() ||
      !json.contains("size") || !json["size"].is_number_unsigned()) {
    return fail(std::string(where) + ": a descriptor needs a string digest and an unsigned size");
  }
  Descriptor descriptor;
  descriptor.digest = json["digest"].get<std::string>();
  descriptor.size_bytes = json["size"].get<uint64_t>();
  descriptor.media_type = string_field(json, "mediaType");
  if (json.contains("platform") && json["platform"].is_object()) {
    const auto& platform = json["platform"];
    descriptor.os = string_field(platform, "os");
    descriptor.architecture = string_field(platform, "architecture");
    descriptor.variant = string_field(platform, "variant");
  }
  if (!descriptor.digest.starts_with("sha256:") || descriptor.digest.size() != 7 + 64) {
    return fail(std::string(where) + ": digest '" + descriptor.digest + "' is not sha256:<64 hex>");
  }
  return descriptor;
}

Result<std::vector<Descriptor>, std::string> parse_list(const nlohmann::json& json, std::string_view where) {
  if (!json.is_array()) return fail(std::string(where) + " is not an array");
  if (json.size() > kDocumentEntriesMax) return fail(std::string(where) + " has too many entries");
  std::vector<Descriptor> list;
  for (const auto& entry : json) {
    auto descriptor = parse_descriptor(entry, where);
    if (!descriptor) return fail(descriptor.error());
    list.push_back(std::move(*descriptor));
  }
  return list;
}

}  // namespace

std::optional<std::string> image_digest_from_list(std::string_view list_output, std::string_view ref) {
  while (!list_output.empty()) {
    const auto newline = list_output.find('\n');
    const std::string_view line = list_output.substr(0, newline);
    list_output.remove_prefix(newline == std::string_view::npos ? list_output.size() : newline + 1);
    const auto words = columns(line);
    if (words.empty() || words[0] != ref) continue;
    for (size_t i = 1; i < words.size(); ++i) {
      if (words[i].starts_with("sha256:")) return std::string(words[i]);
    }
  }
  return std::nullopt;
}

Result<ImageDocument, std::string> parse_image_document(std::string_view json_text) {
  const auto json = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object())
    return fail(std::string("image document is not a JSON object"));
  ImageDocument document;
  if (json.contains("manifests")) {
    document.is_index = true;
    auto manifests = parse_list(json["manifests"], "manifests");
    if (!manifests) return fail(manifests.error());
    document.manifests = std::move(*manifests);
    return document;
  }
  if (!json.contains("layers") || !json.contains("config")) {
    return fail(std::string("image document has neither manifests nor config and layers"));
  }
  auto config = parse_descriptor(json["config"], "config");
  if (!config) return fail(config.error());
  auto layers = parse_list(json["layers"], "layers");
  if (!layers) return fail(layers.error());
  document.config = std::move(*config);
  document.layers = std::move(*layers);
  return document;
}

Result<Platform, std::string> parse_platform(std::string_view text) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t slash = std::min(text.find('/', start), text.size());
    parts.emplace_back(text.substr(start, slash - start));
    start = slash + 1;
  }
  if (parts.size() < 2 || parts.size() > 3)
    return fail("platform '" + std::string(text) + "': expected os/arch[/variant]");
  for (const auto& part : parts) {
    if (part.empty()) return fail("platform '" + std::string(text) + "' has an empty part");
  }
  Platform platform{parts[0], parts[1], parts.size() == 3 ? parts[2] : ""};
  return platform;
}

std::string oci_architecture(std::string_view machine) {
  if (machine == "x86_64") return "amd64";
  if (machine == "aarch64" || machine == "arm64") return "arm64";
  if (machine.starts_with("armv")) return "arm";
  if (machine == "i386" || machine == "i686") return "386";
  return std::string(machine);  // ppc64le, s390x, riscv64 are already OCI names
}

std::optional<Descriptor> select_manifest(const ImageDocument& index, const Platform& platform) {
  for (const auto& entry : index.manifests) {
    if (entry.os != platform.os || entry.architecture != platform.architecture) continue;
    if (!platform.variant.empty() && entry.variant != platform.variant) continue;
    return entry;
  }
  return std::nullopt;
}

uint64_t image_bytes(const ImageDocument& manifest) {
  uint64_t total = manifest.config.size_bytes;
  for (const auto& layer : manifest.layers) total += layer.size_bytes;
  return total;
}

std::optional<Descriptor> largest_layer(const ImageDocument& manifest) {
  const Descriptor* largest = nullptr;
  for (const auto& layer : manifest.layers) {
    if (largest == nullptr || layer.size_bytes > largest->size_bytes) largest = &layer;
  }
  if (largest == nullptr) return std::nullopt;
  return *largest;
}

}  // namespace peerd::workload
