// Guards the core's contract: no file under peerd/core (outside tests/ and fuzz/) includes I/O,
// threads, clocks, sockets or driver libraries. It reads every source file and fails on a forbidden include.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

namespace {

TEST(SansIo, CoreIncludesNoIoThreadsOrClocks) {
  const std::filesystem::path core = std::filesystem::path(PEERD_SOURCE_DIR) / "peerd" / "core";
  const std::regex forbidden(
      R"(#\s*include\s*[<"](boost/asio|boost/beast|ns3/|curl/|openssl/|grpc|sys/socket|sys/stat|netinet/|arpa/inet|netdb|unistd|fcntl|thread|mutex|condition_variable|future|atomic|chrono|ctime|time\.h|fstream|filesystem|cstdio|iostream|random)[^>"]*[>"])");
  std::vector<std::string> offenders;
  size_t files_checked = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(core)) {
    if (!entry.is_regular_file()) continue;
    const auto relative = std::filesystem::relative(entry.path(), core).string();
    // Tests and fuzzers are drivers, not core.
    if (relative.starts_with("tests/") || relative.starts_with("fuzz/")) continue;
    const auto extension = entry.path().extension();
    if (extension != ".h" && extension != ".cc") continue;
    ++files_checked;
    std::ifstream file(entry.path());
    std::string line;
    int number = 0;
    while (std::getline(file, line)) {
      ++number;
      if (std::regex_search(line, forbidden))
        offenders.push_back(relative + ":" + std::to_string(number) + ": " + line);
    }
  }
  EXPECT_GT(files_checked, 5u);
  for (const auto& offender : offenders) ADD_FAILURE() << "forbidden include in core: " << offender;
}

}  // namespace
