#pragma once
// Mutual TLS between peers. Every node holds a key and a leaf certificate that chain to the cluster CA; the
// peer listener requires a client certificate from that CA, and peer requests verify the server's certificate
// (chain and IP address) the same way.
//
// Two sources of identity:
//  - a CA directory (the mounted Kubernetes Secret: `ca.crt` and `ca.key`). The node mints its own ECDSA
//    P-256 key and a short-lived leaf (SAN = its IP) signed by the CA, and re-mints at half-life. `ca.crt`
//    may hold several CA certificates (a rotation bundle): all are trusted; the one matching `ca.key` signs.
//  - static files (`cert`, `key`, `ca`), e.g. written by cert-manager; they are re-read when they change.
//
// refresh(now) re-reads the files (Secret volumes update by an atomic symlink swap, so contents are compared,
// not mtimes), re-mints when due, and builds a new PeerTlsMaterial generation when anything changed. A CA
// that leaves the files stays trusted for `ca_overlap` (the rotation window: until every node has re-minted
// from the new CA), then is dropped. Connections pick up current() when they start, so a rotation needs no
// restart and never disturbs a transfer in flight. Time comes from the caller; no thread or timer here.
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "peerd/core/common/endpoint.h"
#include "peerd/core/common/result.h"
#include "peerd/daemon/log.h"

namespace peerd::daemon {

using WallClock = std::chrono::system_clock;

struct PeerTlsOptions {
  std::string ca_dir;  // holds ca.crt + ca.key; the node mints its own leaf
  // Static mode (ca_dir empty): PEM files of this node's certificate chain, its key and the trusted CA(s).
  std::string cert_file;
  std::string key_file;
  std::string ca_file;
  Endpoint node_ip;       // the minted leaf's IP SAN (port unused)
  std::string node_name;  // the minted leaf's common name
  std::chrono::seconds leaf_validity{std::chrono::hours(24)};
  std::chrono::seconds ca_overlap{std::chrono::minutes(15)};
};

// A self-signed CA (ECDSA P-256), PEM. For tests and for bootstrapping a cluster Secret.
struct PemKeyPair {
  std::string cert_pem;
  std::string key_pem;
};
Result<PemKeyPair, std::string> create_self_signed_ca(const std::string& common_name,
                                                      WallClock::time_point not_before,
                                                      std::chrono::seconds validity);

// A leaf (ECDSA P-256, fresh key) signed by `ca`: serverAuth + clientAuth, SAN = `ip`.
Result<PemKeyPair, std::string> mint_leaf(const PemKeyPair& ca, const std::string& common_name,
                                          const Endpoint& ip, WallClock::time_point not_before,
                                          std::chrono::seconds validity);

// Does `cert_pem` (leaf first, then any intermediates) chain to one of `trusted_ca_pem` at `at`?
// Empty on success, else OpenSSL's reason.
std::string verify_chain(const std::string& cert_pem, const std::string& trusted_ca_pem,
                         WallClock::time_point at);

// One generation of peer TLS material. Immutable once published.
struct PeerTlsMaterial {
  uint64_t generation = 0;
  std::string cert_pem;        // this node's leaf (then any intermediates)
  std::string key_pem;         // its private key; never logged
  std::string trusted_ca_pem;  // every CA peers may chain to right now
  WallClock::time_point leaf_not_after;
  // Server side: TLS 1.2+, requires and verifies a client certificate from trusted_ca_pem.
  std::shared_ptr<boost::asio::ssl::context> server_context;
};

// Builds the server context of the listener (exposed for tests that build contexts by hand).
Result<std::shared_ptr<boost::asio::ssl::context>, std::string> make_peer_server_context(
    const std::string& cert_pem, const std::string& key_pem, const std::string& trusted_ca_pem);

class PeerTls {
 public:
  // Loads the files and builds the first generation; an error names the file and the reason.
  static Result<std::unique_ptr<PeerTls>, std::string> create(PeerTlsOptions options, Logger logger,
                                                              WallClock::time_point now);

  // The generation new connections use. Any thread.
  std::shared_ptr<const PeerTlsMaterial> current() const;

  // Re-reads the files, re-mints when due, drops CAs past their overlap. True when a new generation was
  // published. An error (unreadable or invalid files) keeps the previous generation; it is returned to log.
  Result<bool, std::string> refresh(WallClock::time_point now);

 private:
  struct RetiredCa {
    std::string pem;
    WallClock::time_point trusted_until;
  };
  struct Files {
    std::string cert;  // static mode only
    std::string key;
    std::string ca;
    bool operator==(const Files&) const = default;
  };

  PeerTls(PeerTlsOptions options, Logger logger);
  Result<Files, std::string> read_files() const;
  Result<std::shared_ptr<PeerTlsMaterial>, std::string> build(const Files& files, WallClock::time_point now,
                                                              bool files_changed);

  const PeerTlsOptions options_;
  const Logger logger_;

  // refresh() is called from one place at a time; the mutex guards what current() reads.
  mutable std::mutex mutex_;
  std::shared_ptr<const PeerTlsMaterial> current_;
  Files files_;
  std::vector<RetiredCa> retired_;
  PemKeyPair leaf_;  // CA-dir mode: the minted leaf
  WallClock::time_point leaf_issued_;
  WallClock::time_point leaf_not_after_;
  uint64_t generation_ = 0;
};

// Calls PeerTls::refresh every `interval` on an io_context (the daemon's clock for PeerTls). A failed
// refresh keeps the previous material and is logged when its message changes.
class PeerTlsWatcher {
 public:
  PeerTlsWatcher(boost::asio::io_context& io, PeerTls& tls, std::chrono::milliseconds interval,
                 Logger logger);
  void start();
  void stop();

 private:
  void arm();

  PeerTls& tls_;
  const std::chrono::milliseconds interval_;
  const Logger logger_;
  boost::asio::steady_timer timer_;
  std::string last_error_;
  bool stopped_ = false;
};

}  // namespace peerd::daemon
