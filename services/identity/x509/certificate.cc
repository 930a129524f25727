#include "services/identity/x509/certificate.h"

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <memory>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "services/common/crypto.h"
#include "services/common/openssl_ptr.h"

namespace iotauth::identity::x509 {
namespace {

constexpr size_t kMaxSans = 32;

// OPENSSL_free is a macro (it passes the caller's file and line), so it cannot be an
// OpenSslFree<FreeFn> argument.
struct OpenSslMemFree {
  void operator()(void* p) const { OPENSSL_free(p); }
};

absl::Status Malformed(absl::string_view what) {
  ERR_clear_error();
  return absl::InvalidArgumentError(what);
}

std::string Asn1StringToUtf8(const ASN1_STRING* s) {
  unsigned char* out = nullptr;
  int n = ASN1_STRING_to_UTF8(&out, s);
  if (n < 0) return "";
  std::string r(reinterpret_cast<char*>(out), static_cast<size_t>(n));
  OPENSSL_free(out);
  return r;
}

}  // namespace

absl::StatusOr<absl::Time> Asn1TimeToAbsl(const ASN1_TIME* t) {
  struct tm tm {};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) {
    return absl::InvalidArgumentError("unreadable time");
  }
  return absl::FromUnixSeconds(timegm(&tm));
}

std::string DerOf(X509* x) {
  unsigned char* der = nullptr;
  int n = i2d_X509(x, &der);
  if (n <= 0) return "";
  std::string r(reinterpret_cast<char*>(der), static_cast<size_t>(n));
  OPENSSL_free(der);
  return r;
}

std::string PemOf(X509* x) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), x) != 1) return "";
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(len > 0 ? len : 0));
}

std::string NameToString(const X509_NAME* name) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253) < 0) return "";
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(len > 0 ? len : 0)).substr(0, 512);
}

// The tbsCertificate element of a DER certificate (Certificate ::= SEQUENCE {
// tbsCertificate, signatureAlgorithm, signatureValue }), header included: the bytes
// its signature covers. Empty when `der` does not start with two SEQUENCE headers.
absl::string_view TbsOf(absl::string_view der) {
  auto sequence = [](absl::string_view in, size_t* header, size_t* length) {
    if (in.size() < 2 || static_cast<uint8_t>(in[0]) != 0x30) return false;
    const auto first = static_cast<uint8_t>(in[1]);
    size_t len = first;
    size_t n = 2;
    if (first >= 0x80) {
      const size_t k = first & 0x7f;
      if (k == 0 || k > 4 || in.size() < 2 + k) return false;
      len = 0;
      for (size_t i = 0; i < k; ++i) len = (len << 8) | static_cast<uint8_t>(in[2 + i]);
      n = 2 + k;
    }
    if (in.size() - n < len) return false;
    *header = n;
    *length = len;
    return true;
  };
  size_t header = 0;
  size_t length = 0;
  if (!sequence(der, &header, &length)) return {};
  const absl::string_view body = der.substr(header, length);
  if (!sequence(body, &header, &length)) return {};
  return body.substr(0, header + length);
}

X509Ptr WithEcdsaSignatureVariant(X509* cert, EVP_PKEY* signer_key) {
  if (cert == nullptr || signer_key == nullptr || EVP_PKEY_get_base_id(signer_key) != EVP_PKEY_EC) {
    return nullptr;
  }
  char group[80];
  size_t group_len = 0;
  if (EVP_PKEY_get_utf8_string_param(signer_key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                     &group_len) != 1) {
    return nullptr;
  }
  int nid = OBJ_txt2nid(group);
  if (nid == NID_undef) nid = EC_curve_nist2nid(group);
  EcGroupPtr curve(EC_GROUP_new_by_curve_name(nid));
  X509Ptr copy(X509_dup(cert));
  if (!curve || !copy) return nullptr;
  const ASN1_BIT_STRING* sig = nullptr;
  const X509_ALGOR* alg = nullptr;
  X509_get0_signature(&sig, &alg, copy.get());
  if (sig == nullptr) return nullptr;
  const unsigned char* p = ASN1_STRING_get0_data(sig);
  EcdsaSigPtr es(d2i_ECDSA_SIG(nullptr, &p, ASN1_STRING_length(sig)));
  if (!es) return nullptr;
  const BIGNUM* r = nullptr;
  const BIGNUM* s = nullptr;
  ECDSA_SIG_get0(es.get(), &r, &s);
  BIGNUM* r2 = BN_dup(r);
  BIGNUM* s2 = BN_new();
  if (r2 == nullptr || s2 == nullptr || BN_sub(s2, EC_GROUP_get0_order(curve.get()), s) != 1 ||
      BN_is_negative(s2) || BN_is_zero(s2) || ECDSA_SIG_set0(es.get(), r2, s2) != 1) {
    BN_free(r2);
    BN_free(s2);
    return nullptr;
  }
  unsigned char* der = nullptr;
  const int der_len = i2d_ECDSA_SIG(es.get(), &der);
  if (der_len <= 0) return nullptr;
  // The copy is ours: its signature is rewritten in place, then re-encoded (the
  // tbsCertificate keeps its cached encoding).
  auto* writable = const_cast<ASN1_BIT_STRING*>(sig);
  const int set = ASN1_BIT_STRING_set(writable, der, der_len);
  OPENSSL_free(der);
  if (set != 1) return nullptr;
  writable->flags &= ~0x07L;
  writable->flags |= ASN1_STRING_FLAG_BITS_LEFT;
  return copy;
}

std::string SignatureVariantFingerprintHex(const ParsedCertificate& cert,
                                           const ParsedCertificate& signer) {
  X509Ptr variant = WithEcdsaSignatureVariant(cert.x509(), X509_get0_pubkey(signer.x509()));
  if (!variant) return "";
  const std::string der = DerOf(variant.get());
  if (der.empty()) return "";
  return crypto::HexEncode(crypto::Sha256(der));
}

bool LooksLikePem(absl::string_view data) {
  return absl::StartsWith(absl::StripLeadingAsciiWhitespace(data), "-----BEGIN");
}

absl::StatusOr<CertPtr> ParsedCertificate::FromX509(X509Ptr x509) {
  if (!x509) return Malformed("not a certificate");
  // Fills OpenSSL's extension cache now (so later concurrent reads never write) and
  // refuses certificates whose extensions do not decode.
  if (X509_check_purpose(x509.get(), -1, 0) != 1 ||
      (X509_get_extension_flags(x509.get()) & EXFLAG_INVALID) != 0) {
    return Malformed("certificate has invalid extensions");
  }
  std::shared_ptr<ParsedCertificate> c(new ParsedCertificate());
  c->der_ = DerOf(x509.get());
  if (c->der_.empty()) return Malformed("certificate does not re-encode");
  c->sha256_ = crypto::Sha256(c->der_);
  c->fingerprint_hex_ = crypto::HexEncode(c->sha256_);
  const absl::string_view tbs = TbsOf(c->der_);
  if (tbs.empty()) return Malformed("certificate has no tbsCertificate");
  c->tbs_sha256_ = crypto::Sha256(tbs);
  c->tbs_fingerprint_hex_ = crypto::HexEncode(c->tbs_sha256_);
  auto nb = Asn1TimeToAbsl(X509_get0_notBefore(x509.get()));
  auto na = Asn1TimeToAbsl(X509_get0_notAfter(x509.get()));
  if (!nb.ok() || !na.ok()) return Malformed("certificate has an unreadable validity period");
  c->not_before_ = *nb;
  c->not_after_ = *na;

  const X509_NAME* subject = X509_get_subject_name(x509.get());
  c->subject_ = NameToString(subject);
  int idx = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (idx >= 0 && X509_NAME_get_index_by_NID(subject, NID_commonName, idx) < 0) {
    c->subject_cn_ = Asn1StringToUtf8(X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx)));
  }
  const ASN1_INTEGER* serial = X509_get0_serialNumber(x509.get());
  BIGNUM* bn = ASN1_INTEGER_to_BN(serial, nullptr);
  if (bn == nullptr) return Malformed("certificate has an unreadable serial number");
  char* hex = BN_bn2hex(bn);
  BN_free(bn);
  if (hex == nullptr) return Malformed("certificate has an unreadable serial number");
  c->serial_hex_ = absl::AsciiStrToLower(hex);
  OPENSSL_free(hex);
  // BN_bn2hex pads to whole bytes; strip leading zeros for a canonical form.
  {
    bool neg = !c->serial_hex_.empty() && c->serial_hex_[0] == '-';
    std::string digits = neg ? c->serial_hex_.substr(1) : c->serial_hex_;
    size_t nz = digits.find_first_not_of('0');
    digits = nz == std::string::npos ? "0" : digits.substr(nz);
    c->serial_hex_ = neg ? "-" + digits : digits;
  }

  auto* names = static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(x509.get(), NID_subject_alt_name, nullptr, nullptr));
  if (names != nullptr) {
    for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
      const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names, i);
      if (gn->type == GEN_URI && c->san_uris_.size() < kMaxSans) {
        c->san_uris_.push_back(Asn1StringToUtf8(gn->d.uniformResourceIdentifier));
      } else if (gn->type == GEN_DNS && c->san_dns_.size() < kMaxSans) {
        c->san_dns_.push_back(Asn1StringToUtf8(gn->d.dNSName));
      }
    }
    GENERAL_NAMES_free(names);
  }
  c->self_issued_ = X509_NAME_cmp(subject, X509_get_issuer_name(x509.get())) == 0;
  // X509_check_ca says 0 for basicConstraints CA:TRUE with a keyUsage lacking
  // keyCertSign (not a usable CA); such a certificate still claims to be one.
  c->is_ca_ =
      X509_check_ca(x509.get()) >= 1 || (X509_get_extension_flags(x509.get()) & EXFLAG_CA) != 0;
  c->x509_ = std::move(x509);
  ERR_clear_error();
  return std::const_pointer_cast<const ParsedCertificate>(c);
}

absl::StatusOr<CertPtr> ParsedCertificate::FromDer(absl::string_view der) {
  if (der.empty()) return Malformed("empty certificate");
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  const unsigned char* end = p + der.size();
  X509Ptr x(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  if (!x) return Malformed("not a DER certificate");
  if (p != end) return Malformed("trailing bytes after the DER certificate");
  return FromX509(std::move(x));
}

absl::StatusOr<std::vector<CertPtr>> ParseCertificates(absl::string_view entry,
                                                       const ParseLimits& limits) {
  if (entry.empty()) return Malformed("empty chain entry");
  if (entry.size() > limits.max_entry_bytes) return Malformed("chain entry too large");
  std::vector<CertPtr> out;
  if (!LooksLikePem(entry)) {
    auto c = ParsedCertificate::FromDer(entry);
    if (!c.ok()) return c.status();
    out.push_back(*std::move(c));
    return out;
  }
  BioPtr bio(BIO_new_mem_buf(entry.data(), static_cast<int>(entry.size())));
  if (!bio) return absl::ResourceExhaustedError("out of memory");
  for (;;) {
    char* name = nullptr;
    char* header = nullptr;
    unsigned char* data = nullptr;
    long len = 0;
    if (PEM_read_bio(bio.get(), &name, &header, &data, &len) != 1) {
      const unsigned long err = ERR_peek_last_error();
      ERR_clear_error();
      if (ERR_GET_REASON(err) == PEM_R_NO_START_LINE && !out.empty()) break;
      return Malformed(out.empty() ? "no PEM certificate" : "bad PEM block after a certificate");
    }
    std::unique_ptr<char, OpenSslMemFree> n(name);
    std::unique_ptr<char, OpenSslMemFree> h(header);
    std::unique_ptr<unsigned char, OpenSslMemFree> d(data);
    if (absl::string_view(name) != "CERTIFICATE") {
      return Malformed("PEM block is not a CERTIFICATE");
    }
    if (header != nullptr && header[0] != '\0') return Malformed("PEM headers are not allowed");
    if (out.size() >= limits.max_certificates) return Malformed("too many certificates");
    auto c = ParsedCertificate::FromDer(
        absl::string_view(reinterpret_cast<const char*>(data), static_cast<size_t>(len)));
    if (!c.ok()) return c.status();
    out.push_back(*std::move(c));
  }
  return out;
}

absl::StatusOr<std::vector<CertPtr>> ParseChain(absl::Span<const absl::string_view> chain,
                                                const ParseLimits& limits) {
  if (chain.empty()) return Malformed("empty certificate chain");
  if (chain.size() > limits.max_certificates) return Malformed("too many certificates");
  size_t total = 0;
  for (absl::string_view e : chain) total += e.size();
  if (total > limits.max_total_bytes) return Malformed("certificate chain too large");
  std::vector<CertPtr> out;
  for (absl::string_view e : chain) {
    auto certs = ParseCertificates(e, limits);
    if (!certs.ok()) return certs.status();
    for (auto& c : *certs) out.push_back(std::move(c));
    if (out.size() > limits.max_certificates) return Malformed("too many certificates");
  }
  return out;
}

absl::StatusOr<CrlPtr> ParsedCrl::Parse(absl::string_view data, size_t max_bytes) {
  if (data.empty()) return Malformed("empty CRL");
  if (data.size() > max_bytes) return Malformed("CRL too large");
  X509CrlPtr crl;
  if (LooksLikePem(data)) {
    BioPtr bio(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
    if (!bio) return absl::ResourceExhaustedError("out of memory");
    crl.reset(PEM_read_bio_X509_CRL(bio.get(), nullptr, nullptr, nullptr));
  } else {
    const auto* p = reinterpret_cast<const unsigned char*>(data.data());
    const unsigned char* end = p + data.size();
    crl.reset(d2i_X509_CRL(nullptr, &p, static_cast<long>(data.size())));
    if (crl && p != end) return Malformed("trailing bytes after the DER CRL");
  }
  if (!crl) return Malformed("not a CRL");
  std::shared_ptr<ParsedCrl> out(new ParsedCrl());
  auto tu = Asn1TimeToAbsl(X509_CRL_get0_lastUpdate(crl.get()));
  if (!tu.ok()) return Malformed("CRL has an unreadable thisUpdate");
  out->this_update_ = *tu;
  if (X509_CRL_get0_nextUpdate(crl.get()) != nullptr) {
    auto nu = Asn1TimeToAbsl(X509_CRL_get0_nextUpdate(crl.get()));
    if (!nu.ok()) return Malformed("CRL has an unreadable nextUpdate");
    out->next_update_ = *nu;
  }
  int crit = 0;
  auto* num =
      static_cast<ASN1_INTEGER*>(X509_CRL_get_ext_d2i(crl.get(), NID_crl_number, &crit, nullptr));
  if (num != nullptr) {
    BIGNUM* bn = ASN1_INTEGER_to_BN(num, nullptr);
    ASN1_INTEGER_free(num);
    if (bn != nullptr) {
      char* dec = BN_bn2dec(bn);
      if (dec != nullptr) out->crl_number_ = dec;
      OPENSSL_free(dec);
      BN_free(bn);
    }
  }
  STACK_OF(X509_REVOKED)* revoked = X509_CRL_get_REVOKED(crl.get());
  out->revoked_count_ = revoked == nullptr ? 0 : sk_X509_REVOKED_num(revoked);
  out->crl_ = std::move(crl);
  ERR_clear_error();
  return std::const_pointer_cast<const ParsedCrl>(out);
}

}  // namespace iotauth::identity::x509
