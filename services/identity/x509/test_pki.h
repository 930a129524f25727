// Test-only PKI built in code with OpenSSL at test time (no checked-in PEMs): keys of
// each allowed and refused algorithm, certificates with one property changed at a
// time, CSRs and CRLs.
#pragma once

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "services/common/openssl_ptr.h"
#include "services/identity/x509/certificate.h"

namespace iotauth::identity::x509::testing {

// The deleter of a KeyPtr.
using PkeyFree = ::iotauth::OpenSslFree<EVP_PKEY_free>;
using KeyPtr = std::shared_ptr<EVP_PKEY>;

enum class KeyType { kP256, kP384, kP521, kRsa2048, kRsa1024, kEd25519, kRsa2052 };
// Generated once per process and type (RSA generation is slow).
KeyPtr Key(KeyType type);
// A fresh key (for distinct identities of the same type).
KeyPtr NewKey(KeyType type);

struct CertSpec {
  std::string cn = "device-1";
  // Extra subject attribute (O=...) to make names distinct; empty for none.
  std::string org;
  bool ca = false;
  // basicConstraints pathLenConstraint; -1 for none.
  int path_len = -1;
  // Omit basicConstraints entirely.
  bool no_basic_constraints = false;
  absl::Time not_before = absl::FromUnixSeconds(1700000000) - absl::Hours(24);
  absl::Time not_after = absl::FromUnixSeconds(1700000000) + absl::Hours(24 * 365);
  // OpenSSL config syntax; empty for none. Defaults fit a device or a CA.
  std::string
      key_usage;  // "" -> "critical,digitalSignature" (leaf) / "critical,keyCertSign,cRLSign" (CA)
  std::string no_key_usage_marker;  // unused
  bool omit_key_usage = false;
  std::string eku;               // e.g. "clientAuth"; empty for none
  std::string san;               // e.g. "URI:urn:dev:t1:d1,DNS:d1.example"
  std::string name_constraints;  // e.g. "critical,permitted;DNS:.example.com"
  bool unknown_critical_extension = false;
  std::string policy_constraints;  // e.g. "critical,requireExplicitPolicy:0"
  // Extensions added as given (their DER value need not decode).
  struct RawExtension {
    int nid;
    bool critical;
    std::string der;
  };
  std::vector<RawExtension> raw_extensions;
  const EVP_MD* md = nullptr;  // default SHA-256 (ignored for Ed25519)
  long serial = 0;             // 0: random
};

// Signs `spec` for `subject_key` with `issuer`/`issuer_key` (self-signed when null).
X509Ptr MakeCert(const CertSpec& spec, EVP_PKEY* subject_key, X509* issuer, EVP_PKEY* issuer_key);
CertPtr Parsed(X509* x);
std::string Pem(X509* x);
std::string Der(X509* x);

// CSR with subject CN `cn`, signed by `key`.
std::string MakeCsrPem(const std::string& cn, EVP_PKEY* key);

struct RevokedEntry {
  long serial;
};
// CRL by `issuer` revoking `serials`. `delta_base` > 0 makes it a delta CRL on that
// base; `akid_issuer_serial` names the issuer's certificate (name and serial) in the
// authority key identifier besides its key id.
std::string MakeCrlPem(X509* issuer, EVP_PKEY* issuer_key, const std::vector<long>& serials,
                       absl::Time this_update, absl::Time next_update, long crl_number = 1,
                       long delta_base = 0, bool akid_issuer_serial = false);

}  // namespace iotauth::identity::x509::testing
