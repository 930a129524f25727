#include "services/common/memory_budget.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace iotauth {
namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr uint64_t kMinimum = 32 * kMiB;
// cgroup v1 reports "no limit" as a page-rounded LLONG_MAX.
constexpr uint64_t kUnlimited = uint64_t{1} << 62;

std::optional<uint64_t> ReadLimit(const char* path) {
  const int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  char buf[64];
  const ssize_t n = read(fd, buf, sizeof(buf));
  close(fd);
  if (n <= 0) return std::nullopt;
  return ParseCgroupMemoryLimit(absl::string_view(buf, static_cast<size_t>(n)));
}

}  // namespace

std::optional<uint64_t> ParseCgroupMemoryLimit(absl::string_view contents) {
  contents = absl::StripAsciiWhitespace(contents);
  uint64_t value = 0;
  if (contents == "max" || !absl::SimpleAtoi(contents, &value) || value == 0 ||
      value >= kUnlimited) {
    return std::nullopt;
  }
  return value;
}

TransportMemoryBudget TransportMemoryFrom(std::optional<uint64_t> cgroup_limit,
                                          uint64_t physical_bytes) {
  TransportMemoryBudget b;
  uint64_t base = physical_bytes;
  b.source = absl::StrCat("an eighth of the machine's ", physical_bytes / kMiB, " MiB");
  if (cgroup_limit.has_value() && (*cgroup_limit < physical_bytes || physical_bytes == 0)) {
    base = *cgroup_limit;
    b.source = absl::StrCat("an eighth of the cgroup memory limit, ", base / kMiB, " MiB");
  }
  b.bytes = std::max(base / 8, kMinimum);
  return b;
}

TransportMemoryBudget DetectTransportMemory() {
  std::optional<uint64_t> limit = ReadLimit("/sys/fs/cgroup/memory.max");
  if (!limit.has_value()) limit = ReadLimit("/sys/fs/cgroup/memory/memory.limit_in_bytes");
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page_size = sysconf(_SC_PAGESIZE);
  const uint64_t physical = pages > 0 && page_size > 0
                                ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page_size)
                                : 0;
  return TransportMemoryFrom(limit, physical);
}

}  // namespace iotauth
