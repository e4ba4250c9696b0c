#pragma once
// Kademlia k-buckets: 256 buckets indexed by the shared-prefix length with the local id, each holding at most
// `bucket_peers_max` contacts ordered from least to most recently seen, plus a small cache of replacement
// candidates that stand in when a contact is evicted. Pure data: the Dht decides when to ping and evict.
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "peerd/core/common/node_id.h"
#include "peerd/core/common/time.h"
#include "peerd/core/routing/contact.h"
#include "peerd/core/routing/distance.h"

namespace peerd::routing {

struct RoutingEntry {
  Contact contact;
  DistanceWords id_words{};  // contact.id as words, cached for closest-k
  Instant last_seen;
  int failures = 0;  // consecutive request failures since the contact was last heard from
};

struct RoutingTableOptions {
  size_t bucket_peers_max = 20;
  size_t bucket_replacements_max = 8;
};

class RoutingTable {
 public:
  static constexpr int kBucketCount = NodeId::kBits;

  enum class ObserveResult {
    kAdded,       // inserted as the most recently seen
    kUpdated,     // already present: moved to most recently seen, failures reset, endpoint refreshed
    kBucketFull,  // not inserted; remembered as a replacement candidate
    kSelf,        // the local id: never stored
  };

  RoutingTable(const NodeId& self, RoutingTableOptions options);

  const NodeId& self() const { return self_; }

  // A live sighting (a request or a matching response from this contact).
  ObserveResult observe(const Contact& contact, Instant now);

  // Counts a failed request; returns the new consecutive failure count (0 if the contact is unknown).
  int record_failure(const NodeId& id);

  // Removes the contact. If `promote_replacement`, the freshest replacement candidate of its bucket takes the
  // free slot and is returned.
  struct Removal {
    bool removed = false;
    std::optional<Contact> promoted;
  };
  Removal remove(const NodeId& id, Instant now, bool promote_replacement);

  const RoutingEntry* find(const NodeId& id) const;
  // The least recently seen contact of a bucket (the one Kademlia pings when the bucket is full).
  const RoutingEntry* least_recently_seen(int bucket) const;

  // Up to `count` contacts ordered by XOR distance to `target`, skipping `exclude` if given.
  std::vector<Contact> closest(const NodeId& target, size_t count, const NodeId* exclude = nullptr) const;
  void closest_into(const NodeId& target, size_t count, const NodeId* exclude,
                    std::vector<Contact>& out) const;

  std::vector<Contact> contacts() const;
  size_t size() const { return size_; }
  size_t bucket_size(int bucket) const { return buckets_[static_cast<size_t>(bucket)].entries.size(); }
  size_t replacements_size(int bucket) const {
    return buckets_[static_cast<size_t>(bucket)].replacements.size();
  }
  // Lowest non-empty bucket index (the bucket of the nearest known contact), or -1 when empty.
  int nearest_bucket() const;
  uint64_t replacements_dropped() const { return replacements_dropped_; }

  // An order-sensitive hash of the table: equal tables give equal fingerprints.
  uint64_t fingerprint() const;

 private:
  struct Scored {
    std::array<uint64_t, 4> distance;  // XOR distance as big-endian words: compares like the byte string
    const Contact* contact;
  };
  struct Bucket {
    std::vector<RoutingEntry> entries;  // front = least recently seen
    std::vector<Contact> replacements;  // back = most recently seen
  };

  int bucket_of(const NodeId& id) const { return bucket_index(self_, id); }
  void remember_replacement(Bucket& bucket, const Contact& contact);

  NodeId self_;
  RoutingTableOptions options_;
  std::array<Bucket, kBucketCount> buckets_;
  size_t size_ = 0;
  uint64_t replacements_dropped_ = 0;
  mutable std::vector<Scored> scored_;  // scratch for closest_into(); the table is single-threaded
};

}  // namespace peerd::routing
