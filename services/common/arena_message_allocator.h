// A gRPC callback-API MessageAllocator that puts a method's request and response on
// one protobuf Arena whose first block lives inside a pooled holder: a call then
// parses its request, builds its response and frees both without touching the heap
// (a hot-path Authenticate otherwise makes a dozen small allocations for the
// strings and sub-messages of the two messages). Register it on a callback service
// with SetMessageAllocatorFor_<Method>(&allocator); it must outlive the server.
#pragma once

#include <google/protobuf/arena.h>
#include <grpcpp/support/message_allocator.h>

#include <cstddef>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace iotauth {

template <typename Request, typename Response, size_t kBlockBytes = 4096>
class ArenaMessageAllocator final : public grpc::MessageAllocator<Request, Response> {
 public:
  // Holders kept for reuse once released (more in flight are allocated and freed).
  explicit ArenaMessageAllocator(size_t max_pooled = 256) : max_pooled_(max_pooled) {}
  ~ArenaMessageAllocator() override {
    absl::MutexLock lock(&mu_);
    for (Holder* h : pool_) delete h;
  }
  ArenaMessageAllocator(const ArenaMessageAllocator&) = delete;
  ArenaMessageAllocator& operator=(const ArenaMessageAllocator&) = delete;

  grpc::MessageHolder<Request, Response>* AllocateMessages() override {
    Holder* h = nullptr;
    {
      absl::MutexLock lock(&mu_);
      if (!pool_.empty()) {
        h = pool_.back();
        pool_.pop_back();
      }
    }
    if (h == nullptr) h = new Holder(this);
    h->Start();
    return h;
  }

  size_t pooled() const {
    absl::MutexLock lock(&mu_);
    return pool_.size();
  }

 private:
  class Holder final : public grpc::MessageHolder<Request, Response> {
   public:
    explicit Holder(ArenaMessageAllocator* owner) : owner_(owner), arena_(Options(block_)) {}
    void Start() {
      this->set_request(google::protobuf::Arena::CreateMessage<Request>(&arena_));
      this->set_response(google::protobuf::Arena::CreateMessage<Response>(&arena_));
    }
    // Destroys both messages (and any later blocks); the first block is kept.
    void Release() override {
      arena_.Reset();
      owner_->Return(this);
    }

   private:
    static google::protobuf::ArenaOptions Options(char* block) {
      google::protobuf::ArenaOptions o;
      o.initial_block = block;
      o.initial_block_size = kBlockBytes;
      return o;
    }
    ArenaMessageAllocator* owner_;
    alignas(std::max_align_t) char block_[kBlockBytes];
    google::protobuf::Arena arena_;  // after block_: constructed from it
  };

  void Return(Holder* h) {
    {
      absl::MutexLock lock(&mu_);
      if (pool_.size() < max_pooled_) {
        pool_.push_back(h);
        return;
      }
    }
    delete h;
  }

  const size_t max_pooled_;
  mutable absl::Mutex mu_;
  std::vector<Holder*> pool_ ABSL_GUARDED_BY(mu_);
};

}  // namespace iotauth
