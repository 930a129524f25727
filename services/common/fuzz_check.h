// Shared by the libFuzzer targets (bazel/fuzz.bzl): an invariant check that names
// the broken invariant and aborts, so that libFuzzer (and each target's corpus
// replay test) reports the input; and protobuf's own logging silenced.
#pragma once

#include <cstdio>
#include <cstdlib>

#include "google/protobuf/stubs/logging.h"

namespace iotauth::fuzz {

[[noreturn]] inline void Fail(const char* target, const char* broken) {
  std::fprintf(stderr, "%s: invariant broken: %s\n", target, broken);
  std::abort();
}

// Once per process: inputs a target refuses to parse, or answers that echo their
// invalid UTF-8, would otherwise log a line each.
inline void SilenceProtobufLogging() {
  static const bool silenced = [] {
    google::protobuf::SetLogHandler(nullptr);
    return true;
  }();
  (void)silenced;
}

}  // namespace iotauth::fuzz

// Aborts with `what` (a string literal naming the invariant) unless `cond` holds.
#define IOTAUTH_FUZZ_CHECK(cond, what)                  \
  do {                                                  \
    if (!(cond)) ::iotauth::fuzz::Fail(__FILE__, what); \
  } while (0)
