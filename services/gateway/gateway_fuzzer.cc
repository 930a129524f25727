// libFuzzer target: the broker and gateway adapters (EMQX ExHook, Envoy ext_authz)
// driven by a script of calls, against an identity backend whose answers the input
// also chooses. The adapters parse what devices send through a broker or proxy
// (client ids, usernames, passwords, peer addresses, topics, HTTP headers, forwarded
// certificates), and the ExHook one keeps state across calls: the session of each
// connected client. Besides "no crash", every call is checked against a model:
//  - client.authenticate answers true exactly when the backend allowed;
//  - client.authorize answers true only for a client whose model session (keyed by
//    the exact (node, client id) pair) was established on this very connection, is
//    unexpired, and whose Authorize the backend allowed, and the Authorize request
//    carries that session's identity and the topic without its shared-subscription
//    prefix; with the table never full, it also answers true whenever all of that
//    holds;
//  - ext_authz allows exactly when the request carries a credential and the backend
//    allowed; an allow overwrites the identity headers (or removes the absent ones)
//    and strips `authorization`; a denial is 401, 403, 429 or 503 with its reason;
//  - no password or SAS token from the input appears in an adapter's answer.
//
// Input: a sequence of operations, each an opcode byte and its operands; strings are
// a length byte and that many bytes, or a pick from small tables of colliding names
// (node and client ids that contain NUL, IPv6 and empty hosts).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "services/common/clock.h"
#include "services/common/fuzz_check.h"
#include "services/gateway/exhook_service.h"
#include "services/gateway/ext_authz_service.h"
#include "services/gateway/fake_identity_backend.h"
#include "services/gateway/identity_backend.h"

namespace {

namespace iv1 = ::iotauth::identity::v1;
namespace ev2 = ::emqx::exhook::v2;
namespace auth = ::envoy::service::auth::v3;
namespace core = ::envoy::config::core::v3;

constexpr char kTenant[] = "t1";

class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : p_(data), end_(data + size) {}
  bool empty() const { return p_ == end_; }
  uint8_t Byte() { return p_ == end_ ? 0 : *p_++; }
  std::string Bytes(size_t n) {
    n = std::min<size_t>(n, static_cast<size_t>(end_ - p_));
    std::string s(reinterpret_cast<const char*>(p_), n);
    p_ += n;
    return s;
  }
  // A string: from `table` when the selector byte says so, else length + bytes.
  template <size_t N>
  std::string Pick(const absl::string_view (&table)[N]) {
    const uint8_t sel = Byte();
    if (sel < 0xc0) return std::string(table[sel % N]);
    return Bytes(Byte());
  }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
};

// NUL inside names: an ambiguous (node, client id) key would let one client's
// session answer for another's.
constexpr absl::string_view kNodes[] = {
    absl::string_view("emqx@a"), absl::string_view("emqx@a\0d1", 9), absl::string_view("emqx@b")};
constexpr absl::string_view kClients[] = {absl::string_view("d1"), absl::string_view("d2"),
                                          absl::string_view("d1\0d1", 5),
                                          absl::string_view("d2\0", 3)};
constexpr absl::string_view kHosts[] = {absl::string_view("10.0.0.1"),
                                        absl::string_view("10.0.0.2"), absl::string_view("::1"),
                                        absl::string_view("")};
constexpr uint32_t kPorts[] = {1883, 50000, 0};
constexpr absl::string_view kTopics[] = {
    absl::string_view("devices/d1/up"), absl::string_view("$share/g/devices/d1/up"),
    absl::string_view("$queue/devices/d1/up"), absl::string_view("$share/nogroupslash")};

// Backend answers scripted by the input (set before each call); records what the
// adapters sent.
using ScriptedBackend = iotauth::gateway::FakeIdentityBackend;

absl::Status ErrorFor(uint8_t b) {
  return (b & 1) != 0 ? absl::InvalidArgumentError("bad request")
                      : absl::UnavailableError("backend down");
}

// The backend's next Authenticate answer: allow (with an identity and maybe an
// expiry), deny, or an error.
void ScriptAuthenticate(Reader& in, absl::Time now, ScriptedBackend* backend) {
  const uint8_t kind = in.Byte() % 4;
  if (kind == 3) {
    backend->authenticate_error = ErrorFor(in.Byte());
    return;
  }
  iv1::AuthenticateResponse r;
  if (kind == 2) {
    r.set_decision(iv1::DECISION_DENY);
    r.set_deny_reason(static_cast<iv1::DenyReason>(in.Byte() % 32));  // some unknown
  } else {
    r.set_decision(iv1::DECISION_ALLOW);
    iv1::Identity* id = r.mutable_identity();
    id->set_tenant_id(kTenant);
    id->set_device_id(in.Pick(kClients));
    if ((in.Byte() & 1) != 0) id->set_product_key("pk1");
    if ((in.Byte() & 1) != 0) id->set_module_id("m1");
    const uint8_t expiry = in.Byte();
    if (expiry != 0) {
      r.mutable_credential_expires_at()->set_seconds(absl::ToUnixSeconds(now) + expiry - 128);
    }
  }
  backend->authenticate_error = absl::OkStatus();
  backend->authenticate_response = r;
}

void ScriptAuthorize(Reader& in, ScriptedBackend* backend) {
  const uint8_t kind = in.Byte() % 3;
  if (kind == 2) {
    backend->authorize_error = ErrorFor(in.Byte());
    return;
  }
  iv1::AuthorizeResponse r;
  r.set_decision(kind == 0 ? iv1::DECISION_ALLOW : iv1::DECISION_DENY);
  backend->authorize_error = absl::OkStatus();
  backend->authorize_response = r;
}

ev2::ClientInfo ReadClientInfo(Reader& in) {
  ev2::ClientInfo c;
  c.set_node(in.Pick(kNodes));
  c.set_clientid(in.Pick(kClients));
  c.set_peerhost(in.Pick(kHosts));
  c.set_peerport(kPorts[in.Byte() % 3]);
  return c;
}

std::string Connection(const ev2::ClientInfo& c) {
  return iotauth::gateway::PeerAddress(c.peerhost(), c.peerport());
}

struct ModelSession {
  std::string connection;
  iv1::Identity identity;
  absl::Time expires_at = absl::InfiniteFuture();
};
using ModelKey = std::pair<std::string, std::string>;  // (node, client id), exact

// Whether any string field of `m`, at any depth, holds `secret`. (Not the serialized
// bytes: a length prefix followed by the value can spell the secret without any
// field holding it, e.g. 'S' (83) then "haredAccessSignature ...".)
bool AnyStringHolds(const google::protobuf::Message& m, const std::string& secret) {
  const google::protobuf::Reflection* r = m.GetReflection();
  std::vector<const google::protobuf::FieldDescriptor*> fields;
  r->ListFields(m, &fields);
  for (const auto* f : fields) {
    using FD = google::protobuf::FieldDescriptor;
    if (f->cpp_type() == FD::CPPTYPE_STRING) {
      if (f->is_repeated()) {
        for (int i = 0; i < r->FieldSize(m, f); ++i) {
          if (absl::StrContains(r->GetRepeatedString(m, f, i), secret)) return true;
        }
      } else if (absl::StrContains(r->GetString(m, f), secret)) {
        return true;
      }
    } else if (f->cpp_type() == FD::CPPTYPE_MESSAGE) {
      if (f->is_repeated()) {
        for (int i = 0; i < r->FieldSize(m, f); ++i) {
          if (AnyStringHolds(r->GetRepeatedMessage(m, f, i), secret)) return true;
        }
      } else if (AnyStringHolds(r->GetMessage(m, f), secret)) {
        return true;
      }
    }
  }
  return false;
}

// A secret of the input must not come back in an answer (too short ones would match
// by chance).
void CheckNoSecret(const google::protobuf::Message& answer, const std::string& secret) {
  if (secret.size() < 12) return;
  IOTAUTH_FUZZ_CHECK(!AnyStringHolds(answer, secret), "no secret in the answer");
}

void ExHookAuthenticate(Reader& in, iotauth::FakeClock* clock, ScriptedBackend* backend,
                        iotauth::gateway::ExHookHandler* handler,
                        std::map<ModelKey, ModelSession>* model) {
  ev2::ClientAuthenticateRequest req;
  *req.mutable_clientinfo() = ReadClientInfo(in);
  ev2::ClientInfo* info = req.mutable_clientinfo();
  info->set_username(in.Bytes(in.Byte()));
  info->set_password(in.Bytes(in.Byte()));
  info->set_protocol((in.Byte() & 1) != 0 ? "mqtt" : "MQTT-SN");
  ScriptAuthenticate(in, clock->Now(), backend);
  const size_t calls = backend->authenticate_requests.size();
  const ev2::ValuedResponse r = handler->OnClientAuthenticate(req, {"emqx"});
  IOTAUTH_FUZZ_CHECK(backend->authenticate_requests.size() == calls + 1,
                     "one Authenticate per connect");
  const iv1::ConnectInfo& sent = backend->authenticate_requests.back().connect();
  IOTAUTH_FUZZ_CHECK(backend->authenticate_requests.back().tenant_id() == kTenant,
                     "tenant hint sent");
  IOTAUTH_FUZZ_CHECK(sent.client_id() == info->clientid() && sent.username() == info->username() &&
                         sent.password() == info->password(),
                     "CONNECT fields passed through unchanged");
  IOTAUTH_FUZZ_CHECK(sent.peer_address() == Connection(*info), "peer address passed through");
  const bool allowed = backend->authenticate_error.ok() &&
                       backend->authenticate_response.decision() == iv1::DECISION_ALLOW;
  IOTAUTH_FUZZ_CHECK(r.type() == ev2::ValuedResponse::STOP_AND_RETURN,
                     "authenticate stops the chain");
  IOTAUTH_FUZZ_CHECK(r.bool_result() == allowed, "authenticate answers the backend's decision");
  CheckNoSecret(r, info->password());
  const ModelKey key(info->node(), info->clientid());
  if (allowed) {
    ModelSession s;
    s.connection = Connection(*info);
    s.identity = backend->authenticate_response.identity();
    if (backend->authenticate_response.has_credential_expires_at()) {
      s.expires_at =
          absl::FromUnixSeconds(backend->authenticate_response.credential_expires_at().seconds());
    }
    (*model)[key] = std::move(s);
  } else if (auto it = model->find(key); info->peerport() != 0 && it != model->end() &&
                                         it->second.connection == Connection(*info)) {
    // Without a peerport (EMQX before 5.4) the connection is not known: kept.
    model->erase(it);
  }
}

void ExHookAuthorize(Reader& in, iotauth::FakeClock* clock, ScriptedBackend* backend,
                     iotauth::gateway::ExHookHandler* handler,
                     std::map<ModelKey, ModelSession>* model) {
  ev2::ClientAuthorizeRequest req;
  *req.mutable_clientinfo() = ReadClientInfo(in);
  const uint8_t type = in.Byte() % 3;  // PUBLISH, SUBSCRIBE, or neither
  req.set_type(static_cast<ev2::ClientAuthorizeRequest::AuthorizeReqType>(type));
  req.set_topic(in.Pick(kTopics));
  ScriptAuthorize(in, backend);
  const size_t calls = backend->authorize_requests.size();
  const ev2::ValuedResponse r = handler->OnClientAuthorize(req, {"emqx"});
  const ev2::ClientInfo& info = req.clientinfo();
  const absl::Time now = clock->Now();
  const ModelKey key(info.node(), info.clientid());
  auto it = model->find(key);
  if (it != model->end() && it->second.expires_at <= now) {
    model->erase(it);  // the table drops an expired session when it is read
    it = model->end();
  }
  const bool session_ok =
      type <= 1 && it != model->end() && it->second.connection == Connection(info);
  const bool backend_allows = backend->authorize_error.ok() &&
                              backend->authorize_response.decision() == iv1::DECISION_ALLOW;
  if (backend->authorize_requests.size() > calls) {
    IOTAUTH_FUZZ_CHECK(session_ok, "Authorize asked only for a live session on this connection");
    const iv1::AuthorizeRequest& sent = backend->authorize_requests.back();
    IOTAUTH_FUZZ_CHECK(
        sent.identity().SerializeAsString() == it->second.identity.SerializeAsString(),
        "Authorize carries the identity this connection established");
    // A subscribe's shared-subscription prefix is stripped; a publish is checked as
    // published.
    IOTAUTH_FUZZ_CHECK(
        sent.topic() == (type == 1 ? std::string(iotauth::gateway::exhook::RealTopic(req.topic()))
                                   : req.topic()),
        "Authorize carries the real topic");
    IOTAUTH_FUZZ_CHECK(sent.cert_cn().empty(), "Authorize never carries EMQX's unverified cn");
  }
  IOTAUTH_FUZZ_CHECK(
      r.bool_result() == (session_ok && backend_allows),
      "authorize: exactly a live session on this connection that the backend allows");
}

void ExHookDisconnected(Reader& in, iotauth::gateway::ExHookHandler* handler,
                        std::map<ModelKey, ModelSession>* model) {
  ev2::ClientDisconnectedRequest req;
  *req.mutable_clientinfo() = ReadClientInfo(in);
  req.set_reason((in.Byte() & 1) != 0 ? "normal" : "takenover");
  handler->OnClientDisconnected(req);
  const ev2::ClientInfo& info = req.clientinfo();
  auto it = model->find(ModelKey(info.node(), info.clientid()));
  if (it != model->end() && it->second.connection == Connection(info)) model->erase(it);
}

bool IsOverwrite(const auth::OkHttpResponse& ok, absl::string_view name, absl::string_view value) {
  for (const core::HeaderValueOption& h : ok.headers()) {
    if (h.header().key() == name) {
      return h.header().value() == value &&
             h.append_action() == core::HeaderValueOption::OVERWRITE_IF_EXISTS_OR_ADD;
    }
  }
  return false;
}

bool Removes(const auth::OkHttpResponse& ok, absl::string_view name) {
  return std::any_of(ok.headers_to_remove().begin(), ok.headers_to_remove().end(),
                     [name](const std::string& h) { return h == name; });
}

void ExtAuthzCheck(Reader& in, iotauth::FakeClock* clock, ScriptedBackend* backend,
                   const iotauth::gateway::ExtAuthzHandler& handler) {
  auth::CheckRequest req;
  auth::AttributeContext* attrs = req.mutable_attributes();
  auth::AttributeContext::HttpRequest* http = attrs->mutable_request()->mutable_http();
  std::string token;
  const uint8_t shape = in.Byte();
  if ((shape & 3) == 1) {
    token = "SharedAccessSignature " + in.Bytes(in.Byte());
    (*http->mutable_headers())["authorization"] = token;
  } else if ((shape & 3) == 2) {
    // Only in the raw header list, in any case, maybe as raw bytes.
    token = "SharedAccessSignature " + in.Bytes(in.Byte());
    core::HeaderValue* h = http->mutable_header_map()->add_headers();
    h->set_key((shape & 4) != 0 ? "Authorization" : "authorization");
    if ((shape & 8) != 0) {
      h->set_raw_value(token);
    } else {
      h->set_value(token);
    }
  } else if ((shape & 3) == 3) {
    (*http->mutable_headers())["authorization"] = in.Bytes(in.Byte());  // not a SAS token
  }
  if ((shape & 16) != 0) {
    attrs->mutable_source()->set_certificate(in.Bytes(in.Byte() | (in.Byte() << 8)));
  }
  if ((shape & 32) != 0) (*http->mutable_headers())["x-iotauth-device"] = "spoofed";
  if ((shape & 64) != 0) (*attrs->mutable_context_extensions())["iotauth_tenant"] = "t2";
  auto* sa = attrs->mutable_source()->mutable_address()->mutable_socket_address();
  sa->set_address(in.Pick(kHosts));
  sa->set_port_value(kPorts[in.Byte() % 3]);
  ScriptAuthenticate(in, clock->Now(), backend);
  const size_t calls = backend->authenticate_requests.size();
  const auth::CheckResponse r = handler.Check(req, {"envoy"});
  const bool asked = backend->authenticate_requests.size() > calls;
  const bool allowed = asked && backend->authenticate_error.ok() &&
                       backend->authenticate_response.decision() == iv1::DECISION_ALLOW;
  if (asked) {
    const iv1::AuthenticateRequest& sent = backend->authenticate_requests.back();
    IOTAUTH_FUZZ_CHECK(sent.tenant_id() == ((shape & 64) != 0 ? "t2" : kTenant),
                       "route tenant wins over the default");
    if (!token.empty()) {
      IOTAUTH_FUZZ_CHECK(sent.credential().sas().token() == token, "SAS token passed unchanged");
    }
  } else {
    IOTAUTH_FUZZ_CHECK(token.empty(), "a SAS token always reaches the backend");
  }
  if (allowed) {
    IOTAUTH_FUZZ_CHECK(r.status().code() == 0 && r.has_ok_response(), "allow is OK");
    const auth::OkHttpResponse& ok = r.ok_response();
    const iv1::Identity& id = backend->authenticate_response.identity();
    IOTAUTH_FUZZ_CHECK(IsOverwrite(ok, "x-iotauth-tenant", id.tenant_id()) &&
                           IsOverwrite(ok, "x-iotauth-device", id.device_id()),
                       "identity headers overwrite what the client sent");
    IOTAUTH_FUZZ_CHECK(id.product_key().empty()
                           ? Removes(ok, "x-iotauth-product")
                           : IsOverwrite(ok, "x-iotauth-product", id.product_key()),
                       "product header set or removed");
    IOTAUTH_FUZZ_CHECK(id.module_id().empty() ? Removes(ok, "x-iotauth-module")
                                              : IsOverwrite(ok, "x-iotauth-module", id.module_id()),
                       "module header set or removed");
    IOTAUTH_FUZZ_CHECK(Removes(ok, "authorization"), "the token does not go upstream");
  } else {
    IOTAUTH_FUZZ_CHECK(r.status().code() != 0 && r.has_denied_response(), "deny is not OK");
    const int http_status = r.denied_response().status().code();
    IOTAUTH_FUZZ_CHECK(
        http_status == 401 || http_status == 403 || http_status == 429 || http_status == 503,
        "deny status is 401, 403, 429 or 503");
    bool reason = false;
    for (const core::HeaderValueOption& h : r.denied_response().headers()) {
      reason =
          reason || (h.header().key() == "x-iotauth-deny-reason" && !h.header().value().empty());
    }
    IOTAUTH_FUZZ_CHECK(reason, "deny names its reason");
    if (asked && !backend->authenticate_error.ok()) {
      IOTAUTH_FUZZ_CHECK(
          http_status == (backend->authenticate_error.code() == absl::StatusCode::kInvalidArgument
                              ? 401
                              : 503),
          "backend failure: malformed 401, otherwise 503 (fail closed)");
    }
  }
  // Unless the backend itself named the device after the token (the input chooses
  // the backend's answers; a registered device id cannot hold a space).
  if (!allowed ||
      !absl::StrContains(backend->authenticate_response.identity().device_id(), token)) {
    CheckNoSecret(r, token);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  iotauth::fuzz::SilenceProtobufLogging();
  if (size > 8192) return 0;
  Reader in(data, size);
  iotauth::FakeClock clock(absl::FromUnixSeconds(1800000000));
  ScriptedBackend backend;
  // Never full within one input (at most 8192 operations): no eviction to model.
  auto exhook = iotauth::gateway::ExHookHandler::Create({&backend, &clock, kTenant, 16384});
  auto ext_authz = iotauth::gateway::ExtAuthzHandler::Create({&backend, kTenant});
  if (!exhook.ok() || !ext_authz.ok()) std::abort();
  std::map<ModelKey, ModelSession> model;
  while (!in.empty()) {
    switch (in.Byte() % 5) {
      case 0:
        ExHookAuthenticate(in, &clock, &backend, exhook->get(), &model);
        break;
      case 1:
        ExHookAuthorize(in, &clock, &backend, exhook->get(), &model);
        break;
      case 2:
        ExHookDisconnected(in, exhook->get(), &model);
        break;
      case 3:
        clock.Advance(absl::Seconds(in.Byte()));
        break;
      default:
        ExtAuthzCheck(in, &clock, &backend, **ext_authz);
        break;
    }
  }
  return 0;
}
