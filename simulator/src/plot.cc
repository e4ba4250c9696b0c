#include "simulator/src/plot.h"

#include <sys/wait.h>
#include <algorithm>
#include <cstdio>

namespace peerd::sim {

namespace {

std::string quoted(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string number(double value) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.6g", value);
  return buffer;
}

}  // namespace

std::string plot_script(const std::vector<RunResult>& runs, const std::string& png_path) {
  std::string script;
  for (size_t i = 0; i < runs.size(); ++i) {
    std::vector<double> completions;
    for (const NodeOutcome& outcome : runs[i].outcomes) {
      if (outcome.completed) completions.push_back(outcome.completion_seconds);
    }
    std::sort(completions.begin(), completions.end());
    script += "$cdf" + std::to_string(i) + " << EOD\n";
    for (size_t k = 0; k < completions.size(); ++k) {
      script += number(completions[k]) + " " + number(double(k + 1) / double(completions.size())) + "\n";
    }
    script += "EOD\n$egress" + std::to_string(i) + " << EOD\n";
    for (const auto& [seconds, bytes] : runs[i].upstream_timeline) {
      if (seconds <= 0 || bytes == 0) continue;  // also keeps log axes free of zeros
      script += number(seconds) + " " + number(double(bytes) / 1e9) + "\n";
    }
    script += "EOD\n";
  }
  const std::string title = runs.empty() ? ""
                                         : runs.front().scenario + " (" +
                                               std::string(describe(runs.front().fidelity)) + " fidelity, " +
                                               std::to_string(runs.front().nodes) + " nodes)";
  script += "set terminal pngcairo size 1400,560 font \",11\"\n";
  script += "set output " + quoted(png_path) + "\n";
  script += "set multiplot layout 1,2 title " + quoted(title) + "\n";
  script += "set grid\nset key right center\n";
  script +=
      "set title \"completion time CDF\"\nset xlabel \"seconds from arrival\"\nset ylabel \"fraction of "
      "nodes\"\n";
  script += "set yrange [0:1.02]\n";
  // Designs differ by orders of magnitude (a registry-bound pull vs a swarm): use log axes then.
  double fastest = 0, slowest = 0;
  uint64_t egress_least = 0, egress_most = 0;
  for (const RunResult& run : runs) {
    for (const NodeOutcome& outcome : run.outcomes) {
      if (!outcome.completed || outcome.completion_seconds <= 0) continue;
      fastest = fastest == 0 ? outcome.completion_seconds : std::min(fastest, outcome.completion_seconds);
      slowest = std::max(slowest, outcome.completion_seconds);
    }
    if (run.upstream_egress_bytes > 0) {
      egress_least =
          egress_least == 0 ? run.upstream_egress_bytes : std::min(egress_least, run.upstream_egress_bytes);
      egress_most = std::max(egress_most, run.upstream_egress_bytes);
    }
  }
  const bool log_time = fastest > 0 && slowest / fastest > 30;
  const bool log_bytes = egress_least > 0 && egress_most / egress_least > 30;
  if (log_time) {
    const double bound = runs.front().lower_bound_seconds;
    const double low = (bound > 0 ? std::min(fastest, bound) : fastest) * 0.7;
    script += "set logscale x\nset xrange [" + number(low) + ":" + number(slowest * 1.4) + "]\n";
  }
  if (!runs.empty() && runs.front().lower_bound_seconds > 0) {
    script += "set arrow from " + number(runs.front().lower_bound_seconds) + ",0 to " +
              number(runs.front().lower_bound_seconds) + ",1.02 nohead dashtype 2 lc rgb \"gray40\"\n";
    script += "set label \"lower bound\" at " + number(runs.front().lower_bound_seconds) +
              ",0.05 offset 0.5,0 textcolor rgb \"gray40\"\n";
  }
  script += "plot ";
  for (size_t i = 0; i < runs.size(); ++i) {
    if (i > 0) script += ", ";
    script += "$cdf" + std::to_string(i) + " using 1:2 with steps lw 2 title " + quoted(runs[i].mode);
  }
  script += "\nunset arrow\nunset label\nset key top left\n";
  script += log_time ? "set logscale x\nset xrange [*:*]\n" : "unset logscale x\n";
  double least_gigabytes = 0;
  for (const RunResult& run : runs) {
    for (const auto& [seconds, bytes] : run.upstream_timeline) {
      if (seconds <= 0 || bytes == 0) continue;
      const double gigabytes = double(bytes) / 1e9;
      least_gigabytes = least_gigabytes == 0 ? gigabytes : std::min(least_gigabytes, gigabytes);
    }
  }
  script += log_bytes ? "set logscale y\nset yrange [" + number(least_gigabytes * 0.5) + ":*]\n"
                      : "set yrange [0:*]\n";
  script +=
      "set title \"registry egress\"\nset xlabel \"seconds from start\"\nset ylabel \"GB sent "
      "(cumulative)\"\n";
  script += "plot ";
  for (size_t i = 0; i < runs.size(); ++i) {
    if (i > 0) script += ", ";
    script += "$egress" + std::to_string(i) + " using 1:2 with lines lw 2 title " + quoted(runs[i].mode);
  }
  script += "\nunset multiplot\n";
  return script;
}

std::string write_plot(const std::vector<RunResult>& runs, const std::string& png_path) {
  const std::string script = plot_script(runs, png_path);
  FILE* pipe = popen("gnuplot 2>&1", "w");
  if (!pipe) return "cannot start gnuplot";
  std::fwrite(script.data(), 1, script.size(), pipe);
  const int status = pclose(pipe);
  if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return "gnuplot failed (is gnuplot with the pngcairo terminal installed?)";
  }
  return {};
}

}  // namespace peerd::sim
