#include "peerd/daemon/mirror_config.h"

#include <algorithm>
#include <array>
#include <fstream>
#include <sstream>

namespace peerd::daemon {

namespace fs = std::filesystem;

namespace {

std::string toml_string(std::string_view value) {
  std::string out = "\"";
  for (char c : value) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::optional<std::string> read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream content;
  content << in.rdbuf();
  return content.str();
}

Result<bool, std::string> write_file_atomically(const fs::path& path, const std::string& content) {
  const fs::path temp = path.string() + ".peerd-tmp";
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    out << content;
    out.flush();
    if (!out) return fail("cannot write " + temp.string());
  }
  std::error_code error;
  fs::permissions(
      temp, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read | fs::perms::others_read,
      fs::perm_options::replace, error);
  fs::rename(temp, path, error);
  if (error) return fail("cannot rename " + temp.string() + ": " + error.message());
  return true;
}

}  // namespace

std::string render_hosts_toml(const RegistryHost& registry, const std::vector<std::string>& mirror_urls) {
  std::string text = std::string(kMirrorConfigMarker) +
                     " (--add-mirror-configuration); the file it replaced, if any, " + "is in ../_backup/" +
                     registry.authority + "/hosts.toml.\n";
  text += "server = " + toml_string(registry.server_url()) + "\n";
  for (const auto& mirror : mirror_urls) {
    text += "\n[host." + toml_string(mirror) + "]\n";
    text += "  capabilities = [\"pull\", \"resolve\"]\n";
  }
  return text;
}

std::string default_mirror_url(const Endpoint& http_address) {
  Endpoint target = http_address;
  const bool wildcard =
      std::all_of(target.address.begin(), target.address.end(), [](uint8_t b) { return b == 0; });
  if (wildcard) {
    if (target.family == Endpoint::Family::kIpv4) {
      target = Endpoint::ipv4(127, 0, 0, 1, target.port);
    } else {
      std::array<uint8_t, 16> loopback{};
      loopback[15] = 1;
      target = Endpoint::ipv6(loopback, target.port);
    }
  }
  return "http://" + target.to_string();
}

Result<std::vector<fs::path>, std::string> write_mirror_configuration(
    const fs::path& hosts_dir, const std::vector<RegistryHost>& registries,
    const std::vector<std::string>& mirror_urls, const Logger& logger) {
  std::vector<fs::path> written;
  for (const auto& registry : registries) {
    const fs::path directory = hosts_dir / registry.authority;
    const fs::path file = directory / "hosts.toml";
    std::error_code error;
    fs::create_directories(directory, error);
    if (error) return fail("cannot create " + directory.string() + ": " + error.message());

    const std::string content = render_hosts_toml(registry, mirror_urls);
    const auto existing = read_file(file);
    if (existing == content) {
      written.push_back(file);
      continue;
    }
    if (existing && !existing->starts_with(kMirrorConfigMarker)) {
      const fs::path backup = hosts_dir / "_backup" / registry.authority / "hosts.toml";
      if (!fs::exists(backup)) {
        fs::create_directories(backup.parent_path(), error);
        if (!error) fs::copy_file(file, backup, error);
        if (error) return fail("cannot back up " + file.string() + ": " + error.message());
        logger.info("backing up containerd host configuration",
                    {{"path", file.string()}, {"target", backup.string()}});
      }
    }
    auto result = write_file_atomically(file, content);
    if (!result) return fail(result.error());
    logger.info("added containerd mirror configuration",
                {{"host", registry.server_url()}, {"path", file.string()}});
    written.push_back(file);
  }
  return written;
}

}  // namespace peerd::daemon
