#include "services/audit/chain_check.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "services/audit/canonical.h"
#include "services/common/error_info.h"
#include "services/common/status_macros.h"

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
    // The chain alone cannot tell these apart: both leave two self-consistent events
    // that do not link. The earlier one is named; the detail gives both.
    return {seq - 1, kProblemAltered,
            absl::StrCat("event ", seq - 1, " no longer has the hash that event ", seq,
                         " chained to: either event ", seq - 1,
                         " was changed and re-hashed, or events after it were removed and "
                         "the later ones renumbered and re-hashed (a checkpoint kept outside "
                         "the log, `--expect`, tells which)")};
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

absl::StatusOr<VerifyResult> VerifyAgainstCheckpoint(AuditStore& store, uint64_t from_sequence,
                                                     uint64_t to_sequence,
                                                     const CheckpointRecord& expected) {
  const uint64_t want = expected.sequence;
  if (want == 0) return absl::InvalidArgumentError("expected checkpoint: sequence must be > 0");
  IOTAUTH_ASSIGN_OR_RETURN(ChainHead head, store.Head());
  if (head.sequence < want) {
    VerifyResult r;
    r.last_sequence = head.sequence;
    return FailWith(r, {head.sequence + 1, kProblemMissing,
                        absl::StrCat("the log ends at ", head.sequence,
                                     " but the checkpoint kept outside it covers event ", want,
                                     ": the events after ", head.sequence,
                                     " were removed, or the log was replaced")});
  }
  // The walk first, widened to reach the event, so that the hash compared below is
  // one the chain vouches for, and so that damage anywhere on the way is named as
  // such (a forged start of the log included) before anything else.
  const uint64_t from = from_sequence == 0 ? 0 : std::min(from_sequence, want);
  const uint64_t to = to_sequence == 0 ? 0 : std::max(to_sequence, want);
  IOTAUTH_ASSIGN_OR_RETURN(VerifyResult r, store.Verify(from, to));
  if (!r.ok) return r;
  auto mismatch = [&r, want]() {
    return FailWith(r, {want, kProblemCheckpointMismatch,
                        absl::StrCat("event ", want,
                                     " hash differs from the checkpoint kept outside the log: the "
                                     "log was rewritten from this event or before it")});
  };
  IOTAUTH_ASSIGN_OR_RETURN(uint64_t first, store.FirstSequence());
  if (want < first) {
    // Pruned. The retention anchor still records the last pruned event's hash.
    const bool anchor_vouched = r.last_sequence > r.anchor_sequence;
    if (want == r.anchor_sequence && (anchor_vouched || head.sequence == want)) {
      if ((anchor_vouched ? r.anchor_hash : head.hash) != expected.head_hash) return mismatch();
      r.expected_matched = true;
      return r;
    }
    // Not a verdict the chain can give either way: fail closed, and say why.
    return FailWith(
        r, {want, kProblemMissing,
            absl::StrCat("event ", want, " is no longer in the log, which starts at ", first,
                         ". Retention prunes old events: verify against a newer "
                         "checkpoint. If retention cannot have pruned this one, the "
                         "start of the log was removed")});
  }
  EventFilter f;
  f.after_sequence = want - 1;
  IOTAUTH_ASSIGN_OR_RETURN(std::vector<AuditEvent> at, store.Query(f, 1));
  if (at.empty() || at.front().sequence() != want) {
    // Pruned between the two reads: not a verdict on the log.
    return WithErrorReason(
        absl::UnavailableError(absl::StrCat("event ", want,
                                            " went away while it was verified (retention ran?): "
                                            "retry")),
        "PRUNED_DURING_VERIFY");
  }
  if (at.front().hash() != expected.head_hash) return mismatch();
  r.expected_matched = true;
  return r;
}

}  // namespace iotauth::audit
