// peerd-sim: runs a scenario's modes over ns-3 and prints the comparison. The only place that wires the
// simulator's parts together.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "simulator/src/cluster.h"
#include "simulator/src/plot.h"
#include "simulator/src/report.h"
#include "simulator/src/scenario.h"

namespace {

constexpr const char* kUsage =
    "usage: peerd-sim --scenario FILE [--mode NAME] [--fidelity packet|flow] [--json OUT.json]\n"
    "                 [--plot OUT.png] [--seed N] [--nodes N]\n"
    "\n"
    "Runs N peerd nodes -- the peerd_core DHT and transfer engine -- over an ns-3 cluster network and "
    "compares\n"
    "the scenario's modes (upstream-only, peerd-classic, peerd).\n"
    "\n"
    "  --scenario FILE   scenario JSON (see simulator/scenarios/ and simulator/README.md)\n"
    "  --mode NAME       run only this mode (a name from the scenario, or "
    "upstream-only|peerd-classic|peerd)\n"
    "  --fidelity F      packet (real ns-3 TCP/UDP) or flow (fluid max-min flows); default: the scenario's\n"
    "  --json OUT        write the results as JSON (simulated quantities only: byte-identical per seed)\n"
    "  --plot OUT.png    completion-time CDF per mode and registry egress over time (needs gnuplot)\n"
    "  --seed N          override the scenario's seed\n"
    "  --nodes N         override the scenario's node count\n"
    "  --help            this text\n"
    "\n"
    "Exit status: 0 when every run finished with its bytes conserved and right, 1 otherwise, 2 on bad "
    "arguments.\n";

[[noreturn]] void usage_error(const std::string& message) {
  std::fprintf(stderr, "peerd-sim: %s (see --help)\n", message.c_str());
  std::exit(2);
}

bool parse_unsigned(const std::string& text, uint64_t& out) {
  if (text.empty() || text.size() > 19) return false;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
  }
  out = std::stoull(text);
  return true;
}

long peak_rss_kib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::atol(line.c_str() + 6);
  }
  return 0;
}

struct Arguments {
  std::string scenario;
  std::string mode;
  std::string json;
  std::string plot;
  std::optional<peerd::sim::Fidelity> fidelity;
  std::optional<uint64_t> seed;
  std::optional<uint64_t> nodes;
};

Arguments parse_arguments(int argc, char** argv) {
  Arguments arguments;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (flag.rfind("--", 0) != 0) usage_error("unexpected argument \"" + flag + "\"");
    if (i + 1 >= argc) usage_error(flag + " needs a value");
    const std::string value = argv[++i];
    uint64_t number = 0;
    if (flag == "--scenario") {
      arguments.scenario = value;
    } else if (flag == "--mode") {
      arguments.mode = value;
    } else if (flag == "--json") {
      arguments.json = value;
    } else if (flag == "--plot") {
      arguments.plot = value;
    } else if (flag == "--fidelity") {
      arguments.fidelity = peerd::sim::parse_fidelity(value);
      if (!arguments.fidelity) usage_error("--fidelity must be packet or flow");
    } else if (flag == "--seed") {
      if (!parse_unsigned(value, number)) usage_error("--seed must be a non-negative integer");
      arguments.seed = number;
    } else if (flag == "--nodes") {
      if (!parse_unsigned(value, number) || number == 0 || number > 100000) {
        usage_error("--nodes must be in [1, 100000]");
      }
      arguments.nodes = number;
    } else {
      usage_error("unknown option " + flag);
    }
  }
  if (arguments.scenario.empty()) usage_error("--scenario is required");
  return arguments;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace peerd::sim;
  const Arguments arguments = parse_arguments(argc, argv);
  auto loaded = load_scenario(arguments.scenario);
  if (!loaded) usage_error(arguments.scenario + ": " + loaded.error());
  Scenario scenario = std::move(loaded.value());
  if (arguments.seed) scenario.seed = *arguments.seed;
  if (arguments.nodes) {
    scenario.nodes = static_cast<uint32_t>(*arguments.nodes);
    scenario.topology.hosts = scenario.nodes;
    const std::string error = scenario.topology.validate();
    if (!error.empty()) usage_error("--nodes: " + error);
    uint64_t faulty = scenario.faults.slow_count + scenario.faults.corrupt_count;
    for (const KillFault& kill : scenario.faults.kills) faulty += kill.count;
    if (faulty >= scenario.nodes) usage_error("--nodes: the scenario's faults need more nodes");
  }
  const Fidelity fidelity = arguments.fidelity.value_or(scenario.fidelity);
  std::vector<ModeSpec> modes;
  for (const ModeSpec& mode : scenario.modes) {
    if (arguments.mode.empty() || mode.name == arguments.mode) modes.push_back(mode);
  }
  if (modes.empty()) {
    const auto base = parse_mode_base(arguments.mode);
    if (!base) usage_error("no mode \"" + arguments.mode + "\" in the scenario");
    modes.push_back(ModeSpec{arguments.mode, *base, {}});
  }

  std::vector<RunResult> runs;
  bool healthy = true;
  for (const ModeSpec& mode : modes) {
    const auto started = std::chrono::steady_clock::now();
    auto shown = started;
    // Long runs (thousands of nodes) say where they are every 10 s of wall time.
    const ProgressCallback progress = [&](const RunProgress& at) {
      const auto wall_now = std::chrono::steady_clock::now();
      if (wall_now - shown < std::chrono::seconds(10)) return;
      shown = wall_now;
      const double wall = std::chrono::duration<double>(wall_now - started).count();
      if (at.measuring) {
        std::fprintf(stderr,
                     "peerd-sim: %s: %.1f s simulated, %u/%u nodes done, %.1f M events, %.0f s wall\n",
                     mode.name.c_str(), at.simulated_seconds, at.nodes_finished, at.nodes,
                     double(at.events) / 1e6, wall);
      } else {
        std::fprintf(stderr, "peerd-sim: %s: %u nodes joining the DHT, %.2f s simulated, %.0f s wall\n",
                     mode.name.c_str(), at.nodes, at.simulated_seconds, wall);
      }
    };
    runs.push_back(run_mode(scenario, mode, fidelity, progress));
    const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    const RunResult& run = runs.back();
    std::fprintf(
        stderr,
        "peerd-sim: %s: %s fidelity, simulated %.3f s in %.1f s wall, %llu events, peak RSS %ld MiB\n",
        mode.name.c_str(), std::string(describe(fidelity)).c_str(), run.measured_seconds, wall,
        static_cast<unsigned long long>(run.events), peak_rss_kib() / 1024);
    const ModeSummary summary = summarize(run);
    healthy = healthy && !run.timed_out && summary.bytes_conserved && summary.reads_wrong_bytes == 0;
  }
  std::fputs(format_table(runs).c_str(), stdout);
  if (!arguments.json.empty()) {
    std::ofstream out(arguments.json, std::ios::binary);
    out << to_json(runs);
    if (!out) {
      std::fprintf(stderr, "peerd-sim: cannot write %s\n", arguments.json.c_str());
      return 1;
    }
  }
  if (!arguments.plot.empty()) {
    const std::string error = write_plot(runs, arguments.plot);
    if (!error.empty()) {
      std::fprintf(stderr, "peerd-sim: %s\n", error.c_str());
      return 1;
    }
  }
  return healthy ? 0 : 1;
}
