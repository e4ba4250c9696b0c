#include "workloads/common/arguments.h"

#include <cctype>
#include <charconv>
#include <cmath>

namespace peerd::workload {

Result<std::string, std::string> ArgumentCursor::next_flag() {
  const std::string& argument = arguments_[next_++];
  if (!argument.starts_with("--") || argument.size() == 2) {
    return fail("unexpected argument '" + argument + "'");
  }
  const auto equals = argument.find('=');
  has_inline_value_ = equals != std::string::npos;
  flag_ = argument.substr(0, equals);
  inline_value_ = has_inline_value_ ? argument.substr(equals + 1) : std::string();
  return flag_;
}

Result<std::string, std::string> ArgumentCursor::value() {
  if (has_inline_value_) return inline_value_;
  if (done()) return fail(flag_ + " needs a value");
  return arguments_[next_++];
}

Result<bool, std::string> ArgumentCursor::no_value() const {
  if (has_inline_value_) return fail(flag_ + " takes no value");
  return true;
}

Result<uint64_t, std::string> parse_unsigned(std::string_view flag, std::string_view text, uint64_t min,
                                             uint64_t max) {
  uint64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || error != std::errc() || end != text.data() + text.size()) {
    return fail(std::string(flag) + ": expected an unsigned integer, got '" + std::string(text) + "'");
  }
  if (value < min || value > max) {
    return fail(std::string(flag) + ": " + std::to_string(value) + " is outside [" + std::to_string(min) +
                ", " + std::to_string(max) + "]");
  }
  return value;
}

Result<double, std::string> parse_fraction(std::string_view flag, std::string_view text) {
  double value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || error != std::errc() || end != text.data() + text.size() || !std::isfinite(value) ||
      value < 0 || value > 1) {
    return fail(std::string(flag) + ": expected a number in [0, 1], got '" + std::string(text) + "'");
  }
  return value;
}

std::vector<std::string> split_list(std::string_view text) {
  std::vector<std::string> words;
  std::string word;
  bool in_comment = false;
  for (const char c : text) {
    if (c == '\n') in_comment = false;
    if (c == '#' && word.empty()) in_comment = true;
    if (in_comment || std::isspace(static_cast<unsigned char>(c))) {
      if (!word.empty()) words.push_back(std::move(word));
      word.clear();
      continue;
    }
    word += c;
  }
  if (!word.empty()) words.push_back(std::move(word));
  return words;
}

}  // namespace peerd::workload
