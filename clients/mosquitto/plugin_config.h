// Configuration of the iotauth Mosquitto plugin, from `plugin_opt_*` lines:
//
//   plugin /usr/lib/iotauth/libiotauth_mosquitto.so
//   plugin_opt_address iotauth.example.net:8443     (required)
//   plugin_opt_ca_file /etc/iotauth/ca.pem          (TLS; omit all three for plaintext)
//   plugin_opt_cert_file /etc/iotauth/gateway.pem   (client certificate, gateway role)
//   plugin_opt_key_file /etc/iotauth/gateway.key
//   plugin_opt_timeout_ms 500                       (per Authenticate call; 1..30000)
//   plugin_opt_cache_size 10000                     (cached decisions; 0 turns caching off)
//   plugin_opt_tenant acme                          (tenant hint; default: from credential)
//   plugin_opt_tls_server_name iotauth.example.net  (override the name checked on TLS)
//   plugin_opt_tls_staging_dir /var/lib/mosquitto/iotauth-tls
//                                                   (private directory the checked TLS
//                                                    files are staged in; default
//                                                    $TMPDIR or /tmp, then
//                                                    iotauth-mosquitto-<uid>)
//   plugin_opt_failure_backoff_ms 1000              (fail fast after iotauth is unreachable;
//                                                    doubles per failed probe, up to 30 s)
//   plugin_opt_offline_grant_ttl_s 86400            (rules kept after a disconnect; 0: none)
//   plugin_opt_max_offline_sessions 100000          (disconnected clients' rules kept, at most)
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace iotauth::mosquitto {

struct PluginConfig {
  std::string address;
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
  std::string tls_server_name;
  // Where renewed TLS files are staged once checked (TlsReloader): gRPC reads only
  // from there, so a broken renewal never replaces a working pair. Empty: see
  // DefaultTlsStagingDir.
  std::string tls_staging_dir;
  std::string tenant_id;
  absl::Duration timeout = absl::Milliseconds(1000);
  size_t cache_size = 10000;
  // Longest a cached allow is reused for a reconnect, whatever TTL iotauth returned:
  // a revocation, key rotation or disable reaches this broker within it.
  absl::Duration cache_max_ttl = absl::Milliseconds(1000);
  absl::Duration failure_backoff = absl::Milliseconds(1000);
  // How long a disconnected client's rules keep deciding ACL checks (never beyond the
  // credential's expiry). Mosquitto checks a Last Will after the disconnect event,
  // and delivers queued messages to an offline persistent session against the old
  // client: without the rules both would be denied. Zero forgets at the disconnect.
  absl::Duration offline_grant_ttl = absl::Hours(24);
  // Bound on the disconnected clients whose rules are kept; the oldest go first.
  size_t max_offline_sessions = 100000;
};

// $TMPDIR (else /tmp) + "/iotauth-mosquitto-<effective uid>", for the user the
// broker runs as when it is called (after it has dropped root).
std::string DefaultTlsStagingDir();

// INVALID_ARGUMENT naming the option for an unknown option, a bad number, a
// missing address, or a client certificate without its key (or the reverse).
absl::StatusOr<PluginConfig> ParsePluginOptions(
    const std::vector<std::pair<std::string, std::string>>& options);

}  // namespace iotauth::mosquitto
