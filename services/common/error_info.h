// Stable, machine-readable error reasons: a google.rpc.ErrorInfo carried as an
// absl::Status payload, which ToGrpcStatus sends as google.rpc.Status details (the
// grpc-status-details-bin trailer) and FromGrpcStatus turns back into a payload. A
// caller branches on the reason, not on the message, which is for people and may
// change.
#pragma once

#include <initializer_list>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace iotauth {

// The payload's type URL: a google.protobuf.Any of google.rpc.ErrorInfo.
inline constexpr absl::string_view kErrorInfoTypeUrl = "type.googleapis.com/google.rpc.ErrorInfo";
// The domain of iotauth's reasons.
inline constexpr absl::string_view kErrorDomain = "iotauth.dev";

// `s` with an ErrorInfo {reason, domain "iotauth.dev", metadata}; an OK status
// stays OK. Metadata values are shown to the caller: never a secret.
absl::Status WithErrorReason(
    absl::Status s, absl::string_view reason,
    std::initializer_list<std::pair<absl::string_view, absl::string_view>> metadata = {});

// The reason for a field that broke an input rule: "INVALID_" and the field path's
// last segment in upper case, without an index ("credential.x509.chain[2]" gives
// INVALID_CHAIN, "tenant_id" INVALID_TENANT_ID).
std::string InvalidFieldReason(absl::string_view field);

// INVALID_ARGUMENT with `message`, reason InvalidFieldReason(field) and the metadata
// {"field": field} plus `metadata`.
absl::Status InvalidFieldError(
    absl::string_view field, absl::string_view message,
    std::initializer_list<std::pair<absl::string_view, absl::string_view>> metadata = {});

// `s` with "<prefix><message>" as its message and the same code and payloads (the
// reason survives); an OK status stays OK.
absl::Status WithMessagePrefix(const absl::Status& s, absl::string_view prefix);

// The reason of `s`'s ErrorInfo in iotauth's domain; empty when it has none (an
// unparsable payload or another domain's reason counts as none).
std::string ErrorReason(const absl::Status& s);

// One metadata value of that ErrorInfo; empty when absent.
std::string ErrorMetadata(const absl::Status& s, absl::string_view key);

}  // namespace iotauth
