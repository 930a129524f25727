#include "services/common/verified_subject.h"

#include <grpcpp/security/auth_context.h>

#include <map>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace iotauth {
namespace {

// AuthPropertyIterator's default constructor is protected: an empty range.
struct EmptyIterator : grpc::AuthPropertyIterator {};

class FakeAuthContext final : public grpc::AuthContext {
 public:
  explicit FakeAuthContext(bool authenticated) : authenticated_(authenticated) {}
  bool IsPeerAuthenticated() const override { return authenticated_; }
  std::vector<grpc::string_ref> GetPeerIdentity() const override { return {}; }
  std::string GetPeerIdentityPropertyName() const override { return ""; }
  std::vector<grpc::string_ref> FindPropertyValues(const std::string& name) const override {
    std::vector<grpc::string_ref> out;
    for (auto [it, end] = properties_.equal_range(name); it != end; ++it) {
      out.emplace_back(it->second);
    }
    return out;
  }
  grpc::AuthPropertyIterator begin() const override { return EmptyIterator(); }
  grpc::AuthPropertyIterator end() const override { return EmptyIterator(); }
  void AddProperty(const std::string& key, const grpc::string_ref& value) override {
    properties_.emplace(key, std::string(value.data(), value.size()));
  }
  bool SetPeerIdentityPropertyName(const std::string& /*name*/) override { return false; }

 private:
  bool authenticated_;
  std::multimap<std::string, std::string> properties_;
};

TEST(VerifiedSubjectTest, OnlyAVerifiedPeersFirstSubject) {
  EXPECT_EQ(VerifiedSubject(nullptr), "");
  FakeAuthContext none(/*authenticated=*/true);
  EXPECT_EQ(VerifiedSubject(&none), "");
  FakeAuthContext verified(/*authenticated=*/true);
  verified.AddProperty(GRPC_X509_SUBJECT_PROPERTY_NAME, "CN=gw-1,OU=gateway");
  verified.AddProperty(GRPC_X509_CN_PROPERTY_NAME, "gw-1");
  EXPECT_EQ(VerifiedSubject(&verified), "CN=gw-1,OU=gateway");
  // A subject the TLS layer did not verify is no one's.
  FakeAuthContext unverified(/*authenticated=*/false);
  unverified.AddProperty(GRPC_X509_SUBJECT_PROPERTY_NAME, "CN=admin,OU=admin");
  EXPECT_EQ(VerifiedSubject(&unverified), "");
}

}  // namespace
}  // namespace iotauth
