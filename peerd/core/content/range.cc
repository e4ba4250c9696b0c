#include "peerd/core/content/range.h"

#include <algorithm>
#include <cassert>
#include <limits>

namespace peerd::content {

std::string_view describe(RangeError error) {
  switch (error) {
    case RangeError::kMalformed:
      return "Range must be bytes=<first>-<last>, bytes=<first>- or bytes=-<suffix length>";
    case RangeError::kTooLong:
      return "Range header is too long";
    case RangeError::kUnsupportedUnit:
      return "only the bytes range unit is supported";
    case RangeError::kNumberTooLarge:
      return "Range position does not fit in 64 bits";
    case RangeError::kMultipleRanges:
      return "multiple ranges in one request are not supported";
    case RangeError::kUnsatisfiable:
      return "Range selects no byte of the content";
    case RangeError::kSizeUnknown:
      return "a suffix Range needs the content size";
  }
  return "invalid Range";
}

namespace {

constexpr uint64_t kPositionMax = std::numeric_limits<uint64_t>::max();

bool is_ows(char c) {
  return c == ' ' || c == '\t';
}
bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

// RFC 9110 tchar.
bool is_token_char(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c)) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

std::string_view trim_ows(std::string_view text) {
  while (!text.empty() && is_ows(text.front())) text.remove_prefix(1);
  while (!text.empty() && is_ows(text.back())) text.remove_suffix(1);
  return text;
}

bool equals_ignoring_case(std::string_view text, std::string_view lower) {
  if (text.size() != lower.size()) return false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    const char folded = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
    if (folded != lower[i]) return false;
  }
  return true;
}

// 1*DIGIT, with leading zeros allowed (RFC 9110 does), refusing values above uint64.
Result<uint64_t, RangeError> parse_position(std::string_view digits) {
  if (digits.empty()) return fail(RangeError::kMalformed);
  uint64_t value = 0;
  for (const char c : digits) {
    if (!is_digit(c)) return fail(RangeError::kMalformed);
    const auto digit = static_cast<uint64_t>(c - '0');
    if (value > (kPositionMax - digit) / 10) return fail(RangeError::kNumberTooLarge);
    value = value * 10 + digit;
  }
  return value;
}

Result<RangeSpec, RangeError> parse_one_spec(std::string_view text) {
  const size_t dash = text.find('-');
  if (dash == std::string_view::npos) return fail(RangeError::kMalformed);
  const std::string_view before = text.substr(0, dash);
  const std::string_view after = text.substr(dash + 1);
  RangeSpec spec;
  if (before.empty()) {
    auto suffix = parse_position(after);
    if (!suffix) return fail(suffix.error());
    spec.kind = RangeSpec::Kind::kSuffix;
    spec.suffix_bytes = *suffix;
    return spec;
  }
  auto first = parse_position(before);
  if (!first) return fail(first.error());
  spec.first = *first;
  if (after.empty()) {
    spec.kind = RangeSpec::Kind::kFrom;
    return spec;
  }
  auto last = parse_position(after);
  if (!last) return fail(last.error());
  if (*last < *first) return fail(RangeError::kMalformed);  // RFC 9110 §14.1.1: an invalid range-spec
  spec.kind = RangeSpec::Kind::kFromTo;
  spec.last = *last;
  return spec;
}

// Splits "unit=set" and checks the unit. Returns the range-set.
Result<std::string_view, RangeError> range_set_of(std::string_view value) {
  const size_t equals = value.find('=');
  if (equals == std::string_view::npos || equals == 0) return fail(RangeError::kMalformed);
  const std::string_view unit = value.substr(0, equals);
  if (!std::all_of(unit.begin(), unit.end(), is_token_char)) return fail(RangeError::kMalformed);
  if (!equals_ignoring_case(unit, "bytes")) return fail(RangeError::kUnsupportedUnit);
  const std::string_view set = value.substr(equals + 1);
  // No whitespace after '=': the first list element may not be preceded by OWS.
  if (set.empty() || is_ows(set.front())) return fail(RangeError::kMalformed);
  return set;
}

}  // namespace

Result<RangeSpec, RangeError> parse_range_spec(std::string_view header_value) {
  if (header_value.size() > kRangeHeaderBytesMax) return fail(RangeError::kTooLong);
  auto set = range_set_of(trim_ows(header_value));
  if (!set) return fail(set.error());
  // 1#range-spec: empty elements are ignored (RFC 9110 §5.6.1.2); at least one must be present. Every
  // element is parsed so that garbage anywhere is reported as kMalformed rather than kMultipleRanges.
  std::optional<RangeSpec> found;
  size_t specs_count = 0;
  std::string_view rest = *set;
  while (true) {
    const size_t comma = rest.find(',');
    const std::string_view element = trim_ows(rest.substr(0, comma));
    if (!element.empty()) {
      auto spec = parse_one_spec(element);
      if (!spec) return fail(spec.error());
      ++specs_count;
      if (!found) found = *spec;
    }
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  if (specs_count == 0) return fail(RangeError::kMalformed);
  if (specs_count > 1) return fail(RangeError::kMultipleRanges);
  return *found;
}

Result<ByteRange, RangeError> resolve_range(const RangeSpec& spec, uint64_t content_bytes) {
  if (content_bytes == 0) return fail(RangeError::kUnsatisfiable);
  switch (spec.kind) {
    case RangeSpec::Kind::kFromTo: {
      if (spec.first >= content_bytes) return fail(RangeError::kUnsatisfiable);
      const uint64_t last = std::min(spec.last, content_bytes - 1);
      return ByteRange{spec.first, last - spec.first + 1};
    }
    case RangeSpec::Kind::kFrom:
      if (spec.first >= content_bytes) return fail(RangeError::kUnsatisfiable);
      return ByteRange{spec.first, content_bytes - spec.first};
    case RangeSpec::Kind::kSuffix: {
      if (spec.suffix_bytes == 0) return fail(RangeError::kUnsatisfiable);
      const uint64_t length = std::min(spec.suffix_bytes, content_bytes);
      return ByteRange{content_bytes - length, length};
    }
  }
  return fail(RangeError::kMalformed);
}

Result<ByteRange, RangeError> parse_range(std::string_view header_value, uint64_t content_bytes) {
  auto spec = parse_range_spec(header_value);
  if (!spec) return fail(spec.error());
  return resolve_range(*spec, content_bytes);
}

Result<OpenByteRange, RangeError> parse_range_unknown_size(std::string_view header_value) {
  auto spec = parse_range_spec(header_value);
  if (!spec) return fail(spec.error());
  switch (spec->kind) {
    case RangeSpec::Kind::kFromTo:
      // No content has 2^64 bytes, so a last-pos of UINT64_MAX means "to the end"; keeping it would make
      // offset + length overflow.
      if (spec->last == kPositionMax) return OpenByteRange{spec->first, std::nullopt};
      return OpenByteRange{spec->first, spec->last - spec->first + 1};
    case RangeSpec::Kind::kFrom:
      return OpenByteRange{spec->first, std::nullopt};
    case RangeSpec::Kind::kSuffix:
      return fail(RangeError::kSizeUnknown);
  }
  return fail(RangeError::kMalformed);
}

namespace {
std::string first_last(const ByteRange& range) {
  assert(range.length > 0 && range.length - 1 <= kPositionMax - range.offset);
  return "bytes " + std::to_string(range.offset) + "-" + std::to_string(range.last()) + "/";
}
}  // namespace

std::string content_range(const ByteRange& range, uint64_t content_bytes) {
  assert(range.length > 0 && range.offset < content_bytes && range.length <= content_bytes - range.offset);
  return first_last(range) + std::to_string(content_bytes);
}

std::string content_range_unknown_size(const ByteRange& range) {
  return first_last(range) + "*";
}

std::string content_range_unsatisfied(uint64_t content_bytes) {
  return "bytes */" + std::to_string(content_bytes);
}

}  // namespace peerd::content
