// The command groups of iotauthctl; each Add* function attaches its subtree to
// the root. One source file per area.
#pragma once

#include "clients/iotauthctl/command.h"

namespace iotauth::cli {

// tenant, product, device (incl. import/export), group, ca, watch, admin.
void AddRegistryCommands(Command& root);
// The X.509 lifecycle under `ca` (upload, verification-code, verify, enable,
// disable, create-issuing), called by AddRegistryCommands with its `ca` group.
void AddCaLifecycleCommands(Command& ca);
// cert issue|renew|revoke|unrevoke and crl upload (CertificateService).
void AddCertificateCommands(Command& root);
// authenticate, authorize.
void AddIdentityCommands(Command& root);
// audit query|watch|verify|export|checkpoint.
void AddAuditCommands(Command& root);
// token sas|triple|dps-key (offline).
void AddTokenCommands(Command& root);
// health.
void AddHealthCommand(Command& root);

}  // namespace iotauth::cli
