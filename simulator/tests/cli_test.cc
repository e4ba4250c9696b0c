// peerd-sim's command line: help, one-line errors with exit status 2, and a real run writing JSON and a plot.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace {

struct Outcome {
  int status = -1;
  std::string output;  // stdout and stderr
};

Outcome run(const std::string& arguments) {
  const std::string command = std::string(PEERD_SIM_BINARY) + " " + arguments + " 2>&1";
  Outcome outcome;
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return outcome;
  std::array<char, 4096> buffer{};
  size_t read;
  while ((read = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0)
    outcome.output.append(buffer.data(), read);
  const int status = pclose(pipe);
  outcome.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return outcome;
}

std::string scenario(const std::string& name) {
  return std::string(PEERD_SOURCE_DIR) + "/simulator/scenarios/" + name;
}

std::string file_contents(const std::filesystem::path& path) {
  std::ifstream file(path, std::ios::binary);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

// --help prints the usage and exits 0.
TEST(CliTest, HelpExitsZero) {
  const Outcome outcome = run("--help");
  EXPECT_EQ(outcome.status, 0);
  EXPECT_NE(outcome.output.find("usage: peerd-sim --scenario FILE"), std::string::npos);
}

// Bad arguments give exactly one line on stderr and exit status 2.
TEST(CliTest, BadArgumentsGiveOneLineAndExitTwo) {
  for (const std::string& arguments :
       {std::string(""), std::string("--fidelity warp --scenario x.json"), std::string("--bogus 1"),
        std::string("--scenario /nonexistent.json"),
        std::string("--scenario " + scenario("ci-flow-200.json") + " --mode nope"),
        std::string("--scenario " + scenario("ci-flow-200.json") + " --seed -3"),
        std::string("--scenario")}) {
    const Outcome outcome = run(arguments);
    EXPECT_EQ(outcome.status, 2) << arguments;
    EXPECT_EQ(std::count(outcome.output.begin(), outcome.output.end(), '\n'), 1)
        << arguments << ": " << outcome.output;
    EXPECT_EQ(outcome.output.rfind("peerd-sim: ", 0), 0u) << outcome.output;
  }
}

// A run prints the table, writes JSON with every mode and, through gnuplot, a PNG.
TEST(CliTest, RunWritesTableJsonAndPlot) {
  const std::filesystem::path directory = std::filesystem::temp_directory_path() / "peerd-sim-cli-test";
  std::filesystem::create_directories(directory);
  const std::string json = (directory / "out.json").string();
  const std::string png = (directory / "out.png").string();
  const Outcome outcome = run("--scenario " + scenario("throughput-improvements.json") + " --json " + json +
                              " --plot " + png + " --seed 5");
  EXPECT_EQ(outcome.status, 0) << outcome.output;
  EXPECT_NE(outcome.output.find("p2p with prefetching"), std::string::npos) << outcome.output;
  EXPECT_NE(outcome.output.find("throughput per node"), std::string::npos) << outcome.output;
  std::ifstream file(json);
  std::stringstream text;
  text << file.rdbuf();
  EXPECT_NE(text.str().find("\"seed\": 5"), std::string::npos);
  EXPECT_NE(text.str().find("\"mode\": \"non-p2p\""), std::string::npos);
  EXPECT_NE(text.str().find("\"completion_s\""), std::string::npos);
  ASSERT_TRUE(std::filesystem::exists(png));
  std::ifstream image(png, std::ios::binary);
  char magic[4] = {};
  image.read(magic, 4);
  EXPECT_EQ(std::string(magic + 1, 3), "PNG");
  std::filesystem::remove_all(directory);
}

// Determinism across processes: two separate runs of the same scenario and seed write byte-identical JSON, in
// flow fidelity and over real ns-3 TCP (a small packet run), and a different seed writes a different file.
TEST(CliTest, SameSeedGivesByteIdenticalJsonAcrossProcesses) {
  const std::filesystem::path directory =
      std::filesystem::temp_directory_path() / "peerd-sim-cli-determinism";
  std::filesystem::create_directories(directory);
  const std::string first = (directory / "first.json").string();
  const std::string second = (directory / "second.json").string();
  const std::string other = (directory / "other.json").string();
  for (const bool packet : {false, true}) {
    const std::string arguments =
        packet ? "--scenario " + scenario("ci-packet-20.json") + " --nodes 4 --mode peerd"
               : "--scenario " + scenario("ci-flow-200.json") + " --nodes 50";
    ASSERT_EQ(run(arguments + " --seed 3 --json " + first).status, 0) << arguments;
    ASSERT_EQ(run(arguments + " --seed 3 --json " + second).status, 0) << arguments;
    const std::string first_text = file_contents(first);
    EXPECT_GT(first_text.size(), 1000u) << arguments;
    EXPECT_EQ(first_text, file_contents(second)) << arguments;
    if (!packet) {  // a different seed is checked once, in the cheaper fidelity
      ASSERT_EQ(run(arguments + " --seed 11 --json " + other).status, 0) << arguments;
      EXPECT_NE(first_text, file_contents(other)) << arguments;
    }
  }
  std::filesystem::remove_all(directory);
}

}  // namespace
