#include "peerd/core/transfer/virtual_chunk_store.h"

namespace peerd::transfer {

std::string_view describe(StoreStatus status) {
  switch (status) {
    case StoreStatus::kOk:
      return "ok";
    case StoreStatus::kFull:
      return "store full";
    case StoreStatus::kInvalid:
      return "invalid reservation";
    case StoreStatus::kNotReserved:
      return "chunk not reserved";
  }
  return "unknown";
}

std::optional<VirtualChunkStore::EntryKey> VirtualChunkStore::find_key(const content::ChunkKey& chunk) const {
  const auto slot = content_slots_.find(chunk.content);
  if (slot == content_slots_.end()) return std::nullopt;
  return EntryKey{slot->second, chunk.chunk_bytes, chunk.index};
}

VirtualChunkStore::EntryKey VirtualChunkStore::intern(const content::ChunkKey& chunk) {
  auto [slot, inserted] = content_slots_.try_emplace(chunk.content, static_cast<uint32_t>(contents_.size()));
  if (inserted) contents_.push_back(chunk.content);
  return EntryKey{slot->second, chunk.chunk_bytes, chunk.index};
}

void VirtualChunkStore::lru_remove(const Entry& entry) {
  if (entry.committed && entry.pins == 0) lru_.erase(entry.recency);
}

void VirtualChunkStore::lru_insert(const EntryKey& key, Entry& entry) {
  entry.recency = recency_next_++;
  if (entry.committed && entry.pins == 0) lru_.emplace(entry.recency, key);
}

bool VirtualChunkStore::has(const content::ChunkKey& chunk) const {
  const auto key = find_key(chunk);
  if (!key) return false;
  const auto it = entries_.find(*key);
  return it != entries_.end() && it->second.committed;
}

StoreStatus VirtualChunkStore::reserve(const content::ChunkKey& chunk, uint64_t length_bytes) {
  if (length_bytes == 0) return StoreStatus::kInvalid;
  if (const auto key = find_key(chunk); key && entries_.contains(*key)) return StoreStatus::kInvalid;
  if (used_bytes_ > capacity_bytes_ || length_bytes > capacity_bytes_ - used_bytes_)
    return StoreStatus::kFull;
  const EntryKey key = intern(chunk);
  Entry& entry = entries_[key];
  entry.length_bytes = length_bytes;
  entry.recency = recency_next_++;
  used_bytes_ += length_bytes;
  return StoreStatus::kOk;
}

StoreStatus VirtualChunkStore::commit(const content::ChunkKey& chunk) {
  const auto key = find_key(chunk);
  if (!key) return StoreStatus::kNotReserved;
  const auto it = entries_.find(*key);
  if (it == entries_.end() || it->second.committed) return StoreStatus::kNotReserved;
  it->second.committed = true;
  ++chunks_committed_;
  lru_insert(*key, it->second);
  return StoreStatus::kOk;
}

void VirtualChunkStore::evict(const content::ChunkKey& chunk) {
  const auto key = find_key(chunk);
  if (!key) return;
  const auto it = entries_.find(*key);
  if (it == entries_.end()) return;
  lru_remove(it->second);
  used_bytes_ -= it->second.length_bytes;
  if (it->second.committed) --chunks_committed_;
  entries_.erase(it);
}

void VirtualChunkStore::pin(const content::ChunkKey& chunk) {
  const auto key = find_key(chunk);
  if (!key) return;
  const auto it = entries_.find(*key);
  if (it == entries_.end() || !it->second.committed) return;
  lru_remove(it->second);
  ++it->second.pins;
  it->second.recency = recency_next_++;
}

void VirtualChunkStore::unpin(const content::ChunkKey& chunk) {
  const auto key = find_key(chunk);
  if (!key) return;
  const auto it = entries_.find(*key);
  if (it == entries_.end() || it->second.pins == 0) return;
  --it->second.pins;
  if (it->second.pins == 0) lru_insert(*key, it->second);
}

std::optional<content::ChunkKey> VirtualChunkStore::eviction_candidate() const {
  if (lru_.empty()) return std::nullopt;
  const EntryKey& key = lru_.begin()->second;
  return content::ChunkKey{contents_[key.content], key.index, key.chunk_bytes};
}

uint32_t VirtualChunkStore::pins(const content::ChunkKey& chunk) const {
  const auto key = find_key(chunk);
  if (!key) return 0;
  const auto it = entries_.find(*key);
  return it == entries_.end() ? 0 : it->second.pins;
}

void VirtualChunkStore::clear() {
  entries_.clear();
  lru_.clear();
  used_bytes_ = 0;
  chunks_committed_ = 0;
}

}  // namespace peerd::transfer
