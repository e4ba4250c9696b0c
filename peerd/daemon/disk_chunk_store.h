#pragma once
// DiskChunkStore: the daemon's transfer::ChunkStore, chunk bytes in files under --cache-dir.
//
// Layout (directories 0700, files 0600, so cached private layers stay private):
//   <cache-dir>/chunks/<2 hex>/<64 hex>   committed chunks; the name is ChunkKey::dht_id() in hex
//   <cache-dir>/tmp/<64 hex>.part         chunks being written (reserved); deleted on start
// Each chunk file starts with a small header (magic, the ChunkKey, data length, fingerprint) followed by the
// data, so the index is rebuilt on start by scanning chunks/ (files that do not check out are deleted) and
// the store survives a restart. LRU order survives too, approximately: pins touch the file's mtime (at most
// once a minute per chunk) and the rebuild orders by mtime.
//
// Division of work follows chunk_store.h: the engine reserves, commits, evicts and pins; the adapter appends
// fetched bytes (append), optionally seals them to disk off the engine's thread (seal: fingerprint,
// fdatasync, rename), and serves committed chunks zero-copy through pinned read handles (open_for_read +
// region). Capacity counts data bytes (headers, ~100 bytes per chunk, are not counted). reserve() never
// evicts; reserve_with_eviction() is the adapter-side convenience that does, in LRU order, skipping pinned
// chunks.
//
// Thread-safe: the engine, the upstream thread and HTTP sessions call it concurrently. File writes and
// fsyncs happen outside the store's lock. Read handles must not outlive the store.
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "peerd/core/common/result.h"
#include "peerd/core/transfer/chunk_store.h"
#include "peerd/core/transfer/types.h"
#include "peerd/daemon/daemon_metrics.h"
#include "peerd/daemon/http_message.h"
#include "peerd/daemon/log.h"

namespace peerd::daemon {

struct DiskChunkStoreOptions {
  std::filesystem::path directory;
  uint64_t capacity_bytes = 10ull << 30;
  bool fsync = true;  // fdatasync each chunk and fsync its directory before it counts as committed
};

enum class AppendError {
  kNotReserved,  // no reserved chunk with this key (never reserved, committed, or evicted)
  kOverflow,     // more bytes than the reserved length
  kIo,           // the disk refused (ENOSPC, EIO, ...)
  kOutOfOrder,   // write_at() at another offset than the bytes written so far
};
std::string_view describe(AppendError error);

class DiskChunkStore final : public transfer::ChunkStore {
 public:
  // Creates the directories, deletes leftovers in tmp/, and rebuilds the index from chunks/. If the rebuilt
  // content exceeds the capacity (it was lowered), the least recently used chunks are evicted.
  static Result<std::unique_ptr<DiskChunkStore>, std::string> open(DiskChunkStoreOptions options,
                                                                   Logger logger, DaemonMetrics* metrics);
  ~DiskChunkStore() override;

  // transfer::ChunkStore
  bool has(const content::ChunkKey& chunk) const override;
  transfer::StoreStatus reserve(const content::ChunkKey& chunk, uint64_t length_bytes) override;
  // Seals the chunk first if the adapter has not. The contract lets the engine commit any reservation: bytes
  // never appended read as zeros (logged as an adapter bug). kNotReserved if absent or already committed;
  // kInvalid if the disk refused.
  transfer::StoreStatus commit(const content::ChunkKey& chunk) override;
  void evict(const content::ChunkKey& chunk) override;
  void pin(const content::ChunkKey& chunk) override;
  void unpin(const content::ChunkKey& chunk) override;
  std::optional<content::ChunkKey> eviction_candidate() const override;
  uint64_t used_bytes() const override;
  uint64_t capacity_bytes() const override { return options_.capacity_bytes; }

  // reserve(), evicting eviction_candidate() while it answers kFull.
  transfer::StoreStatus reserve_with_eviction(const content::ChunkKey& chunk, uint64_t length_bytes);

  // Appends to a reserved chunk; returns the bytes written so far (the resume offset).
  Result<uint64_t, AppendError> append(const content::ChunkKey& chunk, std::string_view bytes);
  // append() that first checks `offset_in_chunk` is where the chunk's bytes end: a StartFetch's
  // begin_in_chunk (a resumed fetch continues exactly where the previous source stopped).
  Result<uint64_t, AppendError> write_at(const content::ChunkKey& chunk, uint64_t offset_in_chunk,
                                         std::string_view bytes);
  // Bytes appended so far to a reserved chunk (0 if none or not reserved): where a resumed fetch continues.
  uint64_t written_bytes(const content::ChunkKey& chunk) const;
  // Makes a fully written reserved chunk durable under its final name (fingerprint, fdatasync, rename,
  // directory fsync) without making it readable; commit() then only flips its state. Call it on an I/O
  // thread so the engine's commit stays cheap. Idempotent.
  transfer::StoreStatus seal(const content::ChunkKey& chunk);
  // The fingerprint (first 8 bytes of the sha256 of the data) of a sealed or committed chunk.
  std::optional<transfer::ChunkFingerprint> fingerprint(const content::ChunkKey& chunk) const;

  // A committed chunk opened for reading. Holds a pin (released on destruction) and an open descriptor: even
  // an evict() of a pinned chunk (corruption) leaves an open handle readable until it is dropped.
  class ReadHandle {
   public:
    ~ReadHandle();
    ReadHandle(const ReadHandle&) = delete;
    ReadHandle& operator=(const ReadHandle&) = delete;
    int fd() const { return fd_; }
    uint64_t data_offset() const { return data_offset_; }  // where the chunk's byte 0 is in the file
    uint64_t length_bytes() const { return length_bytes_; }
    const content::ChunkKey& chunk() const { return chunk_; }

   private:
    friend class DiskChunkStore;
    ReadHandle(DiskChunkStore& store, content::ChunkKey chunk, uint64_t generation, int fd,
               uint64_t data_offset, uint64_t length_bytes)
        : store_(store),
          chunk_(std::move(chunk)),
          generation_(generation),
          fd_(fd),
          data_offset_(data_offset),
          length_bytes_(length_bytes) {}
    DiskChunkStore& store_;
    content::ChunkKey chunk_;
    uint64_t generation_;  // the entry this handle pinned; a re-added chunk of the same key is another entry
    int fd_;
    uint64_t data_offset_;
    uint64_t length_bytes_;
  };

  // nullptr when the chunk is not committed (or its file cannot be opened: it is then evicted).
  std::shared_ptr<const ReadHandle> open_for_read(const content::ChunkKey& chunk);
  // Bytes [offset, offset + length) of an open chunk, for the HTTP server's sendfile path. The region owns
  // the handle, so the chunk stays pinned until the bytes are sent. Requires offset + length <= length_bytes.
  static FileRegion region(const std::shared_ptr<const ReadHandle>& handle, uint64_t offset_in_chunk,
                           uint64_t length_bytes);
  // Copies bytes out (digest checks, tests). False on a short read.
  static bool read(const ReadHandle& handle, uint64_t offset_in_chunk, uint64_t length_bytes,
                   std::string& out);

  size_t chunk_count() const;
  std::filesystem::path chunk_path(const content::ChunkKey& chunk) const;

  struct PendingWrite;

 private:
  struct Entry {
    bool committed = false;
    bool sealed = false;  // durable under the final name
    uint64_t length_bytes = 0;
    uint32_t pins = 0;
    uint64_t recency = 0;     // key in lru_ while committed and unpinned
    uint64_t generation = 0;  // unique per reservation (or per chunk found at start)
    transfer::ChunkFingerprint fingerprint = 0;
    std::shared_ptr<PendingWrite> pending;  // reserved chunks
    int64_t touched_seconds = 0;            // last mtime touch, steady seconds
  };

  DiskChunkStore(DiskChunkStoreOptions options, Logger logger, DaemonMetrics* metrics);
  Result<bool, std::string> rebuild();
  void lru_insert(const content::ChunkKey& chunk, Entry& entry);
  void lru_remove(Entry& entry);
  void erase_locked(std::map<content::ChunkKey, Entry>::iterator it);
  void update_gauges_locked();
  void release_pin(const content::ChunkKey& chunk, uint64_t generation);
  transfer::StoreStatus seal_impl(const content::ChunkKey& chunk, bool fill_missing);
  bool create_pending_file(PendingWrite& pending);
  bool fill_missing_bytes(PendingWrite& pending);
  Result<uint64_t, AppendError> append_checked(const content::ChunkKey& chunk,
                                               std::optional<uint64_t> offset_in_chunk,
                                               std::string_view bytes);

  const DiskChunkStoreOptions options_;
  const Logger logger_;
  DaemonMetrics* const metrics_;
  mutable std::mutex mutex_;
  std::map<content::ChunkKey, Entry> entries_;
  std::map<uint64_t, content::ChunkKey> lru_;  // committed, unpinned, least recent first
  uint64_t recency_next_ = 1;
  uint64_t used_bytes_ = 0;
  size_t committed_count_ = 0;
};

}  // namespace peerd::daemon
