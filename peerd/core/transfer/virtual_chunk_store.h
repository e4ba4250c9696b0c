#pragma once
// A ChunkStore that keeps sizes and states but no bytes: the harness and the ns-3 simulator use it so a
// thousand nodes holding gigabytes each fit in memory. Eviction order is least recently committed or pinned.
#include <cstdint>
#include <map>
#include <optional>
#include <utility>
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
  // Chunks live in flat arrays, one per (content, chunk size) series, indexed by chunk index: the simulator
  // keeps ten million of them and touches one per event, so no per-chunk allocation or hashing. The
  // eviction order is an intrusive list through the entries (append on commit and unpin).
  using Handle = uint64_t;  // series << kIndexBits | chunk index
  static constexpr unsigned kIndexBits = 40;
  static constexpr Handle kNoHandle = ~Handle{0};
  // Larger indexes are refused (kInvalid): 2^26 chunks of the smallest size the engine uses is a 64 TiB blob.
  static constexpr uint64_t kChunkIndexMax = uint64_t{1} << 26;

  struct Entry {
    uint64_t length_bytes = 0;
    Handle older = kNoHandle;  // neighbours in the eviction list while committed and unpinned
    Handle newer = kNoHandle;
    uint32_t pins = 0;
    bool present = false;
    bool committed = false;
    bool listed = false;
  };
  struct Series {
    content::ContentId content;
    uint64_t chunk_bytes = 0;
    std::vector<Entry> entries;
  };

  // The series of a chunk; nullopt when it was never reserved (find) or creates it (intern).
  std::optional<uint32_t> find_series(const content::ChunkKey& chunk) const;
  uint32_t intern_series(const content::ChunkKey& chunk);
  Entry* find(const content::ChunkKey& chunk);
  const Entry* find(const content::ChunkKey& chunk) const;
  Entry& at(Handle handle) {
    return series_[handle >> kIndexBits].entries[handle & ((Handle{1} << kIndexBits) - 1)];
  }
  static Handle handle_of(uint32_t series, uint64_t index) { return Handle{series} << kIndexBits | index; }
  void list_append(Handle handle, Entry& entry);
  void list_remove(Entry& entry);

  uint64_t capacity_bytes_;
  uint64_t used_bytes_ = 0;
  size_t chunks_committed_ = 0;
  std::map<std::pair<content::ContentId, uint64_t>, uint32_t> series_index_;
  std::vector<Series> series_;
  mutable uint32_t last_series_ = UINT32_MAX;  // most operations follow one blob: skips the map
  Handle oldest_ = kNoHandle;
  Handle newest_ = kNoHandle;
};

}  // namespace peerd::transfer
