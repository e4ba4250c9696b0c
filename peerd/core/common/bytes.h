#pragma once
// Bounds-checked big-endian readers and writers for wire formats. The reader never reads past its span:
// every accessor returns false (and poisons the reader) instead, so decoders of untrusted input are strict
// without exceptions.
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

namespace peerd {

class ByteWriter {
 public:
  explicit ByteWriter(std::vector<uint8_t>& out) : out_(out) {}
  void u8(uint8_t value) { out_.push_back(value); }
  void u16(uint16_t value) {
    out_.push_back(static_cast<uint8_t>(value >> 8));
    out_.push_back(static_cast<uint8_t>(value));
  }
  void u32(uint32_t value) {
    for (int shift = 24; shift >= 0; shift -= 8) out_.push_back(static_cast<uint8_t>(value >> shift));
  }
  void u64(uint64_t value) {
    for (int shift = 56; shift >= 0; shift -= 8) out_.push_back(static_cast<uint8_t>(value >> shift));
  }
  void bytes(std::span<const uint8_t> data) { out_.insert(out_.end(), data.begin(), data.end()); }

 private:
  std::vector<uint8_t>& out_;
};

class ByteReader {
 public:
  explicit ByteReader(std::span<const uint8_t> data) : data_(data) {}

  bool u8(uint8_t& value) {
    if (!need(1)) return false;
    value = data_[offset_++];
    return true;
  }
  bool u16(uint16_t& value) {
    if (!need(2)) return false;
    value = static_cast<uint16_t>((data_[offset_] << 8) | data_[offset_ + 1]);
    offset_ += 2;
    return true;
  }
  bool u32(uint32_t& value) {
    if (!need(4)) return false;
    value = 0;
    for (int i = 0; i < 4; ++i) value = (value << 8) | data_[offset_++];
    return true;
  }
  bool u64(uint64_t& value) {
    if (!need(8)) return false;
    value = 0;
    for (int i = 0; i < 8; ++i) value = (value << 8) | data_[offset_++];
    return true;
  }
  bool bytes(uint8_t* out, size_t size) {
    if (!need(size)) return false;
    if (size) std::memcpy(out, data_.data() + offset_, size);
    offset_ += size;
    return true;
  }

  size_t remaining() const { return failed_ ? 0 : data_.size() - offset_; }
  bool failed() const { return failed_; }
  bool at_end() const { return !failed_ && offset_ == data_.size(); }

 private:
  bool need(size_t size) {
    if (failed_ || data_.size() - offset_ < size) {
      failed_ = true;
      return false;
    }
    return true;
  }

  std::span<const uint8_t> data_;
  size_t offset_ = 0;
  bool failed_ = false;
};

}  // namespace peerd
