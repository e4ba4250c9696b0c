#pragma once
// The state of one iterative Kademlia lookup: the candidates ordered by XOR distance to the target, which of
// them were queried, answered or failed, and how far (hops, round trips) each one is from the local node.
// Pure data: the Dht sends the requests and feeds the answers back.
//
// A lookup has converged when the `results_max` closest candidates that have not failed have all answered
// (and no seed request is outstanding): asking anyone else cannot bring a closer node.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "peerd/core/common/node_id.h"
#include "peerd/core/common/time.h"
#include "peerd/core/routing/contact.h"
#include "peerd/core/routing/distance.h"

namespace peerd::routing {

using LookupId = uint64_t;

struct LookupCandidate {
  enum class State : uint8_t { kNew, kInFlight, kAnswered, kFailed };

  Contact contact;
  DistanceWords distance{};  // to the lookup target
  State state = State::kNew;
  int hops = 1;                // 1 = taken from the local routing table
  int round_trips_before = 0;  // round trips spent on the path that discovered this candidate
  int round_trips = 0;         // set on answer: round_trips_before + attempts the answer took
};

class LookupCandidates {
 public:
  LookupCandidates(const NodeId& target, size_t results_max, size_t candidates_max);

  const NodeId& target() const { return target_; }

  // Adds a not-yet-known candidate in distance order; drops the farthest settled ones beyond candidates_max.
  // Returns false for duplicates and for candidates that would be dropped at once.
  bool add(const Contact& contact, int hops, int round_trips_before);

  // The closest candidate not yet asked among the `results_max` closest that have not failed.
  LookupCandidate* next_to_query();
  LookupCandidate* find(const NodeId& id);

  // Records an answer that took `attempts` transmissions; returns the candidate (nullptr if it was dropped).
  LookupCandidate* answered(const NodeId& id, int attempts);
  void failed(const NodeId& id);

  bool converged() const;
  // The closest answered candidates, at most `count`.
  std::vector<Contact> closest_answered(size_t count) const;
  // Deepest path among the answered candidates (used when a lookup ends without a result to credit).
  int hops_max_answered() const;
  int round_trips_max_answered() const;

  size_t size() const { return candidates_.size(); }
  const std::vector<LookupCandidate>& candidates() const { return candidates_; }

 private:
  LookupCandidate* find_by_distance(const DistanceWords& distance);

  NodeId target_;
  DistanceWords target_words_;
  size_t results_max_;
  size_t candidates_max_;
  std::vector<LookupCandidate> candidates_;  // ascending distance to target_
};

}  // namespace peerd::routing
