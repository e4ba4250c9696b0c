#pragma once
// An opaque network endpoint (IPv4 or IPv6 address + port). The core never opens sockets; it only stores,
// compares, hashes and (de)serialises these. Drivers convert to and from their own address types.
#include <array>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "peerd/core/common/result.h"

namespace peerd {

struct Endpoint {
  enum class Family : uint8_t { kIpv4 = 4, kIpv6 = 6 };

  Family family = Family::kIpv4;
  std::array<uint8_t, 16> address{};  // IPv4 uses the first 4 bytes; the rest stay zero
  uint16_t port = 0;

  static Endpoint ipv4(uint8_t a, uint8_t b, uint8_t c, uint8_t d, uint16_t port);
  static Endpoint ipv6(const std::array<uint8_t, 16>& address, uint16_t port);

  // "1.2.3.4:80" or "[::1]:80". Rejects anything else with a reason.
  static Result<Endpoint, std::string> parse(std::string_view text);

  size_t address_size() const { return family == Family::kIpv4 ? 4 : 16; }
  std::string address_string() const;
  std::string to_string() const;

  auto operator<=>(const Endpoint&) const = default;
};

struct EndpointHash {
  size_t operator()(const Endpoint& endpoint) const;
};

}  // namespace peerd
