// Bounds the calls of one method prefix that may be open at once, and how long each
// may stay open. Made for gRPC server reflection: its service is synchronous, so an
// open stream holds one of the synchronous services' threads (shared with the
// registry, audit and certificate services) for as long as its client keeps it open,
// and it is served without a credential. Without a bound, a client holding ~1,000
// reflection streams left the registry answering RESOURCE_EXHAUSTED.
//
// Past `max_open`, a new call is cancelled at once; a call open longer than
// `max_lifetime` is cancelled by Sweep (a thread calls it every second once Start
// has run). The client sees CANCELLED and may retry.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/server_interceptor.h"
#include "services/common/clock.h"

namespace iotauth {

class StreamCap {
 public:
  struct Options {
    std::string method_prefix = "/grpc.reflection.";
    int max_open = 32;
    absl::Duration max_lifetime = absl::Seconds(60);
    const Clock* clock = &RealClock::Get();
  };

  // The factory gRPC owns (ServerBuilder::experimental().SetInterceptorCreators)
  // forwards to `cap`, which outlives the server.
  class Factory final : public grpc::experimental::ServerInterceptorFactoryInterface {
   public:
    explicit Factory(StreamCap* cap) : cap_(cap) {}
    grpc::experimental::Interceptor* CreateServerInterceptor(
        grpc::experimental::ServerRpcInfo* info) override {
      return cap_->Create(info);
    }

   private:
    StreamCap* cap_;
  };

  explicit StreamCap(Options options) : options_(std::move(options)) {}
  ~StreamCap();
  StreamCap(const StreamCap&) = delete;
  StreamCap& operator=(const StreamCap&) = delete;

  // A tracker for a call of the capped prefix; nullptr for any other call.
  grpc::experimental::Interceptor* Create(grpc::experimental::ServerRpcInfo* info);

  // Cancels the calls open longer than max_lifetime at `now`; returns how many.
  int Sweep(absl::Time now);
  // Runs Sweep every second on a thread of its own, until destruction.
  void Start();

  int open() const;
  // Calls cancelled so far: at once (over max_open), and for their age.
  uint64_t refused() const { return refused_.load(std::memory_order_relaxed); }
  uint64_t expired() const { return expired_.load(std::memory_order_relaxed); }

 private:
  class Tracker;
  friend class Tracker;

  const Options options_;
  mutable absl::Mutex mu_;
  // Open calls (their contexts stay valid until the tracker's destructor removes them).
  absl::flat_hash_map<grpc::ServerContextBase*, absl::Time> open_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread sweeper_;
  std::atomic<uint64_t> refused_{0};
  std::atomic<uint64_t> expired_{0};
};

}  // namespace iotauth
