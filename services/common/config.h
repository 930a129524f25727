// Loads and validates the server configuration: embedded defaults, then a JSON
// file, then environment variables (IOTAUTH_<PATH>, segments joined by "__"),
// then `--set path=value` flags. Anything unknown or malformed is an error that
// names the key, so a typo never silently falls back to a default.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "proto/iotauth/config/v1/config.pb.h"

namespace iotauth {

using iotauth::config::v1::ServerConfig;

struct ConfigSources {
  // JSON file; empty means none.
  std::string file;
  // Environment (name -> value); only names of known config paths are used.
  std::map<std::string, std::string> env;
  // `path=value` overrides, applied last, in order.
  std::vector<std::string> sets;
};

// The embedded defaults (development: dev PKI, localhost, ./iotauth-data).
ServerConfig DefaultConfig();

// Defaults + file + env + sets, then Validate.
absl::StatusOr<ServerConfig> LoadConfig(const ConfigSources& sources);

// Sets one scalar field by dotted path ("grpc.address", "identity.clock_skew=5m",
// repeated scalars comma-separated). INVALID_ARGUMENT naming the path on failure.
absl::Status SetConfigValue(ServerConfig* config, absl::string_view path, absl::string_view value);

// Checks every value (addresses, durations, enums, roles, files that must be
// readable PEM). Returns the first problem, naming its key.
absl::Status ValidateConfig(const ServerConfig& config);

// Snapshot of the process environment.
std::map<std::string, std::string> ProcessEnvironment();

// Effective paths derived from the data dir.
std::string RegistryDbPath(const ServerConfig& config);
std::string AuditDbPath(const ServerConfig& config);
// The "log" audit backend's directory (storage.audit_log_dir or <data_dir>/audit).
std::string AuditLogDir(const ServerConfig& config);
// Where an audit sink leaves the events it could not hand over at exit (the
// shutdown spool, services/audit/spool.h): `<data_dir>/audit.spool`, or for a
// process that sends its events to a remote audit service
// `<data_dir>/audit-remote.<its services, sorted, joined by +>.spool`.
std::string AuditSpoolPath(const ServerConfig& config);
std::string DevPkiDir(const ServerConfig& config);

// Whether this process hosts `service` ("identity", "registry", "audit").
bool HostsService(const ServerConfig& config, absl::string_view service);

}  // namespace iotauth
