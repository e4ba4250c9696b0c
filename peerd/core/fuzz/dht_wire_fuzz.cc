// libFuzzer target for the DHT wire decoder. Whatever decodes must re-encode to the same bytes and decode to
// an equal message (the format is canonical); the same bytes are also fed to a live Dht, which must count and
// drop them or handle them without crashing, and without leaving a malformed datagram's mark on its state.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <vector>

#include "peerd/core/routing/dht.h"
#include "peerd/core/routing/wire.h"

namespace {

using peerd::Duration;
using peerd::Endpoint;
using peerd::Instant;
using peerd::NodeId;
namespace routing = peerd::routing;

// A node with some peers, a provider record and a lookup in flight, so responses can match something.
routing::Dht make_node() {
  routing::DhtOptions options;
  options.self_id = NodeId::from_seed(1);
  options.self_endpoint = Endpoint::ipv4(10, 0, 0, 1, 4000);
  // Small stores keep the per-input state fingerprint cheap; the caps themselves get exercised sooner.
  options.provider_records_max = 256;
  options.providers_per_key_max = 8;
  routing::Dht dht(options);
  dht.bootstrap(Instant{}, {});
  for (uint64_t i = 0; i < 8; ++i) {
    std::vector<uint8_t> ping;
    (void)routing::wire::encode(routing::wire::Message{i, NodeId::from_seed(100 + i), routing::wire::Ping{}},
                                ping);
    dht.handle_datagram(Instant{}, Endpoint::ipv4(10, 0, 1, static_cast<uint8_t>(i), 4000), ping);
  }
  dht.find_providers(Instant{}, NodeId::hash_of("fuzz"), 1);
  while (dht.poll_transmit()) {
  }
  while (dht.poll_event()) {
  }
  return dht;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> bytes(data, size);
  auto decoded = routing::wire::decode(bytes);
  if (decoded) {
    std::vector<uint8_t> encoded;
    auto written = routing::wire::encode(decoded.value(), encoded);
    if (!written) std::abort();  // everything the decoder accepts must be encodable
    if (encoded.size() != size || !std::equal(encoded.begin(), encoded.end(), bytes.begin())) std::abort();
    auto again = routing::wire::decode(encoded);
    if (!again || !(again.value() == decoded.value())) std::abort();
  }

  static routing::Dht dht = make_node();
  const uint64_t before = dht.fingerprint();
  const uint64_t malformed_before = dht.stats().malformed_dropped;
  // Alternate between a known peer's endpoint and a stranger's.
  const Endpoint from = Endpoint::ipv4(10, 0, 1, static_cast<uint8_t>(size % 10), 4000);
  dht.handle_datagram(Instant{} + Duration::seconds(1), from, bytes);
  if (!decoded) {
    if (dht.stats().malformed_dropped != malformed_before + 1) std::abort();
    if (dht.fingerprint() != before) std::abort();
  }
  while (dht.poll_transmit()) {
  }
  while (dht.poll_event()) {
  }
  return 0;
}
