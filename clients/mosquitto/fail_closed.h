// Mosquitto is a C program: an exception that unwinds out of a plugin callback
// into the broker ends the broker (std::terminate at the C frame). Every callback
// body runs through CallFailClosed, which turns an exception (in practice
// std::bad_alloc) into the callback's refusal and one log line.
#pragma once

#include <exception>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/strings/str_cat.h"

namespace iotauth::mosquitto {

// Returns body(), or `on_error` after calling log("<what> failed: <exception>;
// refused") when body throws.
template <typename Body>
int CallFailClosed(const char* what, int on_error, Body&& body,
                   absl::FunctionRef<void(const std::string&)> log) noexcept {
  try {
    return body();
  } catch (const std::exception& e) {
    try {
      log(absl::StrCat(what, " failed: ", e.what(), "; refused"));
    } catch (...) {  // NOLINT(bugprone-empty-catch): nothing is left to report with
    }
  } catch (...) {
    try {
      log(absl::StrCat(what, " failed: an unknown exception; refused"));
    } catch (...) {  // NOLINT(bugprone-empty-catch): nothing is left to report with
    }
  }
  return on_error;
}

}  // namespace iotauth::mosquitto
