#include "services/audit/chain_check.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "services/audit/canonical.h"

namespace iotauth::audit {

using iotauth::audit::v1::AuditEvent;

VerifyResult FailWith(VerifyResult r, ChainFault fault) {
  r.ok = false;
  r.first_bad_sequence = fault.sequence;
  r.problem = std::string(fault.problem);
  r.detail = std::move(fault.detail);
  return r;
}

ChainFault BrokenLinkFault(uint64_t seq, const AuditEvent* stored, bool self_ok,
                           uint64_t anchor_seq) {
  // Rows deleted and the later ones renumbered to close the hole: the stored hash
  // still commits to the original sequence.
  if (stored != nullptr && !self_ok) {
    AuditEvent original = *stored;
    for (uint64_t d = 1; d <= kMaxRenumberSearch; ++d) {
      original.set_sequence(seq + d);
      auto h = ComputeEventHash(original);
      if (h.ok() && *h == stored->hash()) {
        return {seq, kProblemMissing,
                absl::StrCat(d, " event(s) from ", seq,
                             " were removed and the later events renumbered (event ", seq,
                             " was written as ", seq + d, ")")};
      }
    }
  }
  if (seq == anchor_seq + 1) {
    return {seq, kProblemCheckpointMismatch,
            absl::StrCat("prev_hash of event ", seq, " does not match ",
                         anchor_seq == 0 ? std::string("the genesis hash")
                                         : absl::StrCat("checkpoint ", anchor_seq))};
  }
  if (self_ok) {
    return {seq - 1, kProblemAltered,
            absl::StrCat("event ", seq - 1, " no longer has the hash that event ", seq,
                         " chained to (changed and re-hashed)")};
  }
  return AlteredFault(seq);
}

ChainFault FollowsLaterFault(uint64_t seq, uint64_t stored_at) {
  return {seq, kProblemReordered,
          absl::StrCat("event ", seq, " follows the event stored at ", stored_at,
                       ", not the one before it")};
}

ChainFault AlteredFault(uint64_t seq) {
  return {seq, kProblemAltered, absl::StrCat("event ", seq, " does not match its stored hash")};
}

ChainFault CheckpointFault(uint64_t seq) {
  return {seq, kProblemCheckpointMismatch,
          absl::StrCat("event ", seq, " hash differs from the checkpoint recorded for it")};
}

ChainFault AbsentFault(uint64_t expected, uint64_t next_stored) {
  return {expected, kProblemMissing,
          absl::StrCat("event ", expected, " is absent; the next stored event is ", next_stored)};
}

ChainFault EndsEarlyFault(uint64_t upper, uint64_t last) {
  return {last + 1, kProblemMissing,
          absl::StrCat("the log should reach ", upper, " but ends at ", last)};
}

}  // namespace iotauth::audit
