#pragma once
// Command-line parsing shared by the workload programs: flags are "--name value" or "--name=value"; every
// error is one line naming the flag, and the programs print it and exit with status 2.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "peerd/core/common/result.h"

namespace peerd::workload {

// Exit statuses shared by peerd-random and peerd-ctr.
inline constexpr int kExitPassed = 0;
inline constexpr int kExitChecksFailed = 1;
inline constexpr int kExitUsage = 2;

// Walks the arguments (without the program name) one flag at a time.
class ArgumentCursor {
 public:
  explicit ArgumentCursor(std::span<const std::string> arguments) : arguments_(arguments) {}

  bool done() const { return next_ >= arguments_.size(); }
  // The next flag's name, e.g. "--blob" (for "--blob=x" too). An argument not starting with "--" is an error.
  Result<std::string, std::string> next_flag();
  // The current flag's value: its "=value" part, else the following argument.
  Result<std::string, std::string> value();
  // Errors when the current flag was given "=value" (for flags that take none).
  Result<bool, std::string> no_value() const;

 private:
  std::span<const std::string> arguments_;
  size_t next_ = 0;
  std::string flag_;
  std::string inline_value_;
  bool has_inline_value_ = false;
};

// An unsigned integer in [min, max] for `flag`.
Result<uint64_t, std::string> parse_unsigned(std::string_view flag, std::string_view text, uint64_t min,
                                             uint64_t max);
// A number in [0, 1] for `flag`.
Result<double, std::string> parse_fraction(std::string_view flag, std::string_view text);
// Whitespace-separated words; a word starting with '#' starts a comment that runs to the end of the line.
std::vector<std::string> split_list(std::string_view text);

}  // namespace peerd::workload
