#include "services/audit/audit_service.h"

#include <grpcpp/grpcpp.h>

#include <cctype>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "services/audit/event_util.h"
#include "services/audit/log_audit_store.h"
#include "services/audit/pipeline.h"
#include "services/common/error_info.h"
#include "services/common/grpc_status.h"

namespace iotauth::audit {
namespace {

// The stable reason a remote caller reads from the status details.
std::string WireReason(const grpc::Status& s) { return ErrorReason(FromGrpcStatus(s)); }

// Streaming tests give up after this instead of hanging until the test timeout.
constexpr std::chrono::seconds kStreamDeadline(60);

namespace v1 = iotauth::audit::v1;

class FakeCallerResolver final : public CallerResolver {
 public:
  void Set(bool authenticated, uint32_t roles) {
    absl::MutexLock l(&mu_);
    caller_.authenticated = authenticated;
    caller_.principal = "test";
    caller_.roles = roles;
  }
  Caller Resolve(const grpc::ServerContextBase& /*context*/) const override {
    absl::MutexLock l(&mu_);
    return caller_;
  }

 private:
  mutable absl::Mutex mu_;
  Caller caller_;
};

constexpr uint32_t kReader = static_cast<uint32_t>(Role::kReader);
constexpr uint32_t kGateway = static_cast<uint32_t>(Role::kGateway);
constexpr uint32_t kAuditWriter = static_cast<uint32_t>(Role::kAuditWriter);
constexpr uint32_t kAdmin = static_cast<uint32_t>(Role::kAdmin);

v1::AuditEvent Event(int i) {
  v1::AuditEvent e;
  e.set_event_id(absl::StrCat("e", i));
  e.set_type(v1::EVENT_TYPE_AUTHENTICATION);
  e.set_tenant_id(i % 2 ? "odd" : "even");
  e.set_device_id(absl::StrCat("dev-", i % 3));
  e.set_outcome(v1::OUTCOME_ALLOW);
  return e;
}

class AuditServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* dir = std::getenv("TEST_TMPDIR");
    const std::string path =
        absl::StrCat(dir ? dir : "/tmp", "/",
                     ::testing::UnitTest::GetInstance()->current_test_info()->name(), ".log");
    std::filesystem::remove_all(path);
    LogAuditStore::Options so;  // the default backend
    so.dir = path;
    so.checkpoint_interval = 0;
    auto store = LogAuditStore::Open(so);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);

    LocalAuditSink::Options po;
    po.store = store_.get();
    po.notifier = &notifier_;
    po.linger = absl::ZeroDuration();
    auto sink = LocalAuditSink::Create(po);
    ASSERT_TRUE(sink.ok());
    sink_ = std::move(*sink);

    resolver_.Set(true, kReader);
    AuditService::Options o;
    o.store = store_.get();
    o.notifier = &notifier_;
    o.caller_resolver = &resolver_;
    o.clock = &clock_;
    o.max_watch_streams = max_watch_streams_;
    auto service = AuditService::Create(o);
    ASSERT_TRUE(service.ok()) << service.status();
    service_ = std::move(*service);

    grpc::ServerBuilder builder;
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    stub_ = v1::AuditLog::NewStub(server_->InProcessChannel(grpc::ChannelArguments()));
  }
  void TearDown() override {
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
    if (sink_) sink_->Shutdown();
  }
  void RecordAndFlush(int from, int to) {
    for (int i = from; i <= to; ++i) sink_->Record(Event(i));
    ASSERT_TRUE(sink_->Flush(absl::Seconds(10)));
  }

  int max_watch_streams_ = 256;
  FakeClock clock_;
  std::unique_ptr<LogAuditStore> store_;
  CommitNotifier notifier_;
  std::unique_ptr<LocalAuditSink> sink_;
  FakeCallerResolver resolver_;
  std::unique_ptr<AuditService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::AuditLog::Stub> stub_;
};

TEST_F(AuditServiceTest, CreateValidates) {
  AuditService::Options o;
  EXPECT_EQ(AuditService::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.store = store_.get();
  EXPECT_EQ(AuditService::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(AuditServiceTest, QueryPaginatesAndFilters) {
  RecordAndFlush(1, 25);
  v1::QueryRequest req;
  req.set_page_size(10);
  std::vector<uint64_t> seen;
  for (int page = 0;; ++page) {
    grpc::ClientContext ctx;
    v1::QueryResponse resp;
    ASSERT_TRUE(stub_->Query(&ctx, req, &resp).ok());
    for (const auto& e : resp.events()) seen.push_back(e.sequence());
    if (resp.next_page_token().empty()) {
      EXPECT_EQ(page, 2);
      EXPECT_EQ(resp.events_size(), 5);
      break;
    }
    EXPECT_EQ(resp.events_size(), 10);
    req.set_page_token(resp.next_page_token());
  }
  ASSERT_EQ(seen.size(), 25u);
  EXPECT_EQ(seen.front(), 1u);
  EXPECT_EQ(seen.back(), 25u);

  grpc::ClientContext ctx;
  v1::QueryRequest filtered;
  filtered.set_tenant_id("even");
  filtered.set_device_id("dev-0");  // i in {6, 12, 18, 24}
  v1::QueryResponse resp;
  ASSERT_TRUE(stub_->Query(&ctx, filtered, &resp).ok());
  ASSERT_EQ(resp.events_size(), 4);
  EXPECT_EQ(resp.events(0).event_id(), "e6");
}

TEST_F(AuditServiceTest, QueryRejectsBadInput) {
  v1::QueryRequest req;
  req.set_page_token("not-a-token");
  grpc::ClientContext c1;
  v1::QueryResponse resp;
  grpc::Status s = stub_->Query(&c1, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(WireReason(s), "INVALID_PAGE_TOKEN");
  req.clear_page_token();
  req.mutable_start_time()->set_seconds(200);
  req.mutable_end_time()->set_seconds(100);
  grpc::ClientContext c2;
  s = stub_->Query(&c2, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(WireReason(s), "INVALID_END_TIME");
  req.clear_start_time();
  req.set_page_size(-1);
  grpc::ClientContext c3;
  s = stub_->Query(&c3, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(WireReason(s), "INVALID_PAGE_SIZE");
}

TEST_F(AuditServiceTest, WatchSendsBacklogThenLiveEventsWithinASecond) {
  RecordAndFlush(1, 3);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + kStreamDeadline);  // fail, never hang
  v1::WatchRequest req;
  auto reader = stub_->Watch(&ctx, req);
  v1::AuditEvent e;
  for (int i = 1; i <= 3; ++i) {
    ASSERT_TRUE(reader->Read(&e));
    EXPECT_EQ(e.sequence(), static_cast<uint64_t>(i));
  }
  const absl::Time recorded = absl::Now();
  sink_->Record(Event(4));
  ASSERT_TRUE(reader->Read(&e));
  const absl::Duration delay = absl::Now() - recorded;
  EXPECT_EQ(e.event_id(), "e4");
  EXPECT_EQ(e.sequence(), 4u);
  EXPECT_LT(delay, absl::Seconds(1));
  RecordProperty("watch_delay_us", static_cast<int>(absl::ToInt64Microseconds(delay)));
  ctx.TryCancel();
  while (reader->Read(&e)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
}

TEST_F(AuditServiceTest, WatchFromNowWithFilter) {
  RecordAndFlush(1, 4);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + kStreamDeadline);  // fail, never hang
  v1::WatchRequest req;
  req.set_from_now(true);
  req.set_tenant_id("odd");
  auto reader = stub_->Watch(&ctx, req);
  // The headers arrive once the server has fixed the stream's start at the head.
  reader->WaitForInitialMetadata();
  const auto& headers = ctx.GetServerInitialMetadata();
  auto cursor = headers.find(std::string(kWatchCursorHeader));
  ASSERT_NE(cursor, headers.end());
  EXPECT_EQ(std::string(cursor->second.data(), cursor->second.size()), "4");
  RecordAndFlush(5, 8);  // odd: 5, 7
  v1::AuditEvent e;
  ASSERT_TRUE(reader->Read(&e));
  EXPECT_EQ(e.event_id(), "e5");
  ASSERT_TRUE(reader->Read(&e));
  EXPECT_EQ(e.event_id(), "e7");
  ctx.TryCancel();
  while (reader->Read(&e)) {
  }
}

// Each Watch holds a server thread while open: past the cap the next is refused
// with RESOURCE_EXHAUSTED, and a cancelled stream frees its slot.
class AuditServiceWatchCapTest : public AuditServiceTest {
 protected:
  AuditServiceWatchCapTest() { max_watch_streams_ = 2; }
};

TEST_F(AuditServiceWatchCapTest, RefusesWatchStreamsPastTheCapUntilOneEnds) {
  RecordAndFlush(1, 1);
  struct Open {
    grpc::ClientContext ctx;
    std::unique_ptr<grpc::ClientReader<v1::AuditEvent>> reader;
  };
  auto open = [&](Open* w) {
    w->ctx.set_deadline(std::chrono::system_clock::now() + kStreamDeadline);
    w->reader = stub_->Watch(&w->ctx, v1::WatchRequest());
  };
  Open a;
  Open b;
  Open c;
  open(&a);
  open(&b);
  v1::AuditEvent e;
  ASSERT_TRUE(a.reader->Read(&e));  // both hold their slots now
  ASSERT_TRUE(b.reader->Read(&e));
  open(&c);
  EXPECT_FALSE(c.reader->Read(&e));
  grpc::Status refused = c.reader->Finish();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(WireReason(refused), "TOO_MANY_STREAMS");
  EXPECT_NE(refused.error_message().find("too many Watch streams open (2)"), std::string::npos)
      << refused.error_message();
  a.ctx.TryCancel();
  while (a.reader->Read(&e)) {
  }
  a.reader->Finish();
  // The server notices the cancellation within its poll interval.
  grpc::StatusCode code = grpc::StatusCode::RESOURCE_EXHAUSTED;
  for (int attempt = 0; attempt < 100 && code == grpc::StatusCode::RESOURCE_EXHAUSTED; ++attempt) {
    Open d;
    open(&d);
    if (d.reader->Read(&e)) {
      code = grpc::StatusCode::OK;
      d.ctx.TryCancel();
      while (d.reader->Read(&e)) {
      }
    } else {
      code = d.reader->Finish().error_code();
      absl::SleepFor(absl::Milliseconds(50));
    }
  }
  EXPECT_EQ(code, grpc::StatusCode::OK) << "the cancelled stream's slot was not freed";
  b.ctx.TryCancel();
  while (b.reader->Read(&e)) {
  }
}

TEST_F(AuditServiceTest, WatchLargeBacklogInOrder) {
  RecordAndFlush(1, 600);  // more than one watch batch
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + kStreamDeadline);  // fail, never hang
  v1::WatchRequest req;
  req.set_after_sequence(10);
  auto reader = stub_->Watch(&ctx, req);
  v1::AuditEvent e;
  for (uint64_t want = 11; want <= 600; ++want) {
    ASSERT_TRUE(reader->Read(&e));
    ASSERT_EQ(e.sequence(), want);
  }
  ctx.TryCancel();
  while (reader->Read(&e)) {
  }
}

TEST_F(AuditServiceTest, IngestAcknowledgesAndDeduplicates) {
  resolver_.Set(true, kAuditWriter);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + kStreamDeadline);  // fail, never hang
  auto stream = stub_->Ingest(&ctx);
  v1::IngestRequest req;
  *req.add_events() = Event(1);
  *req.add_events() = Event(2);
  ASSERT_TRUE(stream->Write(req));
  v1::IngestAck ack;
  ASSERT_TRUE(stream->Read(&ack));
  EXPECT_EQ(ack.event_ids_size(), 2);
  req.Clear();
  *req.add_events() = Event(2);  // a resend
  *req.add_events() = Event(3);
  ASSERT_TRUE(stream->Write(req));
  ASSERT_TRUE(stream->Read(&ack));
  ASSERT_EQ(ack.event_ids_size(), 2);
  EXPECT_EQ(ack.event_ids(0), "e2");
  EXPECT_EQ(ack.event_ids(1), "e3");
  ASSERT_TRUE(stream->WritesDone());
  EXPECT_TRUE(stream->Finish().ok());
  auto all = store_->ReadAfter(0, 100);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[2].event_id(), "e3");
  EXPECT_EQ(notifier_.head(), 3u);
}

TEST_F(AuditServiceTest, IngestRejectsEventsWithoutId) {
  resolver_.Set(true, kAuditWriter);
  grpc::ClientContext ctx;
  auto stream = stub_->Ingest(&ctx);
  v1::IngestRequest req;
  req.add_events()->set_reason("no id");
  ASSERT_TRUE(stream->Write(req));
  v1::IngestAck ack;
  EXPECT_FALSE(stream->Read(&ack));
  const grpc::Status s = stream->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(WireReason(s), "INVALID_EVENT_ID");
}

TEST_F(AuditServiceTest, IngestRefusesRetentionRecords) {
  resolver_.Set(true, kAuditWriter);
  grpc::ClientContext ctx;
  auto stream = stub_->Ingest(&ctx);
  v1::IngestRequest req;
  auto* e = req.add_events();
  e->set_event_id("planted-retention");
  e->set_type(v1::EVENT_TYPE_RETENTION);
  ASSERT_TRUE(stream->Write(req));
  v1::IngestAck ack;
  EXPECT_FALSE(stream->Read(&ack));
  const grpc::Status s = stream->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(WireReason(s), "INVALID_TYPE");
}

TEST_F(AuditServiceTest, IngestedEventsAreBoundedAndNameTheirSender) {
  clock_.Set(absl::FromUnixSeconds(1700000000));
  v1::IngestRequest req;
  // The sender's own claim to be someone else is overwritten.
  v1::AuditEvent named = Event(1);
  (*named.mutable_attributes())["ingested_by"] = "admin";
  *req.add_events() = named;
  // Far in the future (it would hold back age retention), and a negative duration.
  v1::AuditEvent future = Event(2);
  future.mutable_time()->set_seconds(400000000000);
  future.mutable_duration()->set_seconds(1);
  future.mutable_duration()->set_nanos(-5);
  *req.add_events() = future;
  // A thousand attributes.
  v1::AuditEvent wide = Event(3);
  for (int i = 0; i < 1000; ++i) (*wide.mutable_attributes())[absl::StrCat("k", 1000 + i)] = "v";
  *req.add_events() = wide;
  auto ack = service_->RunIngest(req, "registry-1");
  ASSERT_TRUE(ack.ok()) << ack.status();
  auto all = store_->ReadAfter(0, 10);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 3u);
  for (const auto& e : *all) EXPECT_EQ(e.attributes().at("ingested_by"), "registry-1");
  EXPECT_EQ((*all)[1].time().seconds(), 1700000000);
  EXPECT_EQ((*all)[1].attributes().at("invalid_time_replaced"), "true");
  EXPECT_FALSE((*all)[1].has_duration());
  EXPECT_EQ((*all)[1].attributes().at("invalid_duration_dropped"), "true");
  EXPECT_LE((*all)[2].attributes().size(), kMaxAuditAttributes + 2);  // + truncated, ingested_by
  EXPECT_EQ((*all)[2].attributes().at("truncated"), "true");
  EXPECT_EQ((*all)[2].attributes().count("k1000"), 1u);  // the first ones, in key order

  // An id longer than any service makes is refused, before anything is written.
  v1::IngestRequest long_id;
  *long_id.add_events() = Event(4);
  long_id.mutable_events(0)->set_event_id(std::string(kMaxEventIdBytes + 1, 'x'));
  const absl::Status refused = service_->RunIngest(long_id, "registry-1").status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ErrorReason(refused), "INVALID_EVENT_ID");
  EXPECT_EQ(ErrorMetadata(refused, "limit_bytes"), absl::StrCat(kMaxEventIdBytes));
  EXPECT_EQ(store_->ReadAfter(0, 10)->size(), 3u);
}

TEST_F(AuditServiceTest, QueryPagesStayUnderAByteBudget) {
  // 40 events of ~130 KiB each (64 attributes of 2 KiB): a 1,000-event page would be
  // ~5 MiB; it stops at 4 MiB and says where to go on.
  v1::IngestRequest req;
  for (int i = 1; i <= 40; ++i) {
    v1::AuditEvent e = Event(i);
    for (int k = 0; k < 63; ++k) {
      (*e.mutable_attributes())[absl::StrCat(k, std::string(1000, 'k'))] = std::string(1000, 'v');
    }
    *req.add_events() = e;
  }
  ASSERT_TRUE(service_->RunIngest(req).ok());
  v1::QueryRequest q;
  q.set_page_size(1000);
  auto page = service_->RunQuery(q);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_LT(page->ByteSizeLong(), size_t{5} << 20);
  EXPECT_GT(page->events_size(), 0);
  EXPECT_LT(page->events_size(), 40);
  ASSERT_FALSE(page->next_page_token().empty());
  int total = page->events_size();
  while (!page->next_page_token().empty()) {
    q.set_page_token(page->next_page_token());
    page = service_->RunQuery(q);
    ASSERT_TRUE(page.ok());
    total += page->events_size();
  }
  EXPECT_EQ(total, 40);
}

TEST_F(AuditServiceTest, VerifyAndCheckpoints) {
  RecordAndFlush(1, 5);
  {
    grpc::ClientContext ctx;
    v1::VerifyResponse resp;
    ASSERT_TRUE(stub_->Verify(&ctx, v1::VerifyRequest(), &resp).ok());
    EXPECT_TRUE(resp.ok());
    EXPECT_EQ(resp.events_checked(), 5u);
    EXPECT_EQ(resp.last_sequence(), 5u);
  }
  {
    grpc::ClientContext ctx;
    v1::Checkpoint ck;
    const grpc::Status s = stub_->GetCheckpoint(&ctx, v1::GetCheckpointRequest(), &ck);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_EQ(WireReason(s), "NO_CHECKPOINT");
  }
  v1::GetCheckpointRequest create;
  create.set_create(true);
  {
    grpc::ClientContext ctx;
    v1::Checkpoint ck;
    EXPECT_EQ(stub_->GetCheckpoint(&ctx, create, &ck).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);  // reader only
  }
  resolver_.Set(true, kAdmin);
  {
    grpc::ClientContext ctx;
    v1::Checkpoint ck;
    ASSERT_TRUE(stub_->GetCheckpoint(&ctx, create, &ck).ok());
    EXPECT_EQ(ck.sequence(), 5u);
    EXPECT_EQ(ck.head_hash(), store_->Head()->hash);
    EXPECT_EQ(ck.time().seconds(), absl::ToUnixSeconds(clock_.Now()));
  }
  {
    grpc::ClientContext ctx;
    v1::Checkpoint ck;
    ASSERT_TRUE(stub_->GetCheckpoint(&ctx, v1::GetCheckpointRequest(), &ck).ok());
    EXPECT_EQ(ck.sequence(), 5u);
  }
  {
    grpc::ClientContext ctx;
    v1::VerifyRequest bad;
    bad.set_from_sequence(5);
    bad.set_to_sequence(2);
    v1::VerifyResponse resp;
    const grpc::Status s = stub_->Verify(&ctx, bad, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(WireReason(s), "INVALID_TO_SEQUENCE");
  }
  // Against a checkpoint kept outside the log.
  const std::string head_hash = store_->Head()->hash;
  auto verify_expecting = [this](uint64_t seq, const std::string& hash, v1::VerifyResponse* resp) {
    grpc::ClientContext ctx;
    v1::VerifyRequest req;
    req.set_expect_sequence(seq);
    req.set_expect_hash(hash);
    return stub_->Verify(&ctx, req, resp).error_code();
  };
  {
    v1::VerifyResponse resp;
    ASSERT_EQ(verify_expecting(5, head_hash, &resp), grpc::StatusCode::OK);
    EXPECT_TRUE(resp.ok()) << resp.problem() << " " << resp.detail();
    EXPECT_TRUE(resp.expected_checkpoint_matched());
    std::string upper = head_hash;
    for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    ASSERT_EQ(verify_expecting(5, upper, &resp), grpc::StatusCode::OK);
    EXPECT_TRUE(resp.expected_checkpoint_matched());
  }
  {
    v1::VerifyResponse resp;
    std::string other = head_hash;
    other[0] = other[0] == '0' ? '1' : '0';
    ASSERT_EQ(verify_expecting(5, other, &resp), grpc::StatusCode::OK);
    EXPECT_FALSE(resp.ok());
    EXPECT_FALSE(resp.expected_checkpoint_matched());
    EXPECT_EQ(resp.problem(), "CHECKPOINT_MISMATCH");
    EXPECT_EQ(resp.first_bad_sequence(), 5u);
    ASSERT_EQ(verify_expecting(9, head_hash, &resp), grpc::StatusCode::OK);
    EXPECT_EQ(resp.problem(), "MISSING");
    EXPECT_EQ(resp.first_bad_sequence(), 6u);
  }
  {
    v1::VerifyResponse resp;
    EXPECT_EQ(verify_expecting(5, "", &resp), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(verify_expecting(0, head_hash, &resp), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(verify_expecting(5, head_hash.substr(1), &resp), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(verify_expecting(5, "z" + head_hash.substr(1), &resp),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
}

// Each RPC against each kind of caller.
TEST_F(AuditServiceTest, Roles) {
  struct Case {
    const char* name;
    bool authenticated;
    uint32_t roles;
    grpc::StatusCode read, ingest;
  };
  const Case cases[] = {
      {"anonymous", false, 0, grpc::StatusCode::UNAUTHENTICATED, grpc::StatusCode::UNAUTHENTICATED},
      {"no roles", true, 0, grpc::StatusCode::PERMISSION_DENIED,
       grpc::StatusCode::PERMISSION_DENIED},
      {"reader", true, kReader, grpc::StatusCode::OK, grpc::StatusCode::PERMISSION_DENIED},
      // A broker's credential reads nothing and writes no audit record.
      {"gateway", true, kGateway, grpc::StatusCode::PERMISSION_DENIED,
       grpc::StatusCode::PERMISSION_DENIED},
      {"audit-writer", true, kAuditWriter, grpc::StatusCode::PERMISSION_DENIED,
       grpc::StatusCode::OK},
      {"admin", true, kAdmin, grpc::StatusCode::OK, grpc::StatusCode::OK},
  };
  RecordAndFlush(1, 1);
  for (const Case& c : cases) {
    resolver_.Set(c.authenticated, c.roles);
    {
      grpc::ClientContext ctx;
      v1::QueryResponse resp;
      EXPECT_EQ(stub_->Query(&ctx, v1::QueryRequest(), &resp).error_code(), c.read) << c.name;
    }
    {
      grpc::ClientContext ctx;
      v1::VerifyResponse resp;
      EXPECT_EQ(stub_->Verify(&ctx, v1::VerifyRequest(), &resp).error_code(), c.read) << c.name;
    }
    {
      grpc::ClientContext ctx;
      v1::WatchRequest req;
      req.set_from_now(true);
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(300));
      auto reader = stub_->Watch(&ctx, req);
      v1::AuditEvent e;
      while (reader->Read(&e)) {
      }
      const grpc::StatusCode got = reader->Finish().error_code();
      // An allowed Watch runs until the deadline.
      EXPECT_EQ(got, c.read == grpc::StatusCode::OK ? grpc::StatusCode::DEADLINE_EXCEEDED : c.read)
          << c.name;
    }
    {
      grpc::ClientContext ctx;
      auto stream = stub_->Ingest(&ctx);
      v1::IngestRequest req;
      *req.add_events() = Event(100);
      stream->Write(req);
      stream->WritesDone();
      v1::IngestAck ack;
      while (stream->Read(&ack)) {
      }
      EXPECT_EQ(stream->Finish().error_code(), c.ingest) << c.name;
    }
  }
}

}  // namespace
}  // namespace iotauth::audit
