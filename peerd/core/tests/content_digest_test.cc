// Tests of content digests: the only accepted form is "sha256:" + 64 lowercase hex; everything else is
// refused with a typed reason.
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "peerd/core/content/digest.h"

namespace peerd::content {
namespace {

constexpr std::string_view kEmptyHex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
constexpr std::string_view kAbcHex = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

std::string sha256(std::string_view hex) {
  return "sha256:" + std::string(hex);
}

// A valid digest parses into its 32 bytes and prints back to the same text.
TEST(Digest, ParsesAndPrintsBack) {
  auto digest = Digest::parse(sha256(kEmptyHex));
  ASSERT_TRUE(digest.ok()) << describe(digest.error());
  EXPECT_EQ(digest->bytes[0], 0xe3);
  EXPECT_EQ(digest->bytes[31], 0x55);
  EXPECT_EQ(digest->hex(), kEmptyHex);
  EXPECT_EQ(digest->to_string(), sha256(kEmptyHex));
  auto again = Digest::parse(digest->to_string());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *digest);
}

// of_bytes hashes its input: it agrees with the NIST vectors written as digests.
TEST(Digest, OfBytesMatchesParsedVectors) {
  EXPECT_EQ(Digest::of_bytes(""), Digest::parse(sha256(kEmptyHex)).value());
  EXPECT_EQ(Digest::of_bytes("abc"), Digest::parse(sha256(kAbcHex)).value());
  EXPECT_NE(Digest::of_bytes("abc"), Digest::of_bytes("abd"));
}

// Every hex digit value survives a parse/print round trip, and digests order like their bytes.
TEST(Digest, AllHexDigitsRoundTripAndOrder) {
  std::string hex;
  for (int i = 0; i < 64; ++i) hex.push_back("0123456789abcdef"[i % 16]);
  auto digest = Digest::parse(sha256(hex));
  ASSERT_TRUE(digest.ok());
  EXPECT_EQ(digest->hex(), hex);
  EXPECT_EQ(digest->bytes[0], 0x01);
  EXPECT_EQ(digest->bytes[7], 0xef);
  EXPECT_LT(Digest::parse(sha256(std::string(64, '0'))).value(),
            Digest::parse(sha256(std::string(64, 'f'))).value());
  EXPECT_LT(Digest::parse(sha256(std::string(63, '0') + "1")).value(),
            Digest::parse(sha256("1" + std::string(63, '0'))).value());
}

struct BadDigest {
  std::string text;
  DigestError error;
};

// A table of malformed digests: each is refused with the expected reason.
TEST(Digest, RejectsMalformedWithReason) {
  const std::string hex(kEmptyHex);
  const std::vector<BadDigest> cases = {
      {"", DigestError::kEmpty},
      {"sha256", DigestError::kMissingAlgorithm},
      {hex, DigestError::kMissingAlgorithm},
      {":" + hex, DigestError::kMissingAlgorithm},
      {"sha512:" + hex + hex, DigestError::kUnsupportedAlgorithm},
      {"SHA256:" + hex, DigestError::kUnsupportedAlgorithm},
      {"md5:d41d8cd98f00b204e9800998ecf8427e", DigestError::kUnsupportedAlgorithm},
      {" sha256:" + hex, DigestError::kUnsupportedAlgorithm},
      {"sha256+b64u:" + hex, DigestError::kUnsupportedAlgorithm},
      {"sha256:", DigestError::kBadLength},
      {"sha256:" + hex.substr(1), DigestError::kBadLength},
      {"sha256:" + hex + "0", DigestError::kBadLength},
      {"sha256:" + hex + "\n", DigestError::kBadLength},
      {"sha256:" + hex + " ", DigestError::kBadLength},
      {"sha256:" + hex + hex, DigestError::kBadLength},
      {"sha256:sha256:" + hex.substr(7), DigestError::kBadHex},
      {"sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855", DigestError::kBadHex},
      {"sha256:" + hex.substr(0, 63) + "G", DigestError::kBadHex},
      {"sha256:" + hex.substr(0, 63) + "g", DigestError::kBadHex},
      {"sha256:" + std::string(63, '0') + std::string(1, '\0'), DigestError::kBadHex},
      {"sha256:" + std::string(64, ' '), DigestError::kBadHex},
      {"sha256:" + std::string(62, '0') + "-1", DigestError::kBadHex},
  };
  for (const auto& bad : cases) {
    auto digest = Digest::parse(bad.text);
    ASSERT_FALSE(digest.ok()) << bad.text;
    EXPECT_EQ(digest.error(), bad.error) << bad.text << ": " << describe(digest.error());
  }
}

// Each error has its own non-empty description, so logs can tell them apart.
TEST(Digest, DescribesEveryErrorDistinctly) {
  std::set<std::string_view> seen;
  for (auto error : {DigestError::kEmpty, DigestError::kMissingAlgorithm, DigestError::kUnsupportedAlgorithm,
                     DigestError::kBadLength, DigestError::kBadHex}) {
    EXPECT_FALSE(describe(error).empty());
    EXPECT_TRUE(seen.insert(describe(error)).second) << describe(error);
  }
}

}  // namespace
}  // namespace peerd::content
