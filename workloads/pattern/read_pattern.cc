#include "workloads/pattern/read_pattern.h"

#include <algorithm>
#include <cassert>

#include "peerd/core/common/rng.h"

namespace peerd::workload {
namespace {

// splitmix64's finalizer: spreads (seed, stream) into independent-looking Rng seeds.
uint64_t mix(uint64_t value) {
  value += 0x9e3779b97f4a7c15ull;
  value = (value ^ (value >> 30)) * 0xbf58476d1ce4e5b9ull;
  value = (value ^ (value >> 27)) * 0x94d049bb133111ebull;
  return value ^ (value >> 31);
}

// Stream 0 draws the run's start delay; stream i + 1 draws blob i's reads.
Rng stream(uint64_t seed, uint64_t stream_index) {
  return Rng(mix(seed ^ mix(stream_index)));
}

bool valid_range(Duration low, Duration high) {
  return low >= Duration::zero() && low <= high && high <= kPatternDelayMax;
}

Duration uniform_between(Rng& rng, Duration low, Duration high) {
  const auto span_micros = static_cast<uint64_t>(high.micros - low.micros);
  return low + Duration::microseconds(static_cast<int64_t>(rng.uniform(span_micros + 1)));
}

}  // namespace

std::string_view describe(PatternError error) {
  switch (error) {
    case PatternError::kTooManyBlobs:
      return "too many blobs";
    case PatternError::kTooManyReadsPerBlob:
      return "too many reads per blob";
    case PatternError::kTooManyReads:
      return "too many reads in total";
    case PatternError::kJitterRange:
      return "jitter range must satisfy 0 <= min <= max <= 24 h";
    case PatternError::kStartDelayRange:
      return "start delay range must satisfy 0 <= min <= max <= 24 h";
  }
  return "unknown pattern error";
}

PatternOptions PatternSettings::pattern_options(uint64_t seed, std::vector<uint64_t> blob_sizes_bytes) const {
  PatternOptions options;
  options.seed = seed;
  options.blob_sizes_bytes = std::move(blob_sizes_bytes);
  options.reads_per_blob = reads_per_blob;
  options.read_bytes_max = read_bytes_max;
  options.jitter_min = Duration::milliseconds(jitter_min_ms);
  options.jitter_max = Duration::milliseconds(jitter_max_ms);
  options.start_delay_min = Duration::seconds(start_delay_min_s);
  options.start_delay_max = Duration::seconds(start_delay_max_s);
  return options;
}

Result<ReadPattern, PatternError> plan_reads(const PatternOptions& options) {
  const auto& sizes = options.blob_sizes_bytes;
  if (sizes.size() > kPatternBlobsMax) return fail(PatternError::kTooManyBlobs);
  if (options.reads_per_blob > kPatternReadsPerBlobMax) return fail(PatternError::kTooManyReadsPerBlob);
  if (static_cast<uint64_t>(sizes.size()) * options.reads_per_blob > kPatternReadsMax) {
    return fail(PatternError::kTooManyReads);
  }
  if (!valid_range(options.jitter_min, options.jitter_max)) return fail(PatternError::kJitterRange);
  if (!valid_range(options.start_delay_min, options.start_delay_max)) {
    return fail(PatternError::kStartDelayRange);
  }

  ReadPattern pattern;
  Rng run_rng = stream(options.seed, 0);
  pattern.start_delay = uniform_between(run_rng, options.start_delay_min, options.start_delay_max);
  pattern.reads.reserve(sizes.size() * options.reads_per_blob);
  for (uint32_t blob = 0; blob < sizes.size(); ++blob) {
    const uint64_t size_bytes = sizes[blob];
    if (size_bytes == 0) continue;
    Rng rng = stream(options.seed, uint64_t{blob} + 1);
    for (uint32_t read = 0; read < options.reads_per_blob; ++read) {
      PlannedRead planned;
      planned.blob_index = blob;
      planned.read_index = read;
      planned.offset_bytes = rng.uniform(size_bytes);
      const uint64_t remaining_bytes = size_bytes - planned.offset_bytes;
      const uint64_t longest_bytes =
          options.read_bytes_max == 0 ? remaining_bytes : std::min(remaining_bytes, options.read_bytes_max);
      planned.length_bytes = 1 + rng.uniform(longest_bytes);
      // Drawn for every read (read 0 drops it) so that each read consumes the same number of draws.
      const Duration jitter = uniform_between(rng, options.jitter_min, options.jitter_max);
      planned.start_delay = read == 0 ? pattern.start_delay : jitter;
      assert(planned.length_bytes >= 1 && planned.last_byte() < size_bytes);
      pattern.reads.push_back(planned);
    }
  }
  return pattern;
}

std::string range_header_value(const PlannedRead& read) {
  return "bytes=" + std::to_string(read.offset_bytes) + "-" + std::to_string(read.last_byte());
}

std::vector<size_t> verification_sample(size_t reads_total, size_t count) {
  std::vector<size_t> sample;
  if (reads_total == 0 || count == 0) return sample;
  count = std::min(count, reads_total);
  sample.reserve(count);
  for (size_t k = 0; k < count; ++k) sample.push_back(k * reads_total / count);
  return sample;
}

}  // namespace peerd::workload
