#include "peerd/core/content/content_key.h"

namespace peerd::content {

std::string ContentId::key_string() const {
  if (const auto* digest = std::get_if<Digest>(&id)) return digest->to_string();
  return "file:" + std::get<FileId>(id).url;
}

NodeId tag_dht_id(std::string_view host_repo_tag) { return NodeId::hash_of("peerd/tag/" + std::string(host_repo_tag)); }

std::string ChunkKey::key_string() const {
  return content.key_string() + "#" + std::to_string(chunk_bytes) + "@" + std::to_string(offset());
}

}  // namespace peerd::content
