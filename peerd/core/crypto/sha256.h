#pragma once
// Self-contained SHA-256 (FIPS 180-4). The core hashes content keys into DHT ids with it; it needs no
// OpenSSL and so stays free of external libraries. Drivers may hash blobs with OpenSSL for speed.
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace peerd::crypto {

using Sha256Digest = std::array<uint8_t, 32>;

class Sha256 {
 public:
  Sha256();
  void update(std::span<const uint8_t> data);
  void update(std::string_view data);
  Sha256Digest finish();

  static Sha256Digest hash(std::span<const uint8_t> data);
  static Sha256Digest hash(std::string_view data);

 private:
  void compress(const uint8_t* block);

  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> buffer_{};
  size_t buffer_size_ = 0;
  uint64_t total_bytes_ = 0;
};

std::string to_hex(std::span<const uint8_t> bytes);

}  // namespace peerd::crypto
