#pragma once
// Virtual-or-real time for the sans-IO core. The core never reads a clock: every entry point takes `now`,
// and drivers (daemon, simulator, harness) own the clock. Microsecond resolution, signed 64-bit.
#include <compare>
#include <cstdint>
#include <string>

namespace peerd {

struct Duration {
  int64_t micros = 0;

  static constexpr Duration microseconds(int64_t value) { return Duration{value}; }
  static constexpr Duration milliseconds(int64_t value) { return Duration{value * 1000}; }
  static constexpr Duration seconds(int64_t value) { return Duration{value * 1000 * 1000}; }
  static constexpr Duration zero() { return Duration{0}; }

  constexpr double as_seconds() const { return static_cast<double>(micros) / 1e6; }
  constexpr double as_milliseconds() const { return static_cast<double>(micros) / 1e3; }

  constexpr auto operator<=>(const Duration&) const = default;
  constexpr Duration operator+(Duration other) const { return Duration{micros + other.micros}; }
  constexpr Duration operator-(Duration other) const { return Duration{micros - other.micros}; }
  constexpr Duration operator*(int64_t factor) const { return Duration{micros * factor}; }
  constexpr Duration operator/(int64_t divisor) const { return Duration{micros / divisor}; }
  constexpr Duration& operator+=(Duration other) {
    micros += other.micros;
    return *this;
  }
};

struct Instant {
  int64_t micros_since_epoch = 0;  // epoch is whatever the driver chose (start of run, Unix epoch, ...)

  static constexpr Instant from_micros(int64_t value) { return Instant{value}; }

  constexpr auto operator<=>(const Instant&) const = default;
  constexpr Instant operator+(Duration d) const { return Instant{micros_since_epoch + d.micros}; }
  constexpr Instant operator-(Duration d) const { return Instant{micros_since_epoch - d.micros}; }
  constexpr Duration operator-(Instant other) const {
    return Duration{micros_since_epoch - other.micros_since_epoch};
  }
  constexpr Instant& operator+=(Duration d) {
    micros_since_epoch += d.micros;
    return *this;
  }
};

std::string to_string(Duration d);

}  // namespace peerd
