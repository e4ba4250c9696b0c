// Tests of the DHT wire format: every message round-trips, sizes are exact, and the strict decoder rejects
// each malformed shape with its own reason.
#include <gtest/gtest.h>

#include <vector>

#include "peerd/core/routing/wire.h"

namespace peerd::routing::wire {
namespace {

Contact contact_v4(uint64_t seed, uint8_t last_octet) {
  return Contact{NodeId::from_seed(seed), Endpoint::ipv4(10, 0, 0, last_octet, 4000)};
}

Contact contact_v6(uint64_t seed) {
  std::array<uint8_t, 16> address{};
  address[0] = 0xfd;
  address[15] = static_cast<uint8_t>(seed);
  return Contact{NodeId::from_seed(seed), Endpoint::ipv6(address, 4001)};
}

std::vector<Contact> contacts(size_t count, bool ipv6) {
  std::vector<Contact> out;
  for (size_t i = 0; i < count; ++i) {
    out.push_back(ipv6 ? contact_v6(100 + i) : contact_v4(100 + i, static_cast<uint8_t>(i + 1)));
  }
  return out;
}

std::vector<Message> every_message_kind() {
  const NodeId sender = NodeId::from_seed(1);
  const NodeId key = NodeId::hash_of("some key");
  std::vector<Message> messages;
  messages.push_back({1, sender, Ping{}});
  messages.push_back({2, sender, Pong{}});
  messages.push_back({3, sender, FindNode{key}});
  messages.push_back({4, sender, Nodes{}});
  messages.push_back({5, sender, Nodes{contacts(kContactsMax, true)}});
  messages.push_back({6, sender, GetProviders{key}});
  messages.push_back({7, sender, Providers{contacts(3, false), contacts(kContactsMax, false)}});
  messages.push_back({8, sender, Providers{{}, {}}});
  messages.push_back({9, sender, AddProvider{key, 1}});
  messages.push_back({10, sender, AddProvider{key, kProviderTtlMillisMax}});
  messages.push_back({11, sender, AddProviderAck{true}});
  messages.push_back({0xffffffffffffffffull, sender, AddProviderAck{false}});
  return messages;
}

std::vector<uint8_t> encoded(const Message& message) {
  std::vector<uint8_t> out;
  auto written = encode(message, out);
  EXPECT_TRUE(written.ok());
  return out;
}

// Every message type, with IPv4 and IPv6 contacts and boundary values, decodes back to an equal message, and
// encoded_size() predicts the exact length.
TEST(RoutingWire, EveryMessageRoundTrips) {
  for (const auto& message : every_message_kind()) {
    const auto bytes = encoded(message);
    EXPECT_EQ(bytes.size(), encoded_size(message));
    EXPECT_LE(bytes.size(), kDatagramBytesMax);
    auto decoded = decode(bytes);
    ASSERT_TRUE(decoded.ok()) << describe(decoded.error());
    EXPECT_EQ(decoded.value(), message);
  }
}

// The header layout is fixed: magic, version, type, big-endian transaction id, sender id.
TEST(RoutingWire, HeaderLayoutIsStable) {
  const Message message{0x0102030405060708ull, NodeId::from_seed(9), FindNode{NodeId::from_seed(10)}};
  const auto bytes = encoded(message);
  ASSERT_EQ(bytes.size(), kHeaderBytes + NodeId::kBytes);
  EXPECT_EQ(bytes[0], 'P');
  EXPECT_EQ(bytes[1], 'D');
  EXPECT_EQ(bytes[2], kVersion);
  EXPECT_EQ(bytes[3], 3);  // FIND_NODE
  for (int i = 0; i < 8; ++i) EXPECT_EQ(bytes[4 + i], i + 1);
  EXPECT_TRUE(std::equal(message.sender.bytes.begin(), message.sender.bytes.end(), bytes.begin() + 12));
}

// Encoding appends to a caller-owned buffer and leaves it untouched on error.
TEST(RoutingWire, EncodeAppendsAndRefusesInvalidMessages) {
  std::vector<uint8_t> out = {0xAA};
  ASSERT_TRUE(encode(Message{1, NodeId{}, Ping{}}, out).ok());
  EXPECT_EQ(out.size(), 1 + kHeaderBytes);
  EXPECT_EQ(out[0], 0xAA);

  const size_t before = out.size();
  auto too_many = encode(Message{1, NodeId{}, Nodes{contacts(kContactsMax + 1, false)}}, out);
  ASSERT_FALSE(too_many.ok());
  EXPECT_EQ(too_many.error(), EncodeError::kTooManyContacts);
  Contact bad_family = contact_v4(1, 1);
  bad_family.endpoint.family = static_cast<Endpoint::Family>(5);
  EXPECT_EQ(encode(Message{1, NodeId{}, Nodes{{bad_family}}}, out).error(), EncodeError::kBadFamily);
  Contact port_zero = contact_v4(1, 1);
  port_zero.endpoint.port = 0;
  EXPECT_EQ(encode(Message{1, NodeId{}, Nodes{{port_zero}}}, out).error(), EncodeError::kBadPort);
  EXPECT_EQ(encode(Message{1, NodeId{}, AddProvider{NodeId{}, 0}}, out).error(), EncodeError::kBadTtl);
  EXPECT_EQ(encode(Message{1, NodeId{}, AddProvider{NodeId{}, kProviderTtlMillisMax + 1}}, out).error(),
            EncodeError::kBadTtl);
  // 20 providers and 20 closer nodes over IPv6 exceed one datagram.
  auto oversized = encode(Message{1, NodeId{}, Providers{contacts(20, true), contacts(20, true)}}, out);
  ASSERT_FALSE(oversized.ok());
  EXPECT_EQ(oversized.error(), EncodeError::kOversized);
  EXPECT_EQ(out.size(), before);
}

DecodeError decode_error(const std::vector<uint8_t>& bytes) {
  auto decoded = decode(bytes);
  EXPECT_FALSE(decoded.ok());
  return decoded.ok() ? DecodeError::kTrailingBytes : decoded.error();
}

// Each malformed shape is rejected with its specific reason.
TEST(RoutingWire, StrictDecoderRejectsEveryMalformedShape) {
  const auto nodes = encoded(Message{7, NodeId::from_seed(1), Nodes{contacts(2, false)}});
  const size_t first_family = kHeaderBytes + 1 + NodeId::kBytes;
  const size_t first_port = first_family + 1 + 4;

  auto with = [&](std::vector<uint8_t> bytes, size_t index, uint8_t value) {
    bytes[index] = value;
    return bytes;
  };
  EXPECT_EQ(decode_error({}), DecodeError::kTruncated);
  EXPECT_EQ(decode_error({'P'}), DecodeError::kTruncated);
  EXPECT_EQ(decode_error(with(nodes, 0, 'X')), DecodeError::kBadMagic);
  EXPECT_EQ(decode_error(with(nodes, 2, 2)), DecodeError::kBadVersion);
  EXPECT_EQ(decode_error(with(nodes, 2, 0)), DecodeError::kBadVersion);
  EXPECT_EQ(decode_error(with(nodes, 3, 0)), DecodeError::kUnknownType);
  EXPECT_EQ(decode_error(with(nodes, 3, 9)), DecodeError::kUnknownType);
  EXPECT_EQ(decode_error(with(nodes, 3, 255)), DecodeError::kUnknownType);
  EXPECT_EQ(decode_error(with(nodes, kHeaderBytes, kContactsMax + 1)), DecodeError::kTooManyContacts);
  EXPECT_EQ(decode_error(with(nodes, first_family, 5)), DecodeError::kBadFamily);
  EXPECT_EQ(decode_error(with(nodes, first_family, 0)), DecodeError::kBadFamily);
  auto port_zero = with(with(nodes, first_port, 0), first_port + 1, 0);
  EXPECT_EQ(decode_error(port_zero), DecodeError::kBadPort);
  // A count that promises more contacts than the datagram holds.
  EXPECT_EQ(decode_error(with(nodes, kHeaderBytes, 3)), DecodeError::kTruncated);
  // Every proper prefix of a valid message is truncated.
  for (size_t length = 0; length < nodes.size(); ++length) {
    EXPECT_EQ(decode_error(std::vector<uint8_t>(nodes.begin(), nodes.begin() + static_cast<long>(length))),
              DecodeError::kTruncated)
        << length;
  }
  auto trailing = nodes;
  trailing.push_back(0);
  EXPECT_EQ(decode_error(trailing), DecodeError::kTrailingBytes);
  auto ping_trailing = encoded(Message{1, NodeId{}, Ping{}});
  ping_trailing.push_back(1);
  EXPECT_EQ(decode_error(ping_trailing), DecodeError::kTrailingBytes);

  auto add = encoded(Message{1, NodeId{}, AddProvider{NodeId{}, 1000}});
  auto ttl_zero = add;
  std::fill(ttl_zero.end() - 4, ttl_zero.end(), 0);
  EXPECT_EQ(decode_error(ttl_zero), DecodeError::kBadTtl);
  auto ttl_huge = add;
  std::fill(ttl_huge.end() - 4, ttl_huge.end(), 0xff);
  EXPECT_EQ(decode_error(ttl_huge), DecodeError::kBadTtl);

  auto ack = encoded(Message{1, NodeId{}, AddProviderAck{true}});
  EXPECT_EQ(decode_error(with(ack, ack.size() - 1, 2)), DecodeError::kBadFlag);

  // Oversized is checked before anything else, even for otherwise valid bytes.
  auto oversized = nodes;
  oversized.resize(kDatagramBytesMax + 1, 0);
  EXPECT_EQ(decode_error(oversized), DecodeError::kOversized);
  std::vector<uint8_t> huge(64 * 1024, 0xff);
  EXPECT_EQ(decode_error(huge), DecodeError::kOversized);
}

// A datagram of exactly kDatagramBytesMax is accepted by size (and then judged on content).
TEST(RoutingWire, MaximumSizeIsInclusive) {
  std::vector<uint8_t> exact(kDatagramBytesMax, 0);
  exact[0] = 'P';
  exact[1] = 'D';
  exact[2] = kVersion;
  exact[3] = 1;  // PING with a long tail
  EXPECT_EQ(decode_error(exact), DecodeError::kTrailingBytes);
}

// Every decode error and encode error has a description.
TEST(RoutingWire, ErrorsAreDescribed) {
  for (size_t i = 0; i < kDecodeErrorCount; ++i) {
    EXPECT_FALSE(describe(static_cast<DecodeError>(i)).empty());
    EXPECT_NE(describe(static_cast<DecodeError>(i)), "unknown decode error");
  }
  for (int i = 0; i <= static_cast<int>(EncodeError::kOversized); ++i) {
    EXPECT_NE(describe(static_cast<EncodeError>(i)), "unknown encode error");
  }
}

// Decoding random bytes never crashes, and whatever decodes re-encodes to the identical bytes.
TEST(RoutingWire, RandomBytesNeverCrashAndCanonicalFormsRoundTrip) {
  uint64_t state = 12345;
  auto next = [&state] {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  };
  const auto base =
      encoded(Message{3, NodeId::from_seed(3), Providers{contacts(2, true), contacts(3, false)}});
  size_t accepted = 0;
  for (int round = 0; round < 20000; ++round) {
    std::vector<uint8_t> bytes = base;
    const int flips = 1 + static_cast<int>(next() % 4);
    for (int flip = 0; flip < flips; ++flip) bytes[next() % bytes.size()] = static_cast<uint8_t>(next());
    if (next() % 8 == 0) bytes.resize(next() % (bytes.size() + 8), 0);
    auto decoded = decode(bytes);
    if (!decoded) continue;
    ++accepted;
    std::vector<uint8_t> again;
    ASSERT_TRUE(encode(decoded.value(), again).ok());
    EXPECT_EQ(again, bytes);
  }
  EXPECT_GT(accepted, 0u);
}

}  // namespace
}  // namespace peerd::routing::wire
