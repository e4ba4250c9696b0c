#pragma once
// --kubeconfig: the API server, credentials and namespace of the kubeconfig's current context, for running
// peerd outside a pod (a developer machine, a node service). kubectl and kind write kubeconfigs as block
// YAML; this reads that subset (block mappings and sequences, plain and quoted scalars, comments) or JSON,
// not the whole of YAML (no anchors, multi-line strings or flow collections other than {} and []). Credential
// plugins (exec, auth-provider) are refused with a clear error.
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "peerd/core/common/result.h"
#include "peerd/daemon/k8s/api_client.h"

namespace peerd::daemon::k8s {

// Block YAML subset (see above) or JSON, to a JSON value; errors name the line.
Result<nlohmann::json, std::string> parse_simple_yaml(std::string_view text);

// Standard base64 (padding optional, whitespace ignored).
Result<std::string, std::string> decode_base64(std::string_view text);

// The current context (or `context_name` when not empty). Relative file paths resolve against the file's
// directory, as kubectl does.
Result<ApiConfig, std::string> load_kubeconfig(const std::string& path, const std::string& context_name = "");
Result<ApiConfig, std::string> parse_kubeconfig(std::string_view text, const std::string& base_dir,
                                                const std::string& context_name = "");

}  // namespace peerd::daemon::k8s
