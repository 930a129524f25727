// How much memory gRPC's transports may hold (a grpc::ResourceQuota size): an eighth
// of the memory the process may use, the cgroup limit (a Kubernetes memory limit)
// or else the machine's RAM.
//
// Why: Debian's gRPC 1.51 buffers an HTTP/2 header block that never ends (HEADERS
// then CONTINUATION frames without END_HEADERS) whole, before the auth gate or any
// size limit sees it (CVE-2023-33953): one client without a credential sent 200 MiB
// that way and the server held 466 MiB. Against the quota, gRPC closes such a
// connection once about 1.7 times the quota has arrived; the process grows by about
// 3.2 times the quota meanwhile (measured with 16 and 128 MiB). An eighth of the
// limit keeps that flood at 0.4 of it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace iotauth {

// The contents of cgroup v2 memory.max or v1 memory.limit_in_bytes: nullopt for
// "max", a v1 "unlimited" (at least 2^62), or anything unreadable.
std::optional<uint64_t> ParseCgroupMemoryLimit(absl::string_view contents);

struct TransportMemoryBudget {
  uint64_t bytes = 0;
  std::string source;  // what it was derived from, for the start-up log line
};

// An eighth of the cgroup limit, or of `physical_bytes` when there is none or it is
// larger; never under 32 MiB.
TransportMemoryBudget TransportMemoryFrom(std::optional<uint64_t> cgroup_limit,
                                          uint64_t physical_bytes);

// The same, from this process's cgroup (v2, then v1) and sysconf.
TransportMemoryBudget DetectTransportMemory();

}  // namespace iotauth
