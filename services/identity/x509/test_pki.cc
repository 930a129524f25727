#include "services/identity/x509/test_pki.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include <cstdlib>
#include <map>
#include <mutex>

namespace iotauth::identity::x509::testing {
namespace {

void Die(const char* what) {
  ERR_print_errors_fp(stderr);
  std::fprintf(stderr, "test_pki: %s failed\n", what);
  std::abort();
}

void AddExt(X509* cert, X509* issuer, int nid, const std::string& value) {
  if (value.empty()) return;
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (ext == nullptr) Die(value.c_str());
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
}

// An extension `obj` whose value is `der` as given (it need not decode).
void AddRawExt(X509* cert, const ASN1_OBJECT* obj, bool critical, const std::string& der) {
  ASN1_OCTET_STRING* data = ASN1_OCTET_STRING_new();
  ASN1_OCTET_STRING_set(data, reinterpret_cast<const unsigned char*>(der.data()),
                        static_cast<int>(der.size()));
  X509_EXTENSION* ext = X509_EXTENSION_create_by_OBJ(nullptr, obj, critical ? 1 : 0, data);
  if (ext == nullptr) Die("X509_EXTENSION_create_by_OBJ");
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  ASN1_OCTET_STRING_free(data);
}

std::string BioString(BIO* bio) {
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(len));
}

}  // namespace

KeyPtr NewKey(KeyType type) {
  EVP_PKEY* k = nullptr;
  switch (type) {
    case KeyType::kP256:
      k = EVP_EC_gen("P-256");
      break;
    case KeyType::kP384:
      k = EVP_EC_gen("P-384");
      break;
    case KeyType::kP521:
      k = EVP_EC_gen("P-521");
      break;
    case KeyType::kRsa2048:
      k = EVP_RSA_gen(2048);
      break;
    case KeyType::kRsa1024:
      k = EVP_RSA_gen(1024);
      break;
    case KeyType::kRsa2052:  // a modulus of a part byte
      k = EVP_RSA_gen(2052);
      break;
    case KeyType::kEd25519:
      k = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
      break;
  }
  if (k == nullptr) Die("keygen");
  return {k, PkeyFree()};
}

KeyPtr Key(KeyType type) {
  static std::mutex mu;
  static auto* keys = new std::map<KeyType, KeyPtr>();
  std::lock_guard<std::mutex> lock(mu);
  auto& k = (*keys)[type];
  if (!k) k = NewKey(type);
  return k;
}

X509Ptr MakeCert(const CertSpec& spec, EVP_PKEY* subject_key, X509* issuer, EVP_PKEY* issuer_key) {
  X509Ptr cert(X509_new());
  X509* x = cert.get();
  X509_set_version(x, X509_VERSION_3);
  long serial = spec.serial;
  if (serial == 0) {
    unsigned char b[4];
    RAND_bytes(b, sizeof(b));
    serial = 1 + ((b[0] << 16 | b[1] << 8 | b[2]) & 0x7fffff);
  }
  ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
  X509_NAME* name = X509_NAME_new();
  if (!spec.org.empty()) {
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                               reinterpret_cast<const unsigned char*>(spec.org.c_str()), -1, -1, 0);
  }
  if (!spec.cn.empty()) {
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                               reinterpret_cast<const unsigned char*>(spec.cn.c_str()), -1, -1, 0);
  }
  X509_set_subject_name(x, name);
  X509_set_issuer_name(x, issuer != nullptr ? X509_get_subject_name(issuer) : name);
  X509_NAME_free(name);
  ASN1_TIME_set(X509_getm_notBefore(x), absl::ToTimeT(spec.not_before));
  ASN1_TIME_set(X509_getm_notAfter(x), absl::ToTimeT(spec.not_after));
  X509_set_pubkey(x, subject_key);
  X509* iss = issuer != nullptr ? issuer : x;
  if (!spec.no_basic_constraints) {
    std::string bc = spec.ca ? "critical,CA:TRUE" : "critical,CA:FALSE";
    if (spec.ca && spec.path_len >= 0) bc += ",pathlen:" + std::to_string(spec.path_len);
    AddExt(x, iss, NID_basic_constraints, bc);
  }
  if (!spec.omit_key_usage) {
    std::string ku = spec.key_usage;
    if (ku.empty()) ku = spec.ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature";
    AddExt(x, iss, NID_key_usage, ku);
  }
  AddExt(x, iss, NID_ext_key_usage, spec.eku);
  AddExt(x, iss, NID_subject_key_identifier, "hash");
  if (issuer != nullptr || spec.ca) AddExt(x, iss, NID_authority_key_identifier, "keyid:always");
  AddExt(x, iss, NID_subject_alt_name, spec.san);
  AddExt(x, iss, NID_name_constraints, spec.name_constraints);
  AddExt(x, iss, NID_policy_constraints, spec.policy_constraints);
  for (const CertSpec::RawExtension& raw : spec.raw_extensions) {
    AddRawExt(x, OBJ_nid2obj(raw.nid), raw.critical, raw.der);
  }
  if (spec.unknown_critical_extension) {
    ASN1_OBJECT* obj = OBJ_txt2obj("1.3.6.1.4.1.55555.1", 1);
    AddRawExt(x, obj, /*critical=*/true, std::string("\x05\x00", 2));  // DER NULL
    ASN1_OBJECT_free(obj);
  }
  EVP_PKEY* signer = issuer_key != nullptr ? issuer_key : subject_key;
  const EVP_MD* md = EVP_PKEY_get_base_id(signer) == EVP_PKEY_ED25519
                         ? nullptr
                         : (spec.md != nullptr ? spec.md : EVP_sha256());
  if (X509_sign(x, signer, md) <= 0) Die("X509_sign");
  return cert;
}

CertPtr Parsed(X509* x) {
  X509_up_ref(x);
  auto c = ParsedCertificate::FromX509(X509Ptr(x));
  if (!c.ok()) Die("parse test certificate");
  return *c;
}

std::string Pem(X509* x) { return PemOf(x); }
std::string Der(X509* x) { return DerOf(x); }

std::string MakeCsrPem(const std::string& cn, EVP_PKEY* key) {
  X509_REQ* req = X509_REQ_new();
  X509_REQ_set_version(req, 0);
  X509_NAME* name = X509_REQ_get_subject_name(req);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_REQ_set_pubkey(req, key);
  const EVP_MD* md = EVP_PKEY_get_base_id(key) == EVP_PKEY_ED25519 ? nullptr : EVP_sha256();
  if (X509_REQ_sign(req, key, md) <= 0) Die("X509_REQ_sign");
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509_REQ(bio, req);
  std::string out = BioString(bio);
  BIO_free(bio);
  X509_REQ_free(req);
  return out;
}

std::string MakeCrlPem(X509* issuer, EVP_PKEY* issuer_key, const std::vector<long>& serials,
                       absl::Time this_update, absl::Time next_update, long crl_number,
                       long delta_base, bool akid_issuer_serial) {
  X509_CRL* crl = X509_CRL_new();
  X509_CRL_set_version(crl, 1);
  X509_CRL_set_issuer_name(crl, X509_get_subject_name(issuer));
  ASN1_TIME* t = ASN1_TIME_new();
  ASN1_TIME_set(t, absl::ToTimeT(this_update));
  X509_CRL_set1_lastUpdate(crl, t);
  ASN1_TIME_set(t, absl::ToTimeT(next_update));
  X509_CRL_set1_nextUpdate(crl, t);
  for (long s : serials) {
    X509_REVOKED* r = X509_REVOKED_new();
    ASN1_INTEGER* serial = ASN1_INTEGER_new();
    ASN1_INTEGER_set(serial, s);
    X509_REVOKED_set_serialNumber(r, serial);
    ASN1_TIME_set(t, absl::ToTimeT(this_update));
    X509_REVOKED_set_revocationDate(r, t);
    X509_CRL_add0_revoked(crl, r);
    ASN1_INTEGER_free(serial);
  }
  ASN1_TIME_free(t);
  ASN1_INTEGER* num = ASN1_INTEGER_new();
  ASN1_INTEGER_set(num, crl_number);
  X509_CRL_add1_ext_i2d(crl, NID_crl_number, num, 0, 0);
  ASN1_INTEGER_free(num);
  if (delta_base > 0) {
    ASN1_INTEGER* base = ASN1_INTEGER_new();
    ASN1_INTEGER_set(base, delta_base);
    X509_CRL_add1_ext_i2d(crl, NID_delta_crl, base, 1, 0);
    ASN1_INTEGER_free(base);
  }
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, nullptr, nullptr, crl, 0);
  X509_EXTENSION* akid =
      X509V3_EXT_conf_nid(nullptr, &ctx, NID_authority_key_identifier,
                          akid_issuer_serial ? "keyid:always,issuer:always" : "keyid:always");
  if (akid != nullptr) {
    X509_CRL_add_ext(crl, akid, -1);
    X509_EXTENSION_free(akid);
  }
  X509_CRL_sort(crl);
  const EVP_MD* md = EVP_PKEY_get_base_id(issuer_key) == EVP_PKEY_ED25519 ? nullptr : EVP_sha256();
  if (X509_CRL_sign(crl, issuer_key, md) <= 0) Die("X509_CRL_sign");
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509_CRL(bio, crl);
  std::string out = BioString(bio);
  BIO_free(bio);
  X509_CRL_free(crl);
  return out;
}

}  // namespace iotauth::identity::x509::testing
