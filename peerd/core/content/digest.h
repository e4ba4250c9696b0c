#pragma once
// OCI content digests. peerd addresses blobs by sha256 only: "sha256:" followed by 64 lowercase hex digits.
#include <array>
#include <compare>
#include <cstdint>
#include <string>
#include <string_view>

#include "peerd/core/common/result.h"

namespace peerd::content {

enum class DigestError {
  kEmpty,
  kMissingAlgorithm,      // no "algorithm:" prefix
  kUnsupportedAlgorithm,  // e.g. sha512, or an unknown name
  kBadLength,             // hex part is not 64 characters
  kBadHex,                // non-hex or upper-case characters
};

std::string_view describe(DigestError error);

struct Digest {
  std::array<uint8_t, 32> bytes{};

  static Result<Digest, DigestError> parse(std::string_view text);
  static Digest of_bytes(std::string_view data);  // sha256 of data

  std::string hex() const;
  std::string to_string() const { return "sha256:" + hex(); }

  auto operator<=>(const Digest&) const = default;
};

}  // namespace peerd::content
