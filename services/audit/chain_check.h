// Verify's verdicts, shared by the audit stores so that the same damage gets the
// same problem and wording whichever store holds the log. Each store walks its own
// storage and rules out what only it can see (an event stored out of order); these
// functions name the rest.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "proto/iotauth/audit/v1/audit.pb.h"
#include "services/audit/audit_store.h"

namespace iotauth::audit {

// One finding: the first bad event, a kProblem* name and an operator-facing detail.
struct ChainFault {
  uint64_t sequence = 0;
  absl::string_view problem;
  std::string detail;
};

// Marks `r` failed with `fault` and returns it.
VerifyResult FailWith(VerifyResult r, ChainFault fault);

// How far BrokenLinkFault looks for the original sequence of a renumbered event.
inline constexpr uint64_t kMaxRenumberSearch = 1024;

// Event `seq` does not chain to the event verified before it (its prev_hash
// differs), and the store found no later event it follows (not a reorder).
// `stored` is the event as stored with its stored `hash` (nullptr when it no
// longer decodes); `self_ok` says whether it still hashes to that; `anchor_seq`
// is where the walk started (0 = genesis). Names, in this order:
//  - events removed and the later ones renumbered (the stored hash commits to a
//    higher sequence; searched up to kMaxRenumberSearch);
//  - the first event not chaining to the anchor checkpoint or genesis;
//  - the previous event changed and re-hashed (this one is intact);
//  - this event altered.
ChainFault BrokenLinkFault(uint64_t seq, const iotauth::audit::v1::AuditEvent* stored, bool self_ok,
                           uint64_t anchor_seq);

// Event `seq` chains to the event stored at `stored_at`, which comes later.
ChainFault FollowsLaterFault(uint64_t seq, uint64_t stored_at);
// Event `seq` no longer hashes to its stored hash.
ChainFault AlteredFault(uint64_t seq);
// Event `seq`'s hash differs from the checkpoint recorded for it.
ChainFault CheckpointFault(uint64_t seq);
// Event `expected` is absent and `next_stored` is stored in its place.
ChainFault AbsentFault(uint64_t expected, uint64_t next_stored);
// The walk should reach `upper` but the log ends after `last`.
ChainFault EndsEarlyFault(uint64_t upper, uint64_t last);

// Verify against a checkpoint kept outside the log (an operator's copy of
// GetCheckpoint): `store.Verify` over the range widened to cover
// `expected.sequence`, then the event stored there must carry `expected.head_hash`
// (lowercase hex). A log cut short of it is MISSING from its end; a different hash
// is CHECKPOINT_MISMATCH at that event. Sets `expected_matched` when it holds.
// This is what catches a tail truncated, or a log rewritten whole, while the
// service was down, which the chain alone cannot show. The walk runs first and
// its failure wins. An event pruned by retention is compared with the retention
// anchor when it is the anchor; otherwise the result is MISSING at it (fail closed:
// the detail says to verify against a newer checkpoint).
absl::StatusOr<VerifyResult> VerifyAgainstCheckpoint(AuditStore& store, uint64_t from_sequence,
                                                     uint64_t to_sequence,
                                                     const CheckpointRecord& expected);

}  // namespace iotauth::audit
