#pragma once
// `--add-mirror-configuration`: points containerd at peerd by writing
// <containerd-hosts-config-path>/<registry>/hosts.toml for every --hosts registry (containerd's hosts.md
// format; docker.io's server is registry-1.docker.io). An existing hosts.toml that peerd did not write is
// backed up once, to <path>/_backup/<registry>/hosts.toml, before it is replaced; a later run never
// overwrites that backup. Files are written to a temporary name and renamed into place.
#include <filesystem>
#include <string>
#include <vector>

#include "peerd/core/common/endpoint.h"
#include "peerd/core/common/result.h"
#include "peerd/daemon/log.h"
#include "peerd/daemon/options.h"

namespace peerd::daemon {

inline constexpr std::string_view kMirrorConfigMarker = "# Written by peerd";

// The hosts.toml text for one registry and the mirror URLs (in order of preference).
std::string render_hosts_toml(const RegistryHost& registry, const std::vector<std::string>& mirror_urls);

// "http://<http-addr>" with a wildcard address replaced by loopback (containerd runs on the same node).
std::string default_mirror_url(const Endpoint& http_address);

// Writes every file; returns their paths. Stops at the first failure with a one-line reason.
Result<std::vector<std::filesystem::path>, std::string> write_mirror_configuration(
    const std::filesystem::path& hosts_dir, const std::vector<RegistryHost>& registries,
    const std::vector<std::string>& mirror_urls, const Logger& logger);

}  // namespace peerd::daemon
