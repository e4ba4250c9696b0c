#pragma once
// A ChunkStore that keeps sizes and states but no bytes: the harness and the ns-3 simulator use it so a
// thousand nodes holding gigabytes each fit in memory. Eviction order is least recently committed or pinned.
#include <cstdint>
#include <map>
#include <optional>
#include <unordered_map>
#include <vector>

#include "peerd/core/transfer/chunk_store.h"

namespace peerd::transfer {

class VirtualChunkStore final : public ChunkStore {
 public:
  explicit VirtualChunkStore(uint64_t capacity_bytes) : capacity_bytes_(capacity_bytes) {}

  bool has(const content::ChunkKey& chunk) const override;
  StoreStatus reserve(const content::ChunkKey& chunk, uint64_t length_bytes) override;
  StoreStatus commit(const content::ChunkKey& chunk) override;
  void evict(const content::ChunkKey& chunk) override;
  void pin(const content::ChunkKey& chunk) override;
  void unpin(const content::ChunkKey& chunk) override;
  std::optional<content::ChunkKey> eviction_candidate() const override;
  uint64_t used_bytes() const override { return used_bytes_; }
  uint64_t capacity_bytes() const override { return capacity_bytes_; }

  // Getters for tests and reports.
  size_t chunks_committed() const { return chunks_committed_; }
  uint32_t pins(const content::ChunkKey& chunk) const;
  // Drops everything (a node that restarts with an empty disk).
  void clear();

 private:
  struct EntryKey {
    uint32_t content = 0;
    uint64_t chunk_bytes = 0;
    uint64_t index = 0;
    bool operator==(const EntryKey&) const = default;
  };
  struct EntryKeyHash {
    size_t operator()(const EntryKey& key) const {
      uint64_t value = key.index * 0x9e3779b97f4a7c15ull ^ (uint64_t{key.content} << 40) ^ key.chunk_bytes;
      value ^= value >> 29;
      return static_cast<size_t>(value * 0xbf58476d1ce4e5b9ull);
    }
  };
  struct Entry {
    uint64_t length_bytes = 0;
    bool committed = false;
    uint32_t pins = 0;
    uint64_t recency = 0;  // key in lru_ while committed and unpinned
  };

  std::optional<EntryKey> find_key(const content::ChunkKey& chunk) const;
  EntryKey intern(const content::ChunkKey& chunk);
  void lru_remove(const Entry& entry);
  void lru_insert(const EntryKey& key, Entry& entry);

  uint64_t capacity_bytes_;
  uint64_t used_bytes_ = 0;
  size_t chunks_committed_ = 0;
  uint64_t recency_next_ = 1;
  std::map<content::ContentId, uint32_t> content_slots_;
  std::vector<content::ContentId> contents_;
  std::unordered_map<EntryKey, Entry, EntryKeyHash> entries_;
  std::map<uint64_t, EntryKey> lru_;  // committed, unpinned chunks by recency
};

}  // namespace peerd::transfer
