#include "services/common/config.h"

#include <openssl/pem.h>
#include <openssl/x509.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/type_resolver_util.h"
#include "services/common/caller.h"
#include "services/common/log.h"
#include "services/common/proto_time.h"
#include "services/common/status_macros.h"

namespace iotauth {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read file '", path, "': ", std::strerror(errno)));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::Status SetScalar(Message* msg, const FieldDescriptor* f, absl::string_view value,
                       absl::string_view path) {
  const Reflection* r = msg->GetReflection();
  auto bad = [&](absl::string_view what) {
    return absl::InvalidArgumentError(
        absl::StrCat("config key '", path, "': invalid value '", value, "' (", what, ")"));
  };
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_STRING:
      if (f->is_repeated()) {
        r->AddString(msg, f, std::string(value));
      } else {
        r->SetString(msg, f, std::string(value));
      }
      return absl::OkStatus();
    case FieldDescriptor::CPPTYPE_BOOL: {
      bool b;
      if (!absl::SimpleAtob(value, &b)) return bad("expected true or false");
      f->is_repeated() ? r->AddBool(msg, f, b) : r->SetBool(msg, f, b);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_INT32: {
      int32_t v;
      if (!absl::SimpleAtoi(value, &v)) return bad("expected an integer");
      f->is_repeated() ? r->AddInt32(msg, f, v) : r->SetInt32(msg, f, v);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_INT64: {
      int64_t v;
      if (!absl::SimpleAtoi(value, &v)) return bad("expected an integer");
      f->is_repeated() ? r->AddInt64(msg, f, v) : r->SetInt64(msg, f, v);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_ENUM: {
      const auto* ev = f->enum_type()->FindValueByName(std::string(value));
      if (ev == nullptr) {
        // Accept the short form: "insecure" for TLS_MODE_INSECURE.
        for (int i = 0; i < f->enum_type()->value_count(); ++i) {
          const auto* cand = f->enum_type()->value(i);
          std::string name = absl::AsciiStrToLower(cand->name());
          std::string want = absl::AsciiStrToLower(value);
          if (name.size() > want.size() &&
              name.compare(name.size() - want.size(), want.size(), want) == 0 &&
              name[name.size() - want.size() - 1] == '_') {
            ev = cand;
            break;
          }
        }
      }
      if (ev == nullptr || ev->number() == 0) {
        std::string names;
        for (int i = 1; i < f->enum_type()->value_count(); ++i) {
          absl::StrAppend(&names, i > 1 ? ", " : "", f->enum_type()->value(i)->name());
        }
        return bad(absl::StrCat("expected one of ", names));
      }
      f->is_repeated() ? r->AddEnum(msg, f, ev) : r->SetEnum(msg, f, ev);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_MESSAGE:
      if (f->message_type()->full_name() == "google.protobuf.Duration" && !f->is_repeated()) {
        absl::Duration d;
        if (!absl::ParseDuration(value, &d)) return bad("expected a duration such as 5s or 2m");
        Message* dm = r->MutableMessage(msg, f);
        const Descriptor* dd = dm->GetDescriptor();
        int64_t secs = absl::IDivDuration(d, absl::Seconds(1), &d);
        dm->GetReflection()->SetInt64(dm, dd->FindFieldByName("seconds"), secs);
        dm->GetReflection()->SetInt32(dm, dd->FindFieldByName("nanos"),
                                      static_cast<int32_t>(absl::ToInt64Nanoseconds(d)));
        return absl::OkStatus();
      }
      return absl::InvalidArgumentError(absl::StrCat(
          "config key '", path, "' is a section, not a value; set it in the config file"));
    default:
      return bad("unsupported field type");
  }
}

// Calls fn(path, field, parent) for every settable leaf (scalars, enums, Durations).
template <typename Fn>
void ForEachLeaf(const Descriptor* d, const std::string& prefix, Fn fn) {
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    std::string path = prefix.empty() ? f->name() : absl::StrCat(prefix, ".", f->name());
    if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE && !f->is_repeated() &&
        f->message_type()->full_name() != "google.protobuf.Duration") {
      ForEachLeaf(f->message_type(), path, fn);
    } else if (f->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE || !f->is_repeated()) {
      fn(path);
    }
  }
}

std::string EnvName(absl::string_view path) {
  std::string name = "IOTAUTH_";
  for (char c : path) name += c == '.' ? std::string("__") : std::string(1, absl::ascii_toupper(c));
  return name;
}

absl::Status ValidateAddress(absl::string_view key, absl::string_view addr, bool allow_empty) {
  if (addr.empty()) {
    if (allow_empty) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat("config key '", key, "' must not be empty"));
  }
  size_t colon = addr.rfind(':');
  int port = -1;
  if (colon == absl::string_view::npos || colon == 0 ||
      !absl::SimpleAtoi(addr.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("config key '", key, "': invalid address '", addr, "' (expected host:port)"));
  }
  return absl::OkStatus();
}

absl::Status ValidateDuration(absl::string_view key, const google::protobuf::Duration& d,
                              absl::Duration min, absl::Duration max) {
  const absl::Duration v = FromProtoDuration(d);
  if (v < min || v > max) {
    return absl::InvalidArgumentError(
        absl::StrCat("config key '", key, "': ", absl::FormatDuration(v), " is outside [",
                     absl::FormatDuration(min), ", ", absl::FormatDuration(max), "]"));
  }
  return absl::OkStatus();
}

absl::Status ValidatePemFile(absl::string_view key, const std::string& path, bool is_key) {
  if (path.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("config key '", key, "' is required"));
  }
  FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("config key '", key, "': cannot read '", path, "': ", std::strerror(errno)));
  }
  bool ok;
  if (is_key) {
    EVP_PKEY* pkey = PEM_read_PrivateKey(f, nullptr, nullptr, nullptr);
    ok = pkey != nullptr;
    EVP_PKEY_free(pkey);
  } else {
    X509* cert = PEM_read_X509(f, nullptr, nullptr, nullptr);
    ok = cert != nullptr;
    X509_free(cert);
  }
  std::fclose(f);
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat("config key '", key, "': '", path,
                                                   "' does not hold a PEM ",
                                                   is_key ? "private key" : "certificate"));
  }
  return absl::OkStatus();
}

absl::Status ValidateRoles(absl::string_view key,
                           const google::protobuf::RepeatedPtrField<std::string>& roles) {
  if (roles.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("config key '", key, "' must list a role"));
  }
  for (const auto& name : roles) {
    Role r;
    if (!ParseRole(name, &r)) {
      return absl::InvalidArgumentError(absl::StrCat("config key '", key, "': unknown role '", name,
                                                     "' (admin, reader, gateway or audit-writer)"));
    }
  }
  return absl::OkStatus();
}

std::string JoinPath(const std::string& dir, const std::string& file) {
  if (dir.empty() || dir.back() == '/') return dir + file;
  return dir + "/" + file;
}

}  // namespace

ServerConfig DefaultConfig() {
  ServerConfig c;
  c.set_data_dir("./iotauth-data");
  c.mutable_grpc()->set_address("localhost:50051");
  c.mutable_grpc()->mutable_tls()->set_mode(iotauth::config::v1::TLS_MODE_DEV_PKI);
  c.mutable_metrics()->set_address("localhost:9464");
  c.mutable_log()->set_level("info");
  c.mutable_auth()->set_roles_from_ou(true);
  c.mutable_auth()->set_public_calls_per_second(1000);
  c.mutable_auth()->set_public_calls_burst(2000);
  c.mutable_identity()->mutable_clock_skew()->set_seconds(300);
  c.mutable_identity()->mutable_timestamp_window()->set_seconds(300);
  c.mutable_identity()->mutable_decision_cache_ttl()->set_seconds(300);
  c.mutable_identity()->set_x509_parsed_cache_size(65536);
  c.mutable_identity()->set_x509_result_cache_size(65536);
  c.mutable_identity()->set_replay_cache_size(1 << 20);
  c.mutable_identity()->set_exhook_max_sessions(1000000);
  c.mutable_identity()->set_max_enrollment_groups_tried(8);
  c.mutable_identity()->set_device_max_failures(5);
  c.mutable_identity()->set_source_max_failures(50);
  c.mutable_identity()->mutable_lockout_base()->set_seconds(30);
  c.mutable_identity()->mutable_lockout_max()->set_seconds(900);
  c.mutable_identity()->mutable_failure_memory()->set_seconds(900);
  c.mutable_identity()->set_limiter_size(1 << 18);
  c.mutable_audit()->set_queue_capacity(65536);
  c.mutable_audit()->set_batch_size(2048);
  c.mutable_audit()->set_full_queue_policy("block");
  c.mutable_audit()->set_when_unwritable("not_serving");
  c.mutable_audit()->mutable_block_timeout()->set_nanos(50 * 1000 * 1000);
  c.mutable_audit()->mutable_batch_linger()->set_nanos(20 * 1000 * 1000);
  c.mutable_audit()->mutable_retention_interval()->set_seconds(60);
  c.mutable_storage()->mutable_registry_change_retention()->set_seconds(int64_t{7} * 24 * 3600);
  c.mutable_storage()->set_audit_backend("log");
  c.mutable_shutdown()->mutable_grace_period()->set_seconds(10);
  return c;
}

absl::Status SetConfigValue(ServerConfig* config, absl::string_view path, absl::string_view value) {
  Message* msg = config;
  std::vector<std::string> parts = absl::StrSplit(path, '.');
  for (size_t i = 0; i < parts.size(); ++i) {
    const FieldDescriptor* f = msg->GetDescriptor()->FindFieldByName(parts[i]);
    if (f == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("unknown config key '", path, "'"));
    }
    bool last = i + 1 == parts.size();
    if (!last) {
      if (f->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE || f->is_repeated()) {
        return absl::InvalidArgumentError(absl::StrCat("unknown config key '", path, "'"));
      }
      msg = msg->GetReflection()->MutableMessage(msg, f);
      continue;
    }
    if (f->is_repeated()) {
      if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
        return absl::InvalidArgumentError(absl::StrCat(
            "config key '", path, "' is a list of sections; set it in the config file"));
      }
      msg->GetReflection()->ClearField(msg, f);
      for (absl::string_view item : absl::StrSplit(value, ',', absl::SkipEmpty())) {
        IOTAUTH_RETURN_IF_ERROR(SetScalar(msg, f, absl::StripAsciiWhitespace(item), path));
      }
      return absl::OkStatus();
    }
    return SetScalar(msg, f, value, path);
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown config key '", path, "'"));
}

absl::StatusOr<ServerConfig> LoadConfig(const ConfigSources& sources) {
  ServerConfig config = DefaultConfig();
  if (!sources.file.empty()) {
    auto text = ReadFile(sources.file);
    if (!text.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("config file: ", text.status().message()));
    }
    // JSON -> binary -> merge, so values written explicitly in the file (even
    // false or 0) replace the defaults while unspecified keys keep them.
    static auto* resolver = google::protobuf::util::NewTypeResolverForDescriptorPool(
        "type.googleapis.com", google::protobuf::DescriptorPool::generated_pool());
    google::protobuf::util::JsonParseOptions opts;
    opts.ignore_unknown_fields = false;
    std::string binary;
    auto st = google::protobuf::util::JsonToBinaryString(
        resolver, "type.googleapis.com/" + ServerConfig::descriptor()->full_name(), *text, &binary,
        opts);
    if (!st.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("config file '", sources.file, "': ", st.message().as_string()));
    }
    if (!config.MergeFromString(binary)) {
      return absl::InvalidArgumentError(
          absl::StrCat("config file '", sources.file, "': cannot decode"));
    }
  }
  std::vector<std::pair<std::string, std::string>> env_sets;
  ForEachLeaf(ServerConfig::descriptor(), "", [&](const std::string& path) {
    auto it = sources.env.find(EnvName(path));
    if (it != sources.env.end()) env_sets.emplace_back(path, it->second);
  });
  for (const auto& [path, value] : env_sets) {
    auto st = SetConfigValue(&config, path, value);
    if (!st.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("environment ", EnvName(path), ": ", st.message()));
    }
  }
  for (const std::string& set : sources.sets) {
    size_t eq = set.find('=');
    if (eq == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("--set '", set, "': expected path=value, e.g. grpc.address=:50051"));
    }
    IOTAUTH_RETURN_IF_ERROR(SetConfigValue(&config, set.substr(0, eq), set.substr(eq + 1)));
  }
  IOTAUTH_RETURN_IF_ERROR(ValidateConfig(config));
  return config;
}

absl::Status ValidateConfig(const ServerConfig& c) {
  using iotauth::config::v1::TlsMode;
  if (c.data_dir().empty()) {
    return absl::InvalidArgumentError("config key 'data_dir' must not be empty");
  }
  IOTAUTH_RETURN_IF_ERROR(ValidateAddress("grpc.address", c.grpc().address(), false));
  IOTAUTH_RETURN_IF_ERROR(ValidateAddress("metrics.address", c.metrics().address(), true));
  log::Level level;
  if (!log::ParseLevel(c.log().level(), &level)) {
    return absl::InvalidArgumentError(absl::StrCat("config key 'log.level': invalid value '",
                                                   c.log().level(),
                                                   "' (debug, info, warn or error)"));
  }
  const auto& tls = c.grpc().tls();
  if (tls.mode() == iotauth::config::v1::TLS_MODE_TLS ||
      tls.mode() == iotauth::config::v1::TLS_MODE_MTLS) {
    IOTAUTH_RETURN_IF_ERROR(ValidatePemFile("grpc.tls.cert_file", tls.cert_file(), false));
    IOTAUTH_RETURN_IF_ERROR(ValidatePemFile("grpc.tls.key_file", tls.key_file(), true));
    if (tls.mode() == iotauth::config::v1::TLS_MODE_MTLS || !tls.client_ca_file().empty()) {
      IOTAUTH_RETURN_IF_ERROR(
          ValidatePemFile("grpc.tls.client_ca_file", tls.client_ca_file(), false));
    }
  }
  for (int i = 0; i < c.auth().cert_roles_size(); ++i) {
    const auto& b = c.auth().cert_roles(i);
    std::string key = absl::StrCat("auth.cert_roles[", i, "]");
    if (b.subject_cn().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("config key '", key, ".subject_cn' must not be empty"));
    }
    if (b.subject_cn() == kInternalPrincipal) {
      return absl::InvalidArgumentError(
          absl::StrCat("config key '", key, ".subject_cn' may not be '", kInternalPrincipal,
                       "': that name is reserved for the "
                       "server's own calls; choose another"));
    }
    IOTAUTH_RETURN_IF_ERROR(ValidateRoles(key + ".roles", b.roles()));
  }
  for (int i = 0; i < c.auth().bearer_tokens_size(); ++i) {
    const auto& t = c.auth().bearer_tokens(i);
    std::string key = absl::StrCat("auth.bearer_tokens[", i, "]");
    if (t.name().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("config key '", key, ".name' must not be empty"));
    }
    if (t.name() == kInternalPrincipal) {
      return absl::InvalidArgumentError(absl::StrCat("config key '", key, ".name' may not be '",
                                                     kInternalPrincipal,
                                                     "': that name is reserved for the "
                                                     "server's own calls; choose another"));
    }
    bool hex_ok = t.sha256().size() == 64;
    for (char ch : t.sha256()) hex_ok = hex_ok && absl::ascii_isxdigit(ch);
    if (!hex_ok) {
      return absl::InvalidArgumentError(absl::StrCat(
          "config key '", key,
          ".sha256' must be the 64-digit hex SHA-256 of the token (printf %s TOKEN | sha256sum)"));
    }
    IOTAUTH_RETURN_IF_ERROR(ValidateRoles(key + ".roles", t.roles()));
  }
  for (const auto& [key, v] : {std::pair<const char*, int32_t>{"auth.public_calls_per_second",
                                                               c.auth().public_calls_per_second()},
                               {"auth.public_calls_burst", c.auth().public_calls_burst()}}) {
    if (v < 1 || v > 10000000) {
      return absl::InvalidArgumentError(
          absl::StrCat("config key '", key, "' must be in [1, 10000000]"));
    }
  }
  const auto& id = c.identity();
  IOTAUTH_RETURN_IF_ERROR(ValidateDuration("identity.clock_skew", id.clock_skew(),
                                           absl::ZeroDuration(), absl::Hours(1)));
  IOTAUTH_RETURN_IF_ERROR(ValidateDuration("identity.timestamp_window", id.timestamp_window(),
                                           absl::Seconds(1), absl::Hours(24)));
  IOTAUTH_RETURN_IF_ERROR(ValidateDuration("identity.decision_cache_ttl", id.decision_cache_ttl(),
                                           absl::ZeroDuration(), absl::Hours(24)));
  for (const auto& [key, v] : {std::pair<const char*, int32_t>{"identity.x509_parsed_cache_size",
                                                               id.x509_parsed_cache_size()},
                               {"identity.x509_result_cache_size", id.x509_result_cache_size()}}) {
    if (v < 0 || v > 10000000) {
      return absl::InvalidArgumentError(
          absl::StrCat("config key '", key, "' must be in [0, 10000000] (0 turns it off)"));
    }
  }
  if (id.replay_cache_size() < 1 || id.replay_cache_size() > 100000000) {
    return absl::InvalidArgumentError(
        "config key 'identity.replay_cache_size' must be in [1, 100000000]");
  }
  if (id.exhook_max_sessions() < 1 || id.exhook_max_sessions() > 100000000) {
    return absl::InvalidArgumentError(
        "config key 'identity.exhook_max_sessions' must be in [1, 100000000]");
  }
  if (id.max_enrollment_groups_tried() < 1 || id.max_enrollment_groups_tried() > 1000) {
    return absl::InvalidArgumentError(
        "config key 'identity.max_enrollment_groups_tried' must be in [1, 1000]");
  }
  for (const auto& [key, v] :
       {std::pair<const char*, int32_t>{"identity.device_max_failures", id.device_max_failures()},
        {"identity.source_max_failures", id.source_max_failures()}}) {
    if (v < 0 || v > 1000000) {
      return absl::InvalidArgumentError(
          absl::StrCat("config key '", key, "' must be in [0, 1000000] (0 turns it off)"));
    }
  }
  IOTAUTH_RETURN_IF_ERROR(ValidateDuration("identity.lockout_base", id.lockout_base(),
                                           absl::Seconds(1), absl::Hours(24)));
  IOTAUTH_RETURN_IF_ERROR(ValidateDuration("identity.lockout_max", id.lockout_max(),
                                           absl::Seconds(1), absl::Hours(24 * 7)));
  IOTAUTH_RETURN_IF_ERROR(ValidateDuration("identity.failure_memory", id.failure_memory(),
                                           absl::Seconds(1), absl::Hours(24 * 7)));
  if (FromProtoDuration(id.lockout_max()) < FromProtoDuration(id.lockout_base())) {
    return absl::InvalidArgumentError(
        "config key 'identity.lockout_max' must be at least identity.lockout_base");
  }
  if (id.limiter_size() < 1 || id.limiter_size() > 100000000) {
    return absl::InvalidArgumentError(
        "config key 'identity.limiter_size' must be in [1, 100000000]");
  }
  IOTAUTH_RETURN_IF_ERROR(ValidateDuration("identity.max_registry_silence",
                                           id.max_registry_silence(), absl::ZeroDuration(),
                                           absl::Hours(1)));
  const absl::Duration silence = FromProtoDuration(id.max_registry_silence());
  if (silence != absl::ZeroDuration() && silence < absl::Seconds(1)) {
    return absl::InvalidArgumentError(
        "config key 'identity.max_registry_silence' must be 0 (off) or at least 1s (heartbeats "
        "come every 250 ms)");
  }
  const std::string& backend = c.storage().audit_backend();
  if (!backend.empty() && backend != "log" && backend != "sqlite") {
    return absl::InvalidArgumentError(absl::StrCat(
        "config key 'storage.audit_backend': invalid value '", backend, "' (log or sqlite)"));
  }
  if (c.storage().audit_segment_events() < 0 || c.storage().audit_segment_events() % 4096 != 0) {
    return absl::InvalidArgumentError(
        "config key 'storage.audit_segment_events' must be a multiple of 4096 (0: 262144)");
  }
  const auto& au = c.audit();
  if (au.queue_capacity() < 1 || au.queue_capacity() > 10000000) {
    return absl::InvalidArgumentError("config key 'audit.queue_capacity' must be in [1, 10000000]");
  }
  if (au.batch_size() < 1 || au.batch_size() > 100000) {
    return absl::InvalidArgumentError("config key 'audit.batch_size' must be in [1, 100000]");
  }
  if (au.full_queue_policy() != "block" && au.full_queue_policy() != "drop") {
    return absl::InvalidArgumentError(
        absl::StrCat("config key 'audit.full_queue_policy': invalid value '",
                     au.full_queue_policy(), "' (block or drop)"));
  }
  if (au.when_unwritable() != "not_serving" && au.when_unwritable() != "refuse" &&
      au.when_unwritable() != "serve") {
    return absl::InvalidArgumentError(
        absl::StrCat("config key 'audit.when_unwritable': invalid value '", au.when_unwritable(),
                     "' (not_serving, refuse or serve)"));
  }
  IOTAUTH_RETURN_IF_ERROR(ValidateDuration("audit.block_timeout", au.block_timeout(),
                                           absl::ZeroDuration(), absl::Seconds(60)));
  IOTAUTH_RETURN_IF_ERROR(ValidateDuration("audit.batch_linger", au.batch_linger(),
                                           absl::ZeroDuration(), absl::Seconds(1)));
  IOTAUTH_RETURN_IF_ERROR(ValidateDuration("storage.registry_change_retention",
                                           c.storage().registry_change_retention(),
                                           absl::ZeroDuration(), absl::Hours(24 * 365 * 100)));
  IOTAUTH_RETURN_IF_ERROR(ValidateDuration("audit.retention_max_age", au.retention_max_age(),
                                           absl::ZeroDuration(), absl::Hours(24 * 365 * 100)));
  IOTAUTH_RETURN_IF_ERROR(ValidateDuration("audit.retention_interval", au.retention_interval(),
                                           absl::Seconds(1), absl::Hours(24)));
  if (au.writer_yield_every() < 0 || au.writer_yield_every() > 1000000) {
    return absl::InvalidArgumentError(
        "config key 'audit.writer_yield_every' must be in [0, 1000000] (0: never)");
  }
  if (au.retention_max_events() < 0) {
    return absl::InvalidArgumentError(
        "config key 'audit.retention_max_events' must be >= 0 (0: no limit)");
  }
  if (au.retention_max_bytes() < 0) {
    return absl::InvalidArgumentError(
        "config key 'audit.retention_max_bytes' must be >= 0 (0: no limit)");
  }
  if (au.retention_max_bytes() > 0 && backend == "sqlite") {
    return absl::InvalidArgumentError(
        "config key 'audit.retention_max_bytes' needs storage.audit_backend=log (an SQLite "
        "file does not shrink when events are pruned): use audit.retention_max_events, or "
        "move to the segment log with audit_migrate");
  }
  IOTAUTH_RETURN_IF_ERROR(ValidateAddress("audit.remote_address", au.remote_address(), true));
  IOTAUTH_RETURN_IF_ERROR(ValidateAddress("registry_address", c.registry_address(), true));
  IOTAUTH_RETURN_IF_ERROR(ValidateDuration("shutdown.grace_period", c.shutdown().grace_period(),
                                           absl::ZeroDuration(), absl::Minutes(10)));
  for (const auto& s : c.services()) {
    if (s != "identity" && s != "registry" && s != "audit") {
      return absl::InvalidArgumentError(absl::StrCat("config key 'services': unknown service '", s,
                                                     "' (identity, registry or audit)"));
    }
  }
  if (HostsService(c, "identity") && !HostsService(c, "registry") && c.registry_address().empty()) {
    return absl::InvalidArgumentError(
        "config key 'registry_address' is required when this process hosts identity but not "
        "registry");
  }
  // Every decision and change goes to an audit log: a process without one fails closed.
  const bool audit_elsewhere = !HostsService(c, "audit") && au.remote_address().empty();
  if (audit_elsewhere && !au.disabled()) {
    return absl::InvalidArgumentError(
        "config key 'audit.remote_address' is required when this process does not host the "
        "audit service: set it to the AuditLog's host:port (or set audit.disabled=true to run "
        "with no audit log, for benchmarks only)");
  }
  if (au.disabled() && !audit_elsewhere) {
    return absl::InvalidArgumentError(
        "config key 'audit.disabled' contradicts this process hosting the audit service or "
        "having audit.remote_address: drop one of them");
  }
  return absl::OkStatus();
}

std::map<std::string, std::string> ProcessEnvironment() {
  std::map<std::string, std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    absl::string_view kv(*e);
    size_t eq = kv.find('=');
    if (eq == absl::string_view::npos) continue;
    env.emplace(std::string(kv.substr(0, eq)), std::string(kv.substr(eq + 1)));
  }
  return env;
}

std::string RegistryDbPath(const ServerConfig& c) {
  return c.storage().registry_db().empty() ? JoinPath(c.data_dir(), "registry.db")
                                           : c.storage().registry_db();
}
std::string AuditDbPath(const ServerConfig& c) {
  return c.storage().audit_db().empty() ? JoinPath(c.data_dir(), "audit.db")
                                        : c.storage().audit_db();
}
std::string AuditLogDir(const ServerConfig& c) {
  return c.storage().audit_log_dir().empty() ? JoinPath(c.data_dir(), "audit")
                                             : c.storage().audit_log_dir();
}
std::string AuditSpoolPath(const ServerConfig& c) {
  // In the data directory, the one place this process always writes (an audit log
  // directory may be a mount point of its own).
  if (HostsService(c, "audit")) return JoinPath(c.data_dir(), "audit.spool");
  // Split processes may share a data directory: one spool per set of services.
  std::vector<std::string> services(c.services().begin(), c.services().end());
  std::sort(services.begin(), services.end());
  return JoinPath(c.data_dir(),
                  absl::StrCat("audit-remote.", absl::StrJoin(services, "+"), ".spool"));
}
std::string DevPkiDir(const ServerConfig& c) { return JoinPath(c.data_dir(), "pki"); }

bool HostsService(const ServerConfig& c, absl::string_view service) {
  return c.services().empty() ||
         std::any_of(c.services().begin(), c.services().end(),
                     [service](const std::string& s) { return s == service; });
}

}  // namespace iotauth
