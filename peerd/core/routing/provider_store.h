#pragma once
// Provider records held for other nodes: key -> (provider contact, expiry). Every dimension is capped
// (`providers_per_key_max`, `provider_records_per_peer_max`, `provider_records_max`); a record that would
// exceed a cap is refused and the caller counts it. Refreshing an existing record is always allowed.
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <tuple>
#include <vector>

#include "peerd/core/common/node_id.h"
#include "peerd/core/common/time.h"
#include "peerd/core/routing/contact.h"

namespace peerd::routing {

struct ProviderStoreOptions {
  size_t providers_per_key_max = 64;
  size_t provider_records_per_peer_max = 8192;
  size_t provider_records_max = 100000;
};

class ProviderStore {
 public:
  enum class AddResult { kAdded, kRefreshed, kKeyFull, kPeerFull, kStoreFull };

  explicit ProviderStore(ProviderStoreOptions options) : options_(options) {}

  AddResult add(const NodeId& key, const Contact& provider, Instant expires);
  // Unexpired providers of `key`, at most `count`, most recently refreshed first.
  void providers(const NodeId& key, Instant now, size_t count, std::vector<Contact>& out) const;
  // Drops every record that expired at or before `now`; returns how many.
  size_t expire(Instant now);
  std::optional<Instant> next_expiry() const;

  size_t size() const { return expiries_.size(); }
  size_t keys() const { return by_key_.size(); }
  uint64_t fingerprint() const;

 private:
  struct Record {
    Contact provider;
    Instant expires;
  };
  using ExpiryEntry = std::tuple<Instant, NodeId, NodeId>;  // (expires, key, provider id)

  void erase_record(const NodeId& key, const NodeId& provider_id);

  ProviderStoreOptions options_;
  std::map<NodeId, std::vector<Record>> by_key_;  // per key: back = most recently refreshed
  std::map<NodeId, size_t> records_per_peer_;
  std::set<ExpiryEntry> expiries_;
};

}  // namespace peerd::routing
