#include "peerd/daemon/log.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace peerd::daemon {
namespace {

std::chrono::system_clock::time_point fixed_time() {
  // 2026-11-25T10:00:00.123456Z
  return std::chrono::system_clock::time_point(std::chrono::seconds(1795600800) +
                                               std::chrono::microseconds(123456));
}

struct Captured {
  std::vector<std::string> lines;
  Logger logger(LogLevel level) {
    return Logger(
        level, [this](std::string_view line) { lines.emplace_back(line); }, fixed_time);
  }
};

// Shows a line has zerolog's shape and key order: level, context fields, call fields, time, message.
TEST(Log, ZerologShapeAndFieldOrder) {
  Captured captured;
  const Logger logger = captured.logger(LogLevel::kInfo).with({{"self", "node-1"}, {"version", "0.1.0"}});
  logger.info("server start", {{"http", "0.0.0.0:5000"}, {"count", 3}});
  ASSERT_EQ(captured.lines.size(), 1u);
  EXPECT_EQ(
      captured.lines[0],
      "{\"level\":\"info\",\"self\":\"node-1\",\"version\":\"0.1.0\",\"http\":\"0.0.0.0:5000\",\"count\":3,"
      "\"time\":\"2026-11-25T10:00:00.123456Z\",\"message\":\"server start\"}\n");
  const auto parsed = nlohmann::json::parse(captured.lines[0]);
  EXPECT_EQ(parsed["message"], "server start");
}

// Shows lines below the minimum level are dropped and levels print as lower-case names.
TEST(Log, LevelFiltering) {
  Captured captured;
  const Logger logger = captured.logger(LogLevel::kWarn);
  logger.debug("d");
  logger.info("i");
  logger.warn("w");
  logger.error("e");
  ASSERT_EQ(captured.lines.size(), 2u);
  EXPECT_EQ(nlohmann::json::parse(captured.lines[0])["level"], "warn");
  EXPECT_EQ(nlohmann::json::parse(captured.lines[1])["level"], "error");
  EXPECT_FALSE(logger.enabled(LogLevel::kInfo));
}

// Shows secret-named fields are redacted whatever their value, and strings are JSON-escaped.
TEST(Log, SecretFieldsAreRedactedAndStringsEscaped) {
  Captured captured;
  const Logger logger = captured.logger(LogLevel::kDebug);
  logger.info("quote \" and newline \n",
              {{"Authorization", "Bearer abc"}, {"token", "xyz"}, {"sas_signature", "s"}});
  const std::string& line = captured.lines.at(0);
  EXPECT_EQ(line.find("abc"), std::string::npos);
  EXPECT_EQ(line.find("xyz"), std::string::npos);
  const auto parsed = nlohmann::json::parse(line);
  EXPECT_EQ(parsed["Authorization"], "[REDACTED]");
  EXPECT_EQ(parsed["token"], "[REDACTED]");
  EXPECT_EQ(parsed["message"], "quote \" and newline \n");
}

// Shows URLs lose user info, query (SAS) and fragment, and secret headers keep only their scheme.
TEST(Log, RedactionHelpers) {
  EXPECT_EQ(redact_url("https://acct.blob.core.windows.net/c/b?sv=2020&sig=SECRET"),
            "https://acct.blob.core.windows.net/c/b");
  EXPECT_EQ(redact_url("https://user:pw@host:8080/p#frag"), "https://host:8080/p");
  EXPECT_EQ(redact_url("/blobs/https://h/p?sig=SECRET"), "/blobs/https://h/p");
  EXPECT_EQ(redact_url("https://host/a@b"), "https://host/a@b");
  EXPECT_EQ(redact_header("Authorization", "Bearer eyJ.secret"), "Bearer [REDACTED]");
  EXPECT_EQ(redact_header("authorization", "opaque"), "[REDACTED]");
  EXPECT_EQ(redact_header("Accept", "*/*"), "*/*");
  EXPECT_TRUE(is_secret_name("Proxy-Authorization"));
  EXPECT_TRUE(is_secret_name("X-Registry-Token"));
  EXPECT_FALSE(is_secret_name("url"));
}

}  // namespace
}  // namespace peerd::daemon
