#pragma once
// Vocabulary of the transfer engine: who bytes come from, what is read, and the handles the engine gives out.
#include <compare>
#include <cstdint>
#include <optional>
#include <string_view>

#include "peerd/core/common/endpoint.h"
#include "peerd/core/common/node_id.h"
#include "peerd/core/content/content_key.h"

namespace peerd::transfer {

using content::ChunkKey;
using content::ContentId;

// Another peerd node: its DHT id (identity, and the input of rendezvous hashing) and where its chunk server
// listens. The engine never dials anything; adapters turn the endpoint into a connection.
struct Peer {
  NodeId id;
  Endpoint endpoint;

  bool operator==(const Peer&) const = default;
};

// Handles. They carry a slot and a generation, so a stale handle (a fetch that was cancelled, a read that was
// released) is recognised and ignored instead of touching whatever reuses the slot.
struct ReadId {
  uint64_t value = 0;
  auto operator<=>(const ReadId&) const = default;
};
struct FetchId {
  uint64_t value = 0;
  auto operator<=>(const FetchId&) const = default;
};
struct ServeId {
  uint64_t value = 0;
  auto operator<=>(const ServeId&) const = default;
};

// Where a fetch goes: another node's chunk server or the upstream (registry or file origin) of the content.
struct Source {
  enum class Kind : uint8_t { kPeer, kUpstream };
  Kind kind = Kind::kUpstream;
  Peer peer;  // meaningful for kPeer only

  static Source upstream() { return Source{}; }
  static Source from_peer(const Peer& peer) { return Source{Kind::kPeer, peer}; }
  bool is_upstream() const { return kind == Kind::kUpstream; }
  bool operator==(const Source&) const = default;
};

// What a read is about. `size_bytes` is known from the manifest descriptor, a HEAD or a peer; reads of
// content of unknown size are refused (the adapter learns the size first). `upstream_allowed` is false when
// this node cannot reach the upstream (no credentials, mirror-only mode): only peers are asked then.
struct ContentRef {
  ContentId content;
  std::optional<uint64_t> size_bytes;
  bool upstream_allowed = true;
};

// A digest of one chunk's bytes computed by the adapter while it writes them (the daemon: a truncated sha256
// or xxh3 over the chunk; the harness: a checksum of its virtual bytes). The engine only compares
// fingerprints of two copies of the same chunk to find which supplier lied after a whole-blob digest
// mismatch.
using ChunkFingerprint = uint64_t;

enum class ReadError : uint8_t {
  kEmptyRange,       // length == 0
  kBeyondEnd,        // offset + length > size (or overflows)
  kUnknownSize,      // no size in the ContentRef and none known
  kSizeMismatch,     // the ContentRef's size contradicts the size already known for this content
  kTooManyReads,     // reads_inflight_max
  kTooManyContents,  // contents_max and none idle to forget
};
std::string_view describe(ReadError error);

// Why a read failed after it was accepted.
enum class ReadFailure : uint8_t {
  kNoSource,   // no peer has the chunk and the upstream is not allowed (or failed fetch_attempts_max times)
  kIntegrity,  // even chunks refetched from the upstream do not match the digest
  kStoreFull,  // the chunk store refused the space and nothing could be evicted
};
std::string_view describe(ReadFailure failure);

enum class ServeError : uint8_t {
  kTooManyServes,  // serves_inflight_max
  kBadRequest,     // chunk size differs from ours, index past the end, size zero
};
std::string_view describe(ServeError error);

// What the adapter saw go wrong with a fetch.
enum class FetchFailure : uint8_t {
  kUnreachable,    // could not connect / connection refused: the peer is probably gone (banned at once)
  kMiss,           // the peer answered 404: it does not hold the chunk (not a fault)
  kRefused,        // the peer is overloaded (503): try elsewhere, not a fault
  kBroken,         // the stream ended before the range did (counted towards a ban)
  kUpstreamError,  // the upstream answered an error
};
std::string_view describe(FetchFailure failure);

enum class BanReason : uint8_t {
  kUnreachable,
  kRepeatedFailures,
  kCorruptData,
};
std::string_view describe(BanReason reason);

}  // namespace peerd::transfer
