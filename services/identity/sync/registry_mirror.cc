#include "services/identity/sync/registry_mirror.h"

#include <grpcpp/support/client_callback.h>

#include <algorithm>
#include <deque>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/blocking_counter.h"
#include "services/common/grpc_status.h"
#include "services/common/log.h"
#include "services/common/proto_time.h"
#include "services/common/thread_name.h"

namespace iotauth::identity {
namespace {

namespace rv1 = iotauth::registry::v1;

// Errors worth retrying the same change for: the registry or the way to it is
// unwell, or our credentials are (which affects every change alike). Anything else
// (INTERNAL, DATA_LOSS, RESOURCE_EXHAUSTED, ...) is about that one resource and
// would fail the same way forever.
bool Retryable(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kCancelled:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kPermissionDenied:
      return true;
    default:
      return false;
  }
}

// A server stream (the change stream, or the device export of a snapshot), read
// with gRPC's callback API. A thread blocked in a synchronous Read() is a gRPC
// poller: on the shared epoll set it picks up socket events of unrelated calls
// (every Authenticate, in the all-in-one server) and hands them to the callback
// threads, one context switch each. Measured: ~25 k switches/s and 13.5 -> 15.8 us
// of server CPU per Authenticate at 63 k/s. Here gRPC's own threads deliver the
// messages into a bounded queue, and the mirror thread waits on a mutex.
template <typename Message>
class StreamReader final : public grpc::ClientReadReactor<Message> {
 public:
  // `max_queued`: messages buffered before reading pauses (flow control reaches the
  // registry).
  explicit StreamReader(size_t max_queued = 1024) : max_queued_(max_queued) {}

  // `begin(reactor)` starts the call on this reactor, for example
  // stub->async()->WatchChanges(&ctx, &req, reactor).
  // A hold keeps gRPC from finishing (and freeing) the call while no read is
  // outstanding (reading paused on a full queue): Next() may still start one. It is
  // released exactly once: by the read that finds the stream ended, or by Finish()
  // when reading is paused.
  template <typename Begin>
  void Start(Begin begin) {
    begin(this);
    this->AddHold();
    this->StartRead(&incoming_);
    this->StartCall();
  }

  // Blocks until a message arrives (true) or the stream ended (false; see Finish()).
  bool Next(Message* out) { return NextFor(out, absl::InfiniteDuration()) == Got::kMessage; }
  // A message already received, without waiting (false when none is queued).
  bool TryNext(Message* out) { return NextFor(out, absl::ZeroDuration()) == Got::kMessage; }

  enum class Got { kMessage, kEnded, kTimeout };
  // The same, giving up after `timeout` with nothing (kTimeout).
  Got NextFor(Message* out, absl::Duration timeout) {
    bool resume = false;
    {
      absl::MutexLock lock(&mu_);
      const bool ready =
          mu_.AwaitWithTimeout(absl::Condition(
                                   +[](StreamReader* r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(r->mu_) {
                                     return !r->queue_.empty() || r->done_;
                                   },
                                   this),
                               timeout);
      if (!ready) return Got::kTimeout;
      if (queue_.empty()) return Got::kEnded;
      *out = std::move(queue_.front());
      queue_.pop_front();
      if (paused_ && !finishing_ && queue_.size() <= max_queued_ / 2) {
        paused_ = false;
        resume = true;
      }
    }
    if (resume) this->StartRead(&incoming_);
    return Got::kMessage;
  }

  // Waits for the end of the call (after a cancel, for example) and returns its
  // status. The reader may be destroyed as soon as this returns.
  // Call after the stream ended or its context was cancelled; no Next() after it.
  grpc::Status Finish() {
    bool release = false;
    {
      absl::MutexLock lock(&mu_);
      finishing_ = true;
      // Paused: no read is outstanding, so none will release the hold.
      if (paused_ && !released_) release = released_ = true;
    }
    if (release) this->RemoveHold();
    finished_.WaitForNotification();
    return status_;
  }

  void OnReadDone(bool ok) override {
    bool more = false;
    bool release = false;
    {
      absl::MutexLock lock(&mu_);
      if (!ok || finishing_) {
        // The stream ended (OnDone follows once the hold is gone), or nobody reads
        // any more: start no other read.
        release = !released_;
        released_ = true;
      } else {
        queue_.push_back(std::move(incoming_));
        incoming_.Clear();
        more = queue_.size() < max_queued_;
        paused_ = !more;
      }
    }
    if (release) {
      this->RemoveHold();
    } else if (more) {
      this->StartRead(&incoming_);
    }
  }

  void OnDone(const grpc::Status& s) override {
    status_ = s;
    {
      absl::MutexLock lock(&mu_);
      done_ = true;
    }
    finished_.Notify();  // last: Finish() may destroy this reader right after
  }

 private:
  const size_t max_queued_;
  Message incoming_;  // owned by the outstanding read
  absl::Mutex mu_;
  std::deque<Message> queue_ ABSL_GUARDED_BY(mu_);
  bool paused_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  bool finishing_ ABSL_GUARDED_BY(mu_) = false;
  bool released_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status status_;  // written before finished_ is notified
  absl::Notification finished_;
};

}  // namespace

RegistryMirror::RegistryMirror(RegistryMirrorOptions options)
    : options_(std::move(options)), stub_(rv1::DeviceRegistry::NewStub(options_.channel)) {}

RegistryMirror::~RegistryMirror() { Stop(); }

void RegistryMirror::Start() {
  thread_ = std::thread([this] { Run(); });
}

bool RegistryMirror::WaitForInitialSync(absl::Duration timeout) {
  return synced_.WaitForNotificationWithTimeout(timeout);
}

void RegistryMirror::Stop() {
  if (stopping_.exchange(true)) {
    if (thread_.joinable()) thread_.join();
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    if (stream_ctx_ != nullptr) stream_ctx_->TryCancel();
  }
  if (thread_.joinable()) thread_.join();
}

void RegistryMirror::Prepare(grpc::ClientContext* ctx, absl::Duration timeout) const {
  if (!options_.bearer_token.empty()) {
    ctx->AddMetadata("authorization", "Bearer " + options_.bearer_token);
  }
  if (timeout != absl::InfiniteDuration()) {
    ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  }
}

void RegistryMirror::Heard() {
  last_heard_ns_.store(absl::ToUnixNanos(absl::Now()), std::memory_order_relaxed);
  UpdateFreshness();
}

void RegistryMirror::UpdateFreshness() {
  if (options_.fresh == nullptr || options_.max_silence <= absl::ZeroDuration()) return;
  if (!synced_.HasBeenNotified()) return;  // not ready yet either way
  const absl::Time heard = absl::FromUnixNanos(last_heard_ns_.load(std::memory_order_relaxed));
  const bool fresh = absl::Now() - heard <= options_.max_silence;
  if (options_.fresh->exchange(fresh) != fresh) {
    if (fresh) {
      log::Info("registry mirror: the registry answers again; deciding again");
    } else {
      log::Error(
          "registry mirror: no word from the registry within identity.max_registry_silence;"
          " answering UNAVAILABLE until it is back",
          {{"silence", absl::FormatDuration(options_.max_silence)}});
    }
  }
}

bool RegistryMirror::AttachStream(grpc::ClientContext* ctx) {
  absl::MutexLock lock(&mu_);
  if (stopping_.load()) return false;
  stream_ctx_ = ctx;
  return true;
}

void RegistryMirror::DetachStream() {
  absl::MutexLock lock(&mu_);
  stream_ctx_ = nullptr;
}

void RegistryMirror::Run() {
  SetCurrentThreadName("registry-mirror");
  const absl::Duration initial_backoff = absl::Milliseconds(100);
  absl::Duration backoff = initial_backoff;
  std::string cursor;
  while (!stopping_.load()) {
    absl::Status st;
    if (cursor.empty()) {
      st = Snapshot(&cursor);
      if (st.ok()) {
        if (!synced_.HasBeenNotified()) synced_.Notify();
        Heard();
        log::Info("registry mirror synced", {{"cursor", cursor}});
        backoff = initial_backoff;
      }
    }
    if (st.ok()) {
      const int64_t applied_before = applied_.load();
      st = Follow(cursor, &cursor);
      // Only progress resets the backoff: a stream that fails at once (or on the
      // same change) every time is retried ever more slowly, not every 100 ms.
      if (applied_.load() != applied_before) backoff = initial_backoff;
    }
    if (stopping_.load()) break;
    if (!st.ok()) {
      log::Warn("registry mirror retrying",
                {{"error", std::string(st.message())}, {"backoff", absl::FormatDuration(backoff)}});
      // A cursor the registry no longer retains forces a full resync. So does "0"
      // (a snapshot of a log that had no change yet): the registry reads "0" as
      // "the oldest retained change", so events pruned while we were away would be
      // skipped without an error.
      if (st.code() == absl::StatusCode::kOutOfRange || cursor == "0") cursor.clear();
      absl::Time until = absl::Now() + backoff;
      while (!stopping_.load() && absl::Now() < until) {
        absl::SleepFor(absl::Milliseconds(20));
        UpdateFreshness();
      }
      backoff = std::min(backoff * 2, options_.max_backoff);
    }
  }
}

absl::Status RegistryMirror::Snapshot(std::string* cursor) {
  absl::Status st = SnapshotFrom(cursor);
  // A snapshot that failed part-way left the target half filled: the cursor must
  // stay empty so that the next attempt starts a whole snapshot again (following
  // changes from it would leave whatever was not copied missing for good).
  if (!st.ok()) cursor->clear();
  return st;
}

absl::Status RegistryMirror::SnapshotFrom(std::string* cursor) {
  // The change log's head before the snapshot: changes racing the snapshot are
  // replayed afterwards (re-reading the current state makes replays harmless).
  {
    grpc::ClientContext ctx;
    Prepare(&ctx, absl::Seconds(30));
    rv1::GetChangeCursorRequest req;
    rv1::GetChangeCursorResponse resp;
    auto s = stub_->GetChangeCursor(&ctx, req, &resp);
    if (!s.ok()) return FromGrpcStatus(s, "GetChangeCursor");
    *cursor = resp.cursor();
    cursor_time_ = resp.cursor_time();
    has_cursor_time_ = resp.has_cursor_time();
  }
  // Old records stay readable until the snapshot is complete (EndSnapshot below).
  options_.target->BeginSnapshot();
  std::string page;
  std::vector<std::string> tenants;
  do {
    grpc::ClientContext ctx;
    Prepare(&ctx, absl::Seconds(30));
    rv1::ListTenantsRequest req;
    req.set_page_size(1000);
    req.set_page_token(page);
    rv1::ListTenantsResponse resp;
    auto s = stub_->ListTenants(&ctx, req, &resp);
    if (!s.ok()) return FromGrpcStatus(s, "ListTenants");
    for (const auto& t : resp.tenants()) {
      // List omits policy keys: read each tenant with its secrets.
      grpc::ClientContext gctx;
      Prepare(&gctx, absl::Seconds(30));
      rv1::GetTenantRequest greq;
      greq.set_tenant_id(t.id());
      greq.set_include_secrets(true);
      rv1::Tenant full;
      auto gs = stub_->GetTenant(&gctx, greq, &full);
      if (!gs.ok()) return FromGrpcStatus(gs, "GetTenant");
      options_.target->UpsertTenant(full);
      tenants.push_back(t.id());
    }
    page = resp.next_page_token();
  } while (!page.empty());

  for (const auto& tenant : tenants) {
    page.clear();
    do {
      grpc::ClientContext ctx;
      Prepare(&ctx, absl::Seconds(30));
      rv1::ListProductsRequest req;
      req.set_tenant_id(tenant);
      req.set_page_size(1000);
      req.set_page_token(page);
      rv1::ListProductsResponse resp;
      auto s = stub_->ListProducts(&ctx, req, &resp);
      if (!s.ok()) return FromGrpcStatus(s, "ListProducts");
      for (const auto& p : resp.products()) {
        grpc::ClientContext gctx;
        Prepare(&gctx, absl::Seconds(30));
        rv1::GetProductRequest greq;
        greq.set_tenant_id(tenant);
        greq.set_product_key(p.product_key());
        greq.set_include_secrets(true);
        rv1::Product full;
        auto gs = stub_->GetProduct(&gctx, greq, &full);
        if (!gs.ok()) return FromGrpcStatus(gs, "GetProduct");
        options_.target->UpsertProduct(full);
      }
      page = resp.next_page_token();
    } while (!page.empty());

    page.clear();
    do {
      grpc::ClientContext ctx;
      Prepare(&ctx, absl::Seconds(30));
      rv1::ListEnrollmentGroupsRequest req;
      req.set_tenant_id(tenant);
      req.set_page_size(1000);
      req.set_page_token(page);
      rv1::ListEnrollmentGroupsResponse resp;
      auto s = stub_->ListEnrollmentGroups(&ctx, req, &resp);
      if (!s.ok()) return FromGrpcStatus(s, "ListEnrollmentGroups");
      for (const auto& g : resp.groups()) {
        grpc::ClientContext gctx;
        Prepare(&gctx, absl::Seconds(30));
        rv1::GetEnrollmentGroupRequest greq;
        greq.set_tenant_id(tenant);
        greq.set_group_id(g.id());
        greq.set_include_secrets(true);
        rv1::EnrollmentGroup full;
        auto gs = stub_->GetEnrollmentGroup(&gctx, greq, &full);
        if (!gs.ok()) return FromGrpcStatus(gs, "GetEnrollmentGroup");
        options_.target->UpsertGroup(full);
      }
      page = resp.next_page_token();
    } while (!page.empty());

    if (options_.mirror_certificates) {
      absl::Status st = SnapshotCertificates(tenant);
      if (!st.ok()) return st;
    }

    absl::Status exported = ExportDevices(tenant);
    if (!exported.ok()) return exported;
  }
  // Complete: drop what the registry no longer has (deleted while not following).
  options_.target->EndSnapshot();
  return absl::OkStatus();
}

template <typename Message, typename BeginCall, typename OnMessage>
absl::StatusOr<grpc::Status> RegistryMirror::ReadExport(size_t max_queued, BeginCall begin,
                                                        OnMessage each) {
  grpc::ClientContext ctx;
  Prepare(&ctx, absl::InfiniteDuration());
  if (!AttachStream(&ctx)) return absl::CancelledError("stopping");
  StreamReader<Message> reader(max_queued);
  reader.Start([&](grpc::ClientReadReactor<Message>* r) { begin(&ctx, r); });
  Message message;
  while (!stopping_.load() && reader.Next(&message)) {
    each(message);
    Heard();
  }
  const grpc::Status s = reader.Finish();
  DetachStream();
  if (stopping_.load()) return absl::CancelledError("stopping");
  return s;
}

absl::Status RegistryMirror::ExportDevices(const std::string& tenant) {
  rv1::ExportDevicesRequest req;
  req.set_tenant_id(tenant);
  req.set_include_secrets(true);
  // The device export can be long (a million devices): Stop() cancels it. Batches
  // first: a message per device cost the registry and this reader a thread hand-off
  // each (58 s for a million devices here, against ~10 s in batches of 500).
  if (batched_export_.load()) {
    bool any = false;
    const absl::StatusOr<grpc::Status> s = ReadExport<rv1::DeviceBatch>(
        /*max_queued=*/4,  // ~4 MiB at most
        [&](grpc::ClientContext* ctx, grpc::ClientReadReactor<rv1::DeviceBatch>* r) {
          stub_->async()->ExportDeviceBatches(ctx, &req, r);
        },
        [&](const rv1::DeviceBatch& batch) {
          any = true;
          for (const rv1::Device& d : batch.devices()) {
            if (stopping_.load()) break;
            MirrorDevice(d);
          }
        });
    if (!s.ok()) return s.status();
    if (s->ok()) return absl::OkStatus();
    // A registry from before ExportDeviceBatches (split mode, mid-upgrade): the
    // one-by-one export from now on.
    if (s->error_code() != grpc::StatusCode::UNIMPLEMENTED || any) {
      return FromGrpcStatus(*s, "ExportDeviceBatches");
    }
    batched_export_.store(false);
    log::Info("registry mirror: the registry has no ExportDeviceBatches; exporting one by one");
  }
  const absl::StatusOr<grpc::Status> s = ReadExport<rv1::Device>(
      /*max_queued=*/1024,
      [&](grpc::ClientContext* ctx, grpc::ClientReadReactor<rv1::Device>* r) {
        stub_->async()->ExportDevices(ctx, &req, r);
      },
      [this](const rv1::Device& d) { MirrorDevice(d); });
  if (!s.ok()) return s.status();
  if (!s->ok()) return FromGrpcStatus(*s, "ExportDevices");
  return absl::OkStatus();
}

absl::Status RegistryMirror::SnapshotCertificates(const std::string& tenant) {
  // CAs first: CRLs and revocations refer to them.
  std::string page;
  do {
    grpc::ClientContext ctx;
    Prepare(&ctx, absl::Seconds(30));
    rv1::ListCaCertificatesRequest req;
    req.set_tenant_id(tenant);
    req.set_page_size(1000);
    req.set_page_token(page);
    rv1::ListCaCertificatesResponse resp;
    auto s = stub_->ListCaCertificates(&ctx, req, &resp);
    if (!s.ok()) return FromGrpcStatus(s, "ListCaCertificates");
    for (const auto& c : resp.cas()) options_.target->UpsertCa(c);
    page = resp.next_page_token();
  } while (!page.empty());
  do {
    grpc::ClientContext ctx;
    Prepare(&ctx, absl::Seconds(30));
    rv1::ListRevocationsRequest req;
    req.set_tenant_id(tenant);
    req.set_page_size(1000);
    req.set_page_token(page);
    rv1::ListRevocationsResponse resp;
    auto s = stub_->ListRevocations(&ctx, req, &resp);
    if (!s.ok()) return FromGrpcStatus(s, "ListRevocations");
    for (const auto& r : resp.revocations()) options_.target->UpsertRevocation(r);
    page = resp.next_page_token();
  } while (!page.empty());
  do {
    grpc::ClientContext ctx;
    Prepare(&ctx, absl::Seconds(30));
    rv1::ListCrlsRequest req;
    req.set_tenant_id(tenant);
    req.set_page_size(8);  // CRLs are up to 4 MiB each: pages stay far below the channel limit
    req.set_page_token(page);
    rv1::ListCrlsResponse resp;
    auto s = stub_->ListCrls(&ctx, req, &resp);
    if (!s.ok()) return FromGrpcStatus(s, "ListCrls");
    for (const auto& c : resp.crls()) options_.target->UpsertCrl(c);
    page = resp.next_page_token();
  } while (!page.empty());
  return absl::OkStatus();
}

absl::Status RegistryMirror::Follow(const std::string& cursor, std::string* last_cursor) {
  grpc::ClientContext ctx;
  Prepare(&ctx, absl::InfiniteDuration());
  if (!AttachStream(&ctx)) return absl::CancelledError("stopping");
  rv1::WatchChangesRequest req;
  req.set_cursor(cursor);
  // So that a registry whose log is not the one this cursor came from says so.
  if (has_cursor_time_) *req.mutable_cursor_time() = cursor_time_;
  const absl::Duration beat = options_.heartbeat_interval;
  if (beat > absl::ZeroDuration()) ToProtoDuration(beat, req.mutable_heartbeat_interval());
  const absl::Duration silence_limit = beat > absl::ZeroDuration()
                                           ? beat * std::max(options_.silent_heartbeats, 2)
                                           : absl::InfiniteDuration();
  StreamReader<rv1::ChangeEvent> reader;
  reader.Start([&](grpc::ClientReadReactor<rv1::ChangeEvent>* r) {
    stub_->async()->WatchChanges(&ctx, &req, r);
  });
  rv1::ChangeEvent ev;
  absl::Status apply_status;
  bool silent = false;
  while (!stopping_.load()) {
    // Wake at least every heartbeat to judge freshness, and give up on a stream that
    // has been silent for silence_limit.
    absl::Duration waited = absl::ZeroDuration();
    auto got = StreamReader<rv1::ChangeEvent>::Got::kTimeout;
    while (!stopping_.load() && waited < silence_limit) {
      const absl::Duration step =
          beat > absl::ZeroDuration() ? std::min(beat, silence_limit - waited) : silence_limit;
      got = reader.NextFor(&ev, step);
      if (got != StreamReader<rv1::ChangeEvent>::Got::kTimeout) break;
      waited += step;
      UpdateFreshness();
    }
    if (got == StreamReader<rv1::ChangeEvent>::Got::kEnded || stopping_.load()) break;
    if (got == StreamReader<rv1::ChangeEvent>::Got::kTimeout) {
      silent = true;
      ctx.TryCancel();
      break;
    }
    Heard();
    // What else has arrived already goes in the same batch: the devices it names are
    // read from the registry all at once (a big import's backlog would otherwise cost
    // one round trip per device, in front of any disable queued behind it), then
    // every event is applied in order.
    std::vector<rv1::ChangeEvent> batch(1);
    batch[0].Swap(&ev);
    rv1::ChangeEvent more;
    while (batch.size() < kPrefetchBatch && reader.TryNext(&more)) {
      batch.emplace_back();
      batch.back().Swap(&more);
    }
    std::vector<DeviceFetch> fetched = FetchDevices(batch);
    bool stop = false;
    for (size_t i = 0; i < batch.size() && !stop; ++i) {
      const rv1::ChangeEvent& e = batch[i];
      // A heartbeat only says the stream is alive (Heard above); the cursor stays
      // at the last change, whose time identifies this log on reconnect.
      if (e.type() == rv1::CHANGE_TYPE_HEARTBEAT) continue;
      apply_status =
          fetched[i].fetched ? ApplyDevice(e, fetched[i].status, fetched[i].device) : Apply(e);
      stop = !Settle(e, &apply_status);
      if (stop) break;
      if (!e.cursor().empty()) {
        *last_cursor = e.cursor();
        cursor_time_ = e.time();
        has_cursor_time_ = e.has_time();
      }
      applied_.fetch_add(1);
    }
    if (stop) {
      ctx.TryCancel();
      break;
    }
  }
  const grpc::Status s = reader.Finish();
  DetachStream();
  if (!apply_status.ok()) return apply_status;
  if (stopping_.load()) return absl::OkStatus();
  if (silent) {
    silent_streams_.fetch_add(1);
    return absl::UnavailableError(absl::StrCat("WatchChanges: no heartbeat from the registry for ",
                                               absl::FormatDuration(silence_limit),
                                               " (a dead connection); reconnecting"));
  }
  if (s.ok()) return absl::UnavailableError("WatchChanges ended");
  return FromGrpcStatus(s, "WatchChanges");
}

std::vector<RegistryMirror::DeviceFetch> RegistryMirror::FetchDevices(
    const std::vector<rv1::ChangeEvent>& batch) {
  std::vector<DeviceFetch> out(batch.size());
  std::vector<size_t> wanted;
  for (size_t i = 0; i < batch.size(); ++i) {
    if (batch[i].resource_type() == rv1::RESOURCE_TYPE_DEVICE &&
        batch[i].type() != rv1::CHANGE_TYPE_DELETED) {
      wanted.push_back(i);
    }
  }
  if (wanted.size() < 2) return out;  // nothing to gain: Apply reads it
  size_t settled = batched_get_ ? BatchFetch(batch, wanted, &out) : 0;
  // A registry from before BatchGetDevices: one GetDevice per device, a few dozen
  // at a time.
  struct Call {
    grpc::ClientContext ctx;
    rv1::GetDeviceRequest req;
  };
  while (settled < wanted.size()) {
    const size_t n = std::min(kFetchConcurrency, wanted.size() - settled);
    std::vector<Call> calls(n);
    absl::BlockingCounter done(static_cast<int>(n));
    for (size_t k = 0; k < n; ++k) {
      const rv1::ChangeEvent& e = batch[wanted[settled + k]];
      Call& c = calls[k];
      Prepare(&c.ctx, absl::Seconds(30));
      c.req.set_tenant_id(e.tenant_id());
      c.req.set_device_id(e.resource_id());
      c.req.set_include_secrets(true);
      DeviceFetch* f = &out[wanted[settled + k]];
      f->fetched = true;
      stub_->async()->GetDevice(&c.ctx, &c.req, &f->device, [f, &done](grpc::Status st) {
        f->status = std::move(st);
        done.DecrementCount();
      });
    }
    done.Wait();
    settled += n;
  }
  return out;
}

size_t RegistryMirror::BatchFetch(const std::vector<rv1::ChangeEvent>& batch,
                                  const std::vector<size_t>& wanted,
                                  std::vector<DeviceFetch>* out) {
  size_t next = 0;
  while (next < wanted.size()) {
    rv1::BatchGetDevicesRequest req;
    req.set_include_secrets(true);
    const size_t end = std::min(wanted.size(), next + kPrefetchBatch);
    for (size_t k = next; k < end; ++k) {
      rv1::BatchGetDevicesRequest::DeviceId* id = req.add_ids();
      id->set_tenant_id(batch[wanted[k]].tenant_id());
      id->set_device_id(batch[wanted[k]].resource_id());
    }
    grpc::ClientContext ctx;
    Prepare(&ctx, absl::Seconds(30));
    rv1::BatchGetDevicesResponse resp;
    grpc::Status st = stub_->BatchGetDevices(&ctx, req, &resp);
    if (st.error_code() == grpc::StatusCode::UNIMPLEMENTED) {
      batched_get_ = false;
      log::Info(
          "registry mirror: the registry has no BatchGetDevices; reading changed devices one "
          "call each");
      return next;
    }
    if (st.ok() && (resp.results().empty() || resp.results_size() > req.ids_size())) {
      st = grpc::Status(grpc::StatusCode::INTERNAL,
                        absl::StrCat("BatchGetDevices answered ", resp.results_size(), " of ",
                                     req.ids_size(), " ids"));
    }
    if (!st.ok()) {
      // The call failed whole: every device it was for fails with it (Settle
      // reconnects on a transient error), as a failed GetDevice does.
      for (size_t k = next; k < wanted.size(); ++k) {
        DeviceFetch& f = (*out)[wanted[k]];
        f.fetched = true;
        f.status = st;
      }
      return wanted.size();
    }
    for (rv1::BatchGetDevicesResponse::Result& r : *resp.mutable_results()) {
      DeviceFetch& f = (*out)[wanted[next++]];
      f.fetched = true;
      if (r.code() == 0) {
        f.device.Swap(r.mutable_device());
      } else {
        f.status = grpc::Status(static_cast<grpc::StatusCode>(r.code()), r.message());
      }
    }
  }
  return next;
}

absl::Status RegistryMirror::ApplyDevice(const rv1::ChangeEvent& ev, const grpc::Status& read,
                                         const rv1::Device& device) const {
  if (read.ok()) {
    MirrorDevice(device);
    return absl::OkStatus();
  }
  if (read.error_code() != grpc::StatusCode::NOT_FOUND) {
    return FromGrpcStatus(read, "reading a changed device");
  }
  options_.target->RemoveDevice(ev.tenant_id(), ev.resource_id());
  return absl::OkStatus();
}

void RegistryMirror::MirrorDevice(const rv1::Device& device) const {
  if (!device.keys_unreadable()) {
    options_.target->UpsertDevice(device);
    return;
  }
  // The registry could not open this device's keys: it leaves the cache (refused
  // from now on), as a change that cannot be read does, and the rest go on.
  log::Error(
      "registry mirror: the registry cannot open this device's keys (a damaged row, or "
      "keys sealed under another master key); it is refused until they are written again",
      {{"tenant_id", device.tenant_id()}, {"device_id", device.device_id()}});
  options_.target->RemoveDevice(device.tenant_id(), device.device_id());
  failed_closed_.fetch_add(1);
}

bool RegistryMirror::Settle(const rv1::ChangeEvent& ev, absl::Status* status) {
  if (status->ok()) return true;
  if (!Retryable(*status) && FailClosed(ev)) {
    // This resource cannot be read, and never will be as it is: it leaves the
    // cache (refused from now on) instead of holding back every later change.
    log::Error(
        "registry mirror: a change could not be applied; the resource is dropped "
        "from the identity cache until it changes again",
        {{"resource", rv1::ResourceType_Name(ev.resource_type())},
         {"tenant_id", ev.tenant_id()},
         {"id", ev.resource_id()},
         {"error", std::string(status->message())}});
    failed_closed_.fetch_add(1);
    *status = absl::OkStatus();
    return true;
  }
  return false;
}

bool RegistryMirror::FailClosed(const rv1::ChangeEvent& ev) const {
  const std::string& tenant = ev.tenant_id();
  const std::string& id = ev.resource_id();
  switch (ev.resource_type()) {
    case rv1::RESOURCE_TYPE_TENANT:
      options_.target->RemoveTenant(tenant);
      return true;
    case rv1::RESOURCE_TYPE_PRODUCT:
      options_.target->RemoveProduct(tenant, id);
      return true;
    case rv1::RESOURCE_TYPE_DEVICE:
      options_.target->RemoveDevice(tenant, id);
      return true;
    case rv1::RESOURCE_TYPE_ENROLLMENT_GROUP:
      options_.target->RemoveGroup(tenant, id);
      return true;
    case rv1::RESOURCE_TYPE_CA_CERTIFICATE:
      options_.target->RemoveCa(tenant, id);
      return true;
    case rv1::RESOURCE_TYPE_CRL:
      // A CA whose CRL cannot be read is not trusted at all (dropping only the
      // CRL would accept what it revokes).
      options_.target->MarkCrlUnusable(tenant, id);
      return true;
    default:
      // A revocation: dropping it would accept what it revokes. Keep retrying it.
      return false;
  }
}

absl::Status RegistryMirror::Apply(const rv1::ChangeEvent& ev) {
  const bool deleted = ev.type() == rv1::CHANGE_TYPE_DELETED;
  auto not_found = [](const grpc::Status& s) {
    return s.error_code() == grpc::StatusCode::NOT_FOUND;
  };
  switch (ev.resource_type()) {
    case rv1::RESOURCE_TYPE_TENANT: {
      if (!deleted) {
        grpc::ClientContext ctx;
        Prepare(&ctx, absl::Seconds(30));
        rv1::GetTenantRequest req;
        req.set_tenant_id(ev.tenant_id());
        req.set_include_secrets(true);
        rv1::Tenant t;
        auto s = stub_->GetTenant(&ctx, req, &t);
        if (s.ok()) {
          options_.target->UpsertTenant(t);
          return absl::OkStatus();
        }
        if (!not_found(s)) return FromGrpcStatus(s, "GetTenant");
      }
      options_.target->RemoveTenant(ev.tenant_id());
      return absl::OkStatus();
    }
    case rv1::RESOURCE_TYPE_PRODUCT: {
      if (!deleted) {
        grpc::ClientContext ctx;
        Prepare(&ctx, absl::Seconds(30));
        rv1::GetProductRequest req;
        req.set_tenant_id(ev.tenant_id());
        req.set_product_key(ev.resource_id());
        req.set_include_secrets(true);
        rv1::Product p;
        auto s = stub_->GetProduct(&ctx, req, &p);
        if (s.ok()) {
          options_.target->UpsertProduct(p);
          return absl::OkStatus();
        }
        if (!not_found(s)) return FromGrpcStatus(s, "GetProduct");
      }
      options_.target->RemoveProduct(ev.tenant_id(), ev.resource_id());
      return absl::OkStatus();
    }
    case rv1::RESOURCE_TYPE_DEVICE: {
      if (deleted) return ApplyDevice(ev, grpc::Status(grpc::StatusCode::NOT_FOUND, ""), {});
      grpc::ClientContext ctx;
      Prepare(&ctx, absl::Seconds(30));
      rv1::GetDeviceRequest req;
      req.set_tenant_id(ev.tenant_id());
      req.set_device_id(ev.resource_id());
      req.set_include_secrets(true);
      rv1::Device d;
      const grpc::Status s = stub_->GetDevice(&ctx, req, &d);
      return ApplyDevice(ev, s, d);
    }
    case rv1::RESOURCE_TYPE_ENROLLMENT_GROUP: {
      if (!deleted) {
        grpc::ClientContext ctx;
        Prepare(&ctx, absl::Seconds(30));
        rv1::GetEnrollmentGroupRequest req;
        req.set_tenant_id(ev.tenant_id());
        req.set_group_id(ev.resource_id());
        req.set_include_secrets(true);
        rv1::EnrollmentGroup g;
        auto s = stub_->GetEnrollmentGroup(&ctx, req, &g);
        if (s.ok()) {
          options_.target->UpsertGroup(g);
          return absl::OkStatus();
        }
        if (!not_found(s)) return FromGrpcStatus(s, "GetEnrollmentGroup");
      }
      options_.target->RemoveGroup(ev.tenant_id(), ev.resource_id());
      return absl::OkStatus();
    }
    case rv1::RESOURCE_TYPE_CA_CERTIFICATE: {
      if (!options_.mirror_certificates) return absl::OkStatus();
      if (!deleted) {
        grpc::ClientContext ctx;
        Prepare(&ctx, absl::Seconds(30));
        rv1::GetCaCertificateRequest req;
        req.set_tenant_id(ev.tenant_id());
        req.set_ca_id(ev.resource_id());
        rv1::CaCertificate c;
        auto s = stub_->GetCaCertificate(&ctx, req, &c);
        if (s.ok()) {
          options_.target->UpsertCa(c);
          return absl::OkStatus();
        }
        if (!not_found(s)) return FromGrpcStatus(s, "GetCaCertificate");
      }
      options_.target->RemoveCa(ev.tenant_id(), ev.resource_id());
      return absl::OkStatus();
    }
    case rv1::RESOURCE_TYPE_REVOCATION: {
      if (!options_.mirror_certificates) return absl::OkStatus();
      if (!deleted) {
        grpc::ClientContext ctx;
        Prepare(&ctx, absl::Seconds(30));
        rv1::GetRevocationRequest req;
        req.set_tenant_id(ev.tenant_id());
        req.set_revocation_id(ev.resource_id());
        rv1::CertificateRevocation r;
        auto s = stub_->GetRevocation(&ctx, req, &r);
        if (s.ok()) {
          options_.target->UpsertRevocation(r);
          return absl::OkStatus();
        }
        if (!not_found(s)) return FromGrpcStatus(s, "GetRevocation");
      }
      options_.target->RemoveRevocation(ev.tenant_id(), ev.resource_id());
      return absl::OkStatus();
    }
    case rv1::RESOURCE_TYPE_CRL: {
      if (!options_.mirror_certificates) return absl::OkStatus();
      if (!deleted) {
        grpc::ClientContext ctx;
        Prepare(&ctx, absl::Seconds(30));
        rv1::GetCrlRequest req;
        req.set_tenant_id(ev.tenant_id());
        req.set_ca_id(ev.resource_id());
        rv1::CertificateRevocationList c;
        auto s = stub_->GetCrl(&ctx, req, &c);
        if (s.ok()) {
          options_.target->UpsertCrl(c);
          return absl::OkStatus();
        }
        if (!not_found(s)) return FromGrpcStatus(s, "GetCrl");
      }
      options_.target->RemoveCrl(ev.tenant_id(), ev.resource_id());
      return absl::OkStatus();
    }
    default:
      // The issuing CA (its CaCertificate carries the trust) and bookmarks.
      return absl::OkStatus();
  }
}

}  // namespace iotauth::identity
