#include "peerd/core/routing/routing_table.h"

#include <algorithm>
#include <cassert>

#include "peerd/core/routing/distance.h"

namespace peerd::routing {

RoutingTable::RoutingTable(const NodeId& self, RoutingTableOptions options) : self_(self), options_(options) {
  assert(options_.bucket_peers_max > 0);
}

RoutingTable::ObserveResult RoutingTable::observe(const Contact& contact, Instant now) {
  const int index = bucket_of(contact.id);
  if (index < 0) return ObserveResult::kSelf;
  Bucket& bucket = buckets_[static_cast<size_t>(index)];
  auto it = std::find_if(bucket.entries.begin(), bucket.entries.end(),
                         [&](const RoutingEntry& entry) { return entry.contact.id == contact.id; });
  if (it != bucket.entries.end()) {
    RoutingEntry entry = *it;
    bucket.entries.erase(it);
    entry.contact.endpoint = contact.endpoint;
    entry.last_seen = now;
    entry.failures = 0;
    bucket.entries.push_back(entry);
    return ObserveResult::kUpdated;
  }
  if (bucket.entries.size() >= options_.bucket_peers_max) {
    remember_replacement(bucket, contact);
    return ObserveResult::kBucketFull;
  }
  std::erase_if(bucket.replacements, [&](const Contact& candidate) { return candidate.id == contact.id; });
  bucket.entries.push_back(RoutingEntry{contact, id_words(contact.id), now, 0});
  ++size_;
  return ObserveResult::kAdded;
}

void RoutingTable::remember_replacement(Bucket& bucket, const Contact& contact) {
  std::erase_if(bucket.replacements, [&](const Contact& candidate) { return candidate.id == contact.id; });
  if (options_.bucket_replacements_max == 0) {
    ++replacements_dropped_;
    return;
  }
  if (bucket.replacements.size() >= options_.bucket_replacements_max) {
    bucket.replacements.erase(bucket.replacements.begin());  // the stalest candidate goes
    ++replacements_dropped_;
  }
  bucket.replacements.push_back(contact);
}

int RoutingTable::record_failure(const NodeId& id) {
  const int index = bucket_of(id);
  if (index < 0) return 0;
  for (auto& entry : buckets_[static_cast<size_t>(index)].entries) {
    if (entry.contact.id == id) return ++entry.failures;
  }
  return 0;
}

RoutingTable::Removal RoutingTable::remove(const NodeId& id, Instant now, bool promote_replacement) {
  Removal removal;
  const int index = bucket_of(id);
  if (index < 0) return removal;
  Bucket& bucket = buckets_[static_cast<size_t>(index)];
  auto it = std::find_if(bucket.entries.begin(), bucket.entries.end(),
                         [&](const RoutingEntry& entry) { return entry.contact.id == id; });
  if (it == bucket.entries.end()) {
    std::erase_if(bucket.replacements, [&](const Contact& candidate) { return candidate.id == id; });
    return removal;
  }
  bucket.entries.erase(it);
  --size_;
  removal.removed = true;
  if (promote_replacement && !bucket.replacements.empty()) {
    Contact promoted = bucket.replacements.back();
    bucket.replacements.pop_back();
    // A replacement was live when it was cached, not necessarily now: it goes in as the least recently seen,
    // so it is the first to be pinged if the bucket fills again.
    bucket.entries.insert(bucket.entries.begin(), RoutingEntry{promoted, id_words(promoted.id), now, 0});
    ++size_;
    removal.promoted = promoted;
  }
  return removal;
}

const RoutingEntry* RoutingTable::find(const NodeId& id) const {
  const int index = bucket_of(id);
  if (index < 0) return nullptr;
  for (const auto& entry : buckets_[static_cast<size_t>(index)].entries) {
    if (entry.contact.id == id) return &entry;
  }
  return nullptr;
}

const RoutingEntry* RoutingTable::least_recently_seen(int bucket) const {
  if (bucket < 0 || bucket >= kBucketCount) return nullptr;
  const auto& entries = buckets_[static_cast<size_t>(bucket)].entries;
  return entries.empty() ? nullptr : &entries.front();
}

std::vector<Contact> RoutingTable::closest(const NodeId& target, size_t count, const NodeId* exclude) const {
  std::vector<Contact> out;
  closest_into(target, count, exclude, out);
  return out;
}

void RoutingTable::closest_into(const NodeId& target, size_t count, const NodeId* exclude,
                                std::vector<Contact>& out) const {
  out.clear();
  if (count == 0) return;
  // Distances to `target` fall into classes by bucket: the target's own bucket b holds the closest contacts,
  // buckets below b all share the top distance bit b, and buckets above b are ordered by index. So whole
  // classes are gathered in that order until there are enough, and only the gathered ones are sorted.
  const DistanceWords target_words = id_words(target);
  const std::optional<DistanceWords> excluded =
      exclude ? std::optional<DistanceWords>(distance_words(id_words(*exclude), target_words)) : std::nullopt;
  scored_.clear();
  auto take_bucket = [&](int index) {
    for (const auto& entry : buckets_[static_cast<size_t>(index)].entries) {
      Scored scored{distance_words(entry.id_words, target_words), &entry.contact};
      if (excluded && scored.distance == *excluded) continue;  // equal distance to one target = same id
      scored_.push_back(scored);
    }
  };
  const int target_bucket = bucket_of(target);
  if (target_bucket >= 0) take_bucket(target_bucket);
  if (scored_.size() < count && target_bucket > 0) {
    // Below b, bucket j's distances to the target differ from self's at bit j (bit j of self ^ target is
    // flipped): where that bit is set, bucket j is closer than every bucket below it and than every bucket
    // whose bit is clear; where it is clear, farther than every bucket below it. So whole buckets are taken
    // closest first (set bits from b - 1 down, then clear bits from 0 up) and the scan stops at `count`,
    // instead of scoring every bucket below b (a lookup that excludes its sender often finds b one short).
    const DistanceWords self_distance = distance_words(id_words(self_), target_words);
    auto bit_set = [&](int bit) { return ((self_distance[3 - bit / 64] >> (bit % 64)) & 1) != 0; };
    for (int index = target_bucket - 1; index >= 0 && scored_.size() < count; --index) {
      if (bit_set(index)) take_bucket(index);
    }
    for (int index = 0; index < target_bucket && scored_.size() < count; ++index) {
      if (!bit_set(index)) take_bucket(index);
    }
  }
  for (int index = target_bucket + 1; index < kBucketCount && scored_.size() < count; ++index)
    take_bucket(index);
  auto nearer = [](const Scored& a, const Scored& b) { return a.distance < b.distance; };
  if (scored_.size() > count) {
    std::nth_element(scored_.begin(), scored_.begin() + static_cast<std::ptrdiff_t>(count), scored_.end(),
                     nearer);
    scored_.resize(count);
  }
  std::sort(scored_.begin(), scored_.end(), nearer);
  out.reserve(scored_.size());
  for (const auto& scored : scored_) out.push_back(*scored.contact);
}

std::vector<Contact> RoutingTable::contacts() const {
  std::vector<Contact> out;
  out.reserve(size_);
  for (const auto& bucket : buckets_) {
    for (const auto& entry : bucket.entries) out.push_back(entry.contact);
  }
  return out;
}

int RoutingTable::nearest_bucket() const {
  for (int index = 0; index < kBucketCount; ++index) {
    if (!buckets_[static_cast<size_t>(index)].entries.empty()) return index;
  }
  return -1;
}

uint64_t RoutingTable::fingerprint() const {
  uint64_t hash = 1469598103934665603ull;
  auto mix = [&hash](uint64_t value) {
    hash ^= value;
    hash *= 1099511628211ull;
  };
  for (size_t index = 0; index < buckets_.size(); ++index) {
    for (const auto& entry : buckets_[index].entries) {
      mix(index);
      for (uint8_t byte : entry.contact.id.bytes) mix(byte);
      mix(EndpointHash{}(entry.contact.endpoint));
      mix(static_cast<uint64_t>(entry.last_seen.micros_since_epoch));
      mix(static_cast<uint64_t>(entry.failures));
    }
    for (const auto& contact : buckets_[index].replacements) {
      for (uint8_t byte : contact.id.bytes) mix(byte);
    }
  }
  return hash;
}

}  // namespace peerd::routing
