#include "peerd/core/common/time.h"

#include <charconv>

namespace peerd {

namespace {
std::string fixed3(double value, const char* unit) {
  char buffer[48];
  auto [end, error] = std::to_chars(buffer, buffer + sizeof buffer, value, std::chars_format::fixed, 3);
  if (error != std::errc()) return "?";
  return std::string(buffer, end) + unit;
}
}  // namespace

std::string to_string(Duration d) {
  if (d.micros < 1000 && d.micros > -1000) return std::to_string(d.micros) + "us";
  if (d.micros < 1000 * 1000 && d.micros > -1000 * 1000) return fixed3(d.as_milliseconds(), "ms");
  return fixed3(d.as_seconds(), "s");
}

}  // namespace peerd
