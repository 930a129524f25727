// `a \0 b` as one lookup key, built in a stack buffer when it fits, so that hot-path
// lookups by (tenant, id) do not allocate. The NUL cannot occur in an id, so no two
// pairs share a key.
#pragma once

#include <algorithm>
#include <string>

#include "absl/strings/string_view.h"

namespace iotauth::identity {

class CompositeKey {
 public:
  CompositeKey(absl::string_view a, absl::string_view b) {
    const size_t n = a.size() + 1 + b.size();
    char* p = buf_;
    if (n > sizeof(buf_)) {
      heap_.resize(n);
      p = heap_.data();
    }
    std::copy(a.begin(), a.end(), p);
    p[a.size()] = '\0';
    std::copy(b.begin(), b.end(), p + a.size() + 1);
    view_ = absl::string_view(p, n);
  }
  CompositeKey(const CompositeKey&) = delete;
  CompositeKey& operator=(const CompositeKey&) = delete;
  absl::string_view view() const { return view_; }

 private:
  char buf_[192];
  std::string heap_;
  absl::string_view view_;
};

}  // namespace iotauth::identity
