#include "clients/mosquitto/plugin_config.h"

#include <unistd.h>

#include <cstdint>
#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace iotauth::mosquitto {

namespace {
absl::Status ParseRange(const std::string& name, const std::string& value, int64_t lo, int64_t hi,
                        int64_t* out) {
  if (!absl::SimpleAtoi(value, out) || *out < lo || *out > hi) {
    return absl::InvalidArgumentError(
        absl::StrCat("plugin_opt_", name, " must be an integer in [", lo, ", ", hi, "]"));
  }
  return absl::OkStatus();
}
}  // namespace

std::string DefaultTlsStagingDir() {
  const char* tmp = std::getenv("TMPDIR");
  return absl::StrCat(tmp != nullptr && tmp[0] == '/' ? tmp : "/tmp", "/iotauth-mosquitto-",
                      geteuid());
}

absl::StatusOr<PluginConfig> ParsePluginOptions(
    const std::vector<std::pair<std::string, std::string>>& options) {
  PluginConfig c;
  for (const auto& [name, value] : options) {
    int64_t n = 0;
    if (name == "address") {
      c.address = value;
    } else if (name == "ca_file") {
      c.ca_file = value;
    } else if (name == "cert_file") {
      c.cert_file = value;
    } else if (name == "key_file") {
      c.key_file = value;
    } else if (name == "tls_server_name") {
      c.tls_server_name = value;
    } else if (name == "tls_staging_dir") {
      if (value.empty() || value[0] != '/') {
        return absl::InvalidArgumentError("plugin_opt_tls_staging_dir must be an absolute path");
      }
      c.tls_staging_dir = value;
    } else if (name == "tenant") {
      c.tenant_id = value;
    } else if (name == "timeout_ms") {
      absl::Status s = ParseRange(name, value, 1, 30000, &n);
      if (!s.ok()) return s;
      c.timeout = absl::Milliseconds(n);
    } else if (name == "cache_size") {
      absl::Status s = ParseRange(name, value, 0, 10000000, &n);
      if (!s.ok()) return s;
      c.cache_size = static_cast<size_t>(n);
    } else if (name == "cache_max_ttl_ms") {
      absl::Status s = ParseRange(name, value, 0, 86400000, &n);
      if (!s.ok()) return s;
      c.cache_max_ttl = absl::Milliseconds(n);
    } else if (name == "failure_backoff_ms") {
      absl::Status s = ParseRange(name, value, 0, 600000, &n);
      if (!s.ok()) return s;
      c.failure_backoff = absl::Milliseconds(n);
    } else if (name == "offline_grant_ttl_s") {
      absl::Status s = ParseRange(name, value, 0, 31536000, &n);  // at most a year
      if (!s.ok()) return s;
      c.offline_grant_ttl = absl::Seconds(n);
    } else if (name == "max_offline_sessions") {
      absl::Status s = ParseRange(name, value, 0, 10000000, &n);
      if (!s.ok()) return s;
      c.max_offline_sessions = static_cast<size_t>(n);
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown option plugin_opt_", name));
    }
  }
  if (c.address.empty()) return absl::InvalidArgumentError("plugin_opt_address is required");
  if (c.cert_file.empty() != c.key_file.empty()) {
    return absl::InvalidArgumentError("plugin_opt_cert_file and plugin_opt_key_file go together");
  }
  if (!c.cert_file.empty() && c.ca_file.empty()) {
    return absl::InvalidArgumentError("plugin_opt_cert_file needs plugin_opt_ca_file");
  }
  return c;
}

}  // namespace iotauth::mosquitto
