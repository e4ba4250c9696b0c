#include "peerd/daemon/disk_chunk_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <openssl/sha.h>

#include <fstream>
#include <thread>

#include "peerd/core/tests/chunk_store_conformance.h"

namespace peerd::daemon {
namespace {

namespace fs = std::filesystem;
using content::ChunkKey;

// The core's ChunkStore conformance suite (what the transfer engine relies on), run against DiskChunkStore
// in a fresh temporary directory per test.
class ConformanceDiskStore final : public transfer::ChunkStore {
 public:
  explicit ConformanceDiskStore(uint64_t capacity_bytes) {
    char path_template[] = "/tmp/peerd-store-conformance-XXXXXX";
    directory_ = ::mkdtemp(path_template);
    store_ = DiskChunkStore::open({directory_, capacity_bytes, /*fsync=*/false},
                                  Logger(LogLevel::kError, [](std::string_view) {}), nullptr)
                 .value();
  }
  ~ConformanceDiskStore() override {
    store_.reset();
    fs::remove_all(directory_);
  }
  bool has(const ChunkKey& chunk) const override { return store_->has(chunk); }
  transfer::StoreStatus reserve(const ChunkKey& chunk, uint64_t bytes) override {
    return store_->reserve(chunk, bytes);
  }
  transfer::StoreStatus commit(const ChunkKey& chunk) override { return store_->commit(chunk); }
  void evict(const ChunkKey& chunk) override { store_->evict(chunk); }
  void pin(const ChunkKey& chunk) override { store_->pin(chunk); }
  void unpin(const ChunkKey& chunk) override { store_->unpin(chunk); }
  std::optional<ChunkKey> eviction_candidate() const override { return store_->eviction_candidate(); }
  uint64_t used_bytes() const override { return store_->used_bytes(); }
  uint64_t capacity_bytes() const override { return store_->capacity_bytes(); }

 private:
  fs::path directory_;
  std::unique_ptr<DiskChunkStore> store_;
};

struct DiskStoreFactory {
  static std::unique_ptr<transfer::ChunkStore> make(uint64_t capacity_bytes) {
    return std::make_unique<ConformanceDiskStore>(capacity_bytes);
  }
};

}  // namespace
}  // namespace peerd::daemon

namespace peerd::transfer::conformance {
INSTANTIATE_TYPED_TEST_SUITE_P(Disk, ChunkStoreConformance,
                               ::testing::Types<peerd::daemon::DiskStoreFactory>);
}  // namespace peerd::transfer::conformance

namespace peerd::daemon {
namespace {
using content::ChunkKey;
using transfer::StoreStatus;

ChunkKey blob_chunk(uint64_t index, char digest_hex = 'a', uint64_t chunk_bytes = 1000) {
  return ChunkKey{content::ContentId::blob(*content::Digest::parse("sha256:" + std::string(64, digest_hex))),
                  index, chunk_bytes};
}

ChunkKey file_chunk(uint64_t index) {
  return ChunkKey{content::ContentId::file("https://store.example/dir/file.bin"), index, 1000};
}

std::string bytes_for(uint64_t seed, size_t size) {
  std::string out(size, '\0');
  for (size_t i = 0; i < size; ++i) out[i] = static_cast<char>((seed * 131 + i * 7) % 251);
  return out;
}

transfer::ChunkFingerprint expected_fingerprint(const std::string& data) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest);
  transfer::ChunkFingerprint value = 0;
  for (int i = 0; i < 8; ++i) value = (value << 8) | digest[i];
  return value;
}

class DiskChunkStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char path_template[] = "/tmp/peerd-store-test-XXXXXX";
    directory_ = ::mkdtemp(path_template);
  }
  void TearDown() override {
    store_.reset();
    fs::remove_all(directory_);
  }

  DiskChunkStore& open(uint64_t capacity_bytes = 4000) {
    store_.reset();
    auto opened = DiskChunkStore::open({directory_ / "cache", capacity_bytes, /*fsync=*/false},
                                       Logger(LogLevel::kError, [](std::string_view) {}), &metrics_);
    EXPECT_TRUE(opened.ok()) << (opened.ok() ? "" : opened.error());
    store_ = std::move(opened.value());
    return *store_;
  }

  // Reserves, appends in two pieces and commits.
  void put(DiskChunkStore& store, const ChunkKey& chunk, const std::string& data) {
    ASSERT_EQ(store.reserve(chunk, data.size()), StoreStatus::kOk);
    const size_t half = data.size() / 2;
    ASSERT_TRUE(store.append(chunk, std::string_view(data).substr(0, half)).ok());
    auto written = store.append(chunk, std::string_view(data).substr(half));
    ASSERT_TRUE(written.ok());
    ASSERT_EQ(*written, data.size());
    ASSERT_EQ(store.commit(chunk), StoreStatus::kOk);
  }

  std::string read_all(DiskChunkStore& store, const ChunkKey& chunk) {
    auto handle = store.open_for_read(chunk);
    if (!handle) return "<missing>";
    std::string out;
    EXPECT_TRUE(DiskChunkStore::read(*handle, 0, handle->length_bytes(), out));
    return out;
  }

  fs::path directory_;
  MetricsRegistry registry_;
  DaemonMetrics metrics_{registry_};
  std::unique_ptr<DiskChunkStore> store_;
};

// Shows the basic cycle: reserve, append in pieces, commit, then read back with the sha256-based fingerprint.
TEST_F(DiskChunkStoreTest, ReserveAppendCommitRead) {
  DiskChunkStore& store = open();
  const std::string data = bytes_for(1, 1000);
  EXPECT_FALSE(store.has(blob_chunk(0)));
  put(store, blob_chunk(0), data);
  put(store, file_chunk(3), bytes_for(2, 700));
  EXPECT_TRUE(store.has(blob_chunk(0)));
  EXPECT_TRUE(store.has(file_chunk(3)));
  EXPECT_EQ(read_all(store, blob_chunk(0)), data);
  EXPECT_EQ(read_all(store, file_chunk(3)), bytes_for(2, 700));
  EXPECT_EQ(store.fingerprint(blob_chunk(0)), expected_fingerprint(data));
  EXPECT_EQ(store.used_bytes(), 1700u);
  EXPECT_EQ(store.chunk_count(), 2u);
  EXPECT_EQ(metrics_.cache_bytes.value(), 1700);
  EXPECT_EQ(metrics_.cache_chunks.value(), 2);
}

// Shows the status codes of the ChunkStore contract and append's own errors.
TEST_F(DiskChunkStoreTest, ContractStatuses) {
  DiskChunkStore& store = open();
  EXPECT_EQ(store.reserve(blob_chunk(0), 0), StoreStatus::kInvalid);
  EXPECT_EQ(store.commit(blob_chunk(0)), StoreStatus::kNotReserved);
  EXPECT_EQ(store.append(blob_chunk(0), "x").error(), AppendError::kNotReserved);
  ASSERT_EQ(store.reserve(blob_chunk(0), 10), StoreStatus::kOk);
  EXPECT_EQ(store.reserve(blob_chunk(0), 10), StoreStatus::kInvalid);
  EXPECT_EQ(store.append(blob_chunk(0), std::string(11, 'x')).error(), AppendError::kOverflow);
  ASSERT_TRUE(store.append(blob_chunk(0), "12345").ok());
  EXPECT_EQ(store.written_bytes(blob_chunk(0)), 5u);
  EXPECT_EQ(store.seal(blob_chunk(0)), StoreStatus::kInvalid);  // only half written
  EXPECT_FALSE(store.has(blob_chunk(0)));
  ASSERT_TRUE(store.append(blob_chunk(0), "67890").ok());
  EXPECT_EQ(store.commit(blob_chunk(0)), StoreStatus::kOk);
  EXPECT_EQ(store.commit(blob_chunk(0)), StoreStatus::kNotReserved);
  EXPECT_EQ(store.reserve(blob_chunk(0), 10), StoreStatus::kInvalid);
  EXPECT_EQ(store.append(blob_chunk(0), "x").error(), AppendError::kNotReserved);
  EXPECT_EQ(store.used_bytes(), 10u);
  store.evict(blob_chunk(9));  // absent: no-op
}

// Shows commit() of a reservation that was not fully written (allowed by the ChunkStore contract) keeps
// the written bytes, reads the rest as zeros, and fingerprints exactly what it stores.
TEST_F(DiskChunkStoreTest, IncompleteCommitReadsZeros) {
  DiskChunkStore& store = open();
  ASSERT_EQ(store.reserve(blob_chunk(0), 8), StoreStatus::kOk);
  ASSERT_TRUE(store.append(blob_chunk(0), "abc").ok());
  ASSERT_EQ(store.commit(blob_chunk(0)), StoreStatus::kOk);
  const std::string stored = std::string("abc") + std::string(5, '\0');
  EXPECT_EQ(read_all(store, blob_chunk(0)), stored);
  EXPECT_EQ(store.fingerprint(blob_chunk(0)), expected_fingerprint(stored));
  ASSERT_EQ(store.reserve(blob_chunk(1), 4), StoreStatus::kOk);  // nothing written at all
  ASSERT_EQ(store.commit(blob_chunk(1)), StoreStatus::kOk);
  EXPECT_EQ(read_all(store, blob_chunk(1)), std::string(4, '\0'));
}

// Shows write_at() continues a chunk only where its bytes end, as a fetch resumed at another source does.
TEST_F(DiskChunkStoreTest, ResumedWritesContinueAtTheEnd) {
  DiskChunkStore& store = open();
  ASSERT_EQ(store.reserve(blob_chunk(0), 10), StoreStatus::kOk);
  ASSERT_TRUE(store.write_at(blob_chunk(0), 0, "0123").ok());
  EXPECT_EQ(store.write_at(blob_chunk(0), 0, "0123").error(), AppendError::kOutOfOrder);  // a late duplicate
  EXPECT_EQ(store.write_at(blob_chunk(0), 6, "67").error(), AppendError::kOutOfOrder);    // a gap
  ASSERT_TRUE(store.write_at(blob_chunk(0), store.written_bytes(blob_chunk(0)), "456789").ok());
  ASSERT_EQ(store.commit(blob_chunk(0)), StoreStatus::kOk);
  EXPECT_EQ(read_all(store, blob_chunk(0)), "0123456789");
}

// Shows the capacity (reserved + committed) refuses with kFull, LRU order follows commits and pins, pinned
// chunks are never candidates, and reserve_with_eviction makes room from the LRU end.
TEST_F(DiskChunkStoreTest, CapacityAndLruEviction) {
  DiskChunkStore& store = open(4000);
  for (uint64_t i = 0; i < 4; ++i) put(store, blob_chunk(i), bytes_for(i, 1000));
  EXPECT_EQ(store.reserve(blob_chunk(4), 1000), StoreStatus::kFull);
  EXPECT_EQ(store.eviction_candidate(), blob_chunk(0));
  store.pin(blob_chunk(0));
  EXPECT_EQ(store.eviction_candidate(), blob_chunk(1));
  store.unpin(blob_chunk(0));  // pinning counts as a use: chunk 0 is now the most recent
  EXPECT_EQ(store.eviction_candidate(), blob_chunk(1));

  ASSERT_EQ(store.reserve_with_eviction(blob_chunk(4), 1000), StoreStatus::kOk);
  EXPECT_FALSE(store.has(blob_chunk(1)));
  EXPECT_FALSE(fs::exists(store.chunk_path(blob_chunk(1))));
  EXPECT_EQ(metrics_.cache_evictions.value(), 1u);

  for (uint64_t i : {0, 2, 3}) store.pin(blob_chunk(i));
  EXPECT_FALSE(store.eviction_candidate().has_value());  // chunk 4 is reserved, not committed
  EXPECT_EQ(store.reserve_with_eviction(blob_chunk(5), 1000), StoreStatus::kFull);
  EXPECT_TRUE(store.has(blob_chunk(0)));
}

// Shows a read handle pins its chunk (no LRU eviction while it is served), an explicit evict of a pinned
// chunk still leaves the open handle readable, and a stale handle never unpins a re-added chunk.
TEST_F(DiskChunkStoreTest, ReadHandlesPinAndSurviveExplicitEviction) {
  DiskChunkStore& store = open(2000);
  const std::string data = bytes_for(7, 1000);
  put(store, blob_chunk(0), data);
  put(store, blob_chunk(1), bytes_for(8, 1000));
  auto handle = store.open_for_read(blob_chunk(0));
  ASSERT_TRUE(handle);
  EXPECT_EQ(store.eviction_candidate(), blob_chunk(1));
  ASSERT_EQ(store.reserve_with_eviction(blob_chunk(2), 1000), StoreStatus::kOk);
  EXPECT_TRUE(store.has(blob_chunk(0)));
  EXPECT_FALSE(store.has(blob_chunk(1)));

  store.evict(blob_chunk(0));  // e.g. corruption found: goes even though pinned
  EXPECT_FALSE(store.has(blob_chunk(0)));
  std::string out;
  EXPECT_TRUE(DiskChunkStore::read(*handle, 100, 200, out));
  EXPECT_EQ(out, data.substr(100, 200));

  put(store, blob_chunk(0), data);
  store.pin(blob_chunk(0));
  handle.reset();  // the stale handle's unpin must not cancel the pin above
  EXPECT_NE(store.eviction_candidate(), blob_chunk(0));
}

// Shows a region for the HTTP server points past the chunk header and keeps the chunk pinned until dropped.
TEST_F(DiskChunkStoreTest, RegionsForZeroCopyServing) {
  DiskChunkStore& store = open(2000);
  const std::string data = bytes_for(3, 1000);
  put(store, blob_chunk(0), data);
  FileRegion region;
  {
    auto handle = store.open_for_read(blob_chunk(0));
    region = DiskChunkStore::region(handle, 10, 20);
  }
  EXPECT_FALSE(store.eviction_candidate().has_value());  // still pinned by the region
  std::string out(20, '\0');
  ASSERT_EQ(::pread(region.fd, out.data(), 20, static_cast<off_t>(region.offset)), 20);
  EXPECT_EQ(out, data.substr(10, 20));
  region = FileRegion{};
  EXPECT_EQ(store.eviction_candidate(), blob_chunk(0));
}

// Shows committed chunks, fingerprints and LRU order (by mtime) survive a restart, while unfinished
// reservations and tmp/ leftovers are dropped.
TEST_F(DiskChunkStoreTest, SurvivesRestart) {
  fs::path path0;
  fs::path path1;
  {
    DiskChunkStore& store = open(4000);
    put(store, blob_chunk(0), bytes_for(0, 1000));
    put(store, file_chunk(1), bytes_for(1, 500));
    ASSERT_EQ(store.reserve(blob_chunk(2), 1000), StoreStatus::kOk);
    ASSERT_TRUE(store.append(blob_chunk(2), "partial").ok());
    path0 = store.chunk_path(blob_chunk(0));
    path1 = store.chunk_path(file_chunk(1));
  }
  store_.reset();
  // Chunk 0 was used more recently than chunk 1, whatever the commit order was.
  const timespec older[2] = {{1000000000, 0}, {1000000000, 0}};
  const timespec newer[2] = {{2000000000, 0}, {2000000000, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, path1.c_str(), older, 0), 0);
  ASSERT_EQ(::utimensat(AT_FDCWD, path0.c_str(), newer, 0), 0);
  std::ofstream(directory_ / "cache" / "tmp" / "leftover.part") << "x";

  DiskChunkStore& store = open(4000);
  EXPECT_TRUE(store.has(blob_chunk(0)));
  EXPECT_TRUE(store.has(file_chunk(1)));
  EXPECT_FALSE(store.has(blob_chunk(2)));
  EXPECT_EQ(store.written_bytes(blob_chunk(2)), 0u);
  EXPECT_EQ(read_all(store, file_chunk(1)), bytes_for(1, 500));
  EXPECT_EQ(store.fingerprint(blob_chunk(0)), expected_fingerprint(bytes_for(0, 1000)));
  EXPECT_EQ(store.used_bytes(), 1500u);
  EXPECT_EQ(store.eviction_candidate(),
            blob_chunk(0));  // read_all(file_chunk 1) just made it the most recent
  EXPECT_TRUE(fs::is_empty(directory_ / "cache" / "tmp"));
}

// Shows the rebuild orders the LRU by mtime (oldest first) when nothing has been read since the start.
TEST_F(DiskChunkStoreTest, RebuildOrdersByMtime) {
  std::vector<fs::path> paths;
  {
    DiskChunkStore& store = open(4000);
    for (uint64_t i = 0; i < 3; ++i) {
      put(store, blob_chunk(i), bytes_for(i, 1000));
      paths.push_back(store.chunk_path(blob_chunk(i)));
    }
  }
  store_.reset();
  const int64_t seconds[3] = {300, 100, 200};  // chunk 1 oldest, then 2, then 0
  for (size_t i = 0; i < 3; ++i) {
    const timespec times[2] = {{seconds[i], 0}, {seconds[i], 0}};
    ASSERT_EQ(::utimensat(AT_FDCWD, paths[i].c_str(), times, 0), 0);
  }
  DiskChunkStore& store = open(4000);
  EXPECT_EQ(store.eviction_candidate(), blob_chunk(1));
  store.evict(blob_chunk(1));
  EXPECT_EQ(store.eviction_candidate(), blob_chunk(2));
}

// Shows damaged chunk files (truncated, garbage, misnamed) are deleted by the rebuild; foreign files stay.
TEST_F(DiskChunkStoreTest, RebuildDropsDamagedFiles) {
  fs::path good;
  fs::path truncated;
  {
    DiskChunkStore& store = open(4000);
    put(store, blob_chunk(0), bytes_for(0, 1000));
    put(store, blob_chunk(1), bytes_for(1, 1000));
    good = store.chunk_path(blob_chunk(0));
    truncated = store.chunk_path(blob_chunk(1));
  }
  store_.reset();
  fs::resize_file(truncated, fs::file_size(truncated) - 1);
  const fs::path garbage = good.parent_path() / std::string(64, 'f');
  std::ofstream(garbage) << "not a chunk";
  const fs::path misnamed = good.parent_path() / std::string(64, 'e');
  fs::copy_file(good, misnamed);
  const fs::path foreign = good.parent_path() / "README";
  std::ofstream(foreign) << "left alone";

  DiskChunkStore& store = open(4000);
  EXPECT_TRUE(store.has(blob_chunk(0)));
  EXPECT_FALSE(store.has(blob_chunk(1)));
  EXPECT_EQ(store.chunk_count(), 1u);
  EXPECT_FALSE(fs::exists(truncated));
  EXPECT_FALSE(fs::exists(garbage));
  EXPECT_FALSE(fs::exists(misnamed));
  EXPECT_TRUE(fs::exists(foreign));
}

// Shows reopening with a smaller --cache-size evicts least recently used chunks until the rest fits.
TEST_F(DiskChunkStoreTest, LowerCapacityOnReopenEvicts) {
  {
    DiskChunkStore& store = open(4000);
    for (uint64_t i = 0; i < 4; ++i) put(store, blob_chunk(i), bytes_for(i, 1000));
  }
  store_.reset();
  DiskChunkStore& store = open(2500);
  EXPECT_EQ(store.chunk_count(), 2u);
  EXPECT_LE(store.used_bytes(), 2500u);
}

// Shows seal() does the disk work ahead of commit(), is idempotent, and an eviction after it removes the
// file.
TEST_F(DiskChunkStoreTest, SealThenCommitOrEvict) {
  DiskChunkStore& store = open(4000);
  ASSERT_EQ(store.reserve(blob_chunk(0), 4), StoreStatus::kOk);
  EXPECT_EQ(store.seal(blob_chunk(0)), StoreStatus::kInvalid);  // nothing written
  ASSERT_TRUE(store.append(blob_chunk(0), "abcd").ok());
  EXPECT_EQ(store.seal(blob_chunk(0)), StoreStatus::kOk);
  EXPECT_EQ(store.seal(blob_chunk(0)), StoreStatus::kOk);
  EXPECT_TRUE(fs::exists(store.chunk_path(blob_chunk(0))));
  EXPECT_FALSE(store.has(blob_chunk(0)));  // durable, but not readable before commit
  EXPECT_EQ(store.commit(blob_chunk(0)), StoreStatus::kOk);
  EXPECT_EQ(read_all(store, blob_chunk(0)), "abcd");

  ASSERT_EQ(store.reserve(blob_chunk(1), 4), StoreStatus::kOk);
  ASSERT_TRUE(store.append(blob_chunk(1), "wxyz").ok());
  ASSERT_EQ(store.seal(blob_chunk(1)), StoreStatus::kOk);
  store.evict(blob_chunk(1));
  EXPECT_FALSE(fs::exists(store.chunk_path(blob_chunk(1))));
  EXPECT_EQ(store.commit(blob_chunk(1)), StoreStatus::kNotReserved);
  EXPECT_EQ(store.used_bytes(), 4u);
}

// Shows concurrent writers on different chunks (as parallel fetches do) all land intact.
TEST_F(DiskChunkStoreTest, ConcurrentWriters) {
  DiskChunkStore& store = open(1u << 20);
  std::vector<std::thread> threads;
  for (uint64_t t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (uint64_t i = 0; i < 25; ++i) {
        const ChunkKey chunk = blob_chunk(t * 100 + i);
        const std::string data = bytes_for(t * 100 + i, 1000);
        if (store.reserve(chunk, 1000) != StoreStatus::kOk) return ADD_FAILURE() << "reserve";
        for (size_t offset = 0; offset < 1000; offset += 100) {
          if (!store.append(chunk, std::string_view(data).substr(offset, 100)).ok())
            return ADD_FAILURE() << "append";
        }
        if (store.commit(chunk) != StoreStatus::kOk) return ADD_FAILURE() << "commit";
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(store.chunk_count(), 100u);
  EXPECT_EQ(read_all(store, blob_chunk(317)), bytes_for(317, 1000));
}

// Shows the cache directories are private (0700) and chunk files owner-only (0600).
TEST_F(DiskChunkStoreTest, PrivatePermissions) {
  DiskChunkStore& store = open();
  put(store, blob_chunk(0), "data");
  EXPECT_EQ(fs::status(directory_ / "cache").permissions() & fs::perms::all, fs::perms::owner_all);
  EXPECT_EQ(fs::status(directory_ / "cache" / "chunks").permissions() & fs::perms::all, fs::perms::owner_all);
  EXPECT_EQ(fs::status(store.chunk_path(blob_chunk(0))).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
}

}  // namespace
}  // namespace peerd::daemon
