// Tests of the core's shared vocabulary: SHA-256 vectors, ids and XOR distance, endpoints, the RNG.
#include <gtest/gtest.h>

#include <string>

#include "peerd/core/common/bytes.h"
#include "peerd/core/common/endpoint.h"
#include "peerd/core/common/node_id.h"
#include "peerd/core/common/rng.h"
#include "peerd/core/common/time.h"
#include "peerd/core/crypto/sha256.h"

namespace peerd {
namespace {

std::string sha256_hex(std::string_view text) {
  return crypto::to_hex(crypto::Sha256::hash(text));
}

// FIPS 180-4 / NIST example vectors, plus a multi-block input fed in odd-sized pieces.
TEST(Sha256, MatchesNistVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  crypto::Sha256 hasher;
  std::string million_a(1000000, 'a');
  for (size_t offset = 0; offset < million_a.size(); offset += 997) {
    hasher.update(std::string_view(million_a).substr(offset, 997));
  }
  auto digest = hasher.finish();
  EXPECT_EQ(crypto::to_hex(digest), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

// Bucket indices follow the shared-prefix length; XOR closeness is a strict order.
TEST(NodeId, DistanceAndBuckets) {
  NodeId zero;
  NodeId top;
  top.bytes[0] = 0x80;
  NodeId low;
  low.bytes[31] = 0x01;
  EXPECT_EQ(bucket_index(zero, top), 255);
  EXPECT_EQ(bucket_index(zero, low), 0);
  EXPECT_EQ(bucket_index(zero, zero), -1);
  EXPECT_TRUE(closer_to(zero, low, top));
  EXPECT_FALSE(closer_to(zero, top, low));
  EXPECT_FALSE(closer_to(zero, low, low));
  EXPECT_EQ(NodeId::from_seed(7), NodeId::from_seed(7));
  EXPECT_NE(NodeId::from_seed(7), NodeId::from_seed(8));
  EXPECT_EQ(NodeId::hash_of("abc").to_hex(), sha256_hex("abc"));
}

// Endpoints parse the two text forms and reject everything else with a reason.
TEST(Endpoint, ParsesAndRejects) {
  auto v4 = Endpoint::parse("127.0.0.3:5001");
  ASSERT_TRUE(v4.ok());
  EXPECT_EQ(v4->to_string(), "127.0.0.3:5001");
  auto v6 = Endpoint::parse("[fd00::1]:80");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->family, Endpoint::Family::kIpv6);
  EXPECT_EQ(v6->address[0], 0xfd);
  EXPECT_EQ(v6->address[15], 0x01);
  EXPECT_EQ(v6->to_string(), "[fd00:0:0:0:0:0:0:1]:80");
  for (const char* bad : {"", "1.2.3.4", "1.2.3:80", "1.2.3.256:80", "1.2.3.4:65536", "1.2.3.4:", "[::1]",
                          "[::1::2]:1", "[1:2:3:4:5:6:7:8:9]:1", "a.b.c.d:1", "1.2.3.4:-1"}) {
    EXPECT_FALSE(Endpoint::parse(bad).ok()) << bad;
  }
  EXPECT_NE(EndpointHash{}(*v4), EndpointHash{}(*v6));
}

// The reader fails closed: a short read poisons it and nothing past the span is touched.
TEST(ByteReader, FailsClosed) {
  std::vector<uint8_t> buffer;
  ByteWriter writer(buffer);
  writer.u16(0xabcd);
  writer.u32(7);
  ByteReader reader(buffer);
  uint16_t a = 0;
  uint64_t b = 0;
  EXPECT_TRUE(reader.u16(a));
  EXPECT_EQ(a, 0xabcd);
  EXPECT_FALSE(reader.u64(b));
  EXPECT_TRUE(reader.failed());
  EXPECT_EQ(reader.remaining(), 0u);
}

// Same seed, same sequence; uniform() stays in bounds.
TEST(Rng, DeterministicAndBounded) {
  Rng a(42), b(42);
  for (int i = 0; i < 1000; ++i) {
    EXPECT_EQ(a.next_u64(), b.next_u64());
    EXPECT_LT(a.uniform(17), 17u);
    b.uniform(17);
  }
  EXPECT_EQ(to_string(Duration::milliseconds(1500)), "1.500s");
  EXPECT_EQ(to_string(Duration::microseconds(12)), "12us");
}

}  // namespace
}  // namespace peerd
