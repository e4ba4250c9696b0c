#pragma once
// The DHT wire format: compact, versioned, big-endian. One message per datagram.
//
//   header  = magic "PD" (2) | version (1) | type (1) | transaction id (8) | sender node id (32)   = 44 bytes
//   contact = node id (32) | family (1: 4 or 6) | address (4 or 16) | port (2, non-zero)
//   list    = count (1, <= kContactsMax) | contact*
//
//   type 1 PING              (empty)
//   type 2 PONG              (empty)
//   type 3 FIND_NODE         target id (32)
//   type 4 NODES             list
//   type 5 GET_PROVIDERS     key (32)
//   type 6 PROVIDERS         providers list | closer-nodes list
//   type 7 ADD_PROVIDER      key (32) | ttl in milliseconds (4, 1..kProviderTtlMillisMax)
//   type 8 ADD_PROVIDER_ACK  stored (1: 0 or 1)
//
// The decoder is strict: it rejects datagrams over kDatagramBytesMax, a wrong magic or version, unknown
// types, truncation, trailing bytes, over-long lists, unknown address families, port 0, out-of-range ttls and
// flags. The encoder enforces the same limits, so everything it produces decodes back to an equal message. A
// provider announcement carries no address: the receiver records the datagram's observed source.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <variant>
#include <vector>

#include "peerd/core/common/node_id.h"
#include "peerd/core/common/result.h"
#include "peerd/core/common/time.h"
#include "peerd/core/routing/contact.h"

namespace peerd::routing::wire {

inline constexpr uint8_t kMagic[2] = {'P', 'D'};
inline constexpr uint8_t kVersion = 1;
inline constexpr size_t kHeaderBytes = 2 + 1 + 1 + 8 + NodeId::kBytes;
inline constexpr size_t kDatagramBytesMax = 1280;  // the IPv6 minimum MTU: never fragmented
inline constexpr size_t kContactsMax = 20;         // per list; equals the default bucket size k
inline constexpr uint32_t kProviderTtlMillisMax = 7u * 24 * 3600 * 1000;

struct Ping {
  bool operator==(const Ping&) const = default;
};
struct Pong {
  bool operator==(const Pong&) const = default;
};
struct FindNode {
  NodeId target;
  bool operator==(const FindNode&) const = default;
};
struct Nodes {
  std::vector<Contact> contacts;
  bool operator==(const Nodes&) const = default;
};
struct GetProviders {
  NodeId key;
  bool operator==(const GetProviders&) const = default;
};
struct Providers {
  std::vector<Contact> providers;
  std::vector<Contact> closer;
  bool operator==(const Providers&) const = default;
};
struct AddProvider {
  NodeId key;
  uint32_t ttl_millis = 0;
  bool operator==(const AddProvider&) const = default;
};
struct AddProviderAck {
  bool stored = false;
  bool operator==(const AddProviderAck&) const = default;
};

// The wire type byte is the variant index + 1; keep the order in step with the table above.
using Body = std::variant<Ping, Pong, FindNode, Nodes, GetProviders, Providers, AddProvider, AddProviderAck>;

struct Message {
  uint64_t transaction_id = 0;
  NodeId sender;
  Body body;

  bool operator==(const Message&) const = default;
};

inline bool is_request(const Body& body) {
  return std::holds_alternative<Ping>(body) || std::holds_alternative<FindNode>(body) ||
         std::holds_alternative<GetProviders>(body) || std::holds_alternative<AddProvider>(body);
}

enum class DecodeError : uint8_t {
  kOversized,  // longer than kDatagramBytesMax
  kTruncated,  // ended inside a field
  kBadMagic,
  kBadVersion,
  kUnknownType,
  kTooManyContacts,  // a list count above kContactsMax
  kBadFamily,        // address family other than 4 or 6
  kBadPort,          // port 0
  kBadTtl,           // 0 or above kProviderTtlMillisMax
  kBadFlag,          // a boolean byte other than 0 or 1
  kTrailingBytes,
};
inline constexpr size_t kDecodeErrorCount = static_cast<size_t>(DecodeError::kTrailingBytes) + 1;
std::string_view describe(DecodeError error);

enum class EncodeError : uint8_t {
  kTooManyContacts,
  kBadFamily,
  kBadPort,
  kBadTtl,
  kOversized,
};
std::string_view describe(EncodeError error);

// Exact size encode() would produce (even when it would be over kDatagramBytesMax).
size_t encoded_size(const Message& message);

// Appends the encoding to `out` (caller-owned, may be reused) and returns the bytes written. On error `out`
// is left as it was.
Result<size_t, EncodeError> encode(const Message& message, std::vector<uint8_t>& out);

Result<Message, DecodeError> decode(std::span<const uint8_t> datagram);

}  // namespace peerd::routing::wire
