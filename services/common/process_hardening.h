// Process set-up for a server: keeps the secrets it holds in memory (the master
// key, every device's keys in the identity cache, the TLS private key) out of core
// files and away from other processes running as the same user, and gives it all
// the file descriptors it is allowed.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace iotauth {

// Sets the core file size limit to zero (soft and hard) and marks the process not
// dumpable, which also refuses ptrace and /proc/<pid>/mem to non-root processes of
// the same user. Call first thing in main(), before any secret is read. An error
// names the call that failed.
absl::Status KeepSecretsInProcess();

// Raises the soft open-file limit to the hard one and returns the new soft limit.
// Each connection costs a descriptor, and gRPC 1.51 stops accepting on a listener
// for good the first time accept() runs out of them: the soft default (often 1024)
// is too small for a server that faces a fleet of gateways, or an attacker.
absl::StatusOr<uint64_t> RaiseOpenFileLimit();

}  // namespace iotauth
