#pragma once
// The `random` workload's request pattern: which byte ranges of which blobs are read, and how long each
// reader waits before each read. peerd-random and the simulator both take their reads from plan_reads(), so a
// simulated `random` run issues the very same requests as a real one with the same options.
//
// Sans-IO, like peerd/core: no clock, no I/O, no global RNG. The same options always give the same pattern.
// Each blob draws from its own stream derived from (seed, blob index), so adding or resizing one blob never
// changes the reads of another.
//
// The shape follows the original Azure/peerd `random` test: every blob is read `reads_per_blob` times, one
// read after another, with a short jitter pause between reads (the original slept 3-25 ms), and a whole run
// may start after a random delay (the original waited 1-100 s so that nodes of a cluster start staggered).
// Unlike the original, a read never runs past the blob's last byte.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "peerd/core/common/result.h"
#include "peerd/core/common/time.h"

namespace peerd::workload {

// Every input is bounded; plan_reads() refuses options beyond these.
inline constexpr uint32_t kPatternBlobsMax = 100'000;
inline constexpr uint32_t kPatternReadsPerBlobMax = 10'000;
inline constexpr uint64_t kPatternReadsMax = 1'000'000;
inline constexpr Duration kPatternDelayMax = Duration::seconds(24 * 3600);

struct PatternOptions {
  uint64_t seed = 1;
  std::vector<uint64_t> blob_sizes_bytes;  // an empty blob (0 bytes) gets no reads
  uint32_t reads_per_blob = 5;
  uint64_t read_bytes_max = 0;  // longest single read; 0: a read may reach the end of the blob
  // Pause between two reads of the same blob, uniform in [jitter_min, jitter_max].
  Duration jitter_min = Duration::milliseconds(3);
  Duration jitter_max = Duration::milliseconds(25);
  // Delay before the run's first requests, drawn once per run, uniform in [start_delay_min, start_delay_max].
  Duration start_delay_min = Duration::zero();
  Duration start_delay_max = Duration::zero();
};

// The pattern's knobs as people write them: peerd-random's flags and a simulator scenario's "random"
// workload both hold these (the programs that read them check the ranges), and turn them into options here.
struct PatternSettings {
  uint32_t reads_per_blob = 5;
  uint64_t read_bytes_max = 0;  // 0: a read may reach the end of the blob
  uint32_t jitter_min_ms = 3;   // the original's pause between reads of a blob: 3-25 ms
  uint32_t jitter_max_ms = 25;
  uint32_t start_delay_min_s = 0;  // the original waited 1-100 s before its p2p reads
  uint32_t start_delay_max_s = 0;

  PatternOptions pattern_options(uint64_t seed, std::vector<uint64_t> blob_sizes_bytes) const;
};

struct PlannedRead {
  uint32_t blob_index = 0;
  uint32_t read_index = 0;  // position among this blob's reads, 0-based
  uint64_t offset_bytes = 0;
  uint64_t length_bytes = 0;  // >= 1, and offset_bytes + length_bytes <= the blob's size
  // How long the blob's reader waits before issuing this read: the run's start delay for a blob's first read,
  // otherwise the jitter pause counted from the end of the previous read of the same blob.
  Duration start_delay;

  uint64_t last_byte() const { return offset_bytes + length_bytes - 1; }
  bool operator==(const PlannedRead&) const = default;
};

struct ReadPattern {
  Duration start_delay;            // the run's start delay (every blob's first read waits this long)
  std::vector<PlannedRead> reads;  // grouped by blob in blob order, each blob's reads in read order
};

enum class PatternError : uint8_t {
  kTooManyBlobs,
  kTooManyReadsPerBlob,
  kTooManyReads,
  kJitterRange,      // negative, min > max, or max > kPatternDelayMax
  kStartDelayRange,  // negative, min > max, or max > kPatternDelayMax
};

std::string_view describe(PatternError error);

[[nodiscard]] Result<ReadPattern, PatternError> plan_reads(const PatternOptions& options);

// The HTTP Range header value for a read: "bytes=<first>-<last>" (both inclusive).
std::string range_header_value(const PlannedRead& read);

// Which reads to verify: `count` indices into `reads_total` reads, spread evenly over the whole pattern (so
// every blob is sampled when count >= blobs) and in increasing order. All of them when count >= reads_total.
std::vector<size_t> verification_sample(size_t reads_total, size_t count);

}  // namespace peerd::workload
