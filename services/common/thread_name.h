// Names the calling thread for `top -H`, `ps -L`, perf and gdb: the project's
// long-lived threads (audit writer, remote audit sender, registry mirror, change-log
// pruner) would otherwise all show as the binary's name beside gRPC's own named
// threads.
#pragma once

#include "absl/strings/string_view.h"

namespace iotauth {

// Linux keeps 15 bytes of a thread name: longer names are cut to that. Best effort:
// a failure changes nothing else.
void SetCurrentThreadName(absl::string_view name);

}  // namespace iotauth
