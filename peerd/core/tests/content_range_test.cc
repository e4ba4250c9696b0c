// Tests of HTTP Range parsing (RFC 9110 §14): single ranges resolve against the content size, clamped to its
// end; everything else is a typed error (416, multi-range, malformed); Content-Range values are exact.
#include <gtest/gtest.h>

#include <limits>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "peerd/core/content/range.h"

namespace peerd::content {
namespace {

constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

struct GoodRange {
  std::string header;
  uint64_t content_bytes;
  ByteRange expected;
};

// A table of satisfiable ranges: each resolves to the expected offset and length.
TEST(Range, ResolvesSatisfiableRanges) {
  const std::vector<GoodRange> cases = {
      {"bytes=0-0", 1, {0, 1}},
      {"bytes=0-99", 100, {0, 100}},
      {"bytes=0-", 100, {0, 100}},
      {"bytes=10-19", 100, {10, 10}},
      {"bytes=99-99", 100, {99, 1}},
      {"bytes=99-", 100, {99, 1}},
      {"bytes=50-1000", 100, {50, 50}},                 // end clamped to size - 1
      {"bytes=0-18446744073709551615", 100, {0, 100}},  // UINT64_MAX last-pos clamps too
      {"bytes=-1", 100, {99, 1}},
      {"bytes=-10", 100, {90, 10}},
      {"bytes=-100", 100, {0, 100}},
      {"bytes=-1000", 100, {0, 100}},  // suffix longer than the content: all of it
      {"bytes=-18446744073709551615", 7, {0, 7}},
      {"bytes=0007-0010", 100, {7, 4}},  // leading zeros are allowed by 1*DIGIT
      {"Bytes=1-2", 100, {1, 2}},        // range units are case-insensitive
      {"BYTES=1-2", 100, {1, 2}},
      {"  bytes=1-2\t", 100, {1, 2}},  // field-value OWS is not part of the value
      {"bytes=1-2,", 100, {1, 2}},     // empty list elements are ignored
      {"bytes=,1-2", 100, {1, 2}},
      {"bytes=1-2 , ,\t,", 100, {1, 2}},
      {"bytes=0-", kMax, {0, kMax}},
      {"bytes=18446744073709551614-", kMax, {kMax - 1, 1}},
      {"bytes=-5", kMax, {kMax - 5, 5}},
  };
  for (const auto& good : cases) {
    auto range = parse_range(good.header, good.content_bytes);
    ASSERT_TRUE(range.ok()) << good.header << ": " << describe(range.error());
    EXPECT_EQ(*range, good.expected) << good.header;
    EXPECT_LE(range->end(), good.content_bytes) << good.header;
  }
}

struct BadRange {
  std::string header;
  uint64_t content_bytes;
  RangeError error;
};

// A table of refused Range values: each gives the expected typed error.
TEST(Range, RejectsWithTypedErrors) {
  const std::vector<BadRange> cases = {
      // Unsatisfiable: the daemon answers 416.
      {"bytes=100-", 100, RangeError::kUnsatisfiable},
      {"bytes=100-200", 100, RangeError::kUnsatisfiable},
      {"bytes=18446744073709551615-", 100, RangeError::kUnsatisfiable},
      {"bytes=-0", 100, RangeError::kUnsatisfiable},
      {"bytes=0-0", 0, RangeError::kUnsatisfiable},
      {"bytes=0-", 0, RangeError::kUnsatisfiable},
      {"bytes=-5", 0, RangeError::kUnsatisfiable},
      // Several ranges.
      {"bytes=0-1,5-6", 100, RangeError::kMultipleRanges},
      {"bytes=0-1, 5-6", 100, RangeError::kMultipleRanges},
      {"bytes=0-1,0-1", 100, RangeError::kMultipleRanges},
      {"bytes=-1,0-", 100, RangeError::kMultipleRanges},
      {"bytes=500-600,0-1", 100, RangeError::kMultipleRanges},
      // Another unit.
      {"items=0-1", 100, RangeError::kUnsupportedUnit},
      {"byte=0-1", 100, RangeError::kUnsupportedUnit},
      {"bytesx=0-1", 100, RangeError::kUnsupportedUnit},
      // Numbers beyond uint64.
      {"bytes=18446744073709551616-", 100, RangeError::kNumberTooLarge},
      {"bytes=0-18446744073709551616", 100, RangeError::kNumberTooLarge},
      {"bytes=-18446744073709551616", 100, RangeError::kNumberTooLarge},
      {"bytes=99999999999999999999999999-", 100, RangeError::kNumberTooLarge},
      // Garbage.
      {"", 100, RangeError::kMalformed},
      {"   ", 100, RangeError::kMalformed},
      {"bytes", 100, RangeError::kMalformed},
      {"bytes=", 100, RangeError::kMalformed},
      {"bytes=,", 100, RangeError::kMalformed},
      {"bytes=, ,", 100, RangeError::kMalformed},
      {"=0-1", 100, RangeError::kMalformed},
      {"bytes =0-1", 100, RangeError::kMalformed},  // no whitespace around '='
      {"bytes= 0-1", 100, RangeError::kMalformed},
      {"bytes = 0-1", 100, RangeError::kMalformed},
      {"bytes=0 -1", 100, RangeError::kMalformed},
      {"bytes=0- 1", 100, RangeError::kMalformed},
      {"bytes=- 1", 100, RangeError::kMalformed},
      {"bytes=-", 100, RangeError::kMalformed},
      {"bytes=--1", 100, RangeError::kMalformed},
      {"bytes=1--2", 100, RangeError::kMalformed},
      {"bytes=1-2-3", 100, RangeError::kMalformed},
      {"bytes=1", 100, RangeError::kMalformed},
      {"bytes=a-b", 100, RangeError::kMalformed},
      {"bytes=0x10-", 100, RangeError::kMalformed},
      {"bytes=+1-2", 100, RangeError::kMalformed},
      {"bytes=1-+2", 100, RangeError::kMalformed},
      {"bytes=1.5-2", 100, RangeError::kMalformed},
      {"bytes=5-4", 100, RangeError::kMalformed},  // last-pos < first-pos: an invalid range-spec
      {"bytes=0-1;0-2", 100, RangeError::kMalformed},
      {"bytes=0-1,garbage", 100, RangeError::kMalformed},  // garbage wins over "multiple"
      {"bytes=0-1,5-6,x", 100, RangeError::kMalformed},
      {"bytes==0-1", 100, RangeError::kMalformed},
      {"by tes=0-1", 100, RangeError::kMalformed},
      {"bytes\x01=0-1", 100, RangeError::kMalformed},
      {std::string("bytes=0-1\0", 10), 100, RangeError::kMalformed},
      {"bytes=0-1\r\n", 100, RangeError::kMalformed},
      {"bytes=１-2", 100, RangeError::kMalformed},  // full-width digit (UTF-8)
      // Over the length limit, however valid the start.
      {"bytes=0-1" + std::string(kRangeHeaderBytesMax, ','), 100, RangeError::kTooLong},
  };
  for (const auto& bad : cases) {
    auto range = parse_range(bad.header, bad.content_bytes);
    ASSERT_FALSE(range.ok()) << bad.header << " gave " << range->offset << "+" << range->length;
    EXPECT_EQ(range.error(), bad.error) << bad.header << ": " << describe(range.error());
  }
}

// Empty list elements are accepted up to the header length limit, and a long list of ranges is still just
// "multiple ranges".
TEST(Range, LongListsStayBounded) {
  std::string padded = "bytes=" + std::string(kRangeHeaderBytesMax - 9, ',') + "0-1";
  ASSERT_EQ(padded.size(), kRangeHeaderBytesMax);
  auto range = parse_range(padded, 10);
  ASSERT_TRUE(range.ok());
  EXPECT_EQ(*range, (ByteRange{0, 2}));
  std::string many = "bytes=0-1";
  while (many.size() + 4 <= kRangeHeaderBytesMax) many += ",2-3";
  EXPECT_EQ(parse_range(many, 10).error(), RangeError::kMultipleRanges);
}

// parse_range_spec keeps the three syntactic forms apart before any size is known.
TEST(Range, SpecKeepsTheForm) {
  EXPECT_EQ(parse_range_spec("bytes=3-9").value(), (RangeSpec{RangeSpec::Kind::kFromTo, 3, 9, 0}));
  EXPECT_EQ(parse_range_spec("bytes=3-").value(), (RangeSpec{RangeSpec::Kind::kFrom, 3, 0, 0}));
  EXPECT_EQ(parse_range_spec("bytes=-9").value(), (RangeSpec{RangeSpec::Kind::kSuffix, 0, 0, 9}));
  EXPECT_EQ(parse_range_spec("bytes=3-3").value(), (RangeSpec{RangeSpec::Kind::kFromTo, 3, 3, 0}));
}

struct OpenCase {
  std::string header;
  std::optional<OpenByteRange> expected;
  RangeError error = RangeError::kMalformed;
};

// Without a size, a-b and a- resolve (a- open-ended) while a suffix range needs the size.
TEST(Range, ResolvesWithoutSize) {
  const std::vector<OpenCase> cases = {
      {"bytes=0-0", OpenByteRange{0, 1}},
      {"bytes=10-19", OpenByteRange{10, 10}},
      {"bytes=10-", OpenByteRange{10, std::nullopt}},
      {"bytes=0-18446744073709551614", OpenByteRange{0, kMax}},
      {"bytes=0-18446744073709551615", OpenByteRange{0, std::nullopt}},  // would overflow: means "to the end"
      {"bytes=18446744073709551615-18446744073709551615", OpenByteRange{kMax, std::nullopt}},
      {"bytes=-10", std::nullopt, RangeError::kSizeUnknown},
      {"bytes=-0", std::nullopt, RangeError::kSizeUnknown},
      {"bytes=5-4", std::nullopt, RangeError::kMalformed},
      {"bytes=0-1,2-3", std::nullopt, RangeError::kMultipleRanges},
      {"pages=0-1", std::nullopt, RangeError::kUnsupportedUnit},
  };
  for (const auto& item : cases) {
    auto range = parse_range_unknown_size(item.header);
    if (item.expected) {
      ASSERT_TRUE(range.ok()) << item.header << ": " << describe(range.error());
      EXPECT_EQ(*range, *item.expected) << item.header;
    } else {
      ASSERT_FALSE(range.ok()) << item.header;
      EXPECT_EQ(range.error(), item.error) << item.header;
    }
  }
}

// Every resolved range lies inside the content, for all small sizes and all specs over them.
TEST(Range, ExhaustiveSmallSizesStayInside) {
  for (uint64_t size = 0; size <= 12; ++size) {
    for (uint64_t first = 0; first <= 14; ++first) {
      for (uint64_t last = first; last <= 14; ++last) {
        auto range = parse_range("bytes=" + std::to_string(first) + "-" + std::to_string(last), size);
        ASSERT_EQ(range.ok(), first < size);
        if (!range.ok()) {
          EXPECT_EQ(range.error(), RangeError::kUnsatisfiable);
          continue;
        }
        EXPECT_EQ(range->offset, first);
        EXPECT_EQ(range->last(), std::min(last, size - 1));
      }
      auto suffix = parse_range("bytes=-" + std::to_string(first), size);
      ASSERT_EQ(suffix.ok(), first > 0 && size > 0);
      if (suffix.ok()) {
        EXPECT_EQ(suffix->end(), size);
        EXPECT_EQ(suffix->length, std::min(first, size));
      }
    }
  }
}

// Content-Range values for 206 and 416 responses, including the 64-bit extremes.
TEST(Range, FormatsContentRange) {
  EXPECT_EQ(content_range(ByteRange{0, 1}, 1), "bytes 0-0/1");
  EXPECT_EQ(content_range(ByteRange{0, 100}, 100), "bytes 0-99/100");
  EXPECT_EQ(content_range(ByteRange{10, 10}, 100), "bytes 10-19/100");
  EXPECT_EQ(content_range(ByteRange{kMax - 1, 1}, kMax),
            "bytes 18446744073709551614-18446744073709551614/18446744073709551615");
  EXPECT_EQ(content_range_unknown_size(ByteRange{5, 5}), "bytes 5-9/*");
  EXPECT_EQ(content_range_unsatisfied(100), "bytes */100");
  EXPECT_EQ(content_range_unsatisfied(0), "bytes */0");
  auto range = parse_range("bytes=-10", 100);
  ASSERT_TRUE(range.ok());
  EXPECT_EQ(content_range(*range, 100), "bytes 90-99/100");
}

// Each error has its own non-empty description.
TEST(Range, DescribesEveryErrorDistinctly) {
  std::set<std::string_view> seen;
  for (auto error : {RangeError::kMalformed, RangeError::kTooLong, RangeError::kUnsupportedUnit,
                     RangeError::kNumberTooLarge, RangeError::kMultipleRanges, RangeError::kUnsatisfiable,
                     RangeError::kSizeUnknown}) {
    EXPECT_FALSE(describe(error).empty());
    EXPECT_TRUE(seen.insert(describe(error)).second) << describe(error);
  }
}

}  // namespace
}  // namespace peerd::content
