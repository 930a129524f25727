// Caps how many long-lived server streams of one kind (audit Watch, registry
// WatchChanges) are open at once. Each holds a thread of gRPC's synchronous server
// for its whole life, so without a cap one client, or a reconnect loop that never
// cancels its old streams, could take the process's threads and memory (2,000
// Watch streams held 2,000 threads and 240 MB).
#pragma once

#include <atomic>

namespace iotauth {

class StreamSlots {
 public:
  explicit StreamSlots(int capacity) : capacity_(capacity) {}
  StreamSlots(const StreamSlots&) = delete;
  StreamSlots& operator=(const StreamSlots&) = delete;

  // One slot, held until destroyed; !ok() when every slot was taken (nothing held).
  class Slot {
   public:
    explicit Slot(StreamSlots* slots) : slots_(slots->TryTake() ? slots : nullptr) {}
    ~Slot() {
      if (slots_ != nullptr) slots_->open_.fetch_sub(1, std::memory_order_relaxed);
    }
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;
    bool ok() const { return slots_ != nullptr; }

   private:
    StreamSlots* slots_;
  };

  int capacity() const { return capacity_; }
  int open() const { return open_.load(std::memory_order_relaxed); }

 private:
  bool TryTake() {
    if (open_.fetch_add(1, std::memory_order_relaxed) < capacity_) return true;
    open_.fetch_sub(1, std::memory_order_relaxed);
    return false;
  }

  const int capacity_;
  std::atomic<int> open_{0};
};

}  // namespace iotauth
