// Command lines of peerd-random and peerd-ctr: defaults, every flag in both "--flag value" and "--flag=value"
// forms, and one-line errors for unknown flags, missing or bad values and inconsistent combinations.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "workloads/common/arguments.h"
#include "workloads/ctr/ctr_options.h"
#include "workloads/random/random_options.h"

namespace peerd::workload {
namespace {

Result<RandomCommand, std::string> parse_random(std::vector<std::string> arguments) {
  return parse_random_arguments(arguments);
}

Result<CtrCommand, std::string> parse_ctr(std::vector<std::string> arguments) {
  return parse_ctr_arguments(arguments);
}

// Shows list files split on whitespace, with '#' comments only where a word starts.
TEST(Arguments, SplitListSkipsCommentsOnly) {
  EXPECT_EQ(split_list("a b\n# comment x y\n  c\t d # tail\nhttps://h/p#frag"),
            (std::vector<std::string>{"a", "b", "c", "d", "https://h/p#frag"}));
  EXPECT_TRUE(split_list("   \n#only\n").empty());
}

// Shows the number parsers accept exactly the ranges they name and reject junk with the flag in the error.
TEST(Arguments, NumberParsers) {
  EXPECT_EQ(*parse_unsigned("--n", "42", 1, 100), 42u);
  EXPECT_FALSE(parse_unsigned("--n", "0", 1, 100).ok());
  EXPECT_FALSE(parse_unsigned("--n", "101", 1, 100).ok());
  EXPECT_FALSE(parse_unsigned("--n", "-1", 0, 100).ok());
  EXPECT_FALSE(parse_unsigned("--n", "4x", 0, 100).ok());
  EXPECT_NE(parse_unsigned("--n", "", 0, 100).error().find("--n"), std::string::npos);
  EXPECT_EQ(*parse_fraction("--f", "0.25"), 0.25);
  EXPECT_FALSE(parse_fraction("--f", "1.5").ok());
  EXPECT_FALSE(parse_fraction("--f", "nan").ok());
}

// Shows peerd-random's defaults follow the original (5 reads per blob, 3-25 ms jitter) with no start delay.
TEST(RandomArguments, Defaults) {
  const auto command = parse_random({"--blob", "https://h/b", "--peerd", "http://127.0.0.1:5000/"});
  ASSERT_TRUE(command.ok()) << command.error();
  const auto& options = command->options;
  EXPECT_EQ(command->action, RandomCommand::Action::kRun);
  EXPECT_EQ(options.blob_urls, std::vector<std::string>{"https://h/b"});
  EXPECT_EQ(options.peerd_url, "http://127.0.0.1:5000");  // trailing slash dropped
  EXPECT_EQ(options.mode, RandomMode::kBoth);
  EXPECT_EQ(options.reads_per_blob, 5u);
  EXPECT_EQ(options.jitter_min_ms, 3u);
  EXPECT_EQ(options.jitter_max_ms, 25u);
  EXPECT_EQ(options.start_delay_max_s, 0u);
  EXPECT_EQ(options.verify_reads, 0u);
  EXPECT_FALSE(options.seed.has_value());
  EXPECT_EQ(options.error_rate_max, 0);
}

// Shows every peerd-random flag lands in its field, in both the "--flag value" and "--flag=value" forms.
TEST(RandomArguments, EveryFlag) {
  const auto command = parse_random({"--blob=http://a/1",
                                     "--blob",
                                     "http://a/2",
                                     "--blobs-file",
                                     "list.txt",
                                     "--mode=upstream",
                                     "--reads-per-blob",
                                     "9",
                                     "--read-bytes-max=4096",
                                     "--seed",
                                     "18446744073709551615",
                                     "--jitter-min-ms",
                                     "0",
                                     "--jitter-max-ms=1",
                                     "--start-delay-min-s",
                                     "1",
                                     "--start-delay-max-s",
                                     "100",
                                     "--concurrency",
                                     "3",
                                     "--verify",
                                     "4",
                                     "--timeout-s",
                                     "5",
                                     "--error-rate-max",
                                     "0.1",
                                     "--insecure",
                                     "--node",
                                     "n1",
                                     "--log-level",
                                     "debug"});
  ASSERT_TRUE(command.ok()) << command.error();
  const auto& options = command->options;
  EXPECT_EQ(options.blob_urls, (std::vector<std::string>{"http://a/1", "http://a/2"}));
  EXPECT_EQ(options.blobs_files, std::vector<std::string>{"list.txt"});
  EXPECT_EQ(options.mode, RandomMode::kUpstream);
  EXPECT_EQ(options.reads_per_blob, 9u);
  EXPECT_EQ(options.read_bytes_max, 4096u);
  EXPECT_EQ(options.seed, UINT64_MAX);
  EXPECT_EQ(options.jitter_min_ms, 0u);
  EXPECT_EQ(options.jitter_max_ms, 1u);
  EXPECT_EQ(options.start_delay_min_s, 1u);
  EXPECT_EQ(options.start_delay_max_s, 100u);
  EXPECT_EQ(options.concurrency, 3u);
  EXPECT_EQ(options.verify_reads, 4u);
  EXPECT_EQ(options.timeout_s, 5u);
  EXPECT_EQ(options.error_rate_max, 0.1);
  EXPECT_TRUE(options.insecure_tls);
  EXPECT_EQ(options.node_name, "n1");
  EXPECT_EQ(options.log_level, daemon::LogLevel::kDebug);
}

// Shows --help and --version win over anything else on the line.
TEST(RandomArguments, HelpAndVersion) {
  EXPECT_EQ(parse_random({"--help"})->action, RandomCommand::Action::kHelp);
  EXPECT_EQ(parse_random({"--mode", "p2p", "--version"})->action, RandomCommand::Action::kVersion);
  EXPECT_NE(random_help().find("--reads-per-blob"), std::string_view::npos);
}

// Shows bad command lines fail with one line that names the problem.
TEST(RandomArguments, ErrorsAreOneLine) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{}, "--blob"},
      {{"--blob", "http://a/b"}, "needs --peerd"},
      {{"--blob", "http://a/b", "--mode", "p2p"}, "needs --peerd"},
      {{"--blob", "http://a/b", "--mode", "sideways"}, "--mode"},
      {{"--blob", "http://a/b", "--mode", "upstream", "--frobnicate"}, "unknown flag --frobnicate"},
      {{"--blob", "http://a/b", "--mode", "upstream", "stray"}, "unexpected argument 'stray'"},
      {{"--blob"}, "--blob needs a value"},
      {{"--blob", "http://a/b", "--mode", "upstream", "--reads-per-blob", "0"}, "--reads-per-blob"},
      {{"--blob", "http://a/b", "--mode", "upstream", "--concurrency", "1000"}, "--concurrency"},
      {{"--blob", "http://a/b", "--mode", "upstream", "--jitter-min-ms", "30"}, "--jitter-min-ms is above"},
      {{"--blob", "http://a/b", "--mode", "upstream", "--start-delay-min-s", "2", "--start-delay-max-s", "1"},
       "--start-delay-min-s is above"},
      {{"--blob", "http://a/b", "--mode", "upstream", "--insecure=yes"}, "--insecure takes no value"},
      {{"--blob", "http://a/b", "--mode", "upstream", "--log-level", "loud"}, "--log-level"},
      {{"--blob", "http://a/b", "--peerd", "127.0.0.1:5000"}, "--peerd"},
  };
  for (const auto& [arguments, expected] : cases) {
    const auto command = parse_random(arguments);
    ASSERT_FALSE(command.ok()) << expected;
    EXPECT_NE(command.error().find(expected), std::string::npos) << command.error();
    EXPECT_EQ(command.error().find('\n'), std::string::npos) << command.error();
  }
}

// Shows the blob list check: one or more http(s) URLs, with a credential-free message for a bad one.
TEST(RandomArguments, BlobUrlsAndP2pUrl) {
  EXPECT_TRUE(check_blob_urls({"http://a/b", "https://c/d?sig=x"}).ok());
  EXPECT_FALSE(check_blob_urls({}).ok());
  const auto bad = check_blob_urls({"ftp://user:pw@host/x?sig=secret"});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().find("secret"), std::string::npos) << bad.error();
  EXPECT_EQ(p2p_url("http://127.0.0.1:5000", "https://h/p?sig=1"),
            "http://127.0.0.1:5000/blobs/https://h/p?sig=1");
}

// Shows peerd-ctr's defaults: ctr on PATH, containerd's usual socket, namespace "default", read the layer
// back.
TEST(CtrArguments, Defaults) {
  const auto command = parse_ctr({"--image", "127.0.0.1:5000/a:1"});
  ASSERT_TRUE(command.ok()) << command.error();
  const auto& options = command->options;
  EXPECT_EQ(options.image_refs, std::vector<std::string>{"127.0.0.1:5000/a:1"});
  EXPECT_EQ(options.ctr_binary, "ctr");
  EXPECT_EQ(options.address, "/run/containerd/containerd.sock");
  EXPECT_EQ(options.namespace_name, "default");
  EXPECT_TRUE(options.hosts_dir.empty());
  EXPECT_FALSE(options.plain_http);
  EXPECT_FALSE(options.remove_first);
  EXPECT_TRUE(options.read_layer);
  EXPECT_TRUE(options.platform.architecture.empty());
  EXPECT_EQ(options.pull_timeout_s, 600u);
}

// Shows every peerd-ctr flag lands in its field.
TEST(CtrArguments, EveryFlag) {
  const auto command = parse_ctr({"--image",
                                  "r/a:1",
                                  "--image=r/b:2",
                                  "--images-file",
                                  "images.txt",
                                  "--address",
                                  "/tmp/c.sock",
                                  "--namespace=k8s.io",
                                  "--hosts-dir",
                                  "/etc/containerd/certs.d",
                                  "--plain-http",
                                  "--remove-first",
                                  "--snapshotter",
                                  "native",
                                  "--platform",
                                  "linux/arm64/v8",
                                  "--no-read",
                                  "--peerd-metrics",
                                  "http://127.0.0.11:5000/metrics",
                                  "--expect-peer-bytes",
                                  "--pull-timeout-s",
                                  "30",
                                  "--start-delay-min-s",
                                  "1",
                                  "--start-delay-max-s",
                                  "2",
                                  "--ctr",
                                  "/usr/bin/ctr",
                                  "--insecure",
                                  "--node",
                                  "n2",
                                  "--log-level",
                                  "warn"});
  ASSERT_TRUE(command.ok()) << command.error();
  const auto& options = command->options;
  EXPECT_EQ(options.image_refs, (std::vector<std::string>{"r/a:1", "r/b:2"}));
  EXPECT_EQ(options.images_files, std::vector<std::string>{"images.txt"});
  EXPECT_EQ(options.address, "/tmp/c.sock");
  EXPECT_EQ(options.namespace_name, "k8s.io");
  EXPECT_EQ(options.hosts_dir, "/etc/containerd/certs.d");
  EXPECT_TRUE(options.plain_http);
  EXPECT_TRUE(options.remove_first);
  EXPECT_EQ(options.snapshotter, "native");
  EXPECT_EQ(options.platform.os, "linux");
  EXPECT_EQ(options.platform.architecture, "arm64");
  EXPECT_EQ(options.platform.variant, "v8");
  EXPECT_FALSE(options.read_layer);
  EXPECT_EQ(options.peerd_metrics_url, "http://127.0.0.11:5000/metrics");
  EXPECT_TRUE(options.expect_peer_bytes);
  EXPECT_EQ(options.pull_timeout_s, 30u);
  EXPECT_EQ(options.start_delay_min_s, 1u);
  EXPECT_EQ(options.start_delay_max_s, 2u);
  EXPECT_EQ(options.ctr_binary, "/usr/bin/ctr");
  EXPECT_TRUE(options.insecure_tls);
  EXPECT_EQ(options.node_name, "n2");
  EXPECT_EQ(options.log_level, daemon::LogLevel::kWarn);
  EXPECT_EQ(parse_ctr({"--help"})->action, CtrCommand::Action::kHelp);
}

// Shows bad peerd-ctr command lines fail with one line that names the problem.
TEST(CtrArguments, ErrorsAreOneLine) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{}, "--image"},
      {{"--image", "a", "--expect-peer-bytes"}, "--expect-peer-bytes needs --peerd-metrics"},
      {{"--image", "a", "--peerd-metrics", "127.0.0.1:5000/metrics"}, "--peerd-metrics"},
      {{"--image", "a", "--platform", "linux"}, "--platform"},
      {{"--image", "a", "--pull-timeout-s", "0"}, "--pull-timeout-s"},
      {{"--image", "a", "--namespace", ""}, "--namespace: empty value"},
      {{"--image", "a", "--plain-http=1"}, "--plain-http takes no value"},
      {{"--image", "a", "--pull"}, "unknown flag --pull"},
  };
  for (const auto& [arguments, expected] : cases) {
    const auto command = parse_ctr(arguments);
    ASSERT_FALSE(command.ok()) << expected;
    EXPECT_NE(command.error().find(expected), std::string::npos) << command.error();
    EXPECT_EQ(command.error().find('\n'), std::string::npos) << command.error();
  }
  EXPECT_FALSE(check_image_refs({}).ok());
  EXPECT_FALSE(check_image_refs({"--all-platforms"}).ok());
  EXPECT_TRUE(check_image_refs({"docker.io/library/alpine:3"}).ok());
}

}  // namespace
}  // namespace peerd::workload
