#include "services/common/stream_cap.h"

#include <vector>

#include "absl/strings/match.h"
#include "services/common/thread_name.h"

namespace iotauth {

using grpc::experimental::InterceptionHookPoints;

// One call of the capped prefix, from its first hook to its end (gRPC destroys a
// call's interceptors when the call is done).
class StreamCap::Tracker final : public grpc::experimental::Interceptor {
 public:
  Tracker(StreamCap* cap, grpc::ServerContextBase* context) : cap_(cap), context_(context) {
    absl::MutexLock lock(&cap_->mu_);
    if (static_cast<int>(cap_->open_.size()) >= cap_->options_.max_open) {
      over_ = true;
      return;
    }
    cap_->open_[context_] = cap_->options_.clock->Now();
  }
  ~Tracker() override {
    if (over_) return;
    absl::MutexLock lock(&cap_->mu_);
    cap_->open_.erase(context_);
  }
  Tracker(const Tracker&) = delete;
  Tracker& operator=(const Tracker&) = delete;

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (over_ && !cancelled_ &&
        methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_INITIAL_METADATA)) {
      cancelled_ = true;
      cap_->refused_.fetch_add(1, std::memory_order_relaxed);
      context_->TryCancel();
    }
    methods->Proceed();
  }

 private:
  StreamCap* cap_;
  grpc::ServerContextBase* context_;
  bool over_ = false;
  bool cancelled_ = false;
};

StreamCap::~StreamCap() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (sweeper_.joinable()) sweeper_.join();
}

grpc::experimental::Interceptor* StreamCap::Create(grpc::experimental::ServerRpcInfo* info) {
  const char* method = info->method();
  if (method == nullptr || info->server_context() == nullptr ||
      !absl::StartsWith(method, options_.method_prefix)) {
    return nullptr;
  }
  return new Tracker(this, info->server_context());
}

int StreamCap::Sweep(absl::Time now) {
  absl::MutexLock lock(&mu_);
  int n = 0;
  for (auto& [context, started] : open_) {
    if (now - started <= options_.max_lifetime) continue;
    context->TryCancel();
    // Cancelled once: counted from now again, so a call slow to end is not
    // cancelled (and counted) every second.
    started = now;
    ++n;
  }
  expired_.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
  return n;
}

void StreamCap::Start() {
  sweeper_ = std::thread([this] {
    SetCurrentThreadName("stream-cap");
    for (;;) {
      {
        absl::MutexLock lock(&mu_);
        auto stop = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
        if (mu_.AwaitWithTimeout(absl::Condition(&stop), absl::Seconds(1))) return;
      }
      Sweep(options_.clock->Now());
    }
  });
}

int StreamCap::open() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(open_.size());
}

}  // namespace iotauth
