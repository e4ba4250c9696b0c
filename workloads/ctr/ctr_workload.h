#pragma once
// peerd-ctr's run: for each image remove (optionally), pull with ctr, size it from the content store, read
// its largest layer back, and count the bytes peerd fetched from peers; then log speeds, error rates and a
// result.
#include "peerd/daemon/log.h"
#include "workloads/ctr/ctr_options.h"

namespace peerd::workload {

// Runs the workload described by `options` (image_refs already complete). Returns kExitPassed or
// kExitChecksFailed.
int run_ctr_workload(const CtrOptions& options, const daemon::Logger& logger);

}  // namespace peerd::workload
