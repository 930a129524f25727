#include "services/common/stream_cap.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "services/common/clock.h"

namespace iotauth {
namespace {

constexpr char kReflection[] = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";

// One reflection stream over the generic async API, each step waited for.
class Stream {
 public:
  Stream(grpc::GenericStub* stub, const std::string& method) {
    rw_ = stub->PrepareCall(&ctx_, method, &cq_);
    rw_->StartCall(Tag(1));
    started_ = Wait();
  }
  ~Stream() {
    ctx_.TryCancel();
    if (!finished_) Finish();
    cq_.Shutdown();
    void* tag = nullptr;
    bool ok = false;
    while (cq_.Next(&tag, &ok)) {
    }
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  // Sends ServerReflectionRequest{list_services: ""} and reads one answer.
  bool ListServices() {
    if (!started_) return false;
    const std::string request("\x3a\x00", 2);  // field 7 (list_services), empty
    grpc::Slice slice(request);
    grpc::ByteBuffer out(&slice, 1);
    rw_->Write(out, Tag(2));
    if (!Wait()) return false;
    grpc::ByteBuffer in;
    rw_->Read(&in, Tag(3));
    return Wait() && in.Length() > 0;
  }

  grpc::Status Finish() {
    finished_ = true;
    grpc::Status status;
    rw_->Finish(&status, Tag(4));
    Wait();
    return status;
  }

 private:
  // Distinct addresses as completion-queue tags.
  static void* Tag(int i) {
    static char tags[5];
    return &tags[i];
  }
  bool Wait() {
    void* tag = nullptr;
    bool ok = false;
    const auto deadline = std::chrono::system_clock::now() + std::chrono::seconds(10);
    return cq_.AsyncNext(&tag, &ok, deadline) == grpc::CompletionQueue::GOT_EVENT && ok;
  }

  grpc::ClientContext ctx_;
  grpc::CompletionQueue cq_;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> rw_;
  bool started_ = false;
  bool finished_ = false;
};

class StreamCapTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StreamCap::Options o;
    o.max_open = 2;
    o.max_lifetime = absl::Seconds(60);
    o.clock = &clock_;
    cap_ = std::make_unique<StreamCap>(o);
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> creators;
    creators.push_back(std::make_unique<StreamCap::Factory>(cap_.get()));
    builder.experimental().SetInterceptorCreators(std::move(creators));
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                   grpc::InsecureChannelCredentials());
    stub_ = std::make_unique<grpc::GenericStub>(channel_);
  }
  void TearDown() override {
    server_->Shutdown();
    server_.reset();
  }

  // The server ends a call's interceptors after the call: wait for that (not for
  // any expiry, which the fake clock drives).
  void AwaitOpen(int n) {
    const absl::Time give_up = absl::Now() + absl::Seconds(10);
    while (cap_->open() != n && absl::Now() < give_up) absl::SleepFor(absl::Milliseconds(5));
    EXPECT_EQ(cap_->open(), n);
  }

  FakeClock clock_;
  std::unique_ptr<StreamCap> cap_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<grpc::GenericStub> stub_;
};

TEST_F(StreamCapTest, CallsPastTheCapAreCancelledAndOldOnesExpire) {
  auto a = std::make_unique<Stream>(stub_.get(), kReflection);
  ASSERT_TRUE(a->ListServices());
  auto b = std::make_unique<Stream>(stub_.get(), kReflection);
  ASSERT_TRUE(b->ListServices());
  EXPECT_EQ(cap_->open(), 2);

  // A third, while two are held open: cancelled at once.
  {
    Stream c(stub_.get(), kReflection);
    EXPECT_FALSE(c.ListServices());
    EXPECT_EQ(c.Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  EXPECT_EQ(cap_->refused(), 1U);

  // Not yet old: nothing is swept.
  clock_.Advance(absl::Seconds(60));
  EXPECT_EQ(cap_->Sweep(clock_.Now()), 0);
  // Past max_lifetime: both are cancelled, and the room comes back.
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(cap_->Sweep(clock_.Now()), 2);
  EXPECT_EQ(cap_->expired(), 2U);
  EXPECT_FALSE(a->ListServices());
  EXPECT_EQ(a->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(b->Finish().error_code(), grpc::StatusCode::CANCELLED);
  a.reset();
  b.reset();
  AwaitOpen(0);
  Stream d(stub_.get(), kReflection);
  EXPECT_TRUE(d.ListServices());
  EXPECT_EQ(cap_->open(), 1);
}

TEST_F(StreamCapTest, OtherMethodsAreNotTracked) {
  Stream other(stub_.get(), "/no.such.Service/Method");
  other.ListServices();
  EXPECT_EQ(other.Finish().error_code(), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_EQ(cap_->open(), 0);
  EXPECT_EQ(cap_->refused(), 0U);
}

}  // namespace
}  // namespace iotauth
