#include "clients/iotauthctl/cli.h"

#include "clients/iotauthctl/commands.h"
#include "clients/iotauthctl/output.h"

namespace iotauth::cli {

std::unique_ptr<Command> BuildCli() {
  auto root = std::make_unique<Command>(
      "iotauthctl", "Admin and debugging CLI for iotauth (registry, identity, audit, health).");
  root->Description(
      "Connects with mTLS using the embedded server's development PKI under --data_dir\n"
      "(pki/ca.pem, pki/admin.pem, pki/admin.key) unless --ca/--cert/--key, --token or\n"
      "--insecure say otherwise.\n"
      "\n"
      "Exit codes: 0 ok; 1 local error (unreadable file, missing PKI); 2 usage error;\n"
      "3 RPC error; 4 denied (authenticate/authorize); 5 check failed (rejected import\n"
      "rows, broken audit chain, health not SERVING).");
  AddConnectionFlags(*root);
  AddOutputFlags(*root);
  AddRegistryCommands(*root);
  AddCertificateCommands(*root);
  AddIdentityCommands(*root);
  AddAuditCommands(*root);
  AddTokenCommands(*root);
  AddHealthCommand(*root);
  return root;
}

int RunCli(const std::vector<std::string>& args, Io io, App* app) {
  static const auto* root = BuildCli().release();
  return Dispatch(*root, args, std::move(io), app);
}

}  // namespace iotauth::cli
