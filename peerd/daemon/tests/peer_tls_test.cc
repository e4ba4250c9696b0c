// PeerTls: minting, chain verification, rotation (old CA trusted for the overlap window, then refused), a
// foreign CA refused, bad files keeping the previous material. Time is passed in; nothing sleeps.
#include "peerd/daemon/peer_tls.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "peerd/daemon/tests/test_process.h"

namespace peerd::daemon {
namespace {

using namespace std::chrono_literals;

const Endpoint kNodeIp = Endpoint::ipv4(127, 0, 0, 180, 0);
const WallClock::time_point kStart = WallClock::from_time_t(1'900'000'000);

Logger quiet() {
  return Logger(LogLevel::kError, [](std::string_view) {});
}

PemKeyPair make_ca(const std::string& name, WallClock::time_point at = kStart) {
  auto ca = create_self_signed_ca(name, at - 1h, std::chrono::hours(24 * 365));
  EXPECT_TRUE(ca.ok()) << ca.error();
  return *ca;
}

PemKeyPair make_leaf(const PemKeyPair& ca, WallClock::time_point at = kStart) {
  auto leaf = mint_leaf(ca, "node", kNodeIp, at, 24h);
  EXPECT_TRUE(leaf.ok()) << leaf.error();
  return *leaf;
}

void write_file(const std::filesystem::path& path, const std::string& text) {
  // A Secret volume swaps a symlinked directory atomically; a rename is the closest single-file equivalent.
  const auto temporary = path.string() + ".new";
  std::ofstream(temporary, std::ios::binary | std::ios::trunc) << text;
  std::filesystem::rename(temporary, path);
}

void write_ca_dir(const std::filesystem::path& dir, const PemKeyPair& ca) {
  write_file(dir / "ca.crt", ca.cert_pem);
  write_file(dir / "ca.key", ca.key_pem);
}

PeerTlsOptions ca_dir_options(const std::filesystem::path& dir) {
  PeerTlsOptions options;
  options.ca_dir = dir.string();
  options.node_ip = kNodeIp;
  options.node_name = "node-a";
  options.leaf_validity = 24h;
  options.ca_overlap = 15min;
  return options;
}

TEST(PeerTlsMint, LeafChainsToItsCaOnlyAndOnlyWhileValid) {
  const PemKeyPair ca = make_ca("cluster");
  const PemKeyPair foreign = make_ca("foreign");
  const PemKeyPair leaf = make_leaf(ca);
  EXPECT_EQ(verify_chain(leaf.cert_pem, ca.cert_pem, kStart), "");
  EXPECT_NE(verify_chain(leaf.cert_pem, foreign.cert_pem, kStart), "");
  EXPECT_NE(verify_chain(leaf.cert_pem, ca.cert_pem, kStart + 25h), "") << "a 24 h leaf must expire";
  EXPECT_NE(verify_chain("not a certificate", ca.cert_pem, kStart), "");
}

TEST(PeerTlsMint, KeyNotMatchingAnyCaCertificateIsAnError) {
  const PemKeyPair ca = make_ca("cluster");
  const PemKeyPair foreign = make_ca("foreign");
  auto leaf = mint_leaf(PemKeyPair{ca.cert_pem, foreign.key_pem}, "node", kNodeIp, kStart, 24h);
  ASSERT_FALSE(leaf.ok());
  EXPECT_NE(leaf.error().find("matches"), std::string::npos) << leaf.error();
  EXPECT_FALSE(mint_leaf(PemKeyPair{ca.cert_pem, "garbage"}, "node", kNodeIp, kStart, 24h).ok());
}

TEST(PeerTlsMint, LeafNeverOutlivesItsCa) {
  auto ca = create_self_signed_ca("short", kStart - 1h, 2h);  // expires at kStart + 1h
  ASSERT_TRUE(ca.ok()) << ca.error();
  auto leaf = mint_leaf(*ca, "node", kNodeIp, kStart, 24h);
  ASSERT_TRUE(leaf.ok()) << leaf.error();
  EXPECT_EQ(verify_chain(leaf->cert_pem, ca->cert_pem, kStart + 30min), "");
  EXPECT_NE(verify_chain(leaf->cert_pem, ca->cert_pem, kStart + 2h), "");
  EXPECT_FALSE(mint_leaf(*ca, "node", kNodeIp, kStart + 2h, 24h).ok()) << "an expired CA must not sign";
}

TEST(PeerTlsServerContext, KeyMustMatchCertificate) {
  const PemKeyPair ca = make_ca("cluster");
  const PemKeyPair leaf = make_leaf(ca);
  const PemKeyPair other = make_leaf(ca);
  EXPECT_TRUE(make_peer_server_context(leaf.cert_pem, leaf.key_pem, ca.cert_pem).ok());
  EXPECT_FALSE(make_peer_server_context(leaf.cert_pem, other.key_pem, ca.cert_pem).ok());
  EXPECT_FALSE(make_peer_server_context(leaf.cert_pem, leaf.key_pem, "").ok());
}

TEST(PeerTls, CaDirectoryMintsALeafForThisNode) {
  testing::TempDir dir;
  const PemKeyPair ca = make_ca("cluster");
  write_ca_dir(dir.path(), ca);
  auto tls = PeerTls::create(ca_dir_options(dir.path()), quiet(), kStart);
  ASSERT_TRUE(tls.ok()) << tls.error();
  const auto material = (*tls)->current();
  ASSERT_NE(material, nullptr);
  ASSERT_NE(material->server_context, nullptr);
  EXPECT_EQ(verify_chain(material->cert_pem, ca.cert_pem, kStart), "");
  EXPECT_EQ(verify_chain(material->cert_pem, material->trusted_ca_pem, kStart), "");
  EXPECT_EQ(material->key_pem.find("PRIVATE KEY") != std::string::npos, true);
  EXPECT_LE(material->leaf_not_after, kStart + 24h);
}

TEST(PeerTls, RemintsAtHalfLifeAndNotBefore) {
  testing::TempDir dir;
  write_ca_dir(dir.path(), make_ca("cluster"));
  auto tls = PeerTls::create(ca_dir_options(dir.path()), quiet(), kStart);
  ASSERT_TRUE(tls.ok()) << tls.error();
  const auto first = (*tls)->current();

  auto early = (*tls)->refresh(kStart + 11h);
  ASSERT_TRUE(early.ok()) << early.error();
  EXPECT_FALSE(*early);
  EXPECT_EQ((*tls)->current(), first);

  auto due = (*tls)->refresh(kStart + 12h + 1s);
  ASSERT_TRUE(due.ok()) << due.error();
  EXPECT_TRUE(*due);
  const auto second = (*tls)->current();
  EXPECT_GT(second->generation, first->generation);
  EXPECT_NE(second->cert_pem, first->cert_pem);
  EXPECT_GT(second->leaf_not_after, first->leaf_not_after);
}

// The rotation: after the Secret changes, the old CA is trusted for the overlap window (peers that
// have not re-minted yet keep working), then a certificate from it is refused. A foreign CA never is trusted.
TEST(PeerTls, RotationTrustsTheOldCaOnlyDuringTheWindow) {
  testing::TempDir dir;
  const PemKeyPair old_ca = make_ca("cluster-old");
  write_ca_dir(dir.path(), old_ca);
  auto tls = PeerTls::create(ca_dir_options(dir.path()), quiet(), kStart);
  ASSERT_TRUE(tls.ok()) << tls.error();
  const PemKeyPair peer_from_old_ca = make_leaf(old_ca);
  const PemKeyPair peer_from_foreign_ca = make_leaf(make_ca("foreign"));

  const auto rotated_at = kStart + 1h;
  const PemKeyPair new_ca = make_ca("cluster-new", rotated_at);
  write_ca_dir(dir.path(), new_ca);
  auto rotated = (*tls)->refresh(rotated_at);
  ASSERT_TRUE(rotated.ok()) << rotated.error();
  EXPECT_TRUE(*rotated);
  auto during = (*tls)->current();
  EXPECT_EQ(verify_chain(during->cert_pem, new_ca.cert_pem, rotated_at), "") << "re-minted from the new CA";
  EXPECT_EQ(verify_chain(peer_from_old_ca.cert_pem, during->trusted_ca_pem, rotated_at + 10min), "");
  EXPECT_EQ(verify_chain(make_leaf(new_ca, rotated_at).cert_pem, during->trusted_ca_pem, rotated_at), "");
  EXPECT_NE(verify_chain(peer_from_foreign_ca.cert_pem, during->trusted_ca_pem, rotated_at), "");

  auto inside = (*tls)->refresh(rotated_at + 14min);
  ASSERT_TRUE(inside.ok()) << inside.error();
  EXPECT_FALSE(*inside);

  const auto after_window = rotated_at + 15min + 1s;
  auto closed = (*tls)->refresh(after_window);
  ASSERT_TRUE(closed.ok()) << closed.error();
  EXPECT_TRUE(*closed) << "dropping the old CA is a new generation";
  auto after = (*tls)->current();
  EXPECT_NE(verify_chain(peer_from_old_ca.cert_pem, after->trusted_ca_pem, after_window), "");
  EXPECT_EQ(verify_chain(make_leaf(new_ca, after_window).cert_pem, after->trusted_ca_pem, after_window), "");
}

TEST(PeerTls, BadFilesKeepThePreviousMaterial) {
  testing::TempDir dir;
  write_ca_dir(dir.path(), make_ca("cluster"));
  auto tls = PeerTls::create(ca_dir_options(dir.path()), quiet(), kStart);
  ASSERT_TRUE(tls.ok()) << tls.error();
  const auto before = (*tls)->current();

  write_file(dir.path() / "ca.crt", "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n");
  auto refreshed = (*tls)->refresh(kStart + 1min);
  EXPECT_FALSE(refreshed.ok());
  EXPECT_EQ((*tls)->current(), before);

  std::filesystem::remove(dir.path() / "ca.key");
  refreshed = (*tls)->refresh(kStart + 2min);
  ASSERT_FALSE(refreshed.ok());
  EXPECT_NE(refreshed.error().find("ca.key"), std::string::npos) << refreshed.error();
  EXPECT_EQ((*tls)->current(), before);
}

TEST(PeerTls, MissingOrIncompleteConfigurationIsAClearError) {
  testing::TempDir dir;
  auto missing = PeerTls::create(ca_dir_options(dir.path() / "absent"), quiet(), kStart);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().find("ca.crt"), std::string::npos) << missing.error();

  PeerTlsOptions partial;
  partial.cert_file = (dir.path() / "tls.crt").string();
  EXPECT_FALSE(PeerTls::create(partial, quiet(), kStart).ok());
}

TEST(PeerTls, StaticFilesMustChainToTheirCa) {
  testing::TempDir dir;
  const PemKeyPair ca = make_ca("cluster");
  const PemKeyPair leaf = make_leaf(ca);
  const PemKeyPair foreign_leaf = make_leaf(make_ca("foreign"));
  write_file(dir.path() / "ca.pem", ca.cert_pem);
  PeerTlsOptions options;
  options.cert_file = (dir.path() / "tls.crt").string();
  options.key_file = (dir.path() / "tls.key").string();
  options.ca_file = (dir.path() / "ca.pem").string();

  write_file(options.cert_file, foreign_leaf.cert_pem);
  write_file(options.key_file, foreign_leaf.key_pem);
  auto refused = PeerTls::create(options, quiet(), kStart);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().find("does not chain"), std::string::npos) << refused.error();

  write_file(options.cert_file, leaf.cert_pem);
  write_file(options.key_file, leaf.key_pem);
  auto tls = PeerTls::create(options, quiet(), kStart);
  ASSERT_TRUE(tls.ok()) << tls.error();
  EXPECT_EQ((*tls)->current()->cert_pem, leaf.cert_pem);

  // cert-manager renews: the new pair is picked up by refresh().
  const PemKeyPair renewed = make_leaf(ca, kStart + 1h);
  write_file(options.cert_file, renewed.cert_pem);
  write_file(options.key_file, renewed.key_pem);
  auto refreshed = (*tls)->refresh(kStart + 1h);
  ASSERT_TRUE(refreshed.ok()) << refreshed.error();
  EXPECT_TRUE(*refreshed);
  EXPECT_EQ((*tls)->current()->cert_pem, renewed.cert_pem);
}

}  // namespace
}  // namespace peerd::daemon
