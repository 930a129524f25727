// Block summaries of the audit log: instead of a B-tree index per queried column
// (whose random inserts dirtied a page per event and grew slower with the log),
// the store summarises each block of kBlockEvents consecutive sequences once it is
// complete: its time range and a Bloom filter over its tenant and device ids. A
// query reads the summaries and scans only the blocks that may hold a match (the
// idea of PostgreSQL's BRIN bloom indexes). A Bloom filter has false positives
// (an extra block scanned) but never false negatives, so results stay exact.
//
// The filter's bytes are persisted: StableHash64 and the bit layout must never
// change for kFilterVersion 1.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace iotauth::audit {

// Events per summarised block: block b holds sequences b*kBlockEvents+1 to
// (b+1)*kBlockEvents.
inline constexpr uint64_t kBlockEvents = 4096;

// 64-bit FNV-1a followed by the SplitMix64 finalizer. Deterministic across
// processes and builds (unlike absl::Hash), so it can be stored.
uint64_t StableHash64(absl::string_view data);

class BlockFilter {
 public:
  static constexpr int kFilterVersion = 1;
  // 64 Ki bits (8 KiB) and 4 probes: with a block's 4096 device ids and a few
  // tenants, about 0.25% of non-matching blocks are scanned needlessly.
  static constexpr size_t kBits = 65536;
  static constexpr int kProbes = 4;

  BlockFilter();
  // INVALID_ARGUMENT unless `bytes` has the size of a version-1 filter.
  static absl::StatusOr<BlockFilter> FromBytes(absl::string_view bytes);

  void AddTenant(absl::string_view tenant_id) { Add('t', tenant_id); }
  void AddDevice(absl::string_view device_id) { Add('d', device_id); }
  // False only when no event of the block has this id.
  bool MayContainTenant(absl::string_view tenant_id) const { return MayContain('t', tenant_id); }
  bool MayContainDevice(absl::string_view device_id) const { return MayContain('d', device_id); }

  const std::string& bytes() const { return bits_; }

 private:
  void Add(char kind, absl::string_view id);
  bool MayContain(char kind, absl::string_view id) const;

  std::string bits_;  // kBits / 8 bytes
};

}  // namespace iotauth::audit
