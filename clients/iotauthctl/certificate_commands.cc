// The X.509 lifecycle: CA upload, proof of possession and status (`ca ...`, over
// DeviceRegistry and CertificateService), device certificate issuance, renewal and
// revocation (`cert ...`) and CRL upload (`crl upload`).
// Flag names avoid the global --ca, --cert and --key (the TLS files of the
// connection): certificate files are --cert_file/--key_file, CA ids --issuer_ca.
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <algorithm>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "clients/iotauthctl/command_util.h"
#include "clients/iotauthctl/commands.h"
#include "clients/iotauthctl/connection.h"
#include "clients/iotauthctl/output.h"
#include "google/protobuf/field_mask.pb.h"
#include "proto/iotauth/identity/v1/certificates.grpc.pb.h"
#include "proto/iotauth/registry/v1/registry.grpc.pb.h"
#include "services/common/openssl_ptr.h"

namespace iotauth::cli {
namespace {

namespace iv1 = ::iotauth::identity::v1;
namespace rv1 = ::iotauth::registry::v1;

const FlagSpec kTenantFlag{"tenant", "ID", "Tenant id", "", "IOTAUTH_TENANT"};
const FlagSpec kValidityFlag{"validity", "DURATION",
                             "Certificate lifetime, e.g. 30d or 12h (default and upper bound "
                             "from the server's config)"};
const FlagSpec kOutFlag{"out", "FILE",
                        "Write the PEM chain (leaf, then issuer) here and print a summary; "
                        "default: the chain on stdout"};

// Both stubs over one connection; each command uses the one it needs.
struct Clients {
  std::unique_ptr<Connection> conn;
  std::unique_ptr<rv1::DeviceRegistry::Stub> registry;
  std::unique_ptr<iv1::CertificateService::Stub> certs;
};

std::optional<Clients> Open(const Invocation& inv, int* exit) {
  auto conn = ConnectOrReport(inv, exit);
  if (!conn) return std::nullopt;
  Clients c;
  c.registry = rv1::DeviceRegistry::NewStub(conn->channel());
  c.certs = iv1::CertificateService::NewStub(conn->channel());
  c.conn = std::move(conn);
  return c;
}

// Reads the file named by the required flag `name`. On failure reports (usage
// error when missing, local error when unreadable) and sets *exit.
bool ReadFlagFile(const Invocation& inv, absl::string_view name, std::string* content, int* exit) {
  std::string path;
  if (!RequireFlag(inv, name, &path, exit)) return false;
  auto data = AppOf(inv).read_file(path);
  if (!data.ok()) {
    *exit = inv.LocalError(data.status().message());
    return false;
  }
  *content = *std::move(data);
  return true;
}

// Sets `*out` from --validity when given. False (usage error in *exit) when malformed.
bool ValidityFlag(const Invocation& inv, google::protobuf::Duration* out, bool* set, int* exit) {
  *set = false;
  if (!inv.flags.Has("validity")) return true;
  auto d = inv.flags.GetDuration("validity");
  if (!d.ok()) {
    *exit = inv.UsageError(d.status().message());
    return false;
  }
  if (*d <= absl::ZeroDuration()) {
    *exit = inv.UsageError("--validity must be positive");
    return false;
  }
  out->set_seconds(absl::ToInt64Seconds(*d));
  *set = true;
  return true;
}

// The certificates of a PEM bundle, each as its PEM block; a file without PEM
// markers is one DER certificate.
std::vector<std::string> SplitCertificates(const std::string& text) {
  constexpr char kBegin[] = "-----BEGIN CERTIFICATE-----";
  constexpr char kEnd[] = "-----END CERTIFICATE-----";
  constexpr size_t kEndLen = sizeof(kEnd) - 1;
  if (!absl::StrContains(text, "-----BEGIN")) return {text};
  std::vector<std::string> out;
  size_t pos = 0;
  while ((pos = text.find(kBegin, pos)) != std::string::npos) {
    const size_t end = text.find(kEnd, pos);
    if (end == std::string::npos) break;
    out.push_back(absl::StrCat(text.substr(pos, end + kEndLen - pos), "\n"));
    pos = end + kEndLen;
  }
  return out;
}

// The DER of a PEM or DER PKCS#10 request.
absl::StatusOr<std::string> CsrDer(const std::string& csr) {
  BioPtr bio(BIO_new_mem_buf(csr.data(), static_cast<int>(csr.size())));
  if (!bio) return absl::InternalError("out of memory");
  X509ReqPtr req(PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr));
  if (!req) {
    const auto* p = reinterpret_cast<const unsigned char*>(csr.data());
    req.reset(d2i_X509_REQ(nullptr, &p, static_cast<long>(csr.size())));  // NOLINT(runtime/int)
  }
  if (!req) return absl::InvalidArgumentError("--csr: not a PEM or DER certificate request");
  unsigned char* der = nullptr;
  const int len = i2d_X509_REQ(req.get(), &der);
  if (len <= 0) return absl::InvalidArgumentError("--csr: cannot encode the request");
  std::string out(reinterpret_cast<char*>(der), static_cast<size_t>(len));
  OPENSSL_free(der);
  return out;
}

// Signs `data` with a PEM private key the way RenewCertificate checks it: SHA-256
// with ECDSA or RSA PKCS#1 v1.5, or Ed25519. The key never leaves this process.
absl::StatusOr<std::string> SignWithKey(const std::string& key_pem, const std::string& data) {
  BioPtr bio(BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size())));
  if (!bio) return absl::InternalError("out of memory");
  EvpPkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key) return absl::InvalidArgumentError("--key_file: not an unencrypted PEM private key");
  EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  const EVP_MD* md = EVP_PKEY_id(key.get()) == EVP_PKEY_ED25519 ? nullptr : EVP_sha256();
  size_t len = 0;
  const auto* in = reinterpret_cast<const unsigned char*>(data.data());
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, md, nullptr, key.get()) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &len, in, data.size()) != 1) {
    return absl::InvalidArgumentError("--key_file: unsupported key type");
  }
  std::string sig(len, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len, in,
                     data.size()) != 1) {
    return absl::InternalError("signing failed");
  }
  sig.resize(len);
  return sig;
}

bool IsHex(absl::string_view s) {
  for (char c : s) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) return false;
  }
  return !s.empty();
}

// --- ca ----------------------------------------------------------------------

int CaUpload(Invocation& inv) {
  rv1::CreateCaCertificateRequest req;
  std::string tenant;
  std::string pem;
  int exit = 0;
  if (!RequireFlag(inv, "tenant", &tenant, &exit)) return exit;
  if (!ReadFlagFile(inv, "file", &pem, &exit)) return exit;
  rv1::CaCertificate* ca = req.mutable_ca();
  ca->set_tenant_id(tenant);
  ca->set_certificate_pem(pem);
  ca->set_jit_registration(inv.flags.IsSet("jit_registration"));
  ca->set_jit_product_key(inv.flags.Get("jit_product"));
  ca->set_jit_auto_enable(inv.flags.IsSet("jit_auto_enable"));
  ca->set_device_id_pattern(inv.flags.Get("device_id_pattern"));
  if (ca->jit_registration() && ca->jit_product_key().empty()) {
    return inv.UsageError("--jit_registration needs --jit_product");
  }
  auto c = Open(inv, &exit);
  if (!c) return exit;
  rv1::CaCertificate resp;
  if (int rc = CallUnary(inv, *c->conn, "DeviceRegistry.CreateCaCertificate",
                         [&](grpc::ClientContext* cx) {
                           return c->registry->CreateCaCertificate(cx, req, &resp);
                         })) {
    return rc;
  }
  if (!JsonOutput(inv)) {
    resp.clear_certificate_pem();
    if (resp.status() == rv1::CA_STATUS_UNVERIFIED) {
      inv.err() << "next: prove possession of the CA's key: sign a certificate whose subject CN "
                   "is the verification_code, then `iotauthctl ca verify --tenant "
                << tenant << " " << resp.id() << " --file proof.pem`\n";
    }
  }
  PrintResource(inv, &resp, false);
  return kExitOk;
}

int CaVerificationCode(Invocation& inv) {
  iv1::RegenerateVerificationCodeRequest req;
  std::string tenant;
  int exit = 0;
  if (!RequireFlag(inv, "tenant", &tenant, &exit)) return exit;
  req.set_tenant_id(tenant);
  req.set_ca_id(inv.args[0]);
  auto c = Open(inv, &exit);
  if (!c) return exit;
  rv1::CaCertificate resp;
  if (int rc = CallUnary(inv, *c->conn, "CertificateService.RegenerateVerificationCode",
                         [&](grpc::ClientContext* cx) {
                           return c->certs->RegenerateVerificationCode(cx, req, &resp);
                         })) {
    return rc;
  }
  if (JsonOutput(inv)) {
    resp.clear_certificate_pem();
    PrintResource(inv, &resp, false);
  } else {
    // Only the code on stdout, so scripts can capture it.
    inv.out() << resp.verification_code() << "\n";
  }
  return kExitOk;
}

int CaVerify(Invocation& inv) {
  iv1::VerifyCaPossessionRequest req;
  std::string tenant;
  std::string proof;
  int exit = 0;
  if (!RequireFlag(inv, "tenant", &tenant, &exit)) return exit;
  if (!ReadFlagFile(inv, "file", &proof, &exit)) return exit;
  req.set_tenant_id(tenant);
  req.set_ca_id(inv.args[0]);
  req.set_verification_certificate(proof);
  auto c = Open(inv, &exit);
  if (!c) return exit;
  rv1::CaCertificate resp;
  if (int rc = CallUnary(
          inv, *c->conn, "CertificateService.VerifyCaPossession",
          [&](grpc::ClientContext* cx) { return c->certs->VerifyCaPossession(cx, req, &resp); })) {
    return rc;
  }
  if (!JsonOutput(inv)) resp.clear_certificate_pem();
  PrintResource(inv, &resp, false);
  return kExitOk;
}

int CaSetStatus(Invocation& inv, rv1::CaStatus status) {
  rv1::UpdateCaCertificateRequest req;
  std::string tenant;
  int exit = 0;
  if (!RequireFlag(inv, "tenant", &tenant, &exit)) return exit;
  req.mutable_ca()->set_tenant_id(tenant);
  req.mutable_ca()->set_id(inv.args[0]);
  req.mutable_ca()->set_status(status);
  req.mutable_update_mask()->add_paths("status");
  req.set_etag(inv.flags.Get("etag"));
  auto c = Open(inv, &exit);
  if (!c) return exit;
  rv1::CaCertificate resp;
  if (int rc = CallUnary(inv, *c->conn, "DeviceRegistry.UpdateCaCertificate",
                         [&](grpc::ClientContext* cx) {
                           return c->registry->UpdateCaCertificate(cx, req, &resp);
                         })) {
    return rc;
  }
  if (!JsonOutput(inv)) resp.clear_certificate_pem();
  PrintResource(inv, &resp, false);
  return kExitOk;
}

int CaCreateIssuing(Invocation& inv) {
  iv1::CreateIssuingCaRequest req;
  std::string tenant;
  int exit = 0;
  if (!RequireFlag(inv, "tenant", &tenant, &exit)) return exit;
  req.set_tenant_id(tenant);
  const bool import = inv.flags.Has("import_cert") || inv.flags.Has("import_key");
  const bool generate_flags =
      inv.flags.Has("key_algorithm") || inv.flags.Has("common_name") || inv.flags.Has("validity");
  if (import) {
    if (generate_flags) {
      return inv.UsageError(
          "--key_algorithm, --common_name and --validity apply to a generated CA, not to "
          "--import_cert/--import_key");
    }
    std::string cert;
    std::string key;
    if (!ReadFlagFile(inv, "import_cert", &cert, &exit)) return exit;
    if (!ReadFlagFile(inv, "import_key", &key, &exit)) return exit;
    req.mutable_import()->set_certificate_pem(cert);
    req.mutable_import()->set_private_key_pem(key);
  } else {
    iv1::GenerateIssuingCa* gen = req.mutable_generate();
    if (inv.flags.Has("key_algorithm")) {
      auto alg = ParseEnumName(iv1::KeyAlgorithm_descriptor(), inv.flags.Get("key_algorithm"));
      if (!alg.ok()) {
        return inv.UsageError(absl::StrCat("--key_algorithm: ", alg.status().message()));
      }
      gen->set_key_algorithm(static_cast<iv1::KeyAlgorithm>(*alg));
    }
    gen->set_common_name(inv.flags.Get("common_name"));
    bool set = false;
    if (!ValidityFlag(inv, gen->mutable_validity(), &set, &exit)) return exit;
    if (!set) gen->clear_validity();
  }
  auto c = Open(inv, &exit);
  if (!c) return exit;
  rv1::CaCertificate resp;
  if (int rc = CallUnary(
          inv, *c->conn, "CertificateService.CreateIssuingCa",
          [&](grpc::ClientContext* cx) { return c->certs->CreateIssuingCa(cx, req, &resp); })) {
    return rc;
  }
  if (!JsonOutput(inv)) resp.clear_certificate_pem();
  PrintResource(inv, &resp, false);
  return kExitOk;
}

// --- cert --------------------------------------------------------------------

// Prints an issued certificate: with --out the chain goes to the file and a summary
// to stdout; otherwise the chain to stdout (JSON: the whole message) and, for
// people, a summary on stderr.
int PrintIssued(const Invocation& inv, iv1::IssuedCertificate& issued) {
  const std::string chain = absl::StrCat(issued.certificate_pem(), issued.issuer_pem());
  const std::string out_path = inv.flags.Get("out");
  if (!out_path.empty()) {
    std::ofstream f(out_path, std::ios::binary | std::ios::trunc);
    if (!f || !(f << chain) || !f.flush()) {
      return inv.LocalError(absl::StrCat("cannot write '", out_path, "'"));
    }
  }
  if (JsonOutput(inv)) {
    inv.out() << ToJson(issued) << "\n";
    return kExitOk;
  }
  if (out_path.empty()) inv.out() << chain;
  iv1::IssuedCertificate summary = issued;
  summary.clear_certificate_pem();
  summary.clear_issuer_pem();
  const std::string text = RenderKeyValues(Flatten(summary));
  if (out_path.empty()) {
    inv.err() << text;
  } else {
    inv.out() << text << "wrote " << out_path << "\n";
  }
  return kExitOk;
}

int CertIssue(Invocation& inv) {
  iv1::IssueCertificateRequest req;
  std::string tenant;
  std::string device;
  std::string csr;
  int exit = 0;
  if (!RequireFlag(inv, "tenant", &tenant, &exit)) return exit;
  if (!RequireFlag(inv, "device", &device, &exit)) return exit;
  bool set = false;
  if (!ValidityFlag(inv, req.mutable_validity(), &set, &exit)) return exit;
  if (!set) req.clear_validity();
  if (!ReadFlagFile(inv, "csr", &csr, &exit)) return exit;
  req.set_tenant_id(tenant);
  req.set_device_id(device);
  req.set_csr(csr);
  auto c = Open(inv, &exit);
  if (!c) return exit;
  iv1::IssuedCertificate resp;
  if (int rc = CallUnary(
          inv, *c->conn, "CertificateService.IssueCertificate",
          [&](grpc::ClientContext* cx) { return c->certs->IssueCertificate(cx, req, &resp); })) {
    return rc;
  }
  return PrintIssued(inv, resp);
}

int CertRenew(Invocation& inv) {
  iv1::RenewCertificateRequest req;
  std::string tenant;
  std::string chain;
  std::string csr;
  int exit = 0;
  if (!RequireFlag(inv, "tenant", &tenant, &exit)) return exit;
  const bool with_key = inv.flags.Has("key_file");
  if (with_key == inv.flags.Has("signature_file")) {
    return inv.UsageError(
        "give exactly one of --key_file (sign the CSR here) or --signature_file (a signature made "
        "elsewhere)");
  }
  bool set = false;
  if (!ValidityFlag(inv, req.mutable_validity(), &set, &exit)) return exit;
  if (!set) req.clear_validity();
  if (!ReadFlagFile(inv, "chain", &chain, &exit)) return exit;
  if (!ReadFlagFile(inv, "csr", &csr, &exit)) return exit;
  req.set_tenant_id(tenant);
  for (std::string& cert : SplitCertificates(chain)) req.add_current_chain(std::move(cert));
  if (req.current_chain_size() == 0) {
    return inv.LocalError("--chain: no certificate found");
  }
  req.set_csr(csr);
  if (with_key) {
    std::string key;
    if (!ReadFlagFile(inv, "key_file", &key, &exit)) return exit;
    auto der = CsrDer(csr);
    if (!der.ok()) return inv.LocalError(der.status().message());
    auto sig = SignWithKey(key, *der);
    OPENSSL_cleanse(key.data(), key.size());
    if (!sig.ok()) return inv.LocalError(sig.status().message());
    req.set_current_key_signature(*sig);
  } else {
    std::string sig;
    if (!ReadFlagFile(inv, "signature_file", &sig, &exit)) return exit;
    req.set_current_key_signature(sig);
  }
  auto c = Open(inv, &exit);
  if (!c) return exit;
  iv1::IssuedCertificate resp;
  if (int rc = CallUnary(
          inv, *c->conn, "CertificateService.RenewCertificate",
          [&](grpc::ClientContext* cx) { return c->certs->RenewCertificate(cx, req, &resp); })) {
    return rc;
  }
  return PrintIssued(inv, resp);
}

int CertRevoke(Invocation& inv) {
  iv1::RevokeCertificateRequest req;
  std::string tenant;
  int exit = 0;
  if (!RequireFlag(inv, "tenant", &tenant, &exit)) return exit;
  req.set_tenant_id(tenant);
  req.set_reason(inv.flags.Get("reason"));
  req.set_device_id(inv.flags.Get("device"));
  const bool by_cert = inv.flags.Has("cert_file");
  const bool by_fp = inv.flags.Has("fingerprint");
  const bool by_serial = inv.flags.Has("issuer_ca") || inv.flags.Has("serial");
  if (static_cast<int>(by_cert) + static_cast<int>(by_fp) + static_cast<int>(by_serial) != 1) {
    return inv.UsageError(
        "name the certificate one way: --cert_file FILE, --fingerprint HEX, or --issuer_ca ID "
        "--serial HEX");
  }
  if (by_cert) {
    std::string cert;
    if (!ReadFlagFile(inv, "cert_file", &cert, &exit)) return exit;
    // A PEM chain file (what `cert issue --out` writes) names its leaf first:
    // revoke that one.
    const std::string kEnd = "-----END CERTIFICATE-----";
    const size_t end = cert.find(kEnd);
    if (absl::StartsWith(absl::StripLeadingAsciiWhitespace(cert), "-----BEGIN") &&
        end != std::string::npos) {
      cert = cert.substr(0, end + kEnd.size()) + "\n";
    }
    req.set_certificate(cert);
  } else if (by_fp) {
    std::string fp = absl::AsciiStrToLower(inv.flags.Get("fingerprint"));
    fp.erase(std::remove(fp.begin(), fp.end(), ':'), fp.end());
    if (fp.size() != 64 || !IsHex(fp)) {
      return inv.UsageError("--fingerprint must be the 64 hex digits of a SHA-256");
    }
    req.set_fingerprint(fp);
  } else {
    std::string ca;
    std::string serial;
    if (!RequireFlag(inv, "issuer_ca", &ca, &exit)) return exit;
    if (!RequireFlag(inv, "serial", &serial, &exit)) return exit;
    absl::string_view digits = serial;
    absl::ConsumePrefix(&digits, "0x");
    absl::ConsumePrefix(&digits, "0X");
    if (!IsHex(digits)) return inv.UsageError("--serial must be hexadecimal");
    req.mutable_issuer_serial()->set_ca_id(ca);
    req.mutable_issuer_serial()->set_serial_hex(serial);
  }
  auto c = Open(inv, &exit);
  if (!c) return exit;
  rv1::CertificateRevocation resp;
  if (int rc = CallUnary(
          inv, *c->conn, "CertificateService.RevokeCertificate",
          [&](grpc::ClientContext* cx) { return c->certs->RevokeCertificate(cx, req, &resp); })) {
    return rc;
  }
  PrintResource(inv, &resp, false);
  return kExitOk;
}

int CertUnrevoke(Invocation& inv) {
  iv1::DeleteRevocationRequest req;
  std::string tenant;
  int exit = 0;
  if (!RequireFlag(inv, "tenant", &tenant, &exit)) return exit;
  req.set_tenant_id(tenant);
  req.set_revocation_id(inv.args[0]);
  auto c = Open(inv, &exit);
  if (!c) return exit;
  iv1::DeleteRevocationResponse resp;
  if (int rc = CallUnary(
          inv, *c->conn, "CertificateService.DeleteRevocation",
          [&](grpc::ClientContext* cx) { return c->certs->DeleteRevocation(cx, req, &resp); })) {
    return rc;
  }
  if (JsonOutput(inv)) {
    inv.out() << "{}\n";
  } else {
    inv.out() << "deleted revocation '" << req.revocation_id() << "'\n";
  }
  return kExitOk;
}

// --- crl ---------------------------------------------------------------------

int CrlUpload(Invocation& inv) {
  iv1::UploadCrlRequest req;
  std::string tenant;
  std::string ca;
  std::string crl;
  int exit = 0;
  if (!RequireFlag(inv, "tenant", &tenant, &exit)) return exit;
  if (!RequireFlag(inv, "issuer_ca", &ca, &exit)) return exit;
  if (!ReadFlagFile(inv, "file", &crl, &exit)) return exit;
  req.set_tenant_id(tenant);
  req.set_ca_id(ca);
  req.set_crl(crl);
  auto c = Open(inv, &exit);
  if (!c) return exit;
  rv1::CertificateRevocationList resp;
  if (int rc =
          CallUnary(inv, *c->conn, "CertificateService.UploadCrl",
                    [&](grpc::ClientContext* cx) { return c->certs->UploadCrl(cx, req, &resp); })) {
    return rc;
  }
  PrintResource(inv, &resp, false);
  return kExitOk;
}

}  // namespace

void AddCaLifecycleCommands(Command& ca) {
  ca.Sub("upload", "Upload a tenant CA certificate (then prove possession with `ca verify`)")
      .Flag(kTenantFlag)
      .Flag({"file", "FILE", "PEM CA certificate"})
      .Flag({"jit_registration", "", "Register unknown devices on their first valid connect"})
      .Flag({"jit_product", "PRODUCT_KEY", "Product of just-in-time registered devices"})
      .Flag({"jit_auto_enable", "", "JIT devices start enabled (else pending approval)"})
      .Flag({"device_id_pattern", "PATTERN",
             "How leaves name their device, e.g. urn:dev:{tenant}:{device} (default: subject CN)"})
      .Run(CaUpload);
  ca.Sub("verification-code", "Issue a fresh proof-of-possession code and print it")
      .Args("CA_ID", 1, 1)
      .Flag(kTenantFlag)
      .Run(CaVerificationCode);
  ca.Sub("verify", "Prove possession of a CA's key (the CA becomes verified)")
      .Description(
          "FILE is a certificate whose subject CN is the CA's verification code, signed by the\n"
          "CA's key, e.g.:\n"
          "  openssl req -new -key ca.key -subj \"/CN=$(iotauthctl ca verification-code ...)\" |\n"
          "    openssl x509 -req -CA ca.pem -CAkey ca.key -days 1 -out proof.pem")
      .Args("CA_ID", 1, 1)
      .Flag(kTenantFlag)
      .Flag({"file", "FILE", "PEM or DER verification certificate"})
      .Run(CaVerify);
  ca.Sub("disable", "Stop trusting a CA (its devices are refused within a second)")
      .Args("CA_ID", 1, 1)
      .Flag(kTenantFlag)
      .Flag({"etag", "ETAG", "Only if the stored etag equals this"})
      .Run([](Invocation& inv) { return CaSetStatus(inv, rv1::CA_STATUS_DISABLED); });
  ca.Sub("enable", "Trust a disabled CA again (only one whose key possession was proven)")
      .Args("CA_ID", 1, 1)
      .Flag(kTenantFlag)
      .Flag({"etag", "ETAG", "Only if the stored etag equals this"})
      .Run([](Invocation& inv) { return CaSetStatus(inv, rv1::CA_STATUS_VERIFIED); });
  ca.Sub("create-issuing", "Create the tenant's issuing CA (generated, or imported)")
      .Flag(kTenantFlag)
      .Flag({"import_cert", "FILE", "Import this PEM CA certificate (with --import_key)"})
      .Flag({"import_key", "FILE", "PEM private key of --import_cert (stored encrypted)"})
      .Flag({"key_algorithm", "ALG",
             absl::StrCat("Generated key: ", EnumChoices(iv1::KeyAlgorithm_descriptor()),
                          " (default ec_p256)")})
      .Flag({"common_name", "CN", "Generated CA's subject CN (default: iotauth issuing CA T)"})
      .Flag({"validity", "DURATION", "Generated CA's lifetime (default 5 years)"})
      .Run(CaCreateIssuing);
}

void AddCertificateCommands(Command& root) {
  Command& cert = root.Sub("cert", "Issue, renew and revoke device X.509 certificates");
  cert.Sub("issue", "Sign a device CSR with the tenant's issuing CA")
      .Flag(kTenantFlag)
      .Flag({"device", "ID", "Device id (the CSR's subject CN must equal it)"})
      .Flag({"csr", "FILE", "PEM or DER PKCS#10 request"})
      .Flag(kValidityFlag)
      .Flag(kOutFlag)
      .Run(CertIssue);
  cert.Sub("renew", "Renew a device certificate, proving possession of the current key")
      .Description(
          "The signature is over the new CSR's DER by the current certificate's key: --key_file\n"
          "computes it here (SHA-256 with ECDSA or RSA PKCS#1 v1.5, or Ed25519); with\n"
          "--signature_file, give one made elsewhere (raw bytes).")
      .Flag(kTenantFlag)
      .Flag({"chain", "FILE", "Current certificate chain, leaf first (PEM bundle or one DER)"})
      .Flag({"csr", "FILE", "New PEM or DER PKCS#10 request naming the same device"})
      .Flag({"key_file", "FILE", "Current PEM private key, to sign the CSR locally"})
      .Flag({"signature_file", "FILE", "Signature over the CSR's DER made elsewhere"})
      .Flag(kValidityFlag)
      .Flag(kOutFlag)
      .Run(CertRenew);
  cert.Sub("revoke", "Revoke one certificate (effective within a second)")
      .Flag(kTenantFlag)
      .Flag({"cert_file", "FILE", "The certificate (PEM or DER); revoked by fingerprint"})
      .Flag({"fingerprint", "HEX", "SHA-256 of the certificate's DER (colons allowed)"})
      .Flag({"issuer_ca", "CA_ID", "Registered CA that issued it (with --serial)"})
      .Flag({"serial", "HEX", "Serial number in hex (with --issuer_ca)"})
      .Flag({"reason", "TEXT", "Why, e.g. keyCompromise (audited)"})
      .Flag({"device", "ID", "Device the certificate belongs to (audited)"})
      .Run(CertRevoke);
  cert.Sub("unrevoke", "Lift an explicit revocation")
      .Args("REVOCATION_ID", 1, 1)
      .Flag(kTenantFlag)
      .Run(CertUnrevoke);

  Command& crl = root.Sub("crl", "Certificate revocation lists of registered CAs");
  crl.Sub("upload", "Upload (replace) a CA's CRL after the server checks its signature")
      .Flag(kTenantFlag)
      .Flag({"issuer_ca", "CA_ID", "Registered CA that issued the CRL"})
      .Flag({"file", "FILE", "PEM or DER CRL"})
      .Run(CrlUpload);
}

}  // namespace iotauth::cli
