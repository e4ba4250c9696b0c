#include "peerd/core/routing/provider_store.h"

#include <algorithm>
#include <cassert>

namespace peerd::routing {

ProviderStore::AddResult ProviderStore::add(const NodeId& key, const Contact& provider, Instant expires) {
  auto key_it = by_key_.find(key);
  if (key_it != by_key_.end()) {
    auto& records = key_it->second;
    auto it = std::find_if(records.begin(), records.end(),
                           [&](const Record& record) { return record.provider.id == provider.id; });
    if (it != records.end()) {
      expiries_.erase(ExpiryEntry{it->expires, key, provider.id});
      records.erase(it);
      records.push_back(Record{provider, expires});
      expiries_.insert(ExpiryEntry{expires, key, provider.id});
      return AddResult::kRefreshed;
    }
  }
  const size_t key_records = key_it == by_key_.end() ? 0 : key_it->second.size();
  if (key_records >= options_.providers_per_key_max) return AddResult::kKeyFull;
  auto peer_it = records_per_peer_.find(provider.id);
  const size_t peer_records = peer_it == records_per_peer_.end() ? 0 : peer_it->second;
  if (peer_records >= options_.provider_records_per_peer_max) return AddResult::kPeerFull;
  if (expiries_.size() >= options_.provider_records_max) return AddResult::kStoreFull;
  by_key_[key].push_back(Record{provider, expires});
  ++records_per_peer_[provider.id];
  expiries_.insert(ExpiryEntry{expires, key, provider.id});
  return AddResult::kAdded;
}

void ProviderStore::providers(const NodeId& key, Instant now, size_t count, std::vector<Contact>& out) const {
  auto key_it = by_key_.find(key);
  if (key_it == by_key_.end()) return;
  const auto& records = key_it->second;
  for (auto it = records.rbegin(); it != records.rend() && out.size() < count; ++it) {
    if (it->expires > now) out.push_back(it->provider);
  }
}

void ProviderStore::erase_record(const NodeId& key, const NodeId& provider_id) {
  auto key_it = by_key_.find(key);
  assert(key_it != by_key_.end());
  std::erase_if(key_it->second, [&](const Record& record) { return record.provider.id == provider_id; });
  if (key_it->second.empty()) by_key_.erase(key_it);
  auto peer_it = records_per_peer_.find(provider_id);
  assert(peer_it != records_per_peer_.end() && peer_it->second > 0);
  if (--peer_it->second == 0) records_per_peer_.erase(peer_it);
}

size_t ProviderStore::expire(Instant now) {
  size_t expired = 0;
  while (!expiries_.empty() && std::get<0>(*expiries_.begin()) <= now) {
    const auto [expires, key, provider_id] = *expiries_.begin();
    expiries_.erase(expiries_.begin());
    erase_record(key, provider_id);
    ++expired;
  }
  return expired;
}

std::optional<Instant> ProviderStore::next_expiry() const {
  if (expiries_.empty()) return std::nullopt;
  return std::get<0>(*expiries_.begin());
}

uint64_t ProviderStore::fingerprint() const {
  uint64_t hash = 1469598103934665603ull;
  auto mix = [&hash](uint64_t value) {
    hash ^= value;
    hash *= 1099511628211ull;
  };
  for (const auto& [key, records] : by_key_) {
    for (uint8_t byte : key.bytes) mix(byte);
    for (const auto& record : records) {
      for (uint8_t byte : record.provider.id.bytes) mix(byte);
      mix(EndpointHash{}(record.provider.endpoint));
      mix(static_cast<uint64_t>(record.expires.micros_since_epoch));
    }
  }
  return hash;
}

}  // namespace peerd::routing
