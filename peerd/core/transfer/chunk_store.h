#pragma once
// The seam between the transfer engine and where chunk bytes live. The daemon implements it on disk
// (DiskChunkStore, later), the harness and the ns-3 simulator with VirtualChunkStore (sizes only, no bytes).
// Every implementation must pass the conformance suite in peerd/core/tests/chunk_store_conformance.h.
//
// Division of work: the engine decides *which* chunks exist (reserve before a fetch, commit when the adapter
// reports it complete, evict on corruption or for space) and pins the chunks that reads and serves are using;
// the adapter moves the bytes (it writes fetched bytes into a reserved chunk and reads committed chunks to
// answer clients), and the store picks eviction victims (least recently used unpinned chunk) because it knows
// what survives a restart. A reserved chunk keeps the bytes written so far, so a fetch that resumes at
// another source appends to it.
#include <cstdint>
#include <optional>
#include <string_view>

#include "peerd/core/content/content_key.h"

namespace peerd::transfer {

enum class StoreStatus : uint8_t {
  kOk,
  kFull,         // no room without evicting: the engine asks eviction_candidate() and retries
  kInvalid,      // zero length, or the chunk is already reserved or committed
  kNotReserved,  // commit of a chunk that was not reserved
};
std::string_view describe(StoreStatus status);

class ChunkStore {
 public:
  virtual ~ChunkStore() = default;

  // True when the chunk is committed: complete and readable.
  virtual bool has(const content::ChunkKey& chunk) const = 0;
  // Claims `length_bytes` for a chunk about to be written (the last chunk of an item may be short). Does not
  // evict on its own; kFull when the capacity would be exceeded.
  [[nodiscard]] virtual StoreStatus reserve(const content::ChunkKey& chunk, uint64_t length_bytes) = 0;
  // The reserved chunk is written in full and becomes readable.
  [[nodiscard]] virtual StoreStatus commit(const content::ChunkKey& chunk) = 0;
  // Drops a committed or reserved chunk and frees its space (no-op if absent). Pinned chunks may be evicted
  // too (the engine only does so to drop corrupt data); their pins vanish with them.
  virtual void evict(const content::ChunkKey& chunk) = 0;

  // Pins keep a committed chunk out of eviction_candidate() while a read or serve uses it. Counted: every pin
  // needs one unpin. Pinning also marks the chunk as recently used. No-ops on absent chunks.
  virtual void pin(const content::ChunkKey& chunk) = 0;
  virtual void unpin(const content::ChunkKey& chunk) = 0;

  // The committed, unpinned chunk this store would drop first (least recently committed or pinned).
  virtual std::optional<content::ChunkKey> eviction_candidate() const = 0;

  // Reserved plus committed bytes, and the limit.
  virtual uint64_t used_bytes() const = 0;
  virtual uint64_t capacity_bytes() const = 0;
};

}  // namespace peerd::transfer
