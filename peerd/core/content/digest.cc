#include "peerd/core/content/digest.h"

#include "peerd/core/crypto/sha256.h"

namespace peerd::content {

std::string_view describe(DigestError error) {
  switch (error) {
    case DigestError::kEmpty:
      return "digest is empty";
    case DigestError::kMissingAlgorithm:
      return "digest must look like sha256:<64 lowercase hex>";
    case DigestError::kUnsupportedAlgorithm:
      return "only sha256 digests are supported";
    case DigestError::kBadLength:
      return "sha256 digest must have 64 hex characters";
    case DigestError::kBadHex:
      return "digest must be lowercase hex";
  }
  return "invalid digest";
}

namespace {
int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;  // upper case is rejected on purpose: the OCI spec requires lowercase hex for sha256
}
}  // namespace

Result<Digest, DigestError> Digest::parse(std::string_view text) {
  if (text.empty()) return fail(DigestError::kEmpty);
  const size_t colon = text.find(':');
  if (colon == std::string_view::npos || colon == 0) return fail(DigestError::kMissingAlgorithm);
  if (text.substr(0, colon) != "sha256") return fail(DigestError::kUnsupportedAlgorithm);
  const std::string_view hex = text.substr(colon + 1);
  if (hex.size() != 64) return fail(DigestError::kBadLength);
  Digest digest;
  for (size_t i = 0; i < 32; ++i) {
    const int high = hex_value(hex[2 * i]);
    const int low = hex_value(hex[2 * i + 1]);
    if (high < 0 || low < 0) return fail(DigestError::kBadHex);
    digest.bytes[i] = static_cast<uint8_t>(high << 4 | low);
  }
  return digest;
}

Digest Digest::of_bytes(std::string_view data) {
  Digest digest;
  digest.bytes = crypto::Sha256::hash(data);
  return digest;
}

std::string Digest::hex() const {
  return crypto::to_hex(bytes);
}

}  // namespace peerd::content
