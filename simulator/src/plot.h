#pragma once
// --plot out.png: two panels drawn by gnuplot (pngcairo): the completion-time CDF of every mode, and the
// registry's cumulative egress over time. The data goes to gnuplot inline (datablocks), no temporary files.
#include <string>
#include <vector>

#include "simulator/src/cluster.h"

namespace peerd::sim {

// The gnuplot script for the runs (tests check it without running gnuplot).
std::string plot_script(const std::vector<RunResult>& runs, const std::string& png_path);
// Runs gnuplot on the script; an empty string on success, otherwise what went wrong.
std::string write_plot(const std::vector<RunResult>& runs, const std::string& png_path);

}  // namespace peerd::sim
