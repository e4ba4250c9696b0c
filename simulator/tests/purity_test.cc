// Grep-level guards: the simulator drives the core and forks none of its logic, and its two halves stay apart
// (ns-3 only in the C++17 files, peerd/core only in the C++20 ones).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;

const std::string kSourceDir = std::string(PEERD_SOURCE_DIR) + "/simulator/src";

std::string read(const fs::path& path) {
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

// The code of a file without its comments (so prose may name what the code must not define).
std::string code_of(const std::string& text) {
  std::string out;
  std::istringstream lines(text);
  std::string line;
  bool block = false;
  while (std::getline(lines, line)) {
    std::string kept;
    for (size_t i = 0; i < line.size(); ++i) {
      if (block) {
        if (line.compare(i, 2, "*/") == 0) {
          block = false;
          ++i;
        }
        continue;
      }
      if (line.compare(i, 2, "/*") == 0) {
        block = true;
        ++i;
        continue;
      }
      if (line.compare(i, 2, "//") == 0) break;
      kept += line[i];
    }
    out += kept + "\n";
  }
  return out;
}

std::vector<fs::path> sources() {
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(kSourceDir)) {
    const auto extension = entry.path().extension();
    if (extension == ".h" || extension == ".cc") files.push_back(entry.path());
  }
  return files;
}

bool is_ns3_side(const fs::path& path) {
  const std::string name = path.filename().string();
  return name == "packet_network.cc" || name == "flow_network.cc" || name == "ns3_clock.h" ||
         name == "topology.cc" || name == "flow_allocator.cc" || name == "flow_allocator.h" ||
         name == "network.h" || name == "ns3_endpoint_memo.cc" || name == "ns3_endpoint_memo.h";
}

// No file under simulator/src implements Kademlia or chunk-source selection: no routing tables, distances,
// lookups, rendezvous ranking or source picking. Those live in peerd/core only.
TEST(PurityTest, SimulatorDefinesNoDhtOrChunkSelectionLogic) {
  const std::regex forbidden(
      R"(\b(rendezvous\w*|RoutingTable|LookupCandidates?|bucket_index|closer_to|distance_to|owners_of|k_bucket\w*|)"
      R"(xor_distance|find_node|FIND_NODE|GET_PROVIDERS|ADD_PROVIDER|(choose|pick|select|rank)_(source|peer|owner)\w*|)"
      R"(best_(source|peer)|Source::from_peer|Source::upstream|class\s+\w*Dht\w*|struct\s+\w*Dht\w*|)"
      R"(class\s+\w*Engine\w*|struct\s+\w*Engine\b))");
  ASSERT_FALSE(sources().empty());
  // The pattern is not vacuous: it finds the logic where it does live, in the core.
  for (const char* core : {"/peerd/core/routing/dht.h", "/peerd/core/transfer/rendezvous.h"}) {
    EXPECT_TRUE(std::regex_search(code_of(read(std::string(PEERD_SOURCE_DIR) + core)), forbidden)) << core;
  }
  for (const fs::path& path : sources()) {
    const std::string code = code_of(read(path));
    std::smatch match;
    EXPECT_FALSE(std::regex_search(code, match, forbidden))
        << path << " defines or uses \"" << match.str() << "\"";
  }
}

// The adapter drives the real core: it includes the core's Dht and Engine and instantiates them per node.
TEST(PurityTest, AdapterInstantiatesTheCoreDhtAndEngine) {
  const std::string code = code_of(read(kSourceDir + "/cluster.cc"));
  EXPECT_NE(code.find("#include \"peerd/core/routing/dht.h\""), std::string::npos);
  EXPECT_NE(code.find("#include \"peerd/core/transfer/engine.h\""), std::string::npos);
  EXPECT_NE(code.find("#include \"peerd/core/transfer/virtual_chunk_store.h\""), std::string::npos);
  EXPECT_NE(code.find("std::make_unique<routing::Dht>"), std::string::npos);
  EXPECT_NE(code.find("std::make_unique<transfer::Engine>"), std::string::npos);
  EXPECT_NE(code.find("std::make_unique<transfer::VirtualChunkStore>"), std::string::npos);
}

// ns-3 appears only in the C++17 half and peerd/core only in the C++20 half; network.h, the bridge, has
// neither.
TEST(PurityTest, HalvesStayApart) {
  for (const fs::path& path : sources()) {
    const std::string code = code_of(read(path));
    const bool includes_ns3 = code.find("#include \"ns3/") != std::string::npos;
    const bool includes_core = code.find("#include \"peerd/core/") != std::string::npos;
    if (is_ns3_side(path)) {
      EXPECT_FALSE(includes_core) << path << " is C++17 and must not include peerd/core";
    } else {
      EXPECT_FALSE(includes_ns3) << path << " is C++20 and must not include ns-3";
    }
    if (path.filename() == "network.h" || path.filename() == "flow_allocator.h" ||
        path.filename() == "ns3_endpoint_memo.h") {
      EXPECT_FALSE(includes_ns3) << path << " is the bridge and must stay free of ns-3";
    }
  }
}

// Sizes travel, bytes do not: the packet network sends virtual payload (Create<Packet>(size)) and the adapter
// never allocates chunk buffers.
TEST(PurityTest, PayloadIsVirtual) {
  const std::string packet = code_of(read(kSourceDir + "/packet_network.cc"));
  EXPECT_NE(packet.find("ns3::Create<ns3::Packet>(bytes)"), std::string::npos);
  const std::string cluster = code_of(read(kSourceDir + "/cluster.cc"));
  EXPECT_EQ(cluster.find("std::vector<uint8_t> chunk"), std::string::npos);
  EXPECT_EQ(cluster.find("resize(length"), std::string::npos);
}

}  // namespace
