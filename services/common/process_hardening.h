// Keeps the secrets a server holds in memory (the master key, every device's keys
// in the identity cache, the TLS private key) out of core files, and away from other
// processes running as the same user.
#pragma once

#include "absl/status/status.h"

namespace iotauth {

// Sets the core file size limit to zero (soft and hard) and marks the process not
// dumpable, which also refuses ptrace and /proc/<pid>/mem to non-root processes of
// the same user. Call first thing in main(), before any secret is read. An error
// names the call that failed.
absl::Status KeepSecretsInProcess();

}  // namespace iotauth
