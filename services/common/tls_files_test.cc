#include "services/common/tls_files.h"

#include <openssl/evp.h>
#include <openssl/pem.h>

#include <string>

#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "services/common/test_server_pki.h"

namespace iotauth {
namespace {

// Two unrelated development PKIs, made once: each a CA and a server pair.
using Pki = test_pki::ServerPki;
const Pki& A() { return test_pki::PkiA(); }
const Pki& B() { return test_pki::PkiB(); }

TlsFiles Files(const std::string& cert, const std::string& key, const std::string* ca = nullptr) {
  TlsFiles f;
  f.cert_chain = cert;
  f.private_key = key;
  if (ca != nullptr) {
    f.with_ca = true;
    f.ca_bundle = *ca;
  }
  return f;
}

// No message may quote the private key: every line of its base64 body is looked for.
void ExpectNoKeyIn(absl::string_view message, const std::string& key) {
  for (absl::string_view line : absl::StrSplit(key, '\n')) {
    if (line.size() < 16 || line.find("-----") != absl::string_view::npos) continue;
    EXPECT_EQ(message.find(line), absl::string_view::npos) << message;
  }
}

TEST(TlsFilesTest, AMatchingPairWithItsCa) {
  absl::StatusOr<TlsCertificateInfo> info = CheckTlsFiles(Files(A().cert, A().key, &A().ca));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->subject, "CN=localhost,O=iotauth development");
  EXPECT_FALSE(info->serial_hex.empty());
  EXPECT_LT(info->not_before, absl::Now());
  EXPECT_GT(info->not_after, absl::Now() + absl::Hours(24 * 800));
  EXPECT_EQ(info->chain_length, 1);
  EXPECT_EQ(info->ca_count, 1);
}

TEST(TlsFilesTest, AChainFileReportsItsLengthAndTheLeaf) {
  const std::string bundle = A().ca + B().ca;
  absl::StatusOr<TlsCertificateInfo> info =
      CheckTlsFiles(Files(A().cert + A().ca, A().key, &bundle));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->subject, "CN=localhost,O=iotauth development");
  EXPECT_EQ(info->chain_length, 2);
  EXPECT_EQ(info->ca_count, 2);
}

TEST(TlsFilesTest, NoCaConfiguredNeedsNone) {
  ASSERT_TRUE(CheckTlsFiles(Files(A().cert, A().key)).ok());
}

std::string EncryptedKey(const std::string& pem) {
  BIO* in = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(in, nullptr, nullptr, nullptr);
  BIO_free(in);
  BIO* out = BIO_new(BIO_s_mem());
  static const char kPass[] = "passphrase";
  PEM_write_bio_PKCS8PrivateKey(out, key, EVP_aes_128_cbc(), nullptr, 0, nullptr,
                                const_cast<char*>(kPass));
  char* data = nullptr;
  const long n = BIO_get_mem_data(out, &data);
  std::string r(data, static_cast<size_t>(n));
  BIO_free(out);
  EVP_PKEY_free(key);
  return r;
}

// One property wrong at a time, each with its code and the words an operator acts on.
TEST(TlsFilesTest, EachFaultHasItsReason) {
  const std::string& cert = A().cert;
  const std::string& key = A().key;
  const std::string& ca = A().ca;
  const std::string garbage_block =
      "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
  const std::string empty;
  const std::string ca_cut = ca.substr(0, 100);
  struct Row {
    const char* name;
    TlsFiles files;
    absl::StatusCode code;
    const char* words;
  } rows[] = {
      {"key of another pair", Files(cert, B().key, &ca), absl::StatusCode::kFailedPrecondition,
       "does not belong to the certificate"},
      {"chain whose first is the CA", Files(ca + cert, key, &ca),
       absl::StatusCode::kFailedPrecondition, "does not belong to the certificate"},
      {"empty certificate file", Files("", key, &ca), absl::StatusCode::kInvalidArgument,
       "the certificate file holds no PEM certificate"},
      {"key file as certificate", Files(key, key, &ca), absl::StatusCode::kInvalidArgument,
       "the certificate file holds no PEM certificate"},
      {"certificate cut short", Files(cert.substr(0, cert.size() / 2), key, &ca),
       absl::StatusCode::kInvalidArgument,
       "the certificate file holds a PEM certificate that is cut short"},
      {"second certificate cut short", Files(cert + ca.substr(0, ca.size() - 40), key, &ca),
       absl::StatusCode::kInvalidArgument, "(1 read before it)"},
      {"damaged block", Files(cert + garbage_block, key, &ca), absl::StatusCode::kInvalidArgument,
       "cut short or damaged"},
      {"empty key file", Files(cert, "", &ca), absl::StatusCode::kInvalidArgument,
       "the private key file holds no readable PEM private key"},
      {"key cut short", Files(cert, key.substr(0, key.size() / 2), &ca),
       absl::StatusCode::kInvalidArgument, "the private key file holds no readable"},
      {"encrypted key", Files(cert, EncryptedKey(key), &ca), absl::StatusCode::kInvalidArgument,
       "encrypted keys are not supported"},
      {"empty CA file", Files(cert, key, &empty), absl::StatusCode::kInvalidArgument,
       "the CA file holds no PEM certificate"},
      {"CA file cut short", Files(cert, key, &ca_cut), absl::StatusCode::kInvalidArgument,
       "the CA file holds a PEM certificate that is cut short"},
  };
  for (const Row& row : rows) {
    absl::StatusOr<TlsCertificateInfo> info = CheckTlsFiles(row.files);
    ASSERT_FALSE(info.ok()) << row.name;
    EXPECT_EQ(info.status().code(), row.code) << row.name << ": " << info.status();
    EXPECT_NE(info.status().message().find(row.words), absl::string_view::npos)
        << row.name << ": " << info.status();
    ExpectNoKeyIn(info.status().message(), key);
    ExpectNoKeyIn(info.status().message(), B().key);
  }
}

}  // namespace
}  // namespace iotauth
