// libFuzzer target for Digest::parse: never crashes, and whatever it accepts prints back to exactly the input
// (there is one text form per digest) and re-parses to the same value.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "peerd/core/content/digest.h"

#define FUZZ_CHECK(condition)                                      \
  do {                                                             \
    if (!(condition)) {                                            \
      std::fprintf(stderr, "fuzz check failed: %s\n", #condition); \
      std::abort();                                                \
    }                                                              \
  } while (false)

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using peerd::content::Digest;
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  auto digest = Digest::parse(text);
  if (!digest.ok()) {
    FUZZ_CHECK(!describe(digest.error()).empty());
  } else {
    const std::string printed = digest->to_string();
    FUZZ_CHECK(printed == text);
    FUZZ_CHECK(digest->hex().size() == 64);
    auto again = Digest::parse(printed);
    FUZZ_CHECK(again.ok() && *again == *digest);
  }

  // Hashing any input gives a digest whose text form parses back to it.
  const Digest hashed = Digest::of_bytes(text);
  auto parsed = Digest::parse(hashed.to_string());
  FUZZ_CHECK(parsed.ok() && *parsed == hashed);
  return 0;
}
