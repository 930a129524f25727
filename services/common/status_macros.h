// Status propagation macros. Abseil 20220623 ships none, so the project defines
// these once here.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define IOTAUTH_STATUS_CONCAT_INNER_(a, b) a##b
#define IOTAUTH_STATUS_CONCAT_(a, b) IOTAUTH_STATUS_CONCAT_INNER_(a, b)

// Returns from the enclosing function when `expr` (an absl::Status) is not OK.
#define IOTAUTH_RETURN_IF_ERROR(expr)                  \
  do {                                                 \
    ::absl::Status iotauth_status_ = (expr);           \
    if (!iotauth_status_.ok()) return iotauth_status_; \
  } while (0)

// `lhs = value of expr` when `expr` (an absl::StatusOr) is OK, else returns its status.
#define IOTAUTH_ASSIGN_OR_RETURN(lhs, expr) \
  IOTAUTH_ASSIGN_OR_RETURN_IMPL_(IOTAUTH_STATUS_CONCAT_(iotauth_statusor_, __LINE__), lhs, expr)

#define IOTAUTH_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                   \
  if (!statusor.ok()) return std::move(statusor).status();  \
  lhs = *std::move(statusor)
