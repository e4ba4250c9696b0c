#include "peerd/daemon/peer_tls.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>

#include <boost/asio/post.hpp>

namespace peerd::daemon {

namespace {

// Certificates and keys are small; anything larger is not one (and is not read whole into memory).
constexpr uintmax_t kPemFileBytesMax = 1u << 20;
constexpr size_t kCertificatesPerBundleMax = 64;
// Minted leaves start this far in the past, so a peer whose clock is slightly behind accepts them.
constexpr std::chrono::minutes kClockSkewAllowance{5};
constexpr int kChainDepthMax = 4;

struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct StoreFree {
  void operator()(X509_STORE* s) const { X509_STORE_free(s); }
};
struct StoreContextFree {
  void operator()(X509_STORE_CTX* c) const { X509_STORE_CTX_free(c); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;
using KeyPtr = std::unique_ptr<EVP_PKEY, KeyFree>;
using BioPtr = std::unique_ptr<BIO, BioFree>;

std::string openssl_error(std::string_view what) {
  std::string message(what);
  const unsigned long code = ERR_get_error();
  if (code != 0) {
    char text[256];
    ERR_error_string_n(code, text, sizeof(text));
    message += ": ";
    message += text;
  }
  ERR_clear_error();
  return message;
}

BioPtr memory_bio(const std::string& text) {
  return BioPtr(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

std::string bio_text(BIO* bio) {
  char* data = nullptr;
  const long length = BIO_get_mem_data(bio, &data);
  return length > 0 ? std::string(data, static_cast<size_t>(length)) : std::string();
}

// Every certificate in a PEM bundle, in order (at most kCertificatesPerBundleMax).
std::vector<X509Ptr> parse_certificates(const std::string& pem) {
  std::vector<X509Ptr> certificates;
  BioPtr bio = memory_bio(pem);
  while (bio && certificates.size() < kCertificatesPerBundleMax) {
    X509* certificate = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr);
    if (certificate == nullptr) break;
    certificates.emplace_back(certificate);
  }
  ERR_clear_error();  // the read past the last certificate "fails"
  return certificates;
}

KeyPtr parse_key(const std::string& pem) {
  BioPtr bio = memory_bio(pem);
  KeyPtr key(bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  ERR_clear_error();
  return key;
}

std::string certificate_pem(X509* certificate) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), certificate) != 1) return {};
  return bio_text(bio.get());
}

std::string key_pem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) return {};
  return bio_text(bio.get());
}

// The DER bytes: a certificate's identity, whatever its PEM line breaks.
std::string certificate_der(X509* certificate) {
  unsigned char* der = nullptr;
  const int length = i2d_X509(certificate, &der);
  if (length <= 0) return {};
  std::string bytes(reinterpret_cast<char*>(der), static_cast<size_t>(length));
  OPENSSL_free(der);
  return bytes;
}

WallClock::time_point not_after_of(const X509* certificate) {
  std::tm tm{};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(certificate), &tm) != 1) return WallClock::time_point{};
  return WallClock::from_time_t(::timegm(&tm));
}

KeyPtr new_p256_key() {
  return KeyPtr(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
}

bool set_random_serial(X509* certificate) {
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) return false;
  bytes[0] &= 0x7f;  // positive
  BIGNUM* number = BN_bin2bn(bytes, sizeof(bytes), nullptr);
  if (number == nullptr) return false;
  const bool ok = BN_to_ASN1_INTEGER(number, X509_get_serialNumber(certificate)) != nullptr;
  BN_free(number);
  return ok;
}

bool add_extension(X509* certificate, X509* issuer, int nid, const char* value) {
  X509V3_CTX context;
  X509V3_set_ctx(&context, issuer, certificate, nullptr, nullptr, 0);
  X509_EXTENSION* extension = X509V3_EXT_conf_nid(nullptr, &context, nid, value);
  if (extension == nullptr) return false;
  const bool ok = X509_add_ext(certificate, extension, -1) == 1;
  X509_EXTENSION_free(extension);
  return ok;
}

bool add_ip_san(X509* certificate, const Endpoint& ip) {
  GENERAL_NAMES* names = sk_GENERAL_NAME_new_null();
  GENERAL_NAME* name = GENERAL_NAME_new();
  ASN1_OCTET_STRING* octets = ASN1_OCTET_STRING_new();
  const int length = ip.family == Endpoint::Family::kIpv4 ? 4 : 16;
  bool ok = names != nullptr && name != nullptr && octets != nullptr &&
            ASN1_OCTET_STRING_set(octets, ip.address.data(), length) == 1;
  if (ok) {
    GENERAL_NAME_set0_value(name, GEN_IPADD, octets);
    octets = nullptr;
    ok = sk_GENERAL_NAME_push(names, name) > 0;
    if (ok) name = nullptr;
  }
  if (ok) ok = X509_add1_ext_i2d(certificate, NID_subject_alt_name, names, 0, X509V3_ADD_DEFAULT) == 1;
  ASN1_OCTET_STRING_free(octets);
  GENERAL_NAME_free(name);
  GENERAL_NAMES_free(names);
  return ok;
}

bool set_common_name(X509_NAME* name, const std::string& common_name) {
  return X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                    reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1,
                                    0) == 1;
}

bool set_validity(X509* certificate, WallClock::time_point not_before, WallClock::time_point not_after) {
  return ASN1_TIME_set(X509_getm_notBefore(certificate), WallClock::to_time_t(not_before)) != nullptr &&
         ASN1_TIME_set(X509_getm_notAfter(certificate), WallClock::to_time_t(not_after)) != nullptr;
}

// Ed25519/Ed448 keys sign without a separate digest.
const EVP_MD* digest_for(EVP_PKEY* key) {
  const int id = EVP_PKEY_get_base_id(key);
  return id == EVP_PKEY_ED25519 || id == EVP_PKEY_ED448 ? nullptr : EVP_sha256();
}

Result<std::string, std::string> read_pem_file(const std::filesystem::path& path) {
  std::error_code ec;
  const auto bytes = std::filesystem::file_size(path, ec);  // follows the Secret volume's symlinks
  if (ec) return fail("cannot read " + path.string() + ": " + ec.message());
  if (bytes > kPemFileBytesMax) return fail(path.string() + " is larger than 1 MiB");
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail("cannot open " + path.string());
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return text;
}

}  // namespace

Result<PemKeyPair, std::string> create_self_signed_ca(const std::string& common_name,
                                                      WallClock::time_point not_before,
                                                      std::chrono::seconds validity) {
  KeyPtr key = new_p256_key();
  X509Ptr ca(X509_new());
  if (!key || !ca) return fail(openssl_error("cannot create a CA key"));
  const bool ok = X509_set_version(ca.get(), 2) == 1 && set_random_serial(ca.get()) &&
                  set_validity(ca.get(), not_before, not_before + validity) &&
                  set_common_name(X509_get_subject_name(ca.get()), common_name) &&
                  X509_set_issuer_name(ca.get(), X509_get_subject_name(ca.get())) == 1 &&
                  X509_set_pubkey(ca.get(), key.get()) == 1 &&
                  add_extension(ca.get(), ca.get(), NID_basic_constraints, "critical,CA:TRUE") &&
                  add_extension(ca.get(), ca.get(), NID_key_usage, "critical,keyCertSign,cRLSign") &&
                  add_extension(ca.get(), ca.get(), NID_subject_key_identifier, "hash") &&
                  X509_sign(ca.get(), key.get(), digest_for(key.get())) > 0;
  if (!ok) return fail(openssl_error("cannot create the CA certificate"));
  return PemKeyPair{certificate_pem(ca.get()), key_pem(key.get())};
}

Result<PemKeyPair, std::string> mint_leaf(const PemKeyPair& ca, const std::string& common_name,
                                          const Endpoint& ip, WallClock::time_point not_before,
                                          std::chrono::seconds validity) {
  KeyPtr ca_key = parse_key(ca.key_pem);
  if (!ca_key) return fail(std::string("the CA key is not a PEM private key"));
  X509Ptr issuer;
  for (auto& candidate : parse_certificates(ca.cert_pem)) {
    if (X509_check_private_key(candidate.get(), ca_key.get()) == 1) {
      issuer = std::move(candidate);
      break;
    }
  }
  ERR_clear_error();
  if (!issuer) return fail(std::string("no CA certificate matches the CA key"));
  const auto issuer_not_after = not_after_of(issuer.get());
  const auto not_after = std::min(not_before + validity, issuer_not_after);
  if (not_after <= not_before) return fail(std::string("the CA certificate has expired"));

  KeyPtr key = new_p256_key();
  X509Ptr leaf(X509_new());
  if (!key || !leaf) return fail(openssl_error("cannot create a key"));
  const bool ok =
      X509_set_version(leaf.get(), 2) == 1 && set_random_serial(leaf.get()) &&
      set_validity(leaf.get(), not_before - kClockSkewAllowance, not_after) &&
      set_common_name(X509_get_subject_name(leaf.get()), common_name.empty() ? "peerd" : common_name) &&
      X509_set_issuer_name(leaf.get(), X509_get_subject_name(issuer.get())) == 1 &&
      X509_set_pubkey(leaf.get(), key.get()) == 1 &&
      add_extension(leaf.get(), issuer.get(), NID_basic_constraints, "critical,CA:FALSE") &&
      add_extension(leaf.get(), issuer.get(), NID_key_usage, "critical,digitalSignature") &&
      add_extension(leaf.get(), issuer.get(), NID_ext_key_usage, "serverAuth,clientAuth") &&
      add_extension(leaf.get(), issuer.get(), NID_authority_key_identifier, "keyid:always") &&
      add_ip_san(leaf.get(), ip) && X509_sign(leaf.get(), ca_key.get(), digest_for(ca_key.get())) > 0;
  if (!ok) return fail(openssl_error("cannot mint the leaf certificate"));
  return PemKeyPair{certificate_pem(leaf.get()), key_pem(key.get())};
}

std::string verify_chain(const std::string& cert_pem, const std::string& trusted_ca_pem,
                         WallClock::time_point at) {
  auto chain = parse_certificates(cert_pem);
  if (chain.empty()) return "no certificate";
  std::unique_ptr<X509_STORE, StoreFree> store(X509_STORE_new());
  std::unique_ptr<X509_STORE_CTX, StoreContextFree> context(X509_STORE_CTX_new());
  if (!store || !context) return "out of memory";
  for (auto& ca : parse_certificates(trusted_ca_pem)) X509_STORE_add_cert(store.get(), ca.get());
  STACK_OF(X509)* untrusted = sk_X509_new_null();
  for (size_t i = 1; i < chain.size(); ++i) sk_X509_push(untrusted, chain[i].get());
  std::string reason;
  if (X509_STORE_CTX_init(context.get(), store.get(), chain[0].get(), untrusted) != 1) {
    reason = "cannot initialise verification";
  } else {
    X509_STORE_CTX_set_time(context.get(), 0, WallClock::to_time_t(at));
    X509_STORE_CTX_set_depth(context.get(), kChainDepthMax);
    if (X509_verify_cert(context.get()) != 1) {
      reason = X509_verify_cert_error_string(X509_STORE_CTX_get_error(context.get()));
    }
  }
  sk_X509_free(untrusted);
  ERR_clear_error();
  return reason;
}

Result<std::shared_ptr<boost::asio::ssl::context>, std::string> make_peer_server_context(
    const std::string& cert_pem, const std::string& key_pem, const std::string& trusted_ca_pem) {
  namespace ssl = boost::asio::ssl;
  auto context = std::make_shared<ssl::context>(ssl::context::tls_server);
  SSL_CTX* native = context->native_handle();
  SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION);
  SSL_CTX_set_options(native, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  boost::system::error_code ec;
  context->use_certificate_chain(boost::asio::buffer(cert_pem), ec);
  if (ec) return fail("peer certificate: " + ec.message());
  context->use_private_key(boost::asio::buffer(key_pem), ssl::context::pem, ec);
  if (ec) return fail("peer key: " + ec.message());
  if (SSL_CTX_check_private_key(native) != 1)
    return fail(openssl_error("the key does not match the certificate"));
  const auto cas = parse_certificates(trusted_ca_pem);
  if (cas.empty()) return fail(std::string("no trusted CA certificate"));
  X509_STORE* store = SSL_CTX_get_cert_store(native);
  for (const auto& ca : cas) X509_STORE_add_cert(store, ca.get());
  ERR_clear_error();  // adding a CA twice "fails" harmlessly
  SSL_CTX_set_verify(native, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  SSL_CTX_set_verify_depth(native, kChainDepthMax);
  // Required for session resumption when client certificates are verified.
  static constexpr unsigned char kSessionContext[] = "peerd-peer";
  SSL_CTX_set_session_id_context(native, kSessionContext, sizeof(kSessionContext) - 1);
  return context;
}

// ---- PeerTls ----

PeerTls::PeerTls(PeerTlsOptions options, Logger logger)
    : options_(std::move(options)), logger_(std::move(logger)) {}

Result<std::unique_ptr<PeerTls>, std::string> PeerTls::create(PeerTlsOptions options, Logger logger,
                                                              WallClock::time_point now) {
  if (options.ca_dir.empty() &&
      (options.cert_file.empty() || options.key_file.empty() || options.ca_file.empty())) {
    return fail(std::string("peer TLS needs a CA directory, or a certificate, a key and a CA file"));
  }
  std::unique_ptr<PeerTls> tls(new PeerTls(std::move(options), std::move(logger)));
  auto files = tls->read_files();
  if (!files) return fail(files.error());
  auto material = tls->build(*files, now, true);
  if (!material) return fail(material.error());
  return tls;
}

std::shared_ptr<const PeerTlsMaterial> PeerTls::current() const {
  std::lock_guard lock(mutex_);
  return current_;
}

Result<PeerTls::Files, std::string> PeerTls::read_files() const {
  Files files;
  const bool ca_dir_mode = !options_.ca_dir.empty();
  const std::filesystem::path dir(options_.ca_dir);
  auto ca = read_pem_file(ca_dir_mode ? dir / "ca.crt" : std::filesystem::path(options_.ca_file));
  if (!ca) return fail(ca.error());
  auto key = read_pem_file(ca_dir_mode ? dir / "ca.key" : std::filesystem::path(options_.key_file));
  if (!key) return fail(key.error());
  files.ca = std::move(*ca);
  files.key = std::move(*key);
  if (!ca_dir_mode) {
    auto cert = read_pem_file(options_.cert_file);
    if (!cert) return fail(cert.error());
    files.cert = std::move(*cert);
  }
  return files;
}

Result<bool, std::string> PeerTls::refresh(WallClock::time_point now) {
  auto files = read_files();
  if (!files) return fail(files.error());
  auto material = build(*files, now, !(*files == files_));
  if (!material) return fail(material.error());
  return *material != nullptr;
}

// Publishes a new generation when the files changed, the leaf is due for re-minting or a retired CA's window
// closed; returns null when nothing changed.
Result<std::shared_ptr<PeerTlsMaterial>, std::string> PeerTls::build(const Files& files,
                                                                     WallClock::time_point now,
                                                                     bool files_changed) {
  const bool ca_dir_mode = !options_.ca_dir.empty();
  auto cas = parse_certificates(files.ca);
  if (cas.empty())
    return fail(std::string("no CA certificate in ") + (ca_dir_mode ? "ca.crt" : options_.ca_file));

  std::vector<RetiredCa> retired = retired_;
  if (files_changed && current_) {
    // CAs that left the bundle stay trusted for the overlap window.
    std::set<std::string> now_trusted;
    for (const auto& ca : cas) now_trusted.insert(certificate_der(ca.get()));
    for (const auto& old : parse_certificates(files_.ca)) {
      if (!now_trusted.contains(certificate_der(old.get())))
        retired.push_back({certificate_pem(old.get()), now + options_.ca_overlap});
    }
  }
  std::set<std::string> current_ders;
  for (const auto& ca : cas) current_ders.insert(certificate_der(ca.get()));
  std::erase_if(retired, [&](const RetiredCa& ca) {
    const auto parsed = parse_certificates(ca.pem);
    return ca.trusted_until <= now || parsed.empty() ||
           current_ders.contains(certificate_der(parsed[0].get()));
  });
  const bool retired_changed = retired.size() != retired_.size() || (files_changed && !retired.empty());

  PemKeyPair leaf = leaf_;
  auto leaf_issued = leaf_issued_;
  auto leaf_not_after = leaf_not_after_;
  bool leaf_changed = false;
  if (ca_dir_mode) {
    const bool half_life_passed = now >= leaf_issued + (leaf_not_after - leaf_issued) / 2;
    if (files_changed || leaf.cert_pem.empty() || half_life_passed) {
      auto minted = mint_leaf(PemKeyPair{files.ca, files.key}, options_.node_name, options_.node_ip, now,
                              options_.leaf_validity);
      if (!minted) return fail("cannot mint this node's certificate: " + minted.error());
      leaf = std::move(*minted);
      leaf_issued = now;
      const auto parsed = parse_certificates(leaf.cert_pem);
      leaf_not_after = parsed.empty() ? now : not_after_of(parsed[0].get());
      leaf_changed = true;
    }
  } else if (files_changed) {
    leaf = PemKeyPair{files.cert, files.key};
    if (const std::string reason = verify_chain(leaf.cert_pem, files.ca, now); !reason.empty())
      return fail(options_.cert_file + " does not chain to " + options_.ca_file + ": " + reason);
    const auto parsed = parse_certificates(leaf.cert_pem);
    leaf_issued = now;
    leaf_not_after = parsed.empty() ? now : not_after_of(parsed[0].get());
    leaf_changed = true;
  }
  if (!files_changed && !leaf_changed && !retired_changed) return std::shared_ptr<PeerTlsMaterial>();

  std::string trusted = files.ca;
  if (!trusted.empty() && trusted.back() != '\n') trusted += '\n';
  for (const auto& ca : retired) trusted += ca.pem;
  auto context = make_peer_server_context(leaf.cert_pem, leaf.key_pem, trusted);
  if (!context) return fail(context.error());

  auto material = std::make_shared<PeerTlsMaterial>();
  material->cert_pem = leaf.cert_pem;
  material->key_pem = leaf.key_pem;
  material->trusted_ca_pem = std::move(trusted);
  material->leaf_not_after = leaf_not_after;
  material->server_context = std::move(*context);
  {
    std::lock_guard lock(mutex_);
    material->generation = ++generation_;
    current_ = material;
    files_ = files;
    retired_ = std::move(retired);
    leaf_ = std::move(leaf);
    leaf_issued_ = leaf_issued;
    leaf_not_after_ = leaf_not_after;
  }
  logger_.info("peer TLS material loaded",
               {{"generation", material->generation},
                {"trusted_cas", cas.size() + retired_.size()},
                {"leaf_minted", ca_dir_mode && leaf_changed},
                {"leaf_expires_in_s",
                 std::chrono::duration_cast<std::chrono::seconds>(leaf_not_after - now).count()}});
  return material;
}

PeerTlsWatcher::PeerTlsWatcher(boost::asio::io_context& io, PeerTls& tls, std::chrono::milliseconds interval,
                               Logger logger)
    : tls_(tls), interval_(interval), logger_(std::move(logger)), timer_(io) {}

void PeerTlsWatcher::start() {
  arm();
}

void PeerTlsWatcher::stop() {
  boost::asio::post(timer_.get_executor(), [this] {
    stopped_ = true;
    timer_.cancel();
  });
}

void PeerTlsWatcher::arm() {
  if (stopped_) return;
  timer_.expires_after(interval_);
  timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec || stopped_) return;
    auto refreshed = tls_.refresh(WallClock::now());
    if (!refreshed && refreshed.error() != last_error_) {
      logger_.error("peer TLS refresh failed; keeping the current certificates",
                    {{"error", refreshed.error()}});
    }
    last_error_ = refreshed ? std::string() : refreshed.error();
    arm();
  });
}

}  // namespace peerd::daemon
