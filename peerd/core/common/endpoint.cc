#include "peerd/core/common/endpoint.h"

#include <charconv>
#include <vector>

namespace peerd {

Endpoint Endpoint::ipv4(uint8_t a, uint8_t b, uint8_t c, uint8_t d, uint16_t port) {
  Endpoint endpoint;
  endpoint.family = Family::kIpv4;
  endpoint.address[0] = a;
  endpoint.address[1] = b;
  endpoint.address[2] = c;
  endpoint.address[3] = d;
  endpoint.port = port;
  return endpoint;
}

Endpoint Endpoint::ipv6(const std::array<uint8_t, 16>& address, uint16_t port) {
  Endpoint endpoint;
  endpoint.family = Family::kIpv6;
  endpoint.address = address;
  endpoint.port = port;
  return endpoint;
}

namespace {

bool parse_port(std::string_view text, uint16_t& port) {
  if (text.empty() || text.size() > 5) return false;
  unsigned value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || value > 65535) return false;
  port = static_cast<uint16_t>(value);
  return true;
}

bool parse_ipv4(std::string_view text, std::array<uint8_t, 16>& out) {
  int part = 0;
  size_t start = 0;
  while (part < 4) {
    size_t end = text.find('.', start);
    if (part == 3) end = text.size();
    if (end == std::string_view::npos) return false;
    std::string_view digits = text.substr(start, end - start);
    if (digits.empty() || digits.size() > 3) return false;
    unsigned value = 0;
    auto [stop, error] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
    if (error != std::errc() || stop != digits.data() + digits.size() || value > 255) return false;
    out[part++] = static_cast<uint8_t>(value);
    start = end + 1;
  }
  return true;
}

bool parse_hex_group(std::string_view text, uint16_t& value) {
  if (text.empty() || text.size() > 4) return false;
  unsigned parsed = 0;
  auto [stop, error] = std::from_chars(text.data(), text.data() + text.size(), parsed, 16);
  if (error != std::errc() || stop != text.data() + text.size()) return false;
  value = static_cast<uint16_t>(parsed);
  return true;
}

// RFC 4291 text form with at most one "::"; no embedded IPv4 and no zone ids (not needed by peerd).
bool parse_ipv6(std::string_view text, std::array<uint8_t, 16>& out) {
  auto split = [](std::string_view part, std::vector<uint16_t>& groups) {
    if (part.empty()) return true;
    size_t start = 0;
    while (true) {
      size_t end = part.find(':', start);
      std::string_view group =
          part.substr(start, end == std::string_view::npos ? part.size() - start : end - start);
      uint16_t value = 0;
      if (!parse_hex_group(group, value)) return false;
      groups.push_back(value);
      if (groups.size() > 8) return false;
      if (end == std::string_view::npos) return true;
      start = end + 1;
    }
  };
  std::vector<uint16_t> head, tail;
  size_t gap = text.find("::");
  if (gap == std::string_view::npos) {
    if (!split(text, head) || head.size() != 8) return false;
  } else {
    if (text.find("::", gap + 1) != std::string_view::npos) return false;
    if (!split(text.substr(0, gap), head) || !split(text.substr(gap + 2), tail)) return false;
    if (head.size() + tail.size() > 7) return false;
  }
  out.fill(0);
  for (size_t i = 0; i < head.size(); ++i) {
    out[2 * i] = static_cast<uint8_t>(head[i] >> 8);
    out[2 * i + 1] = static_cast<uint8_t>(head[i]);
  }
  for (size_t i = 0; i < tail.size(); ++i) {
    size_t index = 8 - tail.size() + i;
    out[2 * index] = static_cast<uint8_t>(tail[i] >> 8);
    out[2 * index + 1] = static_cast<uint8_t>(tail[i]);
  }
  return true;
}

}  // namespace

Result<Endpoint, std::string> Endpoint::parse(std::string_view text) {
  Endpoint endpoint;
  if (!text.empty() && text.front() == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return fail(std::string("IPv6 endpoint must look like [addr]:port"));
    }
    endpoint.family = Family::kIpv6;
    if (!parse_ipv6(text.substr(1, close - 1), endpoint.address))
      return fail(std::string("bad IPv6 address"));
    if (!parse_port(text.substr(close + 2), endpoint.port)) return fail(std::string("bad port"));
    return endpoint;
  }
  size_t colon = text.rfind(':');
  if (colon == std::string_view::npos) return fail(std::string("endpoint needs a port (host:port)"));
  endpoint.family = Family::kIpv4;
  if (!parse_ipv4(text.substr(0, colon), endpoint.address)) return fail(std::string("bad IPv4 address"));
  if (!parse_port(text.substr(colon + 1), endpoint.port)) return fail(std::string("bad port"));
  return endpoint;
}

std::string Endpoint::address_string() const {
  std::string text;
  if (family == Family::kIpv4) {
    for (int i = 0; i < 4; ++i) {
      if (i) text += '.';
      text += std::to_string(address[i]);
    }
    return text;
  }
  // Full form without zero compression: unambiguous and good enough for logs.
  for (int i = 0; i < 8; ++i) {
    char buffer[8];
    auto [end, error] =
        std::to_chars(buffer, buffer + sizeof buffer, (address[2 * i] << 8) | address[2 * i + 1], 16);
    if (i) text += ':';
    text.append(buffer, end);
  }
  return text;
}

std::string Endpoint::to_string() const {
  if (family == Family::kIpv4) return address_string() + ":" + std::to_string(port);
  return "[" + address_string() + "]:" + std::to_string(port);
}

size_t EndpointHash::operator()(const Endpoint& endpoint) const {
  // FNV-1a over the significant bytes.
  uint64_t hash = 1469598103934665603ull;
  auto mix = [&hash](uint8_t byte) {
    hash ^= byte;
    hash *= 1099511628211ull;
  };
  mix(static_cast<uint8_t>(endpoint.family));
  for (size_t i = 0; i < endpoint.address_size(); ++i) mix(endpoint.address[i]);
  mix(static_cast<uint8_t>(endpoint.port >> 8));
  mix(static_cast<uint8_t>(endpoint.port));
  return static_cast<size_t>(hash);
}

}  // namespace peerd
