// The shared request-pattern generator: deterministic for a seed, every read inside its blob, the counts and
// delays the options ask for, each blob independent of the others, limits enforced, and the library sans-IO.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <string>

#include "workloads/pattern/read_pattern.h"

namespace peerd::workload {
namespace {

PatternOptions three_blobs() {
  PatternOptions options;
  options.seed = 42;
  options.blob_sizes_bytes = {8 << 20, 1, 123'457};
  options.reads_per_blob = 7;
  return options;
}

// Shows determinism by planning twice with one seed (identical) and once with another (different).
TEST(Pattern, SameSeedSameReadsOtherSeedOtherReads) {
  const auto first = plan_reads(three_blobs());
  const auto second = plan_reads(three_blobs());
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ(first->reads, second->reads);
  EXPECT_EQ(first->start_delay, second->start_delay);
  auto other_options = three_blobs();
  other_options.seed = 43;
  const auto other = plan_reads(other_options);
  ASSERT_TRUE(other.ok());
  EXPECT_NE(first->reads, other->reads);
}

// Pins the generator's output for one seed: the simulator and recorded runs rely on it staying the same, so
// a change here must be deliberate.
TEST(Pattern, OutputForAFixedSeedIsStable) {
  PatternOptions options;
  options.seed = 7;
  options.blob_sizes_bytes = {1'000'000};
  options.reads_per_blob = 2;
  const auto pattern = plan_reads(options);
  ASSERT_TRUE(pattern.ok());
  ASSERT_EQ(pattern->reads.size(), 2u);
  EXPECT_EQ(pattern->reads[0].offset_bytes, 545349u);
  EXPECT_EQ(pattern->reads[0].length_bytes, 444730u);
  EXPECT_EQ(pattern->reads[1].offset_bytes, 593173u);
  EXPECT_EQ(pattern->reads[1].length_bytes, 300868u);
  EXPECT_EQ(pattern->reads[1].start_delay.micros, 9302);
}

// Shows every read lies inside its blob and is at least one byte, over many seeds and sizes down to 1 byte.
TEST(Pattern, EveryReadIsInsideItsBlob) {
  for (uint64_t seed = 0; seed < 200; ++seed) {
    auto options = three_blobs();
    options.seed = seed;
    const auto pattern = plan_reads(options);
    ASSERT_TRUE(pattern.ok());
    for (const auto& read : pattern->reads) {
      const uint64_t size = options.blob_sizes_bytes[read.blob_index];
      ASSERT_GE(read.length_bytes, 1u);
      ASSERT_LT(read.last_byte(), size) << "seed " << seed << " blob " << read.blob_index;
    }
  }
}

// Shows read_bytes_max caps every read's length while reads still start anywhere in the blob.
TEST(Pattern, ReadBytesMaxCapsLengths) {
  PatternOptions options;
  options.blob_sizes_bytes = {10'000'000};
  options.reads_per_blob = 1000;
  options.read_bytes_max = 4096;
  const auto pattern = plan_reads(options);
  ASSERT_TRUE(pattern.ok());
  uint64_t offset_max = 0;
  for (const auto& read : pattern->reads) {
    EXPECT_LE(read.length_bytes, 4096u);
    EXPECT_LT(read.last_byte(), 10'000'000u);
    offset_max = std::max(offset_max, read.offset_bytes);
  }
  EXPECT_GT(offset_max, 9'000'000u);  // 1000 uniform offsets: all below 90% has probability 0.9^1000
}

// Shows offsets spread over the whole blob: each quarter of a blob gets a fair share of 1000 reads.
TEST(Pattern, OffsetsCoverTheBlob) {
  PatternOptions options;
  options.seed = 3;
  options.blob_sizes_bytes = {1 << 30};
  options.reads_per_blob = 1000;
  const auto pattern = plan_reads(options);
  ASSERT_TRUE(pattern.ok());
  std::array<int, 4> quarters{};
  for (const auto& read : pattern->reads) ++quarters[read.offset_bytes / (1u << 28)];
  for (const int count : quarters) EXPECT_GT(count, 150);
}

// Shows the counts and order: reads_per_blob reads per non-empty blob, grouped by blob, read_index in order;
// an empty blob gets none.
TEST(Pattern, CountsAndOrder) {
  PatternOptions options;
  options.blob_sizes_bytes = {100, 0, 5};
  options.reads_per_blob = 4;
  const auto pattern = plan_reads(options);
  ASSERT_TRUE(pattern.ok());
  ASSERT_EQ(pattern->reads.size(), 8u);
  for (size_t i = 0; i < 8; ++i) {
    EXPECT_EQ(pattern->reads[i].blob_index, i < 4 ? 0u : 2u);
    EXPECT_EQ(pattern->reads[i].read_index, i % 4);
  }
}

// Shows the delays: a blob's first read waits the run's start delay (inside its range), later reads a jitter
// inside the jitter range.
TEST(Pattern, StartDelayAndJitterStayInTheirRanges) {
  auto options = three_blobs();
  options.start_delay_min = Duration::seconds(1);
  options.start_delay_max = Duration::seconds(100);
  options.jitter_min = Duration::milliseconds(3);
  options.jitter_max = Duration::milliseconds(25);
  std::set<int64_t> start_delays;
  for (uint64_t seed = 0; seed < 50; ++seed) {
    options.seed = seed;
    const auto pattern = plan_reads(options);
    ASSERT_TRUE(pattern.ok());
    EXPECT_GE(pattern->start_delay, options.start_delay_min);
    EXPECT_LE(pattern->start_delay, options.start_delay_max);
    start_delays.insert(pattern->start_delay.micros);
    for (const auto& read : pattern->reads) {
      if (read.read_index == 0) {
        EXPECT_EQ(read.start_delay, pattern->start_delay);
      } else {
        EXPECT_GE(read.start_delay, options.jitter_min);
        EXPECT_LE(read.start_delay, options.jitter_max);
      }
    }
  }
  EXPECT_GT(start_delays.size(), 40u);  // seeds give different delays
}

// Shows each blob's reads depend only on (seed, blob index, its size): resizing blob 2 or changing the delay
// ranges leaves blob 0's ranges unchanged.
TEST(Pattern, BlobsAreIndependent) {
  const auto base = plan_reads(three_blobs());
  auto resized = three_blobs();
  resized.blob_sizes_bytes[2] = 999;
  resized.jitter_max = Duration::seconds(2);
  resized.start_delay_max = Duration::seconds(9);
  const auto changed = plan_reads(resized);
  ASSERT_TRUE(base.ok() && changed.ok());
  for (size_t i = 0; i < 7; ++i) {
    EXPECT_EQ(base->reads[i].offset_bytes, changed->reads[i].offset_bytes);
    EXPECT_EQ(base->reads[i].length_bytes, changed->reads[i].length_bytes);
  }
}

// Shows the limits: options beyond the named maxima or with inverted ranges are refused with a typed error.
TEST(Pattern, RefusesOptionsBeyondLimits) {
  PatternOptions options;
  options.blob_sizes_bytes.assign(kPatternBlobsMax + 1, 1);
  EXPECT_EQ(plan_reads(options).error(), PatternError::kTooManyBlobs);
  options.blob_sizes_bytes = {1};
  options.reads_per_blob = kPatternReadsPerBlobMax + 1;
  EXPECT_EQ(plan_reads(options).error(), PatternError::kTooManyReadsPerBlob);
  options.blob_sizes_bytes.assign(kPatternBlobsMax, 1);
  options.reads_per_blob = kPatternReadsPerBlobMax;
  EXPECT_EQ(plan_reads(options).error(), PatternError::kTooManyReads);
  options = PatternOptions{};
  options.jitter_min = Duration::milliseconds(30);
  EXPECT_EQ(plan_reads(options).error(), PatternError::kJitterRange);
  options = PatternOptions{};
  options.start_delay_max = kPatternDelayMax + Duration::seconds(1);
  EXPECT_EQ(plan_reads(options).error(), PatternError::kStartDelayRange);
  options = PatternOptions{};
  options.start_delay_min = Duration::microseconds(-1);
  EXPECT_EQ(plan_reads(options).error(), PatternError::kStartDelayRange);
  EXPECT_FALSE(describe(PatternError::kTooManyReads).empty());
}

// Shows the Range header value names the first and last byte, both inclusive.
TEST(Pattern, RangeHeaderValueIsInclusive) {
  PlannedRead read;
  read.offset_bytes = 10;
  read.length_bytes = 5;
  EXPECT_EQ(range_header_value(read), "bytes=10-14");
  read.offset_bytes = 0;
  read.length_bytes = 1;
  EXPECT_EQ(range_header_value(read), "bytes=0-0");
}

// Shows the verification sample: the asked count, increasing, spread over the pattern, all reads when the
// count is larger, none when zero.
TEST(Pattern, VerificationSampleIsSpreadAndBounded) {
  EXPECT_EQ(verification_sample(25, 5), (std::vector<size_t>{0, 5, 10, 15, 20}));
  EXPECT_EQ(verification_sample(3, 10), (std::vector<size_t>{0, 1, 2}));
  EXPECT_TRUE(verification_sample(10, 0).empty());
  EXPECT_TRUE(verification_sample(0, 4).empty());
  const auto sample = verification_sample(1000, 7);
  EXPECT_EQ(sample.size(), 7u);
  EXPECT_TRUE(std::is_sorted(sample.begin(), sample.end()));
  EXPECT_GT(sample.back(), 800u);
}

// Guards the library's contract like peerd/core's: no file in workloads/pattern includes I/O, threads, clocks
// or a global RNG. It reads every source file and fails on a forbidden include.
TEST(Pattern, LibraryIsSansIo) {
  const std::filesystem::path directory = std::filesystem::path(PEERD_SOURCE_DIR) / "workloads" / "pattern";
  const std::regex forbidden(
      R"(#\s*include\s*[<"](boost/|curl/|openssl/|sys/|netinet/|arpa/|netdb|unistd|fcntl|thread|mutex|condition_variable|future|atomic|chrono|ctime|time\.h|fstream|filesystem|cstdio|iostream|random|peerd/daemon/)[^>"]*[>"])");
  size_t files_checked = 0;
  for (const auto& entry : std::filesystem::directory_iterator(directory)) {
    ++files_checked;
    std::ifstream file(entry.path());
    std::string line;
    while (std::getline(file, line)) {
      EXPECT_FALSE(std::regex_search(line, forbidden)) << entry.path().filename() << ": " << line;
    }
  }
  EXPECT_GE(files_checked, 2u);
}

}  // namespace
}  // namespace peerd::workload
