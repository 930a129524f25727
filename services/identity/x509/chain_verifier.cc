#include "services/identity/x509/chain_verifier.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "services/common/openssl_ptr.h"

namespace iotauth::identity::x509 {
namespace {

namespace v1 = ::iotauth::identity::v1;

// sk_X509_free is a macro: no OpenSslFree<FreeFn> for it.
struct StackFree {
  void operator()(STACK_OF(X509) * s) const { sk_X509_free(s); }
};

// Per-verification facts the verify callback needs.
struct CallbackState {
  const ChainPolicy* policy;
  absl::Time now;
};

int VerifyCallback(int ok, X509_STORE_CTX* ctx) {
  if (ok == 1) return 1;
  const auto* st = static_cast<const CallbackState*>(X509_STORE_CTX_get_app_data(ctx));
  if (st == nullptr) return ok;
  switch (X509_STORE_CTX_get_error(ctx)) {
    case X509_V_ERR_UNABLE_TO_GET_CRL: {
      // CRLs are optional per CA unless the policy requires them. But a CA that has
      // a CRL which OpenSSL would not apply to this certificate (its authority key
      // id names another certificate of the CA, a scope or distribution point it
      // does not match) is not a CA without a CRL: its revocations must not be
      // skipped. Revocation status unknown: fail closed.
      if (st->policy->require_crls) return 0;
      X509* cert = X509_STORE_CTX_get_current_cert(ctx);
      if (cert == nullptr) return 0;
      // Only where the issuer is in the path (its CRL could have been checked): the
      // anchor's own issuer is not trusted here, nor is its CRL.
      STACK_OF(X509)* path = X509_STORE_CTX_get0_chain(ctx);
      if (path == nullptr || X509_STORE_CTX_get_error_depth(ctx) + 1 >= sk_X509_num(path)) {
        return 1;
      }
      STACK_OF(X509_CRL)* crls = X509_STORE_CTX_get1_crls(ctx, X509_get_issuer_name(cert));
      const bool issuer_has_crl = crls != nullptr && sk_X509_CRL_num(crls) > 0;
      sk_X509_CRL_pop_free(crls, X509_CRL_free);
      return issuer_has_crl ? 0 : 1;
    }
    case X509_V_ERR_CRL_HAS_EXPIRED: {
      if (st->policy->stale_crl == StaleCrlPolicy::kUseStale) return 1;
      if (st->policy->stale_crl == StaleCrlPolicy::kGrace) {
        X509_CRL* crl = X509_STORE_CTX_get0_current_crl(ctx);
        const ASN1_TIME* next = crl == nullptr ? nullptr : X509_CRL_get0_nextUpdate(crl);
        auto t = Asn1TimeToAbsl(next);
        if (t.ok() && st->now <= *t + st->policy->stale_crl_grace) return 1;
      }
      return 0;
    }
    case X509_V_ERR_CERT_HAS_EXPIRED: {
      // RFC 5280 4.1.2.5: the validity period runs "from notBefore through notAfter,
      // inclusive", at the encoding's one-second granularity. OpenSSL calls a
      // certificate expired from its notAfter second on; it is still valid in it.
      X509* cert = X509_STORE_CTX_get_current_cert(ctx);
      return cert != nullptr &&
                     ASN1_TIME_cmp_time_t(X509_get0_notAfter(cert), absl::ToTimeT(st->now)) == 0
                 ? 1
                 : 0;
    }
    default:
      return 0;
  }
}

}  // namespace

TrustStore::~TrustStore() { X509_STORE_free(store_); }

absl::StatusOr<std::shared_ptr<const TrustStore>> TrustStore::Create(
    std::vector<CertPtr> anchors, std::vector<CertPtr> intermediates, std::vector<CrlPtr> crls) {
  std::shared_ptr<TrustStore> t(new TrustStore());
  t->store_ = X509_STORE_new();
  if (t->store_ == nullptr) return absl::ResourceExhaustedError("X509_STORE_new failed");
  for (const CertPtr& c : anchors) {
    // A duplicate is harmless (OpenSSL ignores it).
    X509_STORE_add_cert(t->store_, c->x509());
    t->by_pointer_[c->x509()] = c;
  }
  for (const CertPtr& c : intermediates) t->by_pointer_[c->x509()] = c;
  for (const CrlPtr& crl : crls) {
    X509_STORE_add_crl(t->store_, crl->crl());
    t->earliest_next_update_ = std::min(t->earliest_next_update_, crl->next_update());
  }
  ERR_clear_error();
  t->anchors_ = std::move(anchors);
  t->intermediates_ = std::move(intermediates);
  t->crls_ = std::move(crls);
  return std::const_pointer_cast<const TrustStore>(t);
}

CertPtr TrustStore::Find(const X509* x) const {
  auto it = by_pointer_.find(x);
  return it == by_pointer_.end() ? nullptr : it->second;
}

DenyReason ReasonForX509Error(int error) {
  switch (error) {
    case X509_V_OK:
      return v1::DENY_REASON_UNSPECIFIED;
    case X509_V_ERR_CERT_HAS_EXPIRED:
      return v1::DENY_REASON_EXPIRED;
    case X509_V_ERR_CERT_NOT_YET_VALID:
      return v1::DENY_REASON_NOT_YET_VALID;
    case X509_V_ERR_CERT_REVOKED:
    // Revocation status unknown: fail closed with the revocation reason.
    case X509_V_ERR_UNABLE_TO_GET_CRL:
    case X509_V_ERR_CRL_HAS_EXPIRED:
    case X509_V_ERR_CRL_NOT_YET_VALID:
    case X509_V_ERR_UNABLE_TO_GET_CRL_ISSUER:
    case X509_V_ERR_DIFFERENT_CRL_SCOPE:
    case X509_V_ERR_UNHANDLED_CRITICAL_CRL_EXTENSION:
    case X509_V_ERR_CRL_PATH_VALIDATION_ERROR:
    case X509_V_ERR_ERROR_IN_CRL_LAST_UPDATE_FIELD:
    case X509_V_ERR_ERROR_IN_CRL_NEXT_UPDATE_FIELD:
    case X509_V_ERR_KEYUSAGE_NO_CRL_SIGN:
      return v1::DENY_REASON_REVOKED;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_CERT_UNTRUSTED:
    case X509_V_ERR_CERT_REJECTED:
    case X509_V_ERR_SUBJECT_ISSUER_MISMATCH:
    case X509_V_ERR_AKID_SKID_MISMATCH:
    case X509_V_ERR_AKID_ISSUER_SERIAL_MISMATCH:
      return v1::DENY_REASON_UNTRUSTED_ISSUER;
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
    case X509_V_ERR_CRL_SIGNATURE_FAILURE:
    case X509_V_ERR_UNABLE_TO_DECRYPT_CERT_SIGNATURE:
    case X509_V_ERR_UNABLE_TO_DECRYPT_CRL_SIGNATURE:
    case X509_V_ERR_UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY:
      return v1::DENY_REASON_BAD_SIGNATURE;
    case X509_V_ERR_INVALID_PURPOSE:
    case X509_V_ERR_KEYUSAGE_NO_CERTSIGN:
    case X509_V_ERR_KEYUSAGE_NO_DIGITAL_SIGNATURE:
      return v1::DENY_REASON_WRONG_KEY_USAGE;
    case X509_V_ERR_CA_KEY_TOO_SMALL:
    case X509_V_ERR_EE_KEY_TOO_SMALL:
    case X509_V_ERR_CA_MD_TOO_WEAK:
    case X509_V_ERR_UNSUPPORTED_SIGNATURE_ALGORITHM:
    case X509_V_ERR_SIGNATURE_ALGORITHM_MISMATCH:
    case X509_V_ERR_SIGNATURE_ALGORITHM_INCONSISTENCY:
    case X509_V_ERR_EC_KEY_EXPLICIT_PARAMS:
      return v1::DENY_REASON_WEAK_ALGORITHM;
    case X509_V_ERR_ERROR_IN_CERT_NOT_BEFORE_FIELD:
    case X509_V_ERR_ERROR_IN_CERT_NOT_AFTER_FIELD:
    case X509_V_ERR_INVALID_EXTENSION:
    case X509_V_ERR_OUT_OF_MEM:
    case X509_V_ERR_UNNESTED_RESOURCE:
      return v1::DENY_REASON_MALFORMED;
    default:
      // INVALID_CA, PATH_LENGTH_EXCEEDED, CERT_CHAIN_TOO_LONG, name constraints
      // (PERMITTED/EXCLUDED_VIOLATION, SUBTREE_MINMAX, UNSUPPORTED_*),
      // UNHANDLED_CRITICAL_EXTENSION, INVALID_NON_CA, strict-profile errors
      // (MISSING_*_KEY_IDENTIFIER, ISSUER_NAME_EMPTY, ...), proxy and policy errors.
      return v1::DENY_REASON_CONSTRAINT_VIOLATED;
  }
}

Verdict CheckAlgorithms(const ParsedCertificate& cert, const AlgorithmPolicy& policy,
                        bool check_signature) {
  const EVP_PKEY* pk = X509_get0_pubkey(cert.x509());
  ERR_clear_error();
  if (pk == nullptr) {
    return Verdict::Deny(v1::DENY_REASON_WEAK_ALGORITHM,
                         absl::StrCat("unsupported public key in ", cert.subject()));
  }
  const int type = EVP_PKEY_get_base_id(pk);
  switch (type) {
    case EVP_PKEY_RSA:
    case EVP_PKEY_RSA_PSS:
      if (EVP_PKEY_get_bits(pk) < policy.min_rsa_bits) {
        return Verdict::Deny(v1::DENY_REASON_WEAK_ALGORITHM,
                             absl::StrCat("RSA key of ", EVP_PKEY_get_bits(pk), " bits (minimum ",
                                          policy.min_rsa_bits, ") in ", cert.subject()));
      }
      // No key generator makes a modulus of a part byte; one that has one was
      // made by hand (the Web PKI refuses them too).
      if (EVP_PKEY_get_bits(pk) % 8 != 0) {
        return Verdict::Deny(
            v1::DENY_REASON_WEAK_ALGORITHM,
            absl::StrCat("RSA modulus of ", EVP_PKEY_get_bits(pk),
                         " bits is not a whole number of bytes in ", cert.subject()));
      }
      break;
    case EVP_PKEY_EC: {
      char group[64] = {0};
      size_t len = 0;
      if (EVP_PKEY_get_group_name(pk, group, sizeof(group), &len) != 1) {
        ERR_clear_error();
        return Verdict::Deny(
            v1::DENY_REASON_WEAK_ALGORITHM,
            absl::StrCat("EC key with explicit or unknown curve in ", cert.subject()));
      }
      absl::string_view g(group, len);
      const bool ok = (g == "prime256v1" && policy.allow_p256) ||
                      (g == "secp384r1" && policy.allow_p384) ||
                      (g == "secp521r1" && policy.allow_p521);
      if (!ok) {
        return Verdict::Deny(v1::DENY_REASON_WEAK_ALGORITHM,
                             absl::StrCat("EC curve ", g, " not allowed in ", cert.subject()));
      }
      break;
    }
    case EVP_PKEY_ED25519:
      if (!policy.allow_ed25519) {
        return Verdict::Deny(v1::DENY_REASON_WEAK_ALGORITHM, "Ed25519 keys are not allowed");
      }
      break;
    default:
      return Verdict::Deny(
          v1::DENY_REASON_WEAK_ALGORITHM,
          absl::StrCat("key type ", OBJ_nid2sn(type), " not allowed in ", cert.subject()));
  }
  if (!check_signature) return Verdict::Pass();
  int mdnid = NID_undef;
  int pknid = NID_undef;
  int secbits = 0;
  uint32_t flags = 0;
  if (X509_get_signature_info(cert.x509(), &mdnid, &pknid, &secbits, &flags) != 1 ||
      (flags & X509_SIG_INFO_VALID) == 0) {
    ERR_clear_error();
    return Verdict::Deny(v1::DENY_REASON_WEAK_ALGORITHM,
                         absl::StrCat("unsupported signature algorithm in ", cert.subject()));
  }
  switch (mdnid) {
    case NID_md5:
    case NID_md4:
    case NID_md2:
    case NID_sha1:
    case NID_md5_sha1:
    case NID_mdc2:
    case NID_ripemd160:
      return Verdict::Deny(v1::DENY_REASON_WEAK_ALGORITHM,
                           absl::StrCat(OBJ_nid2sn(mdnid), " signature on ", cert.subject()));
    case NID_sha224:
      if (!policy.allow_sha224) {
        return Verdict::Deny(v1::DENY_REASON_WEAK_ALGORITHM,
                             absl::StrCat("SHA-224 signature on ", cert.subject()));
      }
      break;
    case NID_undef:
      if (pknid != NID_ED25519) {
        return Verdict::Deny(v1::DENY_REASON_WEAK_ALGORITHM,
                             absl::StrCat("unsupported signature algorithm in ", cert.subject()));
      }
      break;
    default:
      break;
  }
  return Verdict::Pass();
}

namespace {

ChainResult VerifyChainOnce(const TrustStore& trust, const CertPtr& leaf,
                            absl::Span<const CertPtr> intermediates, absl::Time now,
                            const ChainPolicy& policy);

// 4.2.1.10: "either the permittedSubtrees field or the excludedSubtrees field MUST
// be present", and neither may be an empty sequence (SIZE (1..MAX)).
bool HasSubtrees(const NAME_CONSTRAINTS& nc) {
  const int permitted =
      nc.permittedSubtrees == nullptr ? -1 : sk_GENERAL_SUBTREE_num(nc.permittedSubtrees);
  const int excluded =
      nc.excludedSubtrees == nullptr ? -1 : sk_GENERAL_SUBTREE_num(nc.excludedSubtrees);
  return permitted != 0 && excluded != 0 && (permitted > 0 || excluded > 0);
}

// RFC 5280 rules on the extensions of a certificate below the anchor that OpenSSL's
// path validation does not apply: the first one broken, or null. Each extension is
// decoded once.
const char* ExtensionProfileViolation(X509* x) {
  for (int i = 0; i < X509_get_ext_count(x); ++i) {
    X509_EXTENSION* ext = X509_get_ext(x, i);
    const int nid = OBJ_obj2nid(X509_EXTENSION_get_object(ext));
    // 4.2.1.11: "Conforming CAs MUST mark this extension as critical."
    if (nid == NID_policy_constraints && X509_EXTENSION_get_critical(ext) == 0) {
      return "certificate has a non-critical policyConstraints extension";
    }
    const X509V3_EXT_METHOD* method = X509V3_EXT_get(ext);
    if (method == nullptr) continue;  // unknown: OpenSSL refuses it if critical
    // 4.2: an extension of a known type that does not decode makes the certificate
    // unusable (OpenSSL decodes only the ones it acts on, e.g. not
    // authorityInfoAccess).
    void* decoded = X509V3_EXT_d2i(ext);
    if (decoded == nullptr) return "certificate has an extension that does not decode";
    const bool no_subtrees =
        nid == NID_name_constraints && !HasSubtrees(*static_cast<NAME_CONSTRAINTS*>(decoded));
    if (method->it != nullptr) {
      ASN1_item_free(static_cast<ASN1_VALUE*>(decoded), ASN1_ITEM_ptr(method->it));
    } else if (method->ext_free != nullptr) {
      method->ext_free(decoded);
    }
    if (no_subtrees) return "certificate has a nameConstraints extension without subtrees";
  }
  return nullptr;
}

absl::string_view Ia5View(const ASN1_IA5STRING* s) {
  return s == nullptr ? absl::string_view()
                      : absl::string_view(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                                          static_cast<size_t>(ASN1_STRING_length(s)));
}

// A wildcard dNSName ("*.example.com") matches a name ("bar.example.com") that an
// excluded subtree one label under its base names, while the wildcard's own text
// lies outside that subtree; OpenSSL compares the text alone and lets it through
// (the case of CVE-2025-61727 in Go's verifier). Returns "<SAN> against <subtree>" for the first
// wildcard SAN of `leaf` that reaches into an excluded dNSName subtree of a CA in
// `path`, or "" when none does.
std::string WildcardIntoExcludedSubtree(X509* leaf, absl::Span<const CertPtr> path) {
  GeneralNamesPtr sans(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(leaf, NID_subject_alt_name, nullptr, nullptr)));
  if (sans == nullptr) return "";
  std::vector<absl::string_view> bases;  // "example.com" for "*.example.com"
  for (int i = 0; i < sk_GENERAL_NAME_num(sans.get()); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(sans.get(), i);
    if (gn->type != GEN_DNS) continue;
    absl::string_view name = Ia5View(gn->d.dNSName);
    if (absl::ConsumePrefix(&name, "*.") && !name.empty()) bases.push_back(name);
  }
  if (bases.empty()) return "";
  for (const CertPtr& ca : path) {
    NameConstraintsPtr nc(static_cast<NAME_CONSTRAINTS*>(
        X509_get_ext_d2i(ca->x509(), NID_name_constraints, nullptr, nullptr)));
    if (nc == nullptr || nc->excludedSubtrees == nullptr) continue;
    for (int i = 0; i < sk_GENERAL_SUBTREE_num(nc->excludedSubtrees); ++i) {
      const GENERAL_SUBTREE* st = sk_GENERAL_SUBTREE_value(nc->excludedSubtrees, i);
      if (st->base == nullptr || st->base->type != GEN_DNS) continue;
      // A leading dot (".bar.example.com", OpenSSL's form) excludes the subdomains
      // only, which are out of a one-label wildcard's reach.
      const absl::string_view excluded = Ia5View(st->base->d.dNSName);
      if (excluded.empty() || excluded[0] == '.') continue;
      for (absl::string_view base : bases) {
        // One label under the base: the wildcard matches the subtree's own name.
        // (A subtree at the base or above it is OpenSSL's own case: the wildcard's
        // text ends with it.)
        if (excluded.size() > base.size() + 1 && absl::EndsWithIgnoreCase(excluded, base) &&
            excluded[excluded.size() - base.size() - 1] == '.' &&
            excluded.substr(0, excluded.size() - base.size() - 1).find('.') ==
                absl::string_view::npos) {
          return absl::StrCat("*.", base, " against excluded ", excluded);
        }
      }
    }
  }
  return "";
}

}  // namespace

ChainResult VerifyChain(const TrustStore& trust, const CertPtr& leaf,
                        absl::Span<const CertPtr> intermediates, absl::Time now,
                        const ChainPolicy& policy) {
  if (!policy.partial_chain) return VerifyChainOnce(trust, leaf, intermediates, now, policy);
  // Full chains first. With partial chains allowed, OpenSSL stops at the first
  // trusted certificate: a registered intermediate would end the path, and its root's
  // CRL (and any revocation of the intermediate itself) would never be checked. A
  // partial chain is tried only when no self-signed anchor is reachable, never after
  // a full chain was refused for a reason of its own (revoked, expired, ...).
  ChainPolicy full = policy;
  full.partial_chain = false;
  ChainResult r = VerifyChainOnce(trust, leaf, intermediates, now, full);
  if (r.verdict.ok()) return r;
  switch (r.openssl_error) {
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
      return VerifyChainOnce(trust, leaf, intermediates, now, policy);
    default:
      return r;
  }
}

namespace {

ChainResult VerifyChainOnce(const TrustStore& trust, const CertPtr& leaf,
                            absl::Span<const CertPtr> intermediates, absl::Time now,
                            const ChainPolicy& policy) {
  ChainResult r;
  std::unique_ptr<STACK_OF(X509), StackFree> untrusted(sk_X509_new_null());
  X509StoreCtxPtr ctx(X509_STORE_CTX_new());
  if (!untrusted || !ctx) {
    r.verdict = Verdict::Deny(v1::DENY_REASON_INTERNAL, "out of memory");
    return r;
  }
  for (const CertPtr& c : intermediates) sk_X509_push(untrusted.get(), c->x509());
  for (const CertPtr& c : trust.intermediates()) sk_X509_push(untrusted.get(), c->x509());
  if (X509_STORE_CTX_init(ctx.get(), trust.store(), leaf->x509(), untrusted.get()) != 1) {
    ERR_clear_error();
    r.verdict = Verdict::Deny(v1::DENY_REASON_INTERNAL, "X509_STORE_CTX_init failed");
    return r;
  }
  X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(ctx.get());
  X509_VERIFY_PARAM_set_time(param, absl::ToTimeT(now));
  X509_VERIFY_PARAM_set_depth(param, policy.max_depth);
  // Our own algorithm policy below replaces OpenSSL's security levels.
  X509_VERIFY_PARAM_set_auth_level(param, 0);
  unsigned long flags = 0;
  if (policy.strict) flags |= X509_V_FLAG_X509_STRICT;
  if (policy.partial_chain) flags |= X509_V_FLAG_PARTIAL_CHAIN;
  if (policy.check_crls && (policy.require_crls || !trust.crls().empty())) {
    flags |= X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL;
  }
  X509_VERIFY_PARAM_set_flags(param, flags);
  if (policy.purpose != 0) {
    X509_STORE_CTX_set_purpose(ctx.get(), policy.purpose);
    X509_VERIFY_PARAM_set_purpose(param, policy.purpose);
  }
  CallbackState state{&policy, now};
  X509_STORE_CTX_set_app_data(ctx.get(), &state);
  X509_STORE_CTX_set_verify_cb(ctx.get(), &VerifyCallback);

  const int ok = X509_verify_cert(ctx.get());
  if (ok != 1) {
    r.openssl_error = X509_STORE_CTX_get_error(ctx.get());
    r.error_depth = X509_STORE_CTX_get_error_depth(ctx.get());
    if (r.openssl_error == X509_V_OK) r.openssl_error = X509_V_ERR_UNSPECIFIED;
    ERR_clear_error();
    DenyReason reason = ReasonForX509Error(r.openssl_error);
    if (r.openssl_error == X509_V_ERR_INVALID_CA) {
      // OpenSSL folds "CA:TRUE but keyUsage lacks keyCertSign" into INVALID_CA.
      X509* bad = X509_STORE_CTX_get_current_cert(ctx.get());
      if (bad != nullptr && (X509_get_extension_flags(bad) & EXFLAG_CA) != 0 &&
          (X509_get_extension_flags(bad) & EXFLAG_KUSAGE) != 0 &&
          (X509_get_key_usage(bad) & KU_KEY_CERT_SIGN) == 0) {
        reason = v1::DENY_REASON_WRONG_KEY_USAGE;
      }
    }
    r.verdict = Verdict::Deny(reason, absl::StrCat(X509_verify_cert_error_string(r.openssl_error),
                                                   " at depth ", r.error_depth));
    return r;
  }
  // Map the built path back to our parsed certificates.
  STACK_OF(X509)* chain = X509_STORE_CTX_get0_chain(ctx.get());
  const int n = sk_X509_num(chain);
  r.path.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    X509* x = sk_X509_value(chain, i);
    CertPtr c;
    if (x == leaf->x509()) {
      c = leaf;
    } else {
      for (const CertPtr& m : intermediates) {
        if (m->x509() == x) c = m;
      }
      if (c == nullptr) c = trust.Find(x);
    }
    if (c == nullptr) {
      X509_up_ref(x);
      auto parsed = ParsedCertificate::FromX509(X509Ptr(x));
      if (!parsed.ok()) {
        r.verdict = Verdict::Deny(v1::DENY_REASON_MALFORMED, "unparseable certificate in path");
        return r;
      }
      c = *std::move(parsed);
    }
    r.valid_from = std::max(r.valid_from, c->not_before());
    r.valid_until = std::min(r.valid_until, c->not_after());
    r.path.push_back(std::move(c));
  }
  // Also when the leaf is itself a trust anchor (a path of one): a registered CA's
  // own certificate is no device certificate.
  if (policy.reject_ca_leaf && leaf->is_ca()) {
    r.error_depth = 0;
    r.verdict = Verdict::Deny(v1::DENY_REASON_CONSTRAINT_VIOLATED,
                              "leaf certificate is a CA (basicConstraints CA:TRUE)");
    r.path.clear();
    return r;
  }
  // RFC 5280 4.2.1.10: "The name constraints extension ... MUST be used only in a CA
  // certificate." OpenSSL ignores it on a leaf, critical or not.
  if (policy.check_profile && r.path.size() > 1 &&
      X509_get_ext_by_NID(leaf->x509(), NID_name_constraints, -1) >= 0) {
    r.error_depth = 0;
    r.verdict = Verdict::Deny(v1::DENY_REASON_CONSTRAINT_VIOLATED,
                              "leaf certificate carries nameConstraints (CA certificates only)");
    r.path.clear();
    return r;
  }
  if (r.path.size() > 1) {
    const std::string wild =
        WildcardIntoExcludedSubtree(leaf->x509(), absl::MakeConstSpan(r.path).subspan(1));
    ERR_clear_error();  // an extension that does not decode is simply not looked at
    if (!wild.empty()) {
      r.error_depth = 0;
      r.verdict = Verdict::Deny(
          v1::DENY_REASON_CONSTRAINT_VIOLATED,
          absl::StrCat("wildcard subjectAltName reaches into an excluded subtree: ", wild));
      r.path.clear();
      return r;
    }
  }
  for (size_t i = 0; policy.check_profile && i + 1 < r.path.size(); ++i) {
    X509* x = r.path[i]->x509();
    const ASN1_INTEGER* serial = X509_get0_serialNumber(x);
    const std::string& hex = r.path[i]->serial_hex();
    const char* bad = nullptr;
    if (X509_get_version(x) != X509_VERSION_3) {
      bad = "certificate is not X.509 version 3";
    } else if (hex == "0" || (!hex.empty() && hex[0] == '-')) {
      bad = "serial number is not positive";
    } else if (ASN1_STRING_length(serial) > 20) {
      bad = "serial number longer than 20 octets";
    } else {
      bad = ExtensionProfileViolation(x);
      ERR_clear_error();
    }
    if (bad != nullptr) {
      r.error_depth = static_cast<int>(i);
      r.verdict = Verdict::Deny(v1::DENY_REASON_MALFORMED, absl::StrCat(bad, " at depth ", i));
      r.path.clear();
      return r;
    }
  }
  for (size_t i = 0; i < r.path.size(); ++i) {
    const bool is_anchor = i + 1 == r.path.size();
    Verdict v = CheckAlgorithms(*r.path[i], policy.algorithms, /*check_signature=*/!is_anchor);
    if (!v.ok()) {
      r.error_depth = static_cast<int>(i);
      r.verdict = std::move(v);
      r.path.clear();
      return r;
    }
  }
  if (policy.require_digital_signature) {
    X509* x = leaf->x509();
    if ((X509_get_extension_flags(x) & EXFLAG_KUSAGE) != 0 &&
        (X509_get_key_usage(x) & KU_DIGITAL_SIGNATURE) == 0) {
      r.error_depth = 0;
      r.verdict =
          Verdict::Deny(v1::DENY_REASON_WRONG_KEY_USAGE, "leaf keyUsage lacks digitalSignature");
      r.path.clear();
      return r;
    }
  }
  r.verdict = Verdict::Pass();
  return r;
}

}  // namespace

}  // namespace iotauth::identity::x509
