#include "peerd/core/routing/lookup.h"

#include <algorithm>
#include <cassert>

namespace peerd::routing {

LookupCandidates::LookupCandidates(const NodeId& target, size_t results_max, size_t candidates_max)
    : target_(target),
      target_words_(id_words(target)),
      results_max_(results_max),
      candidates_max_(std::max(candidates_max, results_max)) {
  assert(results_max_ > 0);
}

bool LookupCandidates::add(const Contact& contact, int hops, int round_trips_before) {
  const DistanceWords distance = distance_words(id_words(contact.id), target_words_);
  auto position = std::lower_bound(candidates_.begin(), candidates_.end(), distance,
                                   [](const LookupCandidate& candidate, const DistanceWords& other) {
                                     return candidate.distance < other;
                                   });
  if (position != candidates_.end() && position->distance == distance) return false;
  if (candidates_.size() >= candidates_max_ && position == candidates_.end()) return false;
  LookupCandidate candidate;
  candidate.contact = contact;
  candidate.distance = distance;
  candidate.hops = hops;
  candidate.round_trips_before = round_trips_before;
  candidates_.insert(position, candidate);
  // Trim from the far end, keeping in-flight candidates so their answers still find them.
  for (size_t index = candidates_.size(); index-- > 0 && candidates_.size() > candidates_max_;) {
    if (candidates_[index].state != LookupCandidate::State::kInFlight) {
      candidates_.erase(candidates_.begin() + static_cast<std::ptrdiff_t>(index));
    }
  }
  return find_by_distance(distance) != nullptr;
}

LookupCandidate* LookupCandidates::next_to_query() {
  size_t live = 0;
  for (auto& candidate : candidates_) {
    if (candidate.state == LookupCandidate::State::kFailed) continue;
    if (candidate.state == LookupCandidate::State::kNew) return &candidate;
    if (++live >= results_max_) return nullptr;
  }
  return nullptr;
}

LookupCandidate* LookupCandidates::find(const NodeId& id) {
  return find_by_distance(distance_words(id_words(id), target_words_));
}

LookupCandidate* LookupCandidates::find_by_distance(const DistanceWords& distance) {
  // One distance to the target belongs to exactly one id.
  auto position = std::lower_bound(candidates_.begin(), candidates_.end(), distance,
                                   [](const LookupCandidate& candidate, const DistanceWords& other) {
                                     return candidate.distance < other;
                                   });
  if (position != candidates_.end() && position->distance == distance) return &*position;
  return nullptr;
}

LookupCandidate* LookupCandidates::answered(const NodeId& id, int attempts) {
  LookupCandidate* candidate = find(id);
  if (!candidate) return nullptr;
  candidate->state = LookupCandidate::State::kAnswered;
  candidate->round_trips = candidate->round_trips_before + attempts;
  return candidate;
}

void LookupCandidates::failed(const NodeId& id) {
  if (LookupCandidate* candidate = find(id)) candidate->state = LookupCandidate::State::kFailed;
}

bool LookupCandidates::converged() const {
  size_t answered = 0;
  for (const auto& candidate : candidates_) {
    if (candidate.state == LookupCandidate::State::kFailed) continue;
    if (candidate.state != LookupCandidate::State::kAnswered) return false;
    if (++answered >= results_max_) return true;
  }
  return true;
}

std::vector<Contact> LookupCandidates::closest_answered(size_t count) const {
  std::vector<Contact> out;
  for (const auto& candidate : candidates_) {
    if (out.size() >= count) break;
    if (candidate.state == LookupCandidate::State::kAnswered) out.push_back(candidate.contact);
  }
  return out;
}

int LookupCandidates::hops_max_answered() const {
  int hops = 0;
  for (const auto& candidate : candidates_) {
    if (candidate.state == LookupCandidate::State::kAnswered) hops = std::max(hops, candidate.hops);
  }
  return hops;
}

int LookupCandidates::round_trips_max_answered() const {
  int round_trips = 0;
  for (const auto& candidate : candidates_) {
    if (candidate.state == LookupCandidate::State::kAnswered)
      round_trips = std::max(round_trips, candidate.round_trips);
  }
  return round_trips;
}

}  // namespace peerd::routing
