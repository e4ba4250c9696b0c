#include "workloads/common/prometheus_text.h"

#include <cstdlib>
#include <optional>

namespace peerd::workload {
namespace {

// Parses `{a="x",b="y"}` at the start of `text`; advances `text` past it. nullopt on malformed labels.
std::optional<LabelMatch> parse_labels(std::string_view& text) {
  LabelMatch labels;
  text.remove_prefix(1);  // '{'
  while (true) {
    while (!text.empty() && (text.front() == ' ' || text.front() == ',')) text.remove_prefix(1);
    if (text.empty()) return std::nullopt;
    if (text.front() == '}') {
      text.remove_prefix(1);
      return labels;
    }
    const auto equals = text.find('=');
    if (equals == std::string_view::npos || equals + 1 >= text.size() || text[equals + 1] != '"') {
      return std::nullopt;
    }
    std::string key(text.substr(0, equals));
    while (!key.empty() && key.back() == ' ') key.pop_back();
    text.remove_prefix(equals + 2);
    std::string value;
    bool closed = false;
    while (!text.empty()) {
      const char c = text.front();
      text.remove_prefix(1);
      if (c == '"') {
        closed = true;
        break;
      }
      if (c == '\\' && !text.empty()) {
        const char escaped = text.front();
        text.remove_prefix(1);
        value += escaped == 'n' ? '\n' : escaped;
        continue;
      }
      value += c;
    }
    if (!closed) return std::nullopt;
    labels.emplace_back(std::move(key), std::move(value));
  }
}

bool includes(const LabelMatch& have, const LabelMatch& want) {
  for (const auto& wanted : want) {
    bool found = false;
    for (const auto& label : have) found = found || label == wanted;
    if (!found) return false;
  }
  return true;
}

std::optional<double> parse_value(std::string_view text) {
  while (!text.empty() && text.front() == ' ') text.remove_prefix(1);
  const std::string token(text.substr(0, text.find(' ')));
  if (token.empty()) return std::nullopt;
  char* end = nullptr;
  const double value = std::strtod(token.c_str(), &end);  // also reads +Inf, -Inf and NaN
  if (end != token.c_str() + token.size()) return std::nullopt;
  return value;
}

}  // namespace

Result<double, std::string> prometheus_sample(std::string_view exposition, std::string_view metric,
                                              const LabelMatch& labels) {
  double sum = 0;
  bool found = false;
  while (!exposition.empty()) {
    const auto newline = exposition.find('\n');
    std::string_view line = exposition.substr(0, newline);
    exposition.remove_prefix(newline == std::string_view::npos ? exposition.size() : newline + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (!line.starts_with(metric) || line.size() == metric.size()) continue;
    std::string_view rest = line.substr(metric.size());
    LabelMatch series_labels;
    if (rest.front() == '{') {
      auto parsed = parse_labels(rest);
      if (!parsed) return fail("malformed labels in '" + std::string(line) + "'");
      series_labels = std::move(*parsed);
    } else if (rest.front() != ' ') {
      continue;  // a longer metric name with this prefix
    }
    if (!includes(series_labels, labels)) continue;
    const auto value = parse_value(rest);
    if (!value) return fail("malformed value in '" + std::string(line) + "'");
    sum += *value;
    found = true;
  }
  if (!found) return fail(std::string(metric) + " with the wanted labels is not in the exposition");
  return sum;
}

}  // namespace peerd::workload
