#pragma once
// JSON structured logging in zerolog's shape, one object per line:
//   {"level":"info","self":"node-1","version":"0.1.0","url":"https://x/y","time":"2026-...Z","message":"..."}
// Context fields (Logger::with) come first, then the call's fields, then time and message, as zerolog prints
// them. Thread-safe: a line is formatted outside the lock and written with one call.
//
// Credentials never reach a log line: fields whose key names a secret (authorization, token, password, ...)
// are replaced by "[REDACTED]", and URLs should go through redact_url(), which drops user info, query string
// (SAS signatures live there) and fragment.
#include <chrono>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "peerd/daemon/options.h"

namespace peerd::daemon {

struct LogField {
  std::string key;
  nlohmann::json value;
};

// "https://user:pw@host/path?sig=x#f" -> "https://host/path". Anything without a scheme is treated as a path.
std::string redact_url(std::string_view url);
// "Bearer abc.def" -> "Bearer [REDACTED]"; values of non-secret headers are returned unchanged.
std::string redact_header(std::string_view name, std::string_view value);
// True for header or field names that carry secrets: authorization, proxy-authorization, cookie, set-cookie,
// and any name containing "token", "password", "secret" or "signature" (case-insensitive).
bool is_secret_name(std::string_view name);

// RFC 3339 UTC with microseconds, as zerolog's TimeFormatRFC3339Nano prints: "2026-11-25T10:00:00.123456Z".
std::string format_log_time(std::chrono::system_clock::time_point time);

class Logger {
 public:
  using Sink = std::function<void(std::string_view line)>;  // receives a line including its trailing '\n'
  using Clock = std::function<std::chrono::system_clock::time_point()>;

  // Writes to stderr.
  explicit Logger(LogLevel level_min = LogLevel::kInfo);
  Logger(LogLevel level_min, Sink sink, Clock clock = {});

  // A child logger that adds `fields` to every line; shares this logger's sink and level.
  Logger with(std::initializer_list<LogField> fields) const;
  Logger with(std::vector<LogField> fields) const;

  bool enabled(LogLevel level) const { return level >= level_min_; }
  void log(LogLevel level, std::string_view message, std::initializer_list<LogField> fields = {}) const;
  void debug(std::string_view message, std::initializer_list<LogField> fields = {}) const {
    log(LogLevel::kDebug, message, fields);
  }
  void info(std::string_view message, std::initializer_list<LogField> fields = {}) const {
    log(LogLevel::kInfo, message, fields);
  }
  void warn(std::string_view message, std::initializer_list<LogField> fields = {}) const {
    log(LogLevel::kWarn, message, fields);
  }
  void error(std::string_view message, std::initializer_list<LogField> fields = {}) const {
    log(LogLevel::kError, message, fields);
  }

  // The line log() would write (without the trailing newline); exposed for tests.
  std::string format(LogLevel level, std::string_view message, std::initializer_list<LogField> fields) const;

 private:
  struct Output {
    Sink sink;
    Clock clock;
    std::mutex mutex;
  };

  Logger(LogLevel level_min, std::shared_ptr<Output> output, std::vector<LogField> context);

  LogLevel level_min_;
  std::shared_ptr<Output> output_;
  std::vector<LogField> context_;
};

}  // namespace peerd::daemon
