// The command groups of iotauthctl; each Add* function attaches its subtree to
// the root. One source file per area.
#pragma once

#include "clients/iotauthctl/command.h"

namespace iotauth::cli {

// tenant, product, device (incl. import/export), group, ca, watch.
void AddRegistryCommands(Command& root);
// authenticate, authorize.
void AddIdentityCommands(Command& root);
// audit query|watch|verify|export|checkpoint.
void AddAuditCommands(Command& root);
// token sas|triple|dps-key (offline).
void AddTokenCommands(Command& root);
// health.
void AddHealthCommand(Command& root);

}  // namespace iotauth::cli
