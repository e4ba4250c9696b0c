#include "peerd/daemon/bearer_token.h"

#include <gtest/gtest.h>

namespace peerd::daemon {
namespace {

// Shows Docker Hub's real challenge parses into realm, service and scope.
TEST(BearerChallenge, ParsesDockerHubChallenge) {
  const auto challenge = parse_bearer_challenge(
      R"(Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/ubuntu:pull")");
  ASSERT_TRUE(challenge.has_value());
  EXPECT_EQ(challenge->realm, "https://auth.docker.io/token");
  EXPECT_EQ(challenge->service, "registry.docker.io");
  EXPECT_EQ(challenge->scope, "repository:library/ubuntu:pull");
}

// Shows the scheme is case-insensitive, spaces and escapes are tolerated, and Bearer is found after another
// challenge in the same header value.
TEST(BearerChallenge, ToleratesCaseSpacesEscapesAndOtherSchemes) {
  auto challenge = parse_bearer_challenge(R"(bearer  realm = "https://r/t" , scope="a \"b\"")");
  ASSERT_TRUE(challenge.has_value());
  EXPECT_EQ(challenge->realm, "https://r/t");
  EXPECT_EQ(challenge->scope, "a \"b\"");
  EXPECT_TRUE(challenge->service.empty());

  challenge = parse_bearer_challenge(R"(Basic realm="basic", Bearer realm="https://r/t",service=svc)");
  ASSERT_TRUE(challenge.has_value());
  EXPECT_EQ(challenge->realm, "https://r/t");
  EXPECT_EQ(challenge->service, "svc");
}

// Shows non-Bearer, realm-less and malformed challenges are refused.
TEST(BearerChallenge, RefusesWhatIsNotAUsableBearerChallenge) {
  EXPECT_FALSE(parse_bearer_challenge(R"(Basic realm="x")").has_value());
  EXPECT_FALSE(parse_bearer_challenge(R"(Bearer service="x")").has_value());
  EXPECT_FALSE(parse_bearer_challenge(R"(Bearer realm="unterminated)").has_value());
  EXPECT_FALSE(parse_bearer_challenge("").has_value());
  EXPECT_FALSE(parse_bearer_challenge("=").has_value());
}

// Shows token responses: "token" wins over "access_token", expires_in defaults to 60 s and is capped.
TEST(BearerToken, ParsesTokenResponses) {
  auto token = parse_token_response(R"({"token":"abc","access_token":"zzz","expires_in":300})");
  ASSERT_TRUE(token.has_value());
  EXPECT_EQ(token->token, "abc");
  EXPECT_EQ(token->expires_in, std::chrono::seconds(300));
  token = parse_token_response(R"({"access_token":"oauth"})");
  ASSERT_TRUE(token.has_value());
  EXPECT_EQ(token->token, "oauth");
  EXPECT_EQ(token->expires_in, std::chrono::seconds(60));
  EXPECT_EQ(parse_token_response(R"({"token":"t","expires_in":999999999})")->expires_in,
            std::chrono::hours(24));
  EXPECT_FALSE(parse_token_response("not json").has_value());
  EXPECT_FALSE(parse_token_response(R"({"token":""})").has_value());
  EXPECT_FALSE(parse_token_response("[]").has_value());
}

// Shows cached tokens expire at 90% of their lifetime (on an injected clock) and the cache is bounded.
TEST(TokenCache, ExpiresAndStaysBounded) {
  TokenCache cache;
  const auto start = TokenCache::Clock::time_point{} + std::chrono::hours(1);
  cache.put("k", BearerToken{"t", std::chrono::seconds(100)}, start);
  EXPECT_EQ(cache.get("k", start + std::chrono::seconds(89)), "t");
  EXPECT_FALSE(cache.get("k", start + std::chrono::seconds(90)).has_value());
  for (size_t i = 0; i < TokenCache::kEntriesMax + 10; ++i) {
    cache.put("key" + std::to_string(i), BearerToken{"t", std::chrono::seconds(60 + static_cast<int64_t>(i))},
              start);
  }
  EXPECT_EQ(cache.size(), TokenCache::kEntriesMax);
  EXPECT_FALSE(cache.get("key0", start).has_value());  // the soonest-expiring went first
  EXPECT_TRUE(cache.get("key1033", start).has_value());
}

// Shows scope hints group registry URLs by repository and everything else by origin.
TEST(TokenCache, ScopeHintKeys) {
  EXPECT_EQ(scope_hint_key("https://ghcr.io/v2/org/app/blobs/sha256:abc"), "https://ghcr.io/org/app");
  EXPECT_EQ(scope_hint_key("https://ghcr.io/v2/org/app/manifests/latest?x=1"), "https://ghcr.io/org/app");
  EXPECT_EQ(scope_hint_key("https://ghcr.io/v2/"), "https://ghcr.io");
  EXPECT_EQ(scope_hint_key("https://store.example/file?sig=s"), "https://store.example");
}

}  // namespace
}  // namespace peerd::daemon
