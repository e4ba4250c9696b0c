#include "peerd/daemon/log.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <ctime>

namespace peerd::daemon {
namespace {

std::string lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

void write_all_stderr(std::string_view line) {
  while (!line.empty()) {
    const ssize_t written = ::write(STDERR_FILENO, line.data(), line.size());
    if (written <= 0) return;  // nowhere left to report a logging failure
    line.remove_prefix(static_cast<size_t>(written));
  }
}

void append_field(std::string& out, const LogField& field) {
  out += ',';
  out += nlohmann::json(field.key).dump();
  out += ':';
  if (is_secret_name(field.key)) {
    out += "\"[REDACTED]\"";
  } else {
    out += field.value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
}

}  // namespace

bool is_secret_name(std::string_view name) {
  const std::string key = lower(name);
  if (key == "authorization" || key == "proxy-authorization" || key == "cookie" || key == "set-cookie")
    return true;
  for (std::string_view word : {"token", "password", "secret", "signature", "credential"}) {
    if (key.find(word) != std::string::npos) return true;
  }
  return false;
}

std::string redact_url(std::string_view url) {
  const auto cut = url.find_first_of("?#");
  std::string_view kept = url.substr(0, cut);
  const auto scheme_end = kept.find("://");
  if (scheme_end == std::string_view::npos) return std::string(kept);
  const auto authority_start = scheme_end + 3;
  const auto authority_end = std::min(kept.find('/', authority_start), kept.size());
  const auto at = kept.substr(0, authority_end).rfind('@');
  if (at == std::string_view::npos || at < authority_start) return std::string(kept);
  return std::string(kept.substr(0, authority_start)) + std::string(kept.substr(at + 1));
}

std::string redact_header(std::string_view name, std::string_view value) {
  if (!is_secret_name(name)) return std::string(value);
  const auto space = value.find(' ');
  if (space == std::string_view::npos) return "[REDACTED]";
  return std::string(value.substr(0, space)) + " [REDACTED]";
}

std::string format_log_time(std::chrono::system_clock::time_point time) {
  const auto since_epoch = time.time_since_epoch();
  const auto seconds = std::chrono::floor<std::chrono::seconds>(since_epoch);
  const auto micros = std::chrono::duration_cast<std::chrono::microseconds>(since_epoch - seconds).count();
  const std::time_t unix_seconds = static_cast<std::time_t>(seconds.count());
  std::tm utc{};
  gmtime_r(&unix_seconds, &utc);
  char text[48];
  const size_t length = std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%S", &utc);
  std::string out(text, length);
  char fraction[32];
  std::snprintf(fraction, sizeof(fraction), ".%06lldZ", static_cast<long long>(micros));
  return out + fraction;
}

Logger::Logger(LogLevel level_min) : Logger(level_min, write_all_stderr) {}

Logger::Logger(LogLevel level_min, Sink sink, Clock clock)
    : Logger(level_min, std::make_shared<Output>(), std::vector<LogField>{}) {
  output_->sink = std::move(sink);
  output_->clock = clock ? std::move(clock) : Clock([] { return std::chrono::system_clock::now(); });
}

Logger::Logger(LogLevel level_min, std::shared_ptr<Output> output, std::vector<LogField> context)
    : level_min_(level_min), output_(std::move(output)), context_(std::move(context)) {}

Logger Logger::with(std::initializer_list<LogField> fields) const {
  return with(std::vector<LogField>(fields));
}

Logger Logger::with(std::vector<LogField> fields) const {
  std::vector<LogField> context = context_;
  for (auto& field : fields) context.push_back(std::move(field));
  return Logger(level_min_, output_, std::move(context));
}

std::string Logger::format(LogLevel level, std::string_view message,
                           std::initializer_list<LogField> fields) const {
  std::string line = "{\"level\":\"";
  line += to_string(level);
  line += '"';
  for (const auto& field : context_) append_field(line, field);
  for (const auto& field : fields) append_field(line, field);
  line += ",\"time\":\"" + format_log_time(output_->clock()) + "\",\"message\":";
  line += nlohmann::json(std::string(message)).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  line += '}';
  return line;
}

void Logger::log(LogLevel level, std::string_view message, std::initializer_list<LogField> fields) const {
  if (!enabled(level)) return;
  std::string line = format(level, message, fields);
  line += '\n';
  std::lock_guard lock(output_->mutex);
  output_->sink(line);
}

}  // namespace peerd::daemon
