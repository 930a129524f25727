// The audit sink: how identity and registry hand events to the audit pipeline.
// In the all-in-one binary it writes locally; in split mode it streams to the
// audit service over gRPC. Producers depend only on this interface.
#pragma once

#include "proto/iotauth/audit/v1/audit.pb.h"
#include "services/audit/event_view.h"

namespace iotauth::audit {

class AuditSink {
 public:
  virtual ~AuditSink() = default;
  // Hands one event to the pipeline. Must not block the caller beyond the
  // configured queue policy; never fails the caller's request. The sink assigns
  // `event_id` when empty; `sequence`, `prev_hash` and `hash` are set at commit.
  // Events must never contain a secret. Taken by rvalue reference: a sink moves
  // the event once, into its queue (a protobuf move is a field-by-field swap,
  // ~85 ns for an AuditEvent; by value it was done twice on the hot path).
  virtual void Record(iotauth::audit::v1::AuditEvent&& event) = 0;
  // Record for a producer that keeps `*event` to reuse its storage (Clear() keeps
  // the strings' capacity: a hot path then builds events without allocating). The
  // sink may set event_id and time in `*event`, as Record does; it keeps no
  // reference. The default records a copy.
  virtual void RecordReusing(iotauth::audit::v1::AuditEvent* event) {
    Record(iotauth::audit::v1::AuditEvent(*event));
  }
  // Records the event `view` describes, as Record(ToAuditEvent(view)) would. For
  // hot paths: LocalAuditSink encodes the view without building a message. The
  // default builds the message.
  virtual void RecordView(const EventView& view) { Record(ToAuditEvent(view)); }
  // False when every event would be discarded: producers may skip building them.
  virtual bool enabled() const { return true; }
};

// Discards events (auditing off).
class NullAuditSink final : public AuditSink {
 public:
  void Record(iotauth::audit::v1::AuditEvent&& /*event*/) override {}
  void RecordReusing(iotauth::audit::v1::AuditEvent* /*event*/) override {}
  void RecordView(const EventView& /*view*/) override {}
  bool enabled() const override { return false; }
};

}  // namespace iotauth::audit
