// PKCS#10 certificate signing requests sent by devices (issuance, renewal through a
// gateway): a bounded parser for PEM or DER, and the proof-of-possession check
// (the request's own signature) under the project's key and digest policy.
#pragma once

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "services/common/openssl_ptr.h"
#include "services/identity/x509/chain_verifier.h"

namespace iotauth::identity::x509 {

// The package's owning pointer (services/common/openssl_ptr.h).
using ::iotauth::X509ReqPtr;

// Parses one request: PEM `CERTIFICATE REQUEST` (the first block) or exactly one DER
// request (trailing bytes refused). INVALID_ARGUMENT (reason INVALID_CSR) when empty,
// larger than `max_bytes` or unparsable. Thread-safe.
absl::StatusOr<X509ReqPtr> ParseCsr(absl::string_view data, size_t max_bytes);

// Checks the request's key against `policy` (INVALID_ARGUMENT, WEAK_ALGORITHM), its
// signature digest (MD5/SHA-1 refused) and its self-signature (INVALID_ARGUMENT,
// BAD_CSR_SIGNATURE). Returns the subject's single commonName (empty when absent or
// repeated).
absl::StatusOr<std::string> VerifyCsr(X509_REQ* req, const AlgorithmPolicy& policy);

// Whether `key` is an allowed key algorithm/size under `policy` (INVALID_ARGUMENT,
// WEAK_ALGORITHM otherwise). Used for CSR keys and issuing-CA keys.
absl::Status CheckKeyAlgorithm(EVP_PKEY* key, const AlgorithmPolicy& policy);

// The subject's single commonName as UTF-8, or empty when absent or repeated.
std::string SingleCommonName(const X509_NAME* name);

// The renewal proof of possession: `signature`, by the holder of `key`, over
// `message` (the new CSR's DER). SHA-256 with ECDSA (a DER signature) or RSA
// (PKCS#1 v1.5); Ed25519 signs the message itself. False for anything that does not
// verify, a malformed or oversized signature included. Thread-safe.
bool VerifyPossessionSignature(EVP_PKEY* key, absl::string_view signature,
                               absl::string_view message);

}  // namespace iotauth::identity::x509
