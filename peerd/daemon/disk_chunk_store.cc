#include "peerd/daemon/disk_chunk_store.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <vector>

#include "peerd/core/common/bytes.h"

namespace peerd::daemon {

namespace fs = std::filesystem;
using content::ChunkKey;
using transfer::StoreStatus;

namespace {

constexpr std::string_view kMagic = "PEERDCK1";
constexpr size_t kFixedHeaderBytes = 8 + 1 + 4 + 8 + 8 + 8 + 8;  // magic kind id_bytes chunk index data fp
constexpr size_t kFingerprintOffset = 8 + 1 + 4 + 8 + 8 + 8;
constexpr uint32_t kIdBytesMax = 16 * 1024;  // a file URL without query; digests need 64
constexpr uint8_t kKindDigest = 0;
constexpr uint8_t kKindFile = 1;
// Pins refresh a chunk's mtime (its LRU position after a restart) at most this often.
constexpr int64_t kTouchIntervalSeconds = 60;

int64_t steady_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::vector<uint8_t> encode_header(const ChunkKey& chunk, uint64_t data_bytes,
                                   transfer::ChunkFingerprint fingerprint) {
  std::vector<uint8_t> out;
  ByteWriter writer(out);
  writer.bytes(std::span(reinterpret_cast<const uint8_t*>(kMagic.data()), kMagic.size()));
  const bool digest = chunk.content.is_blob();
  const std::string id = digest ? std::get<content::Digest>(chunk.content.id).hex()
                                : std::get<content::FileId>(chunk.content.id).url;
  writer.u8(digest ? kKindDigest : kKindFile);
  writer.u32(static_cast<uint32_t>(id.size()));
  writer.u64(chunk.chunk_bytes);
  writer.u64(chunk.index);
  writer.u64(data_bytes);
  writer.u64(fingerprint);
  writer.bytes(std::span(reinterpret_cast<const uint8_t*>(id.data()), id.size()));
  return out;
}

struct DecodedHeader {
  ChunkKey chunk;
  uint64_t header_bytes = 0;
  uint64_t data_bytes = 0;
  transfer::ChunkFingerprint fingerprint = 0;
};

std::optional<DecodedHeader> read_header(int fd) {
  std::vector<uint8_t> fixed(kFixedHeaderBytes);
  if (::pread(fd, fixed.data(), fixed.size(), 0) != static_cast<ssize_t>(fixed.size())) return std::nullopt;
  if (std::memcmp(fixed.data(), kMagic.data(), kMagic.size()) != 0) return std::nullopt;
  ByteReader reader{std::span<const uint8_t>(fixed).subspan(kMagic.size())};
  uint8_t kind = 0;
  uint32_t id_bytes = 0;
  DecodedHeader header;
  if (!reader.u8(kind) || !reader.u32(id_bytes) || !reader.u64(header.chunk.chunk_bytes) ||
      !reader.u64(header.chunk.index) || !reader.u64(header.data_bytes) || !reader.u64(header.fingerprint)) {
    return std::nullopt;
  }
  if (id_bytes == 0 || id_bytes > kIdBytesMax || header.chunk.chunk_bytes == 0 || header.data_bytes == 0) {
    return std::nullopt;
  }
  std::string id(id_bytes, '\0');
  if (::pread(fd, id.data(), id.size(), kFixedHeaderBytes) != static_cast<ssize_t>(id.size()))
    return std::nullopt;
  if (kind == kKindDigest) {
    auto digest = content::Digest::parse("sha256:" + id);
    if (!digest) return std::nullopt;
    header.chunk.content = content::ContentId::blob(*digest);
  } else if (kind == kKindFile) {
    header.chunk.content = content::ContentId::file(std::move(id));
  } else {
    return std::nullopt;
  }
  header.header_bytes = kFixedHeaderBytes + id_bytes;
  return header;
}

bool write_all(int fd, const void* data, size_t size, uint64_t offset) {
  const auto* bytes = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t written = ::pwrite(fd, bytes, size, static_cast<off_t>(offset));
    if (written < 0 && errno == EINTR) continue;
    if (written <= 0) return false;
    bytes += written;
    size -= static_cast<size_t>(written);
    offset += static_cast<uint64_t>(written);
  }
  return true;
}

void fsync_directory(const fs::path& directory) {
  const int fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

bool is_hex_name(const std::string& name, size_t length) {
  return name.size() == length && std::all_of(name.begin(), name.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

}  // namespace

std::string_view describe(AppendError error) {
  switch (error) {
    case AppendError::kNotReserved:
      return "chunk is not reserved";
    case AppendError::kOverflow:
      return "more bytes than reserved";
    case AppendError::kIo:
      return "disk write failed";
    case AppendError::kOutOfOrder:
      return "write does not continue where the chunk's bytes end";
  }
  return "append failed";
}

// A reserved chunk's file while it is written. Appends and seal hold `mutex`; the temp name is unique per
// reservation, so a late writer of an evicted reservation can never touch a newer reservation's file.
struct DiskChunkStore::PendingWrite {
  ~PendingWrite() {
    if (fd >= 0) ::close(fd);
    if (hash != nullptr) EVP_MD_CTX_free(hash);
  }

  std::mutex mutex;
  uint64_t generation = 0;
  fs::path temp_path;
  std::vector<uint8_t> header;
  uint64_t length_bytes = 0;
  uint64_t written = 0;
  int fd = -1;
  EVP_MD_CTX* hash = nullptr;
  bool sealed = false;  // fingerprinted, synced and closed; renamed once the store's lock confirmed it
  transfer::ChunkFingerprint fingerprint = 0;
  std::atomic<bool> abandoned{false};  // evicted: stop, and remove the temp file
};

DiskChunkStore::DiskChunkStore(DiskChunkStoreOptions options, Logger logger, DaemonMetrics* metrics)
    : options_(std::move(options)), logger_(std::move(logger)), metrics_(metrics) {}

DiskChunkStore::~DiskChunkStore() {
  // Unsealed reservations die with the process; their temp files would be deleted on the next start anyway.
  for (auto& [chunk, entry] : entries_) {
    if (entry.pending && !entry.sealed) {
      std::error_code ignored;
      fs::remove(entry.pending->temp_path, ignored);
    }
  }
}

Result<std::unique_ptr<DiskChunkStore>, std::string> DiskChunkStore::open(DiskChunkStoreOptions options,
                                                                          Logger logger,
                                                                          DaemonMetrics* metrics) {
  if (options.capacity_bytes == 0) return fail(std::string("cache capacity must be positive"));
  std::error_code error;
  for (const char* sub : {"chunks", "tmp"}) {
    const fs::path path = options.directory / sub;
    fs::create_directories(path, error);
    if (error) return fail("cannot create " + path.string() + ": " + error.message());
    fs::permissions(path, fs::perms::owner_all, fs::perm_options::replace, error);
  }
  fs::permissions(options.directory, fs::perms::owner_all, fs::perm_options::replace, error);
  for (const auto& leftover : fs::directory_iterator(options.directory / "tmp", error)) {
    std::error_code ignored;
    fs::remove_all(leftover.path(), ignored);
  }
  std::unique_ptr<DiskChunkStore> store(new DiskChunkStore(std::move(options), std::move(logger), metrics));
  auto rebuilt = store->rebuild();
  if (!rebuilt) return fail(rebuilt.error());
  return store;
}

Result<bool, std::string> DiskChunkStore::rebuild() {
  struct Found {
    fs::file_time_type mtime;
    ChunkKey chunk;
    uint64_t data_bytes;
    transfer::ChunkFingerprint fingerprint;
  };
  std::vector<Found> found;
  size_t removed = 0;
  std::error_code error;
  const fs::path chunks = options_.directory / "chunks";
  for (const auto& directory : fs::directory_iterator(chunks, error)) {
    if (!directory.is_directory() || !is_hex_name(directory.path().filename().string(), 2)) continue;
    for (const auto& file : fs::directory_iterator(directory.path(), error)) {
      const std::string name = file.path().filename().string();
      if (!is_hex_name(name, 64)) continue;  // not ours: leave it alone
      const int fd = ::open(file.path().c_str(), O_RDONLY | O_CLOEXEC);
      std::optional<DecodedHeader> header;
      struct stat info {};
      if (fd >= 0) {
        header = read_header(fd);
        if (::fstat(fd, &info) != 0) header.reset();
        ::close(fd);
      }
      const bool valid = header &&
                         static_cast<uint64_t>(info.st_size) == header->header_bytes + header->data_bytes &&
                         header->chunk.dht_id().to_hex() == name &&
                         directory.path().filename().string() == name.substr(0, 2);
      if (!valid) {
        std::error_code ignored;
        fs::remove(file.path(), ignored);
        ++removed;
        continue;
      }
      found.push_back(
          Found{file.last_write_time(error), header->chunk, header->data_bytes, header->fingerprint});
    }
  }
  if (error) return fail("cannot scan " + chunks.string() + ": " + error.message());
  std::sort(found.begin(), found.end(), [](const Found& a, const Found& b) { return a.mtime < b.mtime; });

  std::vector<ChunkKey> over_capacity;
  {
    std::lock_guard lock(mutex_);
    for (auto& item : found) {
      Entry entry;
      entry.committed = true;
      entry.sealed = true;
      entry.length_bytes = item.data_bytes;
      entry.fingerprint = item.fingerprint;
      entry.generation = recency_next_++;
      auto [it, inserted] = entries_.emplace(item.chunk, std::move(entry));
      if (!inserted) continue;
      used_bytes_ += item.data_bytes;
      ++committed_count_;
      lru_insert(it->first, it->second);
    }
    while (used_bytes_ > options_.capacity_bytes && !lru_.empty()) {
      over_capacity.push_back(lru_.begin()->second);
      erase_locked(entries_.find(lru_.begin()->second));
    }
    update_gauges_locked();
  }
  logger_.info("chunk cache opened", {{"dir", options_.directory.string()},
                                      {"chunks", found.size() - over_capacity.size()},
                                      {"bytes", used_bytes()},
                                      {"capacity_bytes", options_.capacity_bytes},
                                      {"invalid_removed", removed},
                                      {"evicted_over_capacity", over_capacity.size()}});
  return true;
}

fs::path DiskChunkStore::chunk_path(const ChunkKey& chunk) const {
  const std::string name = chunk.dht_id().to_hex();
  return options_.directory / "chunks" / name.substr(0, 2) / name;
}

void DiskChunkStore::lru_insert(const ChunkKey& chunk, Entry& entry) {
  entry.recency = recency_next_++;
  lru_.emplace(entry.recency, chunk);
}

void DiskChunkStore::lru_remove(Entry& entry) {
  if (entry.recency != 0) lru_.erase(entry.recency);
  entry.recency = 0;
}

// Removes an entry and its files. Called with the lock held; file removals are cheap metadata operations.
void DiskChunkStore::erase_locked(std::map<ChunkKey, Entry>::iterator it) {
  if (it == entries_.end()) return;
  Entry& entry = it->second;
  lru_remove(entry);
  used_bytes_ -= entry.length_bytes;
  std::error_code ignored;
  if (entry.sealed || entry.committed) fs::remove(chunk_path(it->first), ignored);
  if (entry.committed) {
    --committed_count_;
    if (metrics_ != nullptr) metrics_->cache_evictions.inc();
  }
  if (entry.pending) {
    entry.pending->abandoned = true;
    fs::remove(entry.pending->temp_path, ignored);
  }
  entries_.erase(it);
}

void DiskChunkStore::update_gauges_locked() {
  if (metrics_ == nullptr) return;
  metrics_->cache_bytes.set(static_cast<int64_t>(used_bytes_));
  metrics_->cache_chunks.set(static_cast<int64_t>(committed_count_));
}

bool DiskChunkStore::has(const ChunkKey& chunk) const {
  std::lock_guard lock(mutex_);
  const auto it = entries_.find(chunk);
  return it != entries_.end() && it->second.committed;
}

StoreStatus DiskChunkStore::reserve(const ChunkKey& chunk, uint64_t length_bytes) {
  std::lock_guard lock(mutex_);
  if (length_bytes == 0 || entries_.contains(chunk)) return StoreStatus::kInvalid;
  if (length_bytes > options_.capacity_bytes - std::min(used_bytes_, options_.capacity_bytes)) {
    return StoreStatus::kFull;
  }
  Entry entry;
  entry.length_bytes = length_bytes;
  entry.pending = std::make_shared<PendingWrite>();
  entry.generation = recency_next_++;
  entry.pending->generation = entry.generation;
  entry.pending->length_bytes = length_bytes;
  entry.pending->header = encode_header(chunk, length_bytes, 0);
  entry.pending->temp_path =
      options_.directory / "tmp" /
      (chunk.dht_id().to_hex() + "." + std::to_string(entry.pending->generation) + ".part");
  entries_.emplace(chunk, std::move(entry));
  used_bytes_ += length_bytes;
  update_gauges_locked();
  return StoreStatus::kOk;
}

StoreStatus DiskChunkStore::reserve_with_eviction(const ChunkKey& chunk, uint64_t length_bytes) {
  while (true) {
    const StoreStatus status = reserve(chunk, length_bytes);
    if (status != StoreStatus::kFull) return status;
    const auto victim = eviction_candidate();
    if (!victim) return StoreStatus::kFull;
    evict(*victim);
  }
}

Result<uint64_t, AppendError> DiskChunkStore::write_at(const ChunkKey& chunk, uint64_t offset_in_chunk,
                                                       std::string_view bytes) {
  return append_checked(chunk, offset_in_chunk, bytes);
}

Result<uint64_t, AppendError> DiskChunkStore::append(const ChunkKey& chunk, std::string_view bytes) {
  return append_checked(chunk, std::nullopt, bytes);
}

Result<uint64_t, AppendError> DiskChunkStore::append_checked(const ChunkKey& chunk,
                                                             std::optional<uint64_t> offset_in_chunk,
                                                             std::string_view bytes) {
  std::shared_ptr<PendingWrite> pending;
  {
    std::lock_guard lock(mutex_);
    const auto it = entries_.find(chunk);
    if (it == entries_.end() || !it->second.pending) return fail(AppendError::kNotReserved);
    pending = it->second.pending;
  }
  std::lock_guard write_lock(pending->mutex);
  if (pending->abandoned) return fail(AppendError::kNotReserved);
  if (offset_in_chunk && *offset_in_chunk != pending->written) return fail(AppendError::kOutOfOrder);
  if (pending->sealed || bytes.size() > pending->length_bytes - pending->written)
    return fail(AppendError::kOverflow);
  if (bytes.empty()) return pending->written;
  if (pending->fd < 0) {
    if (!create_pending_file(*pending)) return fail(AppendError::kIo);
    if (pending->abandoned) {  // evicted while the file was being created: the eviction may have missed it
      std::error_code ignored;
      fs::remove(pending->temp_path, ignored);
      return fail(AppendError::kNotReserved);
    }
  }
  if (!write_all(pending->fd, bytes.data(), bytes.size(), pending->header.size() + pending->written)) {
    logger_.warn("chunk write failed", {{"error", std::string(std::strerror(errno))}});
    return fail(AppendError::kIo);
  }
  EVP_DigestUpdate(pending->hash, bytes.data(), bytes.size());
  pending->written += bytes.size();
  return pending->written;
}

// Creates the temp file with its header and starts the fingerprint. Called with the pending mutex held.
bool DiskChunkStore::create_pending_file(PendingWrite& pending) {
  pending.fd = ::open(pending.temp_path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
  if (pending.fd < 0) return false;
  if (!write_all(pending.fd, pending.header.data(), pending.header.size(), 0)) return false;
  pending.hash = EVP_MD_CTX_new();
  return pending.hash != nullptr && EVP_DigestInit_ex(pending.hash, EVP_sha256(), nullptr) == 1;
}

// commit() of a chunk whose bytes were not all appended: the ChunkStore contract lets the engine commit any
// reservation, so the missing tail becomes zeros (a sparse extension) and the fingerprint covers them.
// The engine's digest check catches such a blob; it is logged because it means an adapter bug.
bool DiskChunkStore::fill_missing_bytes(PendingWrite& pending) {
  if (pending.fd < 0 && !create_pending_file(pending)) return false;
  const uint64_t missing = pending.length_bytes - pending.written;
  logger_.warn("committing a chunk that was not fully written; the rest reads as zeros",
               {{"written_bytes", pending.written}, {"length_bytes", pending.length_bytes}});
  static const std::string zeros(64 * 1024, '\0');
  for (uint64_t left = missing; left > 0;) {
    const size_t step = static_cast<size_t>(std::min<uint64_t>(left, zeros.size()));
    EVP_DigestUpdate(pending.hash, zeros.data(), step);
    left -= step;
  }
  if (::ftruncate(pending.fd, static_cast<off_t>(pending.header.size() + pending.length_bytes)) != 0)
    return false;
  pending.written = pending.length_bytes;
  return true;
}

uint64_t DiskChunkStore::written_bytes(const ChunkKey& chunk) const {
  std::shared_ptr<PendingWrite> pending;
  {
    std::lock_guard lock(mutex_);
    const auto it = entries_.find(chunk);
    if (it == entries_.end() || !it->second.pending) return 0;
    pending = it->second.pending;
  }
  std::lock_guard write_lock(pending->mutex);
  return pending->written;
}

StoreStatus DiskChunkStore::seal(const ChunkKey& chunk) {
  return seal_impl(chunk, /*fill_missing=*/false);
}

StoreStatus DiskChunkStore::seal_impl(const ChunkKey& chunk, bool fill_missing) {
  std::shared_ptr<PendingWrite> pending;
  {
    std::lock_guard lock(mutex_);
    const auto it = entries_.find(chunk);
    if (it == entries_.end()) return StoreStatus::kNotReserved;
    if (it->second.sealed) return StoreStatus::kOk;
    pending = it->second.pending;
  }
  {
    std::lock_guard write_lock(pending->mutex);
    if (pending->abandoned) return StoreStatus::kNotReserved;
    if (!pending->sealed) {
      if (pending->written != pending->length_bytes) {
        if (!fill_missing) return StoreStatus::kInvalid;
        if (!fill_missing_bytes(*pending)) return StoreStatus::kInvalid;
      }
      unsigned char digest[EVP_MAX_MD_SIZE];
      unsigned int digest_bytes = 0;
      EVP_DigestFinal_ex(pending->hash, digest, &digest_bytes);
      transfer::ChunkFingerprint fingerprint = 0;
      for (int i = 0; i < 8; ++i) fingerprint = (fingerprint << 8) | digest[i];
      std::vector<uint8_t> field;
      ByteWriter(field).u64(fingerprint);
      if (!write_all(pending->fd, field.data(), field.size(), kFingerprintOffset))
        return StoreStatus::kInvalid;
      if (options_.fsync && ::fdatasync(pending->fd) != 0) return StoreStatus::kInvalid;
      ::close(pending->fd);
      pending->fd = -1;
      pending->fingerprint = fingerprint;
      pending->sealed = true;
    }
  }
  // The rename happens under the store's lock, so it can never race an eviction or a newer reservation of
  // the same chunk over the final name.
  const fs::path final_path = chunk_path(chunk);
  {
    std::lock_guard lock(mutex_);
    const auto it = entries_.find(chunk);
    if (it == entries_.end() || it->second.pending != pending) {
      std::error_code ignored;
      fs::remove(pending->temp_path, ignored);
      return StoreStatus::kNotReserved;
    }
    if (it->second.sealed) return StoreStatus::kOk;
    std::error_code error;
    fs::create_directories(final_path.parent_path(), error);
    if (!error) fs::rename(pending->temp_path, final_path, error);
    if (error) {
      logger_.warn("chunk seal failed", {{"error", error.message()}});
      return StoreStatus::kInvalid;
    }
    it->second.sealed = true;
    it->second.fingerprint = pending->fingerprint;
  }
  if (options_.fsync) fsync_directory(final_path.parent_path());
  return StoreStatus::kOk;
}

StoreStatus DiskChunkStore::commit(const ChunkKey& chunk) {
  {
    std::lock_guard lock(mutex_);
    const auto it = entries_.find(chunk);
    if (it == entries_.end() || it->second.committed) return StoreStatus::kNotReserved;
  }
  if (const StoreStatus sealed = seal_impl(chunk, /*fill_missing=*/true); sealed != StoreStatus::kOk)
    return sealed;
  std::lock_guard lock(mutex_);
  const auto it = entries_.find(chunk);
  if (it == entries_.end()) return StoreStatus::kNotReserved;
  Entry& entry = it->second;
  if (entry.committed) return StoreStatus::kNotReserved;
  entry.committed = true;
  entry.pending.reset();
  ++committed_count_;
  if (entry.pins == 0) lru_insert(it->first, entry);
  update_gauges_locked();
  return StoreStatus::kOk;
}

void DiskChunkStore::evict(const ChunkKey& chunk) {
  std::lock_guard lock(mutex_);
  erase_locked(entries_.find(chunk));
  update_gauges_locked();
}

void DiskChunkStore::pin(const ChunkKey& chunk) {
  fs::path touch;
  {
    std::lock_guard lock(mutex_);
    const auto it = entries_.find(chunk);
    if (it == entries_.end() || !it->second.committed) return;
    Entry& entry = it->second;
    if (entry.pins++ == 0) lru_remove(entry);
    const int64_t now = steady_seconds();
    if (now - entry.touched_seconds >= kTouchIntervalSeconds) {
      entry.touched_seconds = now;
      touch = chunk_path(chunk);
    }
  }
  if (!touch.empty()) ::utimensat(AT_FDCWD, touch.c_str(), nullptr, 0);  // LRU order for the next start
}

void DiskChunkStore::unpin(const ChunkKey& chunk) {
  std::lock_guard lock(mutex_);
  const auto it = entries_.find(chunk);
  if (it == entries_.end() || !it->second.committed || it->second.pins == 0) return;
  if (--it->second.pins == 0) lru_insert(it->first, it->second);
}

void DiskChunkStore::release_pin(const ChunkKey& chunk, uint64_t generation) {
  std::lock_guard lock(mutex_);
  const auto it = entries_.find(chunk);
  if (it == entries_.end() || it->second.generation != generation || it->second.pins == 0) return;
  if (--it->second.pins == 0) lru_insert(it->first, it->second);
}

std::optional<ChunkKey> DiskChunkStore::eviction_candidate() const {
  std::lock_guard lock(mutex_);
  if (lru_.empty()) return std::nullopt;
  return lru_.begin()->second;
}

uint64_t DiskChunkStore::used_bytes() const {
  std::lock_guard lock(mutex_);
  return used_bytes_;
}

size_t DiskChunkStore::chunk_count() const {
  std::lock_guard lock(mutex_);
  return committed_count_;
}

std::optional<transfer::ChunkFingerprint> DiskChunkStore::fingerprint(const ChunkKey& chunk) const {
  std::lock_guard lock(mutex_);
  const auto it = entries_.find(chunk);
  if (it == entries_.end() || !it->second.sealed) return std::nullopt;
  return it->second.fingerprint;
}

DiskChunkStore::ReadHandle::~ReadHandle() {
  ::close(fd_);
  store_.release_pin(chunk_, generation_);
}

std::shared_ptr<const DiskChunkStore::ReadHandle> DiskChunkStore::open_for_read(const ChunkKey& chunk) {
  pin(chunk);
  uint64_t length_bytes = 0;
  uint64_t generation = 0;
  {
    std::lock_guard lock(mutex_);
    const auto it = entries_.find(chunk);
    if (it == entries_.end() || !it->second.committed) {
      if (metrics_ != nullptr) metrics_->cache_misses.inc();
      return nullptr;  // pin() was a no-op
    }
    length_bytes = it->second.length_bytes;
    generation = it->second.generation;
  }
  const int fd = ::open(chunk_path(chunk).c_str(), O_RDONLY | O_CLOEXEC);
  std::optional<DecodedHeader> header;
  if (fd >= 0) header = read_header(fd);
  if (!header || header->data_bytes != length_bytes || !(header->chunk == chunk)) {
    // The file vanished or was damaged behind our back: forget the chunk so it is fetched again.
    if (fd >= 0) ::close(fd);
    logger_.warn("chunk file unreadable, evicting", {{"path", chunk_path(chunk).string()}});
    unpin(chunk);
    evict(chunk);
    if (metrics_ != nullptr) metrics_->cache_misses.inc();
    return nullptr;
  }
  if (metrics_ != nullptr) metrics_->cache_hits.inc();
  return std::shared_ptr<const ReadHandle>(
      new ReadHandle(*this, chunk, generation, fd, header->header_bytes, length_bytes));
}

FileRegion DiskChunkStore::region(const std::shared_ptr<const ReadHandle>& handle, uint64_t offset_in_chunk,
                                  uint64_t length_bytes) {
  return FileRegion{handle->fd(), handle->data_offset() + offset_in_chunk, length_bytes, handle};
}

bool DiskChunkStore::read(const ReadHandle& handle, uint64_t offset_in_chunk, uint64_t length_bytes,
                          std::string& out) {
  if (offset_in_chunk > handle.length_bytes() || length_bytes > handle.length_bytes() - offset_in_chunk)
    return false;
  out.resize(length_bytes);
  uint64_t done = 0;
  while (done < length_bytes) {
    const ssize_t got = ::pread(handle.fd(), out.data() + done, length_bytes - done,
                                static_cast<off_t>(handle.data_offset() + offset_in_chunk + done));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return false;
    done += static_cast<uint64_t>(got);
  }
  return true;
}

}  // namespace peerd::daemon
