// Names of protobuf enum values for hot paths (audit events, metric labels). The
// generated Foo_Name() looks the descriptor up and hashes the number on every call
// (~50 ns); EnumName builds a table indexed by number once per enum type.
#pragma once

#include <algorithm>
#include <string>
#include <type_traits>
#include <vector>

#include "google/protobuf/descriptor.h"
#include "google/protobuf/generated_enum_reflection.h"
#include "google/protobuf/generated_enum_util.h"

namespace iotauth {

// The same string Foo_Name(value) returns: the first value declared with that
// number, or "" when none is. Thread-safe.
template <typename E>
const std::string& EnumName(E value) {
  static_assert(google::protobuf::is_proto_enum<E>::value, "a generated protobuf enum");
  // Numbers above this are looked up in the descriptor (none of ours are).
  constexpr int kMaxTabled = 1023;
  static const std::vector<const std::string*>* const kNames = [] {
    const google::protobuf::EnumDescriptor* d = google::protobuf::GetEnumDescriptor<E>();
    int top = -1;
    for (int i = 0; i < d->value_count(); ++i) {
      const int n = d->value(i)->number();
      if (n >= 0 && n <= kMaxTabled) top = std::max(top, n);
    }
    auto* names = new std::vector<const std::string*>(static_cast<size_t>(top + 1), nullptr);
    for (int i = 0; i < d->value_count(); ++i) {
      const int n = d->value(i)->number();
      // Aliases: the first declared wins, as in FindValueByNumber.
      if (n >= 0 && n <= top && (*names)[n] == nullptr) (*names)[n] = &d->value(i)->name();
    }
    return names;
  }();
  const int n = static_cast<int>(value);
  if (n >= 0 && static_cast<size_t>(n) < kNames->size()) {
    if (const std::string* name = (*kNames)[n]; name != nullptr) return *name;
  }
  static const std::string* const kEmpty = new std::string();
  if (n >= 0 && n <= kMaxTabled) return *kEmpty;
  const google::protobuf::EnumValueDescriptor* v =
      google::protobuf::GetEnumDescriptor<E>()->FindValueByNumber(n);
  return v != nullptr ? v->name() : *kEmpty;
}

}  // namespace iotauth
