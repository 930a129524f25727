#include "services/audit/remote_sink.h"

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "services/audit/audit_service.h"
#include "services/audit/log_audit_store.h"
#include "services/audit/writable_changes_testing.h"

namespace iotauth::audit {
namespace {

namespace v1 = iotauth::audit::v1;

v1::AuditEvent Event(int i) {
  v1::AuditEvent e;
  e.set_type(v1::EVENT_TYPE_AUTHENTICATION);
  e.set_device_id(absl::StrCat("dev-", i));
  return e;
}

// The first Ingest call commits the first request but fails before acknowledging
// it; later calls behave normally.
class FlakyIngest final : public v1::AuditLog::Service {
 public:
  explicit FlakyIngest(AuditService* real) : real_(real) {}
  grpc::Status Ingest(grpc::ServerContext* context,
                      grpc::ServerReaderWriter<v1::IngestAck, v1::IngestRequest>* stream) override {
    if (calls_.fetch_add(1) == 0) {
      v1::IngestRequest req;
      if (stream->Read(&req)) {
        committed_without_ack_ = req.events_size();
        EXPECT_TRUE(real_->RunIngest(req).ok());
      }
      return {grpc::StatusCode::UNAVAILABLE, "injected failure"};
    }
    return real_->Ingest(context, stream);
  }
  std::atomic<int> calls_{0};
  std::atomic<int> committed_without_ack_{0};

 private:
  AuditService* real_;
};

// The first Ingest call reads but never acknowledges (a hung server).
class SilentIngest final : public v1::AuditLog::Service {
 public:
  explicit SilentIngest(AuditService* real) : real_(real) {}
  grpc::Status Ingest(grpc::ServerContext* context,
                      grpc::ServerReaderWriter<v1::IngestAck, v1::IngestRequest>* stream) override {
    if (calls_.fetch_add(1) == 0) {
      v1::IngestRequest req;
      while (stream->Read(&req)) {
      }
      return grpc::Status::OK;
    }
    return real_->Ingest(context, stream);
  }
  std::atomic<int> calls_{0};

 private:
  AuditService* real_;
};

// Commits each request, then acknowledges its ids in reverse order, plus one id the
// sink never sent (a server free to ack in any order, or a confused one).
class ReversedAckIngest final : public v1::AuditLog::Service {
 public:
  explicit ReversedAckIngest(AuditService* real) : real_(real) {}
  grpc::Status Ingest(grpc::ServerContext* /*context*/,
                      grpc::ServerReaderWriter<v1::IngestAck, v1::IngestRequest>* stream) override {
    v1::IngestRequest req;
    while (stream->Read(&req)) {
      auto ack = real_->RunIngest(req);
      if (!ack.ok()) return {grpc::StatusCode::INTERNAL, std::string(ack.status().message())};
      v1::IngestAck reversed;
      reversed.add_event_ids("never-sent");
      for (int i = ack->event_ids_size() - 1; i >= 0; --i) {
        reversed.add_event_ids(ack->event_ids(i));
      }
      stream->Write(reversed);
    }
    return grpc::Status::OK;
  }

 private:
  AuditService* real_;
};

class RemoteSinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* dir = std::getenv("TEST_TMPDIR");
    const std::string path =
        absl::StrCat(dir ? dir : "/tmp", "/",
                     ::testing::UnitTest::GetInstance()->current_test_info()->name(), ".log");
    std::filesystem::remove_all(path);
    LogAuditStore::Options so;  // the default backend
    so.dir = path;
    auto store = LogAuditStore::Open(so);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    AuditService::Options o;
    o.store = store_.get();
    o.caller_resolver = &resolver_;
    auto service = AuditService::Create(o);
    ASSERT_TRUE(service.ok());
    service_ = std::move(*service);
  }
  void TearDown() override {
    sink_.reset();
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  }
  static std::unique_ptr<grpc::Server> StartServer(grpc::Service* service,
                                                   const std::string& address, int* port) {
    grpc::ServerBuilder builder;
    if (!address.empty()) {
      builder.AddListeningPort(address, grpc::InsecureServerCredentials(), port);
    }
    builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    builder.RegisterService(service);
    return builder.BuildAndStart();
  }
  void StartSink(std::shared_ptr<grpc::Channel> channel, size_t capacity = 1000,
                 absl::Duration ack_timeout = absl::Seconds(30),
                 AuditPipelineObserver* observer = nullptr,
                 absl::Duration block_timeout = absl::ZeroDuration()) {
    RemoteAuditSink::Options o;
    o.observer = observer;
    if (block_timeout > absl::ZeroDuration()) {
      o.full_queue_policy = LocalAuditSink::FullQueuePolicy::kBlock;
      o.block_timeout = block_timeout;
    }
    o.ack_timeout = ack_timeout;
    o.channel = std::move(channel);
    o.max_batch = 10;
    o.queue_capacity = capacity;
    o.initial_backoff = absl::Milliseconds(20);
    o.max_backoff = absl::Milliseconds(200);
    o.spool_path = spool_path_;
    auto sink = RemoteAuditSink::Create(o);
    ASSERT_TRUE(sink.ok()) << sink.status();
    sink_ = std::move(*sink);
  }
  // A port the audit service listened on and no longer does (a server gone).
  int FreedPort() {
    int port = 0;
    server_ = StartServer(service_.get(), "127.0.0.1:0", &port);
    server_->Shutdown();
    server_.reset();
    return port;
  }
  std::vector<v1::AuditEvent> Stored() {
    auto r = store_->ReadAfter(0, 100000);
    EXPECT_TRUE(r.ok());
    return r.ok() ? *r : std::vector<v1::AuditEvent>{};
  }

  AllowAllCallerResolver resolver_;
  std::unique_ptr<LogAuditStore> store_;
  std::unique_ptr<AuditService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<RemoteAuditSink> sink_;
  std::string spool_path_;  // empty: no spool
};

TEST_F(RemoteSinkTest, CreateValidates) {
  EXPECT_EQ(RemoteAuditSink::Create({}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(RemoteSinkTest, StreamsEventsInOrderUntilAcknowledged) {
  server_ = StartServer(service_.get(), "", nullptr);
  StartSink(server_->InProcessChannel(grpc::ChannelArguments()));
  for (int i = 0; i < 95; ++i) sink_->Record(Event(i));
  ASSERT_TRUE(sink_->Flush(absl::Seconds(10)));
  auto stored = Stored();
  ASSERT_EQ(stored.size(), 95u);
  for (int i = 0; i < 95; ++i) EXPECT_EQ(stored[i].device_id(), absl::StrCat("dev-", i));
  RemoteSinkStats st = sink_->Stats();
  EXPECT_EQ(st.acked, 95u);
  EXPECT_EQ(st.pending, 0u);
  EXPECT_EQ(st.dropped, 0u);
  EXPECT_TRUE(store_->Verify(0, 0)->ok);
}

// The enqueued count reaches the observer from the sender thread, never from the
// thread that calls Record (the hot path), and adds up to what was accepted.
TEST_F(RemoteSinkTest, ReportsEnqueuedEventsFromTheSenderThread) {
  struct Counting : AuditPipelineObserver {
    void OnEnqueued(uint64_t n) override {
      absl::MutexLock lock(&mu);
      enqueued += n;
      threads.insert(std::this_thread::get_id());
    }
    absl::Mutex mu;
    uint64_t enqueued ABSL_GUARDED_BY(mu) = 0;
    std::set<std::thread::id> threads ABSL_GUARDED_BY(mu);
  } observer;
  server_ = StartServer(service_.get(), "", nullptr);
  StartSink(server_->InProcessChannel(grpc::ChannelArguments()), 1000, absl::Seconds(30),
            &observer);
  for (int i = 0; i < 95; ++i) sink_->Record(Event(i));
  ASSERT_TRUE(sink_->Flush(absl::Seconds(10)));
  {
    absl::MutexLock lock(&observer.mu);
    EXPECT_EQ(observer.enqueued, 95u);
    EXPECT_EQ(observer.threads.count(std::this_thread::get_id()), 0u);
  }
  sink_.reset();  // before the observer goes
}

TEST_F(RemoteSinkTest, AcceptsAcknowledgementsInAnyOrder) {
  ReversedAckIngest reversed(service_.get());
  server_ = StartServer(&reversed, "", nullptr);
  StartSink(server_->InProcessChannel(grpc::ChannelArguments()));
  for (int i = 0; i < 95; ++i) sink_->Record(Event(i));
  ASSERT_TRUE(sink_->Flush(absl::Seconds(10)));
  EXPECT_EQ(Stored().size(), 95u);
  RemoteSinkStats st = sink_->Stats();
  EXPECT_EQ(st.acked, 95u);  // the unknown id released nothing
  EXPECT_EQ(st.pending, 0u);
  EXPECT_EQ(st.resent, 0u);
  EXPECT_EQ(st.stream_failures, 0u);
}

TEST_F(RemoteSinkTest, ResendsAfterFailureWithoutDuplicates) {
  FlakyIngest flaky(service_.get());
  server_ = StartServer(&flaky, "", nullptr);
  StartSink(server_->InProcessChannel(grpc::ChannelArguments()));
  for (int i = 0; i < 50; ++i) sink_->Record(Event(i));
  ASSERT_TRUE(sink_->Flush(absl::Seconds(15)));
  EXPECT_GT(flaky.committed_without_ack_.load(), 0);
  EXPECT_GE(flaky.calls_.load(), 2);
  auto stored = Stored();
  ASSERT_EQ(stored.size(), 50u);  // the committed-but-unacked events were not duplicated
  std::set<std::string> ids;
  for (const auto& e : stored) ids.insert(e.event_id());
  EXPECT_EQ(ids.size(), 50u);
  RemoteSinkStats st = sink_->Stats();
  EXPECT_GE(st.stream_failures, 1u);
  EXPECT_EQ(st.last_stream_error.code(), absl::StatusCode::kUnavailable);
  EXPECT_GE(st.resent, static_cast<uint64_t>(flaky.committed_without_ack_.load()));
  EXPECT_EQ(st.acked, 50u);
}

TEST_F(RemoteSinkTest, AbandonsAStreamWhoseAcksNeverCome) {
  SilentIngest silent(service_.get());
  server_ = StartServer(&silent, "", nullptr);
  StartSink(server_->InProcessChannel(grpc::ChannelArguments()), 1000, absl::Milliseconds(200));
  for (int i = 0; i < 5; ++i) sink_->Record(Event(i));
  ASSERT_TRUE(sink_->Flush(absl::Seconds(15)));
  EXPECT_EQ(Stored().size(), 5u);
  EXPECT_GE(silent.calls_.load(), 2);
  RemoteSinkStats st = sink_->Stats();
  EXPECT_EQ(st.last_stream_error.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_GE(st.resent, 5u);
}

TEST_F(RemoteSinkTest, SurvivesServerDownAndRecordsOverflowAsGap) {
  const int port = FreedPort();
  ASSERT_GT(port, 0);
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 200);
  WritableChanges changes;
  StartSink(grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port),
                                      grpc::InsecureChannelCredentials(), args),
            /*capacity=*/5, absl::Seconds(30), &changes);
  for (int i = 0; i < 8; ++i) sink_->Record(Event(i));  // 5 held, 3 dropped
  EXPECT_FALSE(sink_->Flush(absl::Milliseconds(300)));
  EXPECT_EQ(sink_->Stats().dropped, 3u);
  EXPECT_FALSE(sink_->Stats().writable);
  auto seen = changes.Changes();
  ASSERT_EQ(seen.size(), 1u);  // one change for three drops
  EXPECT_FALSE(seen[0].first);
  EXPECT_EQ(seen[0].second.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(seen[0].second.message().find("the resend queue is full"), std::string::npos)
      << seen[0].second;

  int port2 = 0;
  server_ = StartServer(service_.get(), absl::StrCat("127.0.0.1:", port), &port2);
  ASSERT_EQ(port2, port);
  ASSERT_TRUE(sink_->Flush(absl::Seconds(15)));
  auto stored = Stored();
  ASSERT_EQ(stored.size(), 6u);
  int gaps = 0;
  for (const auto& e : stored) {
    if (e.type() == v1::EVENT_TYPE_GAP) {
      ++gaps;
      EXPECT_EQ(e.attributes().at("dropped_count"), "3");
    }
  }
  EXPECT_EQ(gaps, 1);
  EXPECT_GE(sink_->Stats().connects, 2u);
  EXPECT_TRUE(sink_->Stats().writable);
  seen = changes.Changes();
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_TRUE(seen[1].first);
  EXPECT_TRUE(seen[1].second.ok());
  sink_.reset();  // before `changes`, which it reports to
}

TEST_F(RemoteSinkTest, OnceEventsAreLostAFullQueueDropsWithoutWaiting) {
  const int port = FreedPort();
  ASSERT_GT(port, 0);
  // Blocking policy, 300 ms: the first event past the queue waits that long and is
  // dropped, which makes the sink unwritable; the ten after it drop at once (they
  // took 3 s before, and every call of an outage waited the same).
  StartSink(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()),
      /*capacity=*/5, absl::Seconds(30), nullptr, absl::Milliseconds(300));
  for (int i = 0; i < 6; ++i) sink_->Record(Event(i));
  ASSERT_EQ(sink_->Stats().dropped, 1u);
  ASSERT_FALSE(sink_->Stats().writable);
  const absl::Time start = absl::Now();
  for (int i = 6; i < 16; ++i) sink_->Record(Event(i));
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  EXPECT_EQ(sink_->Stats().dropped, 11u);
}

TEST_F(RemoteSinkTest, ShutdownGivesUpAfterTheDeadline) {
  grpc::ChannelArguments args;
  // Nothing listens on port 1.
  StartSink(grpc::CreateCustomChannel("127.0.0.1:1", grpc::InsecureChannelCredentials(), args));
  for (int i = 0; i < 4; ++i) sink_->Record(Event(i));
  const absl::Time start = absl::Now();
  sink_->Shutdown(absl::Milliseconds(300));
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
  EXPECT_EQ(sink_->Stats().dropped, 4u);
  sink_->Record(Event(5));
  EXPECT_EQ(sink_->Stats().dropped, 5u);
}

// Unacknowledged at shutdown: spooled (with a GAP for the overflow), then sent
// by the next start, and the file goes once the server has acknowledged them.
TEST_F(RemoteSinkTest, ShutdownSpoolsTheUnacknowledgedAndTheNextStartSendsThem) {
  spool_path_ = absl::StrCat(std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR") : "/tmp",
                             "/remote.spool");
  std::filesystem::remove(spool_path_);
  grpc::ChannelArguments args;
  StartSink(grpc::CreateCustomChannel("127.0.0.1:1", grpc::InsecureChannelCredentials(), args),
            /*capacity=*/3);
  for (int i = 0; i < 5; ++i) sink_->Record(Event(i));  // 3 held, 2 dropped
  sink_->Shutdown(absl::Milliseconds(200));
  RemoteSinkStats st = sink_->Stats();
  EXPECT_EQ(st.spooled, 3u);
  EXPECT_EQ(st.dropped, 2u);
  EXPECT_TRUE(sink_->SpoolStatus().ok()) << sink_->SpoolStatus();
  ASSERT_TRUE(std::filesystem::exists(spool_path_));

  // Restored, still unreachable: a second exit writes the same events again.
  StartSink(grpc::CreateCustomChannel("127.0.0.1:1", grpc::InsecureChannelCredentials(), args));
  EXPECT_EQ(sink_->Stats().restored, 3u);  // and the GAP
  sink_->Shutdown(absl::Milliseconds(100));
  EXPECT_EQ(sink_->Stats().spooled, 3u);  // GAP events are not counted

  int port = 0;
  server_ = StartServer(service_.get(), "127.0.0.1:0", &port);
  ASSERT_GT(port, 0);
  StartSink(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
  EXPECT_EQ(sink_->Stats().restored, 3u);
  ASSERT_TRUE(sink_->Flush(absl::Seconds(15)));
  const std::vector<v1::AuditEvent> stored = Stored();
  ASSERT_EQ(stored.size(), 4u);
  std::vector<std::string> devices;
  int gaps = 0;
  for (const v1::AuditEvent& e : stored) {
    if (e.type() == v1::EVENT_TYPE_GAP) {
      ++gaps;
      EXPECT_EQ(e.attributes().at("dropped_count"), "2");
    } else {
      devices.push_back(e.device_id());
    }
  }
  EXPECT_EQ(gaps, 1);
  EXPECT_EQ(devices, (std::vector<std::string>{"dev-0", "dev-1", "dev-2"}));
  // The file is removed right after the acknowledgement that completes it.
  for (int i = 0; i < 500 && std::filesystem::exists(spool_path_); ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_FALSE(std::filesystem::exists(spool_path_));
  sink_->Shutdown(absl::Seconds(5));
  EXPECT_EQ(sink_->Stats().spooled, 0u);
  EXPECT_FALSE(std::filesystem::exists(spool_path_));
}

}  // namespace
}  // namespace iotauth::audit
