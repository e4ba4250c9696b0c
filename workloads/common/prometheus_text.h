#pragma once
// Reads one sample out of a Prometheus text exposition (format 0.0.4), e.g. peerd's
// peerd_bytes_fetched_total{source="peer"} from its /metrics page.
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "peerd/core/common/result.h"

namespace peerd::workload {

using LabelMatch = std::vector<std::pair<std::string, std::string>>;

// The sum of every series of `metric` whose labels include all of `labels` (other labels may differ). An
// error when no such series is present or a value does not parse.
Result<double, std::string> prometheus_sample(std::string_view exposition, std::string_view metric,
                                              const LabelMatch& labels);

}  // namespace peerd::workload
