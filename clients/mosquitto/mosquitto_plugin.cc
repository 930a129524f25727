// Mosquitto 2.0 plugin entry points (plugin API v5): the glue between the broker's
// callbacks and PluginCore. MOSQ_EVT_BASIC_AUTH asks iotauth (bounded by
// plugin_opt_timeout_ms; fails closed); MOSQ_EVT_ACL_CHECK decides locally from the
// rules iotauth returned; MOSQ_EVT_DISCONNECT marks the client offline (its rules
// still decide its Last Will and deliveries to its persistent session for a while).
//
// Mosquitto runs the basic-auth callback only when the CONNECT carries a username or
// password, so X.509 devices must send one (for example their device id).

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/string_view.h"
#include "clients/mosquitto/fail_closed.h"
#include "clients/mosquitto/grpc_auth_client.h"
#include "clients/mosquitto/log_queue.h"
#include "clients/mosquitto/plugin_config.h"
#include "clients/mosquitto/plugin_core.h"
#include "services/common/log.h"

namespace {

using iotauth::mosquitto::Access;
using iotauth::mosquitto::CallFailClosed;
using iotauth::mosquitto::ConnectAttempt;
using iotauth::mosquitto::Decision;
using iotauth::mosquitto::PluginCore;

struct PluginState {
  mosquitto_plugin_id_t* id = nullptr;
  std::unique_ptr<PluginCore> core;
};

const char* OrEmpty(const char* s) { return s == nullptr ? "" : s; }

// Lines of the shared iotauth code (the TLS reloader, from its own thread): queued,
// and written to the broker's log at the next callback or tick, on the broker's
// thread.
iotauth::mosquitto::LogQueue& PendingLog() {
  static auto* queue = new iotauth::mosquitto::LogQueue(256);
  return *queue;
}

void QueueLogLine(iotauth::log::Level level, absl::string_view line) {
  PendingLog().Push(level, line);
}

void WritePendingLog() {
  PendingLog().Drain([](iotauth::log::Level level, absl::string_view line) {
    int mosq_level = MOSQ_LOG_INFO;
    if (level == iotauth::log::Level::kError) mosq_level = MOSQ_LOG_ERR;
    if (level == iotauth::log::Level::kWarn) mosq_level = MOSQ_LOG_WARNING;
    if (level == iotauth::log::Level::kDebug) mosq_level = MOSQ_LOG_DEBUG;
    mosquitto_log_printf(mosq_level, "iotauth: %.*s", static_cast<int>(line.size()), line.data());
  });
}

std::string CertificatePem(const struct mosquitto* client) {
  X509* cert = static_cast<X509*>(mosquitto_client_certificate(client));
  if (cert == nullptr) return "";
  std::string pem;
  BIO* bio = BIO_new(BIO_s_mem());
  if (bio != nullptr && PEM_write_bio_X509(bio, cert) == 1) {
    char* data = nullptr;
    const long n = BIO_get_mem_data(bio, &data);
    if (n > 0) pem.assign(data, static_cast<size_t>(n));
  }
  BIO_free(bio);
  X509_free(cert);
  return pem;
}

int BasicAuth(void* event_data, void* userdata) {
  auto* state = static_cast<PluginState*>(userdata);
  auto* ev = static_cast<mosquitto_evt_basic_auth*>(event_data);
  ConnectAttempt a;
  a.client = reinterpret_cast<uintptr_t>(ev->client);
  a.client_id = OrEmpty(mosquitto_client_id(ev->client));
  a.username = OrEmpty(ev->username);
  a.password = OrEmpty(ev->password);
  a.certificate_pem = CertificatePem(ev->client);
  a.peer_address = OrEmpty(mosquitto_client_address(ev->client));
  a.listener = "mosquitto";
  const Decision d = state->core->OnBasicAuth(a);
  // Client ids and topics come from devices: control characters, quotes and
  // backslashes are escaped (UTF-8 is kept), so that none can forge a log line.
  mosquitto_log_printf(d.allow ? MOSQ_LOG_INFO : MOSQ_LOG_NOTICE,
                       "iotauth: connect of client '%s' %s: %s",
                       absl::Utf8SafeCHexEscape(a.client_id).c_str(),
                       d.allow ? "allowed" : "denied", d.reason.c_str());
  return d.allow ? MOSQ_ERR_SUCCESS : MOSQ_ERR_AUTH;
}

int AclCheck(void* event_data, void* userdata) {
  auto* state = static_cast<PluginState*>(userdata);
  auto* ev = static_cast<mosquitto_evt_acl_check*>(event_data);
  Access access;
  switch (ev->access) {
    case MOSQ_ACL_READ:
      access = Access::kRead;
      break;
    case MOSQ_ACL_WRITE:
      access = Access::kWrite;
      break;
    case MOSQ_ACL_SUBSCRIBE:
      access = Access::kSubscribe;
      break;
    case MOSQ_ACL_UNSUBSCRIBE:
      access = Access::kUnsubscribe;
      break;
    default:
      return MOSQ_ERR_ACL_DENIED;
  }
  const char* client_id = OrEmpty(mosquitto_client_id(ev->client));
  const Decision d = state->core->OnAclCheck(reinterpret_cast<uintptr_t>(ev->client), client_id,
                                             OrEmpty(mosquitto_client_username(ev->client)), access,
                                             OrEmpty(ev->topic));
  if (!d.allow) {
    mosquitto_log_printf(MOSQ_LOG_NOTICE, "iotauth: client '%s' denied access %d to '%s': %s",
                         absl::Utf8SafeCHexEscape(client_id).c_str(), ev->access,
                         absl::Utf8SafeCHexEscape(OrEmpty(ev->topic)).c_str(), d.reason.c_str());
  }
  return d.allow ? MOSQ_ERR_SUCCESS : MOSQ_ERR_ACL_DENIED;
}

int Disconnect(void* event_data, void* userdata) {
  auto* state = static_cast<PluginState*>(userdata);
  auto* ev = static_cast<mosquitto_evt_disconnect*>(event_data);
  state->core->OnDisconnect(reinterpret_cast<uintptr_t>(ev->client));
  return MOSQ_ERR_SUCCESS;
}

void LogError(const std::string& line) {
  mosquitto_log_printf(MOSQ_LOG_ERR, "iotauth: %s", line.c_str());
}

// The callbacks Mosquitto calls: no exception leaves them (fail_closed.h).
int OnBasicAuth(int /*unused*/, void* event_data, void* userdata) {
  const int rc = CallFailClosed(
      "connect check", MOSQ_ERR_AUTH, [&] { return BasicAuth(event_data, userdata); }, LogError);
  WritePendingLog();
  return rc;
}

int OnAclCheck(int /*unused*/, void* event_data, void* userdata) {
  const int rc = CallFailClosed(
      "access check", MOSQ_ERR_ACL_DENIED, [&] { return AclCheck(event_data, userdata); },
      LogError);
  WritePendingLog();
  return rc;
}

// The broker's periodic tick (its main loop, about once a second when idle): queued
// log lines reach the broker's log even when no client is active.
int OnTick(int /*unused*/, void* /*event_data*/, void* /*userdata*/) {
  WritePendingLog();
  return MOSQ_ERR_SUCCESS;
}

int OnDisconnect(int /*unused*/, void* event_data, void* userdata) {
  // Nothing to refuse: the client is gone either way (its rules then expire with
  // their offline TTL instead of being marked now).
  const int rc = CallFailClosed(
      "disconnect", MOSQ_ERR_SUCCESS, [&] { return Disconnect(event_data, userdata); }, LogError);
  WritePendingLog();
  return rc;
}

int Init(mosquitto_plugin_id_t* identifier, void** userdata, struct mosquitto_opt* options,
         int option_count) {
  iotauth::log::SetSink(QueueLogLine);
  std::vector<std::pair<std::string, std::string>> opts;
  opts.reserve(option_count);
  for (int i = 0; i < option_count; ++i) {
    opts.emplace_back(OrEmpty(options[i].key), OrEmpty(options[i].value));
  }
  auto config = iotauth::mosquitto::ParsePluginOptions(opts);
  if (!config.ok()) {
    mosquitto_log_printf(MOSQ_LOG_ERR, "iotauth: %s",
                         std::string(config.status().message()).c_str());
    return MOSQ_ERR_INVAL;
  }
  auto client = iotauth::mosquitto::GrpcAuthClient::Create(*config);
  if (!client.ok()) {
    mosquitto_log_printf(MOSQ_LOG_ERR, "iotauth: %s",
                         std::string(client.status().message()).c_str());
    return MOSQ_ERR_INVAL;
  }
  PluginCore::Options o;
  o.config = *config;
  o.client = *std::move(client);
  auto core = PluginCore::Create(std::move(o));
  if (!core.ok()) return MOSQ_ERR_INVAL;
  auto* state = new PluginState{identifier, *std::move(core)};
  *userdata = state;
  int rc =
      mosquitto_callback_register(identifier, MOSQ_EVT_BASIC_AUTH, OnBasicAuth, nullptr, state);
  if (rc == MOSQ_ERR_SUCCESS) {
    rc = mosquitto_callback_register(identifier, MOSQ_EVT_ACL_CHECK, OnAclCheck, nullptr, state);
  }
  if (rc == MOSQ_ERR_SUCCESS) {
    rc = mosquitto_callback_register(identifier, MOSQ_EVT_DISCONNECT, OnDisconnect, nullptr, state);
  }
  if (rc == MOSQ_ERR_SUCCESS) {
    rc = mosquitto_callback_register(identifier, MOSQ_EVT_TICK, OnTick, nullptr, state);
  }
  if (rc != MOSQ_ERR_SUCCESS) {
    mosquitto_log_printf(MOSQ_LOG_ERR, "iotauth: callback registration failed (%d)", rc);
    return rc;
  }
  mosquitto_log_printf(MOSQ_LOG_INFO, "iotauth: plugin loaded, iotauth at %s, timeout %lld ms",
                       config->address.c_str(),
                       static_cast<long long>(absl::ToInt64Milliseconds(config->timeout)));
  return MOSQ_ERR_SUCCESS;
}

}  // namespace

extern "C" {

int mosquitto_plugin_version(int supported_version_count, const int* supported_versions) {
  for (int i = 0; i < supported_version_count; ++i) {
    if (supported_versions[i] == 5) return 5;
  }
  return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t* identifier, void** userdata,
                          struct mosquitto_opt* options, int option_count) {
  return CallFailClosed(
      "loading the plugin", MOSQ_ERR_NOMEM,
      [&] { return Init(identifier, userdata, options, option_count); }, LogError);
}

int mosquitto_plugin_cleanup(void* userdata, struct mosquitto_opt* /*unused*/, int /*unused*/) {
  auto* state = static_cast<PluginState*>(userdata);
  if (state == nullptr) return MOSQ_ERR_SUCCESS;
  mosquitto_callback_unregister(state->id, MOSQ_EVT_BASIC_AUTH, OnBasicAuth, nullptr);
  mosquitto_callback_unregister(state->id, MOSQ_EVT_ACL_CHECK, OnAclCheck, nullptr);
  mosquitto_callback_unregister(state->id, MOSQ_EVT_DISCONNECT, OnDisconnect, nullptr);
  mosquitto_callback_unregister(state->id, MOSQ_EVT_TICK, OnTick, nullptr);
  delete state;  // stops the TLS reloader's thread
  WritePendingLog();
  iotauth::log::SetSink(nullptr);
  return MOSQ_ERR_SUCCESS;
}

}  // extern "C"
