#include "simulator/src/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

namespace peerd::sim {

namespace {

using Json = nlohmann::ordered_json;

constexpr double kMebibyte = 1024.0 * 1024.0;
constexpr size_t kCdfPointsMax = 200;

double nearest_rank(const std::vector<double>& sorted, double fraction) {
  if (sorted.empty()) return 0;
  const auto rank = static_cast<size_t>(std::ceil(fraction * double(sorted.size())));
  return sorted[std::clamp<size_t>(rank, 1, sorted.size()) - 1];
}

// Rounds to 6 significant decimals so the JSON stays short and stable.
double round6(double value) {
  return std::round(value * 1e6) / 1e6;
}

std::string printf_string(const char* format, double a) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, format, a);
  return buffer;
}

std::string rate_text(double bits_per_second) {
  return bits_per_second >= 1e9 ? printf_string("%.3g Gbit/s", bits_per_second / 1e9)
                                : printf_string("%.3g Mbit/s", bits_per_second / 1e6);
}

std::string bytes_text(double bytes) {
  if (bytes >= 1024 * kMebibyte) return printf_string("%.2f GiB", bytes / (1024 * kMebibyte));
  return printf_string("%.1f MiB", bytes / kMebibyte);
}

std::vector<double> completion_sorted(const RunResult& run) {
  std::vector<double> values;
  for (const NodeOutcome& outcome : run.outcomes) {
    if (outcome.completed) values.push_back(outcome.completion_seconds);
  }
  std::sort(values.begin(), values.end());
  return values;
}

}  // namespace

Quantiles quantiles(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  Quantiles result;
  result.p50 = nearest_rank(values, 0.5);
  result.p90 = nearest_rank(values, 0.9);
  result.p99 = nearest_rank(values, 0.99);
  result.max = values.empty() ? 0 : values.back();
  return result;
}

ModeSummary summarize(const RunResult& run) {
  ModeSummary summary;
  summary.mode = run.mode;
  summary.nodes = run.nodes;
  std::vector<double> completions;
  std::vector<double> served;
  double throughput_sum = 0;
  for (const NodeOutcome& outcome : run.outcomes) {
    if (outcome.killed) {
      ++summary.nodes_killed;
      continue;
    }
    ++summary.nodes_live;
    summary.reads_wrong_bytes += outcome.reads_wrong_bytes;
    served.push_back(double(outcome.served_bytes));
    summary.dht_per_node_max = std::max(summary.dht_per_node_max, outcome.dht_datagrams);
    if (outcome.failed) ++summary.nodes_failed;
    if (outcome.completed) {
      ++summary.nodes_completed;
      completions.push_back(outcome.completion_seconds);
      if (outcome.completion_seconds > 0) {
        throughput_sum += double(run.image_bytes) / outcome.completion_seconds / 1e6;
      }
    }
  }
  summary.completion_seconds = quantiles(completions);
  summary.lower_bound_seconds = run.lower_bound_seconds;
  summary.max_over_bound =
      run.lower_bound_seconds > 0 ? summary.completion_seconds.max / run.lower_bound_seconds : 0;
  summary.upstream_egress_bytes = run.upstream_egress_bytes;
  summary.upstream_over_image =
      run.image_bytes > 0 ? double(run.upstream_egress_bytes) / double(run.image_bytes) : 0;
  if (!served.empty()) {
    double sum = 0, squares = 0;
    for (double value : served) {
      sum += value;
      squares += value * value;
    }
    summary.served_min_bytes = *std::min_element(served.begin(), served.end());
    summary.served_max_bytes = *std::max_element(served.begin(), served.end());
    summary.served_mean_bytes = sum / double(served.size());
    summary.served_jain = squares > 0 ? sum * sum / (double(served.size()) * squares) : 1.0;
  }
  uint64_t dht_live = 0;
  for (const NodeOutcome& outcome : run.outcomes) {
    if (!outcome.killed) dht_live += outcome.dht_datagrams;
  }
  summary.dht_per_node_mean = summary.nodes_live > 0 ? double(dht_live) / summary.nodes_live : 0;
  summary.throughput_mean_mbytes_per_second =
      summary.nodes_completed > 0 ? throughput_sum / summary.nodes_completed : 0;
  const uint64_t engine_received = run.engine.bytes_from_upstream + run.engine.bytes_from_peers;
  if (run.workload == Workload::Kind::kRandom) {
    std::vector<double> speeds;
    for (const NodeOutcome& outcome : run.outcomes) {
      if (outcome.killed) continue;
      for (const IssuedRead& read : outcome.random_reads) {
        ++summary.random_reads;
        if (!read.completed) {
          ++summary.random_reads_failed;
          continue;
        }
        speeds.push_back(workload::megabytes_per_second(read.length_bytes,
                                                        double(read.finished_us - read.issued_us) / 1e6));
      }
    }
    summary.read_speeds = workload::summarize(speeds);
  }
  summary.bytes_conserved = run.bytes_delivered == run.bytes_requested &&
                            run.network.payload_bytes_received <= run.network.payload_bytes_sent &&
                            engine_received == run.network.payload_bytes_received;
  return summary;
}

std::string_view random_speed_label(ModeBase base) {
  return base == ModeBase::kUpstreamOnly ? "upstream" : "p2p";
}

std::string format_table(const std::vector<RunResult>& runs) {
  if (runs.empty()) return "";
  const RunResult& first = runs.front();
  std::string out;
  char line[512];
  std::snprintf(line, sizeof line, "scenario %s: %u nodes, %s fidelity, seed %llu, image %s, U=%s, B=%s\n",
                first.scenario.c_str(), first.nodes, std::string(describe(first.fidelity)).c_str(),
                static_cast<unsigned long long>(first.seed), bytes_text(double(first.image_bytes)).c_str(),
                rate_text(first.upstream_bits_per_second).c_str(),
                rate_text(first.host_bits_per_second).c_str());
  out += line;
  std::snprintf(line, sizeof line, "%-22s %9s %8s %8s %8s %8s %8s %6s %10s %7s %10s %10s %5s %8s\n", "mode",
                "done", "p50 s", "p90 s", "p99 s", "max s", "bound s", "max/LB", "upstream", "x image",
                "served max", "served avg", "jain", "DHT/node");
  out += line;
  for (const RunResult& run : runs) {
    const ModeSummary s = summarize(run);
    const std::string done = std::to_string(s.nodes_completed) + "/" + std::to_string(s.nodes_live);
    std::snprintf(line, sizeof line,
                  "%-22s %9s %8.3f %8.3f %8.3f %8.3f %8.3f %6.2f %10s %7.2f %10s %10s %5.2f %8.1f\n",
                  s.mode.c_str(), done.c_str(), s.completion_seconds.p50, s.completion_seconds.p90,
                  s.completion_seconds.p99, s.completion_seconds.max, s.lower_bound_seconds, s.max_over_bound,
                  bytes_text(double(s.upstream_egress_bytes)).c_str(), s.upstream_over_image,
                  bytes_text(s.served_max_bytes).c_str(), bytes_text(s.served_mean_bytes).c_str(),
                  s.served_jain, s.dht_per_node_mean);
    out += line;
  }
  if (first.workload == Workload::Kind::kStream) {
    // The original peerd README's "Throughput Improvements" shape: per mode, each node's read throughput.
    out +=
        "throughput per node, in arrival order (MB/s = file bytes / 1e6 / seconds from first to last "
        "read):\n";
    for (const RunResult& run : runs) {
      std::string values;
      for (const NodeOutcome& outcome : run.outcomes) {
        if (!values.empty()) values += ", ";
        values += outcome.completed && outcome.completion_seconds > 0
                      ? printf_string("%.1f", double(run.image_bytes) / 1e6 / outcome.completion_seconds)
                      : std::string("-");
      }
      std::snprintf(line, sizeof line, "  %-22s %s\n", run.mode.c_str(), values.c_str());
      out += line;
    }
  }
  if (first.workload == Workload::Kind::kRandom) {
    // peerd-random's "speeds (MB/s)" and "error rates" lines, over every read of every live node.
    out +=
        "read speeds (MB/s), as peerd-random reports them: nearest-rank pN of the per-read speeds in "
        "ascending order (p100 = fastest), MB = 1e6 bytes:\n";
    for (const RunResult& run : runs) {
      const ModeSummary s = summarize(run);
      const std::string label(random_speed_label(run.base));
      std::string values;
      for (size_t i = 0; i < workload::kReportedPercentiles.size(); ++i) {
        values += " " + label + ".p" + std::to_string(workload::kReportedPercentiles[i]) + " " +
                  (s.read_speeds ? printf_string("%.1f", s.read_speeds->values[i]) : std::string("-"));
      }
      std::snprintf(line, sizeof line, "  %-22s%s  reads %llu %s.error_rate %.4f\n", run.mode.c_str(),
                    values.c_str(), static_cast<unsigned long long>(s.random_reads), label.c_str(),
                    workload::error_rate(s.random_reads_failed, s.random_reads));
      out += line;
    }
  }
  bool notes = false;
  for (const RunResult& run : runs) {
    const ModeSummary s = summarize(run);
    std::string note;
    if (s.nodes_killed > 0) note += " killed=" + std::to_string(s.nodes_killed);
    if (s.nodes_failed > 0) note += " failed=" + std::to_string(s.nodes_failed);
    if (s.reads_wrong_bytes > 0) note += " READS WITH WRONG BYTES=" + std::to_string(s.reads_wrong_bytes);
    if (run.timed_out) note += " TIMED OUT (sim_time_max_s)";
    if (!s.bytes_conserved) note += " BYTES NOT CONSERVED";
    if (run.engine.bans > 0) note += " bans=" + std::to_string(run.engine.bans);
    if (run.engine.integrity_failures > 0)
      note += " integrity_failures=" + std::to_string(run.engine.integrity_failures);
    if (run.engine.owner_timeouts > 0) note += " owner_timeouts=" + std::to_string(run.engine.owner_timeouts);
    if (run.engine.serves_refused > 0) note += " serves_refused=" + std::to_string(run.engine.serves_refused);
    if (run.engine.owner_busy_retries > 0)
      note += " owner_busy_retries=" + std::to_string(run.engine.owner_busy_retries);
    if (note.empty()) continue;
    if (!notes) out += "notes:\n";
    notes = true;
    out += "  " + run.mode + ":" + note + "\n";
  }
  return out;
}

std::string to_json(const std::vector<RunResult>& runs) {
  Json root;
  if (!runs.empty()) {
    const RunResult& first = runs.front();
    root["scenario"] = first.scenario;
    root["fidelity"] = std::string(describe(first.fidelity));
    root["seed"] = first.seed;
    root["nodes"] = first.nodes;
    root["image_bytes"] = first.image_bytes;
    root["lower_bound_s"] = round6(first.lower_bound_seconds);
  }
  Json modes = Json::array();
  for (const RunResult& run : runs) {
    const ModeSummary s = summarize(run);
    Json mode;
    mode["mode"] = run.mode;
    mode["base"] = std::string(describe(run.base));
    mode["nodes_live"] = s.nodes_live;
    mode["nodes_completed"] = s.nodes_completed;
    mode["nodes_failed"] = s.nodes_failed;
    mode["nodes_killed"] = s.nodes_killed;
    mode["reads_with_wrong_bytes"] = s.reads_wrong_bytes;
    mode["timed_out"] = run.timed_out;
    mode["completion_s"] = {{"p50", round6(s.completion_seconds.p50)},
                            {"p90", round6(s.completion_seconds.p90)},
                            {"p99", round6(s.completion_seconds.p99)},
                            {"max", round6(s.completion_seconds.max)}};
    mode["lower_bound_s"] = round6(s.lower_bound_seconds);
    mode["max_over_lower_bound"] = round6(s.max_over_bound);
    mode["upstream_egress_bytes"] = s.upstream_egress_bytes;
    mode["upstream_egress_over_image"] = round6(s.upstream_over_image);
    mode["served_bytes_per_node"] = {{"min", round6(s.served_min_bytes)},
                                     {"mean", round6(s.served_mean_bytes)},
                                     {"max", round6(s.served_max_bytes)},
                                     {"jain_index", round6(s.served_jain)}};
    mode["dht_messages_per_node"] = {{"mean", round6(s.dht_per_node_mean)}, {"max", s.dht_per_node_max}};
    mode["dht_messages_total"] = run.dht_datagrams;
    mode["dht_messages_warmup_total"] = run.dht_datagrams_warmup;
    mode["throughput_mbytes_per_s_mean"] = round6(s.throughput_mean_mbytes_per_second);
    mode["bytes_requested"] = run.bytes_requested;
    mode["bytes_delivered"] = run.bytes_delivered;
    mode["bytes_conserved"] = s.bytes_conserved;
    mode["engine"] = {{"fetches", run.engine.fetches},
                      {"fetches_to_upstream", run.engine.fetches_to_upstream},
                      {"fetches_fetch_through", run.engine.fetches_fetch_through},
                      {"fetches_failed", run.engine.fetches_failed},
                      {"hedges", run.engine.hedges},
                      {"resumes", run.engine.resumes},
                      {"owner_timeouts", run.engine.owner_timeouts},
                      {"stalls", run.engine.stalls},
                      {"serves", run.engine.serves},
                      {"serves_joined", run.engine.serves_joined},
                      {"serves_refused", run.engine.serves_refused},
                      {"owner_busy_retries", run.engine.owner_busy_retries},
                      {"lookups", run.engine.lookups},
                      {"provides", run.engine.provides},
                      {"bans", run.engine.bans},
                      {"integrity_failures", run.engine.integrity_failures},
                      {"bytes_from_upstream", run.engine.bytes_from_upstream},
                      {"bytes_from_peers", run.engine.bytes_from_peers}};
    mode["network"] = {{"datagrams_sent", run.network.datagrams_sent},
                       {"datagrams_dropped", run.network.datagrams_dropped},
                       {"requests", run.network.requests},
                       {"tcp_connections", run.network.connections_opened},
                       {"payload_bytes_sent", run.network.payload_bytes_sent},
                       {"payload_bytes_received", run.network.payload_bytes_received},
                       {"flow_recomputations", run.network.flow_recomputations},
                       {"flows_max", run.network.flows_max}};
    if (run.workload == Workload::Kind::kRandom) {
      const std::string label(random_speed_label(run.base));
      Json speeds;
      speeds["label"] = label;
      speeds["reads"] = s.random_reads;
      speeds["failures"] = s.random_reads_failed;
      speeds["error_rate"] = round6(workload::error_rate(s.random_reads_failed, s.random_reads));
      for (size_t i = 0; i < workload::kReportedPercentiles.size(); ++i) {
        const std::string key = "p" + std::to_string(workload::kReportedPercentiles[i]);
        speeds[key] = s.read_speeds ? Json(round6(s.read_speeds->values[i])) : Json(nullptr);
      }
      mode["read_speeds_mbytes_per_s"] = speeds;
    }
    mode["sim"] = {{"measured_s", round6(run.measured_seconds)}, {"events", run.events}};
    // The completion CDF (at most 200 points) and the registry's cumulative egress, for plots.
    const std::vector<double> sorted = completion_sorted(run);
    Json cdf = Json::array();
    const size_t step = std::max<size_t>(1, (sorted.size() + kCdfPointsMax - 1) / kCdfPointsMax);
    for (size_t i = 0; i < sorted.size(); i += step) {
      cdf.push_back({round6(sorted[i]), round6(double(i + 1) / double(sorted.size()))});
    }
    if (!sorted.empty() && (sorted.size() - 1) % step != 0) cdf.push_back({round6(sorted.back()), 1.0});
    mode["completion_cdf"] = cdf;
    Json timeline = Json::array();
    const size_t timeline_step = std::max<size_t>(1, (run.upstream_timeline.size() + 199) / 200);
    for (size_t i = 0; i < run.upstream_timeline.size(); i += timeline_step) {
      timeline.push_back({round6(run.upstream_timeline[i].first), run.upstream_timeline[i].second});
    }
    if (!run.upstream_timeline.empty()) {
      timeline.push_back({round6(run.upstream_timeline.back().first), run.upstream_timeline.back().second});
    }
    mode["upstream_egress_timeline"] = timeline;
    modes.push_back(std::move(mode));
  }
  root["modes"] = std::move(modes);
  return root.dump(2) + "\n";
}

}  // namespace peerd::sim
