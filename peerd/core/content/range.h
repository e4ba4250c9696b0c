#pragma once
// HTTP byte ranges (RFC 9110 §14). peerd serves exactly one range per request: the Range header is parsed
// strictly into a ByteRange against the content size, and every way it can fail is a typed error the daemon
// maps to a status (kUnsatisfiable -> 416, kMultipleRanges / kMalformed -> ignore or 400, its choice).
#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "peerd/core/common/result.h"

namespace peerd::content {

// A Range header value longer than this is refused without being scanned (a single range needs < 50 bytes;
// the slack leaves room for empty list elements and leading zeros).
inline constexpr size_t kRangeHeaderBytesMax = 1024;

// A non-empty run of bytes [offset, offset + length).
struct ByteRange {
  uint64_t offset = 0;
  uint64_t length = 0;

  // One past the last byte. Callers only build ranges whose end fits in uint64 (the parsers guarantee it).
  uint64_t end() const { return offset + length; }
  // The last byte (inclusive), as written in Range and Content-Range. Requires length > 0.
  uint64_t last() const { return offset + length - 1; }

  auto operator<=>(const ByteRange&) const = default;
};

enum class RangeError {
  kMalformed,        // not "bytes=<range-spec>" per RFC 9110, or last-pos < first-pos
  kTooLong,          // header value over kRangeHeaderBytesMax
  kUnsupportedUnit,  // a range unit other than "bytes" (RFC 9110: the server ignores the header)
  kNumberTooLarge,   // a position does not fit in uint64
  kMultipleRanges,   // more than one range-spec ("bytes=0-1,5-6"): peerd serves single ranges only
  kUnsatisfiable,    // no byte of the content is selected: 416 with "Content-Range: bytes */size"
  kSizeUnknown,      // a suffix range ("bytes=-n") cannot be resolved without the content size
};

std::string_view describe(RangeError error);

// One syntactically valid range-spec, not yet resolved against a size.
struct RangeSpec {
  enum class Kind { kFromTo, kFrom, kSuffix };
  Kind kind = Kind::kFrom;
  uint64_t first = 0;         // kFromTo, kFrom: first-pos
  uint64_t last = 0;          // kFromTo: last-pos (>= first)
  uint64_t suffix_bytes = 0;  // kSuffix: suffix-length

  auto operator<=>(const RangeSpec&) const = default;
};

// Syntax only: "bytes=a-b" | "bytes=a-" | "bytes=-n", unit case-insensitive, no whitespace around '=',
// optional whitespace and empty elements around commas (RFC 9110 §5.6.1). Leading/trailing whitespace of the
// field value is ignored (HTTP parsers strip it anyway).
Result<RangeSpec, RangeError> parse_range_spec(std::string_view header_value);

// Resolves a spec against a known content size; the end is clamped to size - 1.
Result<ByteRange, RangeError> resolve_range(const RangeSpec& spec, uint64_t content_bytes);

// parse_range_spec + resolve_range.
Result<ByteRange, RangeError> parse_range(std::string_view header_value, uint64_t content_bytes);

// A range resolved without knowing the content size: length is absent for "bytes=a-" (to the end).
struct OpenByteRange {
  uint64_t offset = 0;
  std::optional<uint64_t> length;

  auto operator<=>(const OpenByteRange&) const = default;
};

// For when the size is not known yet (e.g. before the upstream answered): suffix ranges give kSizeUnknown.
Result<OpenByteRange, RangeError> parse_range_unknown_size(std::string_view header_value);

// "bytes <first>-<last>/<size>" for a 206 response. The range must be non-empty and lie inside the content.
std::string content_range(const ByteRange& range, uint64_t content_bytes);
// "bytes <first>-<last>/*" when the total size is not known.
std::string content_range_unknown_size(const ByteRange& range);
// "bytes */<size>" for a 416 response.
std::string content_range_unsatisfied(uint64_t content_bytes);

}  // namespace peerd::content
