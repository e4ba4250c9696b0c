// Transfer engine benchmarks.
//   BM_ReadChunkEvents/<members>: a reader's bookkeeping per chunk event (an input: response headers, data,
//     completion, lookup answer) including the planning it triggers (rendezvous over <members> peers, source
//     choice, StartFetch) and draining the outputs. Counter event_time = wall time per input (budget <= 2
//     us).
//   BM_ServeFetchThroughEvents/<members>: the owner side: serve() of a fetch-through ask, the single-flight
//     upstream fetch, ServeReady, serve_done. event_time per input likewise.
//   BM_ClusterColdPull/<nodes>/<MiB>: the whole harness (real DHT, engines, modelled links) pulling one blob
//   on
//     every node at once through a 1 Gbit/s upstream; counters: upstream_ratio (egress / blob size),
//     completion_p50_s, dht_datagrams_per_node. 1000 nodes x 1 GiB is the figure (slow: not in CI).
#include <benchmark/benchmark.h>

#include <memory>
#include <vector>

#include "peerd/core/harness/transfer_cluster.h"
#include "peerd/core/transfer/engine.h"
#include "peerd/core/transfer/virtual_chunk_store.h"

namespace peerd::transfer {
namespace {

constexpr uint64_t kChunk = content::kDefaultChunkBytes;

Peer make_peer(uint64_t seed) {
  return Peer{NodeId::from_seed(seed),
              Endpoint::ipv4(10, uint8_t(seed >> 16), uint8_t(seed >> 8), uint8_t(seed), 5000)};
}

std::vector<Peer> members(size_t count) {
  std::vector<Peer> peers;
  for (uint64_t seed = 1; seed <= count; ++seed) peers.push_back(make_peer(seed));
  return peers;
}

void BM_ReadChunkEvents(benchmark::State& state) {
  const auto peers = members(static_cast<size_t>(state.range(0)));
  constexpr uint64_t kChunks = 1024;
  uint64_t inputs = 0;
  uint64_t content_seed = 0;
  for (auto _ : state) {
    state.PauseTiming();
    VirtualChunkStore store(uint64_t{1} << 40);
    EngineOptions options;
    options.self = peers[0];
    options.lookup_before_upstream = false;
    auto engine = std::make_unique<Engine>(options, store);
    engine->handle_membership(Instant{}, peers);
    const ContentRef ref{ContentId::file("https://example.com/bench/" + std::to_string(++content_seed)),
                         kChunks * kChunk, true};
    std::vector<StartFetch> starts;
    starts.reserve(kChunks);
    state.ResumeTiming();

    Instant now = Instant::from_micros(1'000'000);
    benchmark::DoNotOptimize(engine->read(now, ref, 0, kChunks * kChunk));
    size_t next = 0;
    for (;;) {
      while (auto action = engine->poll_action()) {
        if (auto* start = std::get_if<StartFetch>(&*action)) starts.push_back(*start);
        if (auto* find = std::get_if<FindProviders>(&*action)) {
          engine->handle_providers(now, find->key, {});
          ++inputs;
        }
      }
      while (auto event = engine->poll_event()) benchmark::DoNotOptimize(event);
      if (next == starts.size()) break;
      const StartFetch start = starts[next++];
      now += Duration::microseconds(100);
      engine->handle_fetch_data(now, start.fetch, 0);
      engine->handle_fetch_data(now, start.fetch, start.end_in_chunk - start.begin_in_chunk);
      engine->handle_fetch_complete(now, start.fetch, 1);
      inputs += 3;
    }
    state.PauseTiming();
    const bool complete = engine->stats().fetches_completed == kChunks;
    engine.reset();
    if (!complete) {
      state.SkipWithError("read did not complete");
      break;
    }
    state.ResumeTiming();
  }
  state.counters["event_time"] =
      benchmark::Counter(double(inputs), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["chunks"] = benchmark::Counter(double(kChunks) * double(state.iterations()));
}
BENCHMARK(BM_ReadChunkEvents)->Arg(100)->Arg(1000)->Arg(10000)->Unit(benchmark::kMillisecond);

void BM_ServeFetchThroughEvents(benchmark::State& state) {
  const auto peers = members(static_cast<size_t>(state.range(0)));
  constexpr uint64_t kChunks = 1024;
  uint64_t inputs = 0;
  uint64_t content_seed = 0;
  for (auto _ : state) {
    state.PauseTiming();
    VirtualChunkStore store(uint64_t{1} << 40);
    EngineOptions options;
    options.self = peers[0];
    auto engine = std::make_unique<Engine>(options, store);
    engine->handle_membership(Instant{}, peers);
    const ContentId id = ContentId::file("https://example.com/serve/" + std::to_string(++content_seed));
    // The chunks this node owns (rank < 3), so fetch-through asks are accepted.
    std::vector<uint64_t> owned;
    for (uint64_t index = 0; owned.size() < kChunks && index < 1'000'000; ++index) {
      const auto owners = engine->owners_of(ChunkKey{id, index, kChunk}, 3);
      for (const auto& owner : owners) {
        if (owner == peers[0].id) {
          owned.push_back(index);
          break;
        }
      }
    }
    const uint64_t content_bytes = (owned.back() + 1) * kChunk;
    // A first (plain, missing) ask creates the item's state: a one-off per item, not a per-chunk cost.
    auto first =
        engine->serve(Instant{}, ServeRequest{peers[1], ChunkKey{id, 0, kChunk}, content_bytes, false});
    benchmark::DoNotOptimize(first);
    while (engine->poll_event()) {
    }
    state.ResumeTiming();

    Instant now = Instant::from_micros(1'000'000);
    for (const uint64_t index : owned) {
      now += Duration::microseconds(100);
      auto serve =
          engine->serve(now, ServeRequest{peers[1], ChunkKey{id, index, kChunk}, content_bytes, true});
      ++inputs;
      while (auto action = engine->poll_action()) {
        if (auto* find = std::get_if<FindProviders>(&*action)) {
          engine->handle_providers(now, find->key, {});
          ++inputs;
          continue;
        }
        auto* start = std::get_if<StartFetch>(&*action);
        if (start == nullptr) continue;
        engine->handle_fetch_data(now, start->fetch, 0);
        engine->handle_fetch_data(now, start->fetch, start->end_in_chunk - start->begin_in_chunk);
        engine->handle_fetch_complete(now, start->fetch, 1);
        inputs += 3;
      }
      while (auto event = engine->poll_event()) benchmark::DoNotOptimize(event);
      engine->serve_done(now, *serve, kChunk);
      ++inputs;
    }
    state.PauseTiming();
    const bool answered = engine->stats().serves_ready == owned.size();
    engine.reset();
    if (!answered) {
      state.SkipWithError("serves were not answered");
      break;
    }
    state.ResumeTiming();
  }
  state.counters["event_time"] =
      benchmark::Counter(double(inputs), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_ServeFetchThroughEvents)->Arg(100)->Arg(1000)->Unit(benchmark::kMillisecond);

void BM_ClusterColdPull(benchmark::State& state) {
  const auto nodes = static_cast<size_t>(state.range(0));
  const uint64_t blob_bytes = static_cast<uint64_t>(state.range(1)) * 1024 * 1024;
  harness::TransferReport report;
  for (auto _ : state) {
    harness::TransferClusterOptions options;
    options.seed = 1;
    options.nodes = nodes;
    options.collect_chunk_waits = false;
    harness::TransferCluster cluster(options);
    const ContentId blob = ContentId::blob(content::Digest::of_bytes("benchmark-cold-pull"));
    cluster.add_content(blob, blob_bytes);
    cluster.start();
    const Instant start = cluster.now() + Duration::milliseconds(1);
    for (size_t node = 0; node < nodes; ++node) cluster.read_whole_at(start, node, blob);
    if (!cluster.run_until_reads_done(start + Duration::seconds(36000), size_t{1} << 40)) {
      state.SkipWithError("reads did not finish");
    }
    report = cluster.report();
    if (report.reads_completed != nodes || report.reads_bad_bytes != 0) state.SkipWithError("bad pull");
  }
  state.counters["upstream_ratio"] = report.upstream_ratio;
  state.counters["completion_p50_s"] = report.completion_p50.as_seconds();
  state.counters["completion_max_s"] = report.completion_max.as_seconds();
  state.counters["dht_datagrams_per_node"] = report.dht_datagrams_per_node;
  state.counters["node_egress_max_MiB"] = double(report.node_egress_bytes_max) / (1024.0 * 1024.0);
}
BENCHMARK(BM_ClusterColdPull)->Args({100, 512})->Args({1000, 1024})->Iterations(1)->Unit(benchmark::kSecond);

}  // namespace
}  // namespace peerd::transfer
