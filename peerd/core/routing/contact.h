#pragma once
// A DHT peer: its 256-bit id and the endpoint it was last seen at.
#include "peerd/core/common/endpoint.h"
#include "peerd/core/common/node_id.h"

namespace peerd::routing {

struct Contact {
  NodeId id;
  Endpoint endpoint;

  bool operator==(const Contact&) const = default;
};

}  // namespace peerd::routing
