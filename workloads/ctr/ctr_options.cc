#include "workloads/ctr/ctr_options.h"

#include "workloads/common/arguments.h"

namespace peerd::workload {
namespace {

constexpr std::string_view kHelp =
    R"help(peerd-ctr: pull images through containerd (and so through peerd's mirror) and time them.

For every image: optionally `ctr images rm --sync`, then `ctr images pull` (with --hosts-dir and --plain-http
when given), timed; the image's size is the manifest's config plus layers, read from the content store
(`ctr images ls`, `ctr content get`); then the image's largest layer is read back sequentially with
`ctr content get <digest>` and checked against its digest (the original scanner read a file of the image;
reading the layer blob needs no snapshotter mount). With --peerd-metrics, peerd's
peerd_bytes_fetched_total{source="peer"} is read before and after each pull.

Logs JSON lines: "pulled image", "read layer", "speeds (MB/s)" (pull.p50 .. pull.p100 and read.p50 ..
read.p100: nearest-rank percentiles in ascending order, MB = 10^6 bytes), "error rates", "bytes from peers"
and "workload result".

Usage: peerd-ctr [flags]
  --image REF                an image reference, e.g. 127.0.0.1:5000/library/app:1 (repeatable)
  --images-file PATH         a file of image references, whitespace separated; '#' starts a comment
  --address SOCK             containerd's socket (default /run/containerd/containerd.sock)
  --namespace NS             containerd namespace (default "default")
  --hosts-dir DIR            registry hosts directory for ctr, e.g. /etc/containerd/certs.d
  --plain-http               let ctr use plain HTTP
  --remove-first             remove each image (ctr images rm --sync) before pulling it
  --snapshotter NAME         snapshotter to unpack into (default: containerd's)
  --platform OS/ARCH[/VAR]   platform to pull (default: this machine's, linux/<arch>)
  --no-read                  skip reading the largest layer back
  --peerd-metrics URL        peerd's metrics, e.g. http://127.0.0.11:5000/metrics
  --expect-peer-bytes        fail unless peers served some bytes (needs --peerd-metrics)
  --pull-timeout-s N         per ctr command (default 600)
  --start-delay-min-s N      shortest delay before the first pull (default 0)
  --start-delay-max-s N      longest delay before the first pull (default 0; the original used 1-100)
  --ctr PATH                 the ctr binary (default: ctr on PATH)
  --insecure                 do not verify TLS certificates of --peerd-metrics
  --node NAME                node name in log lines (default $NODE_NAME, else the host name)
  --log-level LEVEL          debug | info | warn | error (default info)
  --help                     this text
  --version                  the version

Exit status: 0 when every check passed; 1 when a pull or read failed, metrics could not be read, or
--expect-peer-bytes saw none; 2 for bad arguments.
)help";

Result<bool, std::string> apply_string(ArgumentCursor& cursor, std::string& target) {
  auto value = cursor.value();
  if (!value) return fail(value.error());
  if (value->empty()) return fail(std::string("empty value"));
  target = *value;
  return true;
}

Result<bool, std::string> apply_switch(ArgumentCursor& cursor, bool& target) {
  auto none = cursor.no_value();
  if (!none) return fail(none.error());
  target = true;
  return true;
}

Result<bool, std::string> apply_seconds(ArgumentCursor& cursor, std::string_view flag, uint32_t& target,
                                        uint64_t min) {
  auto text = cursor.value();
  if (!text) return fail(text.error());
  auto value = parse_unsigned(flag, *text, min, kCtrTimeoutSecondsMax);
  if (!value) return fail(value.error());
  target = static_cast<uint32_t>(*value);
  return true;
}

// One flag into `options`; false when the flag is unknown.
Result<bool, std::string> apply_flag(const std::string& flag, ArgumentCursor& cursor, CtrOptions& options) {
  std::string value;
  if (flag == "--image" || flag == "--images-file") {
    auto applied = apply_string(cursor, value);
    if (applied) (flag == "--image" ? options.image_refs : options.images_files).push_back(value);
    return applied;
  }
  if (flag == "--address") return apply_string(cursor, options.address);
  if (flag == "--namespace") return apply_string(cursor, options.namespace_name);
  if (flag == "--hosts-dir") return apply_string(cursor, options.hosts_dir);
  if (flag == "--snapshotter") return apply_string(cursor, options.snapshotter);
  if (flag == "--ctr") return apply_string(cursor, options.ctr_binary);
  if (flag == "--node") return apply_string(cursor, options.node_name);
  if (flag == "--peerd-metrics") {
    auto applied = apply_string(cursor, options.peerd_metrics_url);
    if (applied && !options.peerd_metrics_url.starts_with("http://") &&
        !options.peerd_metrics_url.starts_with("https://")) {
      return fail(std::string("--peerd-metrics: expected an http:// or https:// URL"));
    }
    return applied;
  }
  if (flag == "--platform") {
    auto applied = apply_string(cursor, value);
    if (!applied) return applied;
    auto platform = parse_platform(value);
    if (!platform) return fail("--platform: " + platform.error());
    options.platform = *platform;
    return true;
  }
  if (flag == "--plain-http") return apply_switch(cursor, options.plain_http);
  if (flag == "--remove-first") return apply_switch(cursor, options.remove_first);
  if (flag == "--expect-peer-bytes") return apply_switch(cursor, options.expect_peer_bytes);
  if (flag == "--insecure") return apply_switch(cursor, options.insecure_tls);
  if (flag == "--no-read") {
    bool skip = false;
    auto applied = apply_switch(cursor, skip);
    options.read_layer = !skip;
    return applied;
  }
  if (flag == "--pull-timeout-s") return apply_seconds(cursor, flag, options.pull_timeout_s, 1);
  if (flag == "--start-delay-min-s") return apply_seconds(cursor, flag, options.start_delay_min_s, 0);
  if (flag == "--start-delay-max-s") return apply_seconds(cursor, flag, options.start_delay_max_s, 0);
  if (flag == "--log-level") {
    auto applied = apply_string(cursor, value);
    if (!applied) return applied;
    auto level = daemon::parse_log_level(value);
    if (!level) return fail("--log-level: " + level.error());
    options.log_level = *level;
    return true;
  }
  return false;
}

}  // namespace

Result<CtrCommand, std::string> parse_ctr_arguments(std::span<const std::string> arguments) {
  CtrCommand command;
  ArgumentCursor cursor(arguments);
  while (!cursor.done()) {
    auto flag = cursor.next_flag();
    if (!flag) return fail(flag.error());
    if (*flag == "--help" || *flag == "--version") {
      command.action = *flag == "--help" ? CtrCommand::Action::kHelp : CtrCommand::Action::kVersion;
      return command;
    }
    auto applied = apply_flag(*flag, cursor, command.options);
    if (!applied)
      return fail(applied.error().starts_with("--") ? applied.error() : *flag + ": " + applied.error());
    if (!*applied) return fail("unknown flag " + *flag);
  }
  const auto& options = command.options;
  if (options.image_refs.empty() && options.images_files.empty())
    return fail(std::string("give --image or --images-file"));
  if (options.expect_peer_bytes && options.peerd_metrics_url.empty()) {
    return fail(std::string("--expect-peer-bytes needs --peerd-metrics"));
  }
  if (options.start_delay_min_s > options.start_delay_max_s) {
    return fail(std::string("--start-delay-min-s is above --start-delay-max-s"));
  }
  return command;
}

Result<bool, std::string> check_image_refs(const std::vector<std::string>& image_refs) {
  if (image_refs.empty()) return fail(std::string("no image references given"));
  if (image_refs.size() > kCtrImagesMax) {
    return fail("too many images: " + std::to_string(image_refs.size()) + " > " +
                std::to_string(kCtrImagesMax));
  }
  for (const auto& ref : image_refs) {
    if (ref.starts_with('-')) return fail("image reference '" + ref + "' starts with '-'");
  }
  return true;
}

std::string_view ctr_help() {
  return kHelp;
}

}  // namespace peerd::workload
