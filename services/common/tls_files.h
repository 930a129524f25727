// The PEM files a TLS endpoint serves (certificate chain, private key, CA bundle),
// read with a size cap and checked before use: each parses, and the key belongs to the first
// certificate. A listener that reloads its files uses this to refuse a half-written or mismatched
// pair instead of breaking every new handshake.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace iotauth {

// File contents as read (not paths).
struct TlsFiles {
  // A certificate and key are configured (a server always has them; a client may
  // present none and only check the server against its CA bundle).
  bool with_identity = true;
  std::string cert_chain;
  std::string private_key;  // secret: never logged
  bool with_ca = false;     // a CA file is configured: `ca_bundle` must hold one
  std::string ca_bundle;

  bool operator==(const TlsFiles& o) const {
    return with_identity == o.with_identity && cert_chain == o.cert_chain &&
           private_key == o.private_key && with_ca == o.with_ca && ca_bundle == o.ca_bundle;
  }
  bool operator!=(const TlsFiles& o) const { return !(*this == o); }
};

// What a checked set serves: the first certificate of the chain (all empty without
// an identity).
struct TlsCertificateInfo {
  std::string subject;     // RFC 2253
  std::string serial_hex;  // upper-case hex, no separators
  absl::Time not_before;
  absl::Time not_after;
  int chain_length = 0;  // certificates in the chain file
  int ca_count = 0;      // certificates in the CA bundle
};

// Where the operator's files are. `ca_file` may be empty (no CA bundle); so may
// `cert_file` and `key_file` together (a client that presents no certificate), but
// not all three.
struct TlsSourcePaths {
  std::string cert_file;
  std::string key_file;
  std::string ca_file;
};

// Reads the files `paths` names (a CA file only when set; a certificate and key only
// when the certificate is set) into a set for CheckTlsFiles. INVALID_ARGUMENT naming
// the file ("the certificate file /etc/...") when one cannot be read or is larger
// than 1 MiB.
absl::StatusOr<TlsFiles> ReadTlsFiles(const TlsSourcePaths& paths);

// INVALID_ARGUMENT naming the file at fault ("the certificate file", "the private
// key file", "the CA file") when one holds no PEM object of its kind, is cut short
// or damaged, or holds an encrypted key; FAILED_PRECONDITION when the key does not
// belong to the first certificate; INVALID_ARGUMENT when the set has neither an
// identity nor a CA. Never quotes the key. Pure: no clock, no files.
absl::StatusOr<TlsCertificateInfo> CheckTlsFiles(const TlsFiles& files);

}  // namespace iotauth
