// tenant, product, device, group, ca, watch and admin: every DeviceRegistry RPC.
#include <algorithm>
#include <cstddef>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "clients/iotauthctl/command_util.h"
#include "clients/iotauthctl/commands.h"
#include "clients/iotauthctl/connection.h"
#include "clients/iotauthctl/device_io.h"
#include "clients/iotauthctl/output.h"
#include "google/protobuf/field_mask.pb.h"
#include "proto/iotauth/registry/v1/registry.grpc.pb.h"

namespace iotauth::cli {
namespace {

namespace rv1 = ::iotauth::registry::v1;
using google::protobuf::Message;

std::optional<ServiceClient<rv1::DeviceRegistry>> OpenRegistry(const Invocation& inv, int* exit) {
  return OpenClient<rv1::DeviceRegistry>(inv, exit);
}

bool ShowKeys(const Invocation& inv) { return inv.flags.IsSet("show_keys"); }

// A mutation's result: the resource, or a confirmation line for deletes.
int PrintDeleted(const Invocation& inv, absl::string_view what, absl::string_view id) {
  if (JsonOutput(inv)) {
    inv.out() << "{}\n";
  } else {
    inv.out() << "deleted " << what << " '" << id << "'\n";
  }
  return kExitOk;
}

const FlagSpec kTenantFlag{"tenant", "ID", "Tenant id", "", "IOTAUTH_TENANT"};
const FlagSpec kEtagFlag{"etag", "ETAG",
                         "Only if the stored etag equals this (optimistic concurrency)"};
const FlagSpec kShowKeysFlag{"show_keys", "", "Print secrets (keys, product secret); admin only"};
const FlagSpec kRuleFlag{"rule",
                         "EFFECT:ACTION:FILTER",
                         "Access rule, e.g. allow:publish:devices/${device}/# (exact:FILTER for a "
                         "literal match)",
                         "",
                         "",
                         true};

template <class Item>
std::vector<Message*> AsMessages(std::vector<Item>& items) {
  std::vector<Message*> out;
  out.reserve(items.size());
  for (auto& i : items) out.push_back(&i);
  return out;
}

// --- tenants ---------------------------------------------------------------

absl::Status ApplyPolicies(const Invocation& inv, rv1::Tenant* t) {
  for (const std::string& p : inv.flags.GetAll("policy")) {
    auto* policy = t->add_policies();
    size_t eq = p.find('=');
    policy->set_name(p.substr(0, eq));
    if (policy->name().empty()) return absl::InvalidArgumentError("--policy: empty name");
    if (eq != std::string::npos) {
      std::string keys = p.substr(eq + 1);
      size_t comma = keys.find(',');
      policy->set_primary_key(keys.substr(0, comma));
      if (comma != std::string::npos) policy->set_secondary_key(keys.substr(comma + 1));
    }
  }
  return absl::OkStatus();
}

void AddTenantFieldFlags(Command& c) {
  c.Flag({"display_name", "NAME", "Human-readable name"})
      .Flag({"hub_host", "HOST", "Hub host SAS tokens must name in sr (e.g. myhub.example.com)"})
      .Flag({"policy", "NAME[=PRIMARY[,SECONDARY]]",
             "Shared access policy for policy-scoped SAS tokens (keys base64; omitted keys are "
             "left to the server)",
             "", "", true});
}

int TenantCreate(Invocation& inv) {
  rv1::CreateTenantRequest req;
  rv1::Tenant* t = req.mutable_tenant();
  t->set_id(inv.args[0]);
  t->set_display_name(inv.flags.Get("display_name"));
  t->set_hub_host(inv.flags.Get("hub_host"));
  if (absl::Status s = ApplyPolicies(inv, t); !s.ok()) return StatusToExit(inv, s);
  int exit = 0;
  auto r = OpenRegistry(inv, &exit);
  if (!r) return exit;
  rv1::Tenant resp;
  if (int rc = CallUnary(inv, *r->conn, "DeviceRegistry.CreateTenant", [&](grpc::ClientContext* c) {
        return r->stub->CreateTenant(c, req, &resp);
      })) {
    return rc;
  }
  PrintResource(inv, &resp, ShowKeys(inv));
  return kExitOk;
}

int TenantGet(Invocation& inv) {
  rv1::GetTenantRequest req;
  req.set_tenant_id(inv.args[0]);
  req.set_include_secrets(ShowKeys(inv));
  int exit = 0;
  auto r = OpenRegistry(inv, &exit);
  if (!r) return exit;
  rv1::Tenant resp;
  if (int rc = CallUnary(inv, *r->conn, "DeviceRegistry.GetTenant", [&](grpc::ClientContext* c) {
        return r->stub->GetTenant(c, req, &resp);
      })) {
    return rc;
  }
  PrintResource(inv, &resp, ShowKeys(inv));
  return kExitOk;
}

int TenantUpdate(Invocation& inv) {
  rv1::UpdateTenantRequest req;
  rv1::Tenant* t = req.mutable_tenant();
  t->set_id(inv.args[0]);
  auto* mask = req.mutable_update_mask();
  if (inv.flags.GivenOnCommandLine("display_name")) {
    t->set_display_name(inv.flags.Get("display_name"));
    mask->add_paths("display_name");
  }
  if (inv.flags.GivenOnCommandLine("hub_host")) {
    t->set_hub_host(inv.flags.Get("hub_host"));
    mask->add_paths("hub_host");
  }
  if (inv.flags.GivenOnCommandLine("policy")) {
    if (absl::Status s = ApplyPolicies(inv, t); !s.ok()) return StatusToExit(inv, s);
    mask->add_paths("policies");
  }
  if (mask->paths().empty()) {
    return inv.UsageError("nothing to update: give --display_name, --hub_host or --policy");
  }
  req.set_etag(inv.flags.Get("etag"));
  int exit = 0;
  auto r = OpenRegistry(inv, &exit);
  if (!r) return exit;
  rv1::Tenant resp;
  if (int rc = CallUnary(inv, *r->conn, "DeviceRegistry.UpdateTenant", [&](grpc::ClientContext* c) {
        return r->stub->UpdateTenant(c, req, &resp);
      })) {
    return rc;
  }
  PrintResource(inv, &resp, ShowKeys(inv));
  return kExitOk;
}

int TenantDelete(Invocation& inv) {
  rv1::DeleteTenantRequest req;
  req.set_tenant_id(inv.args[0]);
  req.set_etag(inv.flags.Get("etag"));
  int exit = 0;
  auto r = OpenRegistry(inv, &exit);
  if (!r) return exit;
  rv1::DeleteResponse resp;
  if (int rc = CallUnary(inv, *r->conn, "DeviceRegistry.DeleteTenant", [&](grpc::ClientContext* c) {
        return r->stub->DeleteTenant(c, req, &resp);
      })) {
    return rc;
  }
  return PrintDeleted(inv, "tenant", req.tenant_id());
}

int TenantList(Invocation& inv) {
  int exit = 0;
  auto r = OpenRegistry(inv, &exit);
  if (!r) return exit;
  std::vector<rv1::Tenant> items;
  int rc = ListPages(
      inv, *r->conn, "DeviceRegistry.ListTenants",
      [&](grpc::ClientContext* c, int32_t size, const std::string& token, std::string* next) {
        rv1::ListTenantsRequest req;
        req.set_page_size(size);
        req.set_page_token(token);
        rv1::ListTenantsResponse resp;
        grpc::Status s = r->stub->ListTenants(c, req, &resp);
        for (auto& t : *resp.mutable_tenants()) items.push_back(std::move(t));
        *next = resp.next_page_token();
        return s;
      });
  if (rc != kExitOk) return rc;
  PrintResources(inv, AsMessages(items),
                 {{"TENANT", "id"},
                  {"NAME", "display_name"},
                  {"HUB HOST", "hub_host"},
                  {"UPDATED", "update_time"}},
                 false);
  return kExitOk;
}

// --- products --------------------------------------------------------------

void AddProductFieldFlags(Command& c) {
  c.Flag({"display_name", "NAME", "Human-readable name"})
      .Flag({"credential_types", "LIST",
             absl::StrCat("Credential types devices may use: ",
                          EnumChoices(rv1::CredentialType_descriptor())),
             "", "", true})
      .Flag({"dynamic_activation", "", "Devices may activate with the product secret (EnOS)"})
      .Flag({"allow_weak_sign_methods", "", "Allow hmacsha1 and hmacmd5 triple signatures"})
      .Flag(kRuleFlag);
}

// Fills product fields from flags; `mask` (if not null) gets the paths given.
absl::Status ApplyProductFlags(const Invocation& inv, rv1::Product* p,
                               google::protobuf::FieldMask* mask) {
  auto given = [&](absl::string_view f) { return inv.flags.GivenOnCommandLine(f); };
  if (given("display_name")) {
    p->set_display_name(inv.flags.Get("display_name"));
    if (mask) mask->add_paths("display_name");
  }
  if (given("credential_types")) {
    for (const std::string& name : SplitListFlag(inv.flags.GetAll("credential_types"))) {
      auto v = ParseEnumName(rv1::CredentialType_descriptor(), name);
      if (!v.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("--credential_types: ", v.status().message()));
      }
      p->add_allowed_credential_types(static_cast<rv1::CredentialType>(*v));
    }
    if (mask) mask->add_paths("allowed_credential_types");
  }
  if (given("dynamic_activation")) {
    p->set_dynamic_activation(inv.flags.IsSet("dynamic_activation"));
    if (mask) mask->add_paths("dynamic_activation");
  }
  if (given("allow_weak_sign_methods")) {
    p->set_allow_weak_sign_methods(inv.flags.IsSet("allow_weak_sign_methods"));
    if (mask) mask->add_paths("allow_weak_sign_methods");
  }
  if (given("rule") || (mask && inv.flags.IsSet("clear_rules"))) {
    auto rules = ParseRuleFlags(inv.flags.GetAll("rule"));
    if (!rules.ok()) return rules.status();
    for (auto& rule : *rules) *p->add_default_rules() = rule;
    if (mask) mask->add_paths("default_rules");
  }
  return absl::OkStatus();
}

int ProductCreate(Invocation& inv) {
  rv1::CreateProductRequest req;
  rv1::Product* p = req.mutable_product();
  std::string tenant;
  int exit = 0;
  if (!RequireFlag(inv, "tenant", &tenant, &exit)) return exit;
  p->set_tenant_id(tenant);
  p->set_product_key(inv.args[0]);
  if (absl::Status s = ApplyProductFlags(inv, p, nullptr); !s.ok()) return StatusToExit(inv, s);
  auto r = OpenRegistry(inv, &exit);
  if (!r) return exit;
  rv1::Product resp;
  if (int rc = CallUnary(
          inv, *r->conn, "DeviceRegistry.CreateProduct",
          [&](grpc::ClientContext* c) { return r->stub->CreateProduct(c, req, &resp); })) {
    return rc;
  }
  PrintResource(inv, &resp, ShowKeys(inv));
  return kExitOk;
}

int ProductGet(Invocation& inv) {
  rv1::GetProductRequest req;
  std::string tenant;
  int exit = 0;
  if (!RequireFlag(inv, "tenant", &tenant, &exit)) return exit;
  req.set_tenant_id(tenant);
  req.set_product_key(inv.args[0]);
  req.set_include_secrets(ShowKeys(inv));
  auto r = OpenRegistry(inv, &exit);
  if (!r) return exit;
  rv1::Product resp;
  if (int rc = CallUnary(inv, *r->conn, "DeviceRegistry.GetProduct", [&](grpc::ClientContext* c) {
        return r->stub->GetProduct(c, req, &resp);
      })) {
    return rc;
  }
  PrintResource(inv, &resp, ShowKeys(inv));
  return kExitOk;
}

int ProductUpdate(Invocation& inv) {
  rv1::UpdateProductRequest req;
  std::string tenant;
  int exit = 0;
  if (!RequireFlag(inv, "tenant", &tenant, &exit)) return exit;
  rv1::Product* p = req.mutable_product();
  p->set_tenant_id(tenant);
  p->set_product_key(inv.args[0]);
  if (absl::Status s = ApplyProductFlags(inv, p, req.mutable_update_mask()); !s.ok()) {
    return StatusToExit(inv, s);
  }
  if (req.update_mask().paths().empty()) return inv.UsageError("nothing to update");
  req.set_etag(inv.flags.Get("etag"));
  auto r = OpenRegistry(inv, &exit);
  if (!r) return exit;
  rv1::Product resp;
  if (int rc = CallUnary(
          inv, *r->conn, "DeviceRegistry.UpdateProduct",
          [&](grpc::ClientContext* c) { return r->stub->UpdateProduct(c, req, &resp); })) {
    return rc;
  }
  PrintResource(inv, &resp, ShowKeys(inv));
  return kExitOk;
}

int ProductDelete(Invocation& inv) {
  rv1::DeleteProductRequest req;
  std::string tenant;
  int exit = 0;
  if (!RequireFlag(inv, "tenant", &tenant, &exit)) return exit;
  req.set_tenant_id(tenant);
  req.set_product_key(inv.args[0]);
  req.set_etag(inv.flags.Get("etag"));
  auto r = OpenRegistry(inv, &exit);
  if (!r) return exit;
  rv1::DeleteResponse resp;
  if (int rc = CallUnary(
          inv, *r->conn, "DeviceRegistry.DeleteProduct",
          [&](grpc::ClientContext* c) { return r->stub->DeleteProduct(c, req, &resp); })) {
    return rc;
  }
  return PrintDeleted(inv, "product", req.product_key());
}

int ProductList(Invocation& inv) {
  std::string tenant;
  int exit = 0;
  if (!RequireFlag(inv, "tenant", &tenant, &exit)) return exit;
  auto r = OpenRegistry(inv, &exit);
  if (!r) return exit;
  std::vector<rv1::Product> items;
  int rc = ListPages(
      inv, *r->conn, "DeviceRegistry.ListProducts",
      [&](grpc::ClientContext* c, int32_t size, const std::string& token, std::string* next) {
        rv1::ListProductsRequest req;
        req.set_tenant_id(tenant);
        req.set_page_size(size);
        req.set_page_token(token);
        rv1::ListProductsResponse resp;
        grpc::Status s = r->stub->ListProducts(c, req, &resp);
        for (auto& p : *resp.mutable_products()) items.push_back(std::move(p));
        *next = resp.next_page_token();
        return s;
      });
  if (rc != kExitOk) return rc;
  PrintResources(inv, AsMessages(items),
                 {{"PRODUCT", "product_key"},
                  {"NAME", "display_name"},
                  {"CREDENTIAL TYPES", "allowed_credential_types"},
                  {"UPDATED", "update_time"}},
                 false);
  return kExitOk;
}

// --- devices ---------------------------------------------------------------

int DeviceCreate(Invocation& inv) {
  rv1::CreateDeviceRequest req;
  rv1::Device* d = req.mutable_device();
  std::string tenant;
  std::string product;
  int exit = 0;
  if (!RequireFlag(inv, "tenant", &tenant, &exit)) return exit;
  d->set_tenant_id(tenant);
  d->set_device_id(inv.args[0]);
  d->set_product_key(inv.flags.Get("product"));
  if (inv.flags.Has("status")) {
    auto st = ParseEnumName(rv1::DeviceStatus_descriptor(), inv.flags.Get("status"));
    if (!st.ok()) return inv.UsageError(absl::StrCat("--status: ", st.status().message()));
    d->set_status(static_cast<rv1::DeviceStatus>(*st));
  }
  auto tags = ParseTagFlags(inv.flags.GetAll("tag"));
  if (!tags.ok()) return inv.UsageError(tags.status().message());
  for (const auto& [k, v] : *tags) (*d->mutable_tags())[k] = v;
  auto rules = ParseRuleFlags(inv.flags.GetAll("rule"));
  if (!rules.ok()) return inv.UsageError(rules.status().message());
  for (auto& rule : *rules) *d->add_rules() = rule;
  auto primary = SecretFromFlags(inv, "primary_key", "primary_key_file", true);
  if (!primary.ok()) return StatusToExit(inv, primary.status());
  auto secondary = SecretFromFlags(inv, "secondary_key", "secondary_key_file", true);
  if (!secondary.ok()) return StatusToExit(inv, secondary.status());
  auto* creds = d->mutable_credentials();
  if (!primary->empty()) creds->mutable_symmetric_key()->set_primary_key(*primary);
  if (!secondary->empty()) creds->mutable_symmetric_key()->set_secondary_key(*secondary);
  creds->set_primary_thumbprint(inv.flags.Get("primary_thumbprint"));
  creds->set_secondary_thumbprint(inv.flags.Get("secondary_thumbprint"));
  creds->set_ca_signed_allowed(inv.flags.IsSet("ca_signed_allowed"));
  req.set_generate_keys(primary->empty() && secondary->empty() && !inv.flags.IsSet("no_keys"));
  auto r = OpenRegistry(inv, &exit);
  if (!r) return exit;
  rv1::Device resp;
  if (int rc = CallUnary(inv, *r->conn, "DeviceRegistry.CreateDevice", [&](grpc::ClientContext* c) {
        return r->stub->CreateDevice(c, req, &resp);
      })) {
    return rc;
  }
  PrintResource(inv, &resp, ShowKeys(inv));
  return kExitOk;
}

int DeviceGet(Invocation& inv) {
  rv1::GetDeviceRequest req;
  std::string tenant;
  int exit = 0;
  if (!RequireFlag(inv, "tenant", &tenant, &exit)) return exit;
  req.set_tenant_id(tenant);
  req.set_device_id(inv.args[0]);
  req.set_include_secrets(ShowKeys(inv));
  auto r = OpenRegistry(inv, &exit);
  if (!r) return exit;
  rv1::Device resp;
  if (int rc = CallUnary(inv, *r->conn, "DeviceRegistry.GetDevice", [&](grpc::ClientContext* c) {
        return r->stub->GetDevice(c, req, &resp);
      })) {
    return rc;
  }
  PrintResource(inv, &resp, ShowKeys(inv));
  return kExitOk;
}

int DeviceUpdate(Invocation& inv) {
  rv1::UpdateDeviceRequest req;
  std::string tenant;
  int exit = 0;
  if (!RequireFlag(inv, "tenant", &tenant, &exit)) return exit;
  rv1::Device* d = req.mutable_device();
  d->set_tenant_id(tenant);
  d->set_device_id(inv.args[0]);
  auto* mask = req.mutable_update_mask();
  auto given = [&](absl::string_view f) { return inv.flags.GivenOnCommandLine(f); };
  if (given("product")) {
    d->set_product_key(inv.flags.Get("product"));
    mask->add_paths("product_key");
  }
  if (given("tag") || inv.flags.IsSet("clear_tags")) {
    auto tags = ParseTagFlags(inv.flags.GetAll("tag"));
    if (!tags.ok()) return inv.UsageError(tags.status().message());
    for (const auto& [k, v] : *tags) (*d->mutable_tags())[k] = v;
    mask->add_paths("tags");
  }
  if (given("rule") || inv.flags.IsSet("clear_rules")) {
    auto rules = ParseRuleFlags(inv.flags.GetAll("rule"));
    if (!rules.ok()) return inv.UsageError(rules.status().message());
    for (auto& rule : *rules) *d->add_rules() = rule;
    mask->add_paths("rules");
  }
  if (given("ca_signed_allowed")) {
    d->mutable_credentials()->set_ca_signed_allowed(inv.flags.IsSet("ca_signed_allowed"));
    mask->add_paths("credentials.ca_signed_allowed");
  }
  if (mask->paths().empty()) {
    return inv.UsageError(
        "nothing to update: give --product, --tag, --clear_tags, --rule, --clear_rules or "
        "--ca_signed_allowed (status, keys and thumbprints have their own commands)");
  }
  req.set_etag(inv.flags.Get("etag"));
  auto r = OpenRegistry(inv, &exit);
  if (!r) return exit;
  rv1::Device resp;
  if (int rc = CallUnary(inv, *r->conn, "DeviceRegistry.UpdateDevice", [&](grpc::ClientContext* c) {
        return r->stub->UpdateDevice(c, req, &resp);
      })) {
    return rc;
  }
  PrintResource(inv, &resp, ShowKeys(inv));
  return kExitOk;
}

int DeviceDelete(Invocation& inv) {
  rv1::DeleteDeviceRequest req;
  std::string tenant;
  int exit = 0;
  if (!RequireFlag(inv, "tenant", &tenant, &exit)) return exit;
  req.set_tenant_id(tenant);
  req.set_device_id(inv.args[0]);
  req.set_etag(inv.flags.Get("etag"));
  auto r = OpenRegistry(inv, &exit);
  if (!r) return exit;
  rv1::DeleteResponse resp;
  if (int rc = CallUnary(inv, *r->conn, "DeviceRegistry.DeleteDevice", [&](grpc::ClientContext* c) {
        return r->stub->DeleteDevice(c, req, &resp);
      })) {
    return rc;
  }
  return PrintDeleted(inv, "device", req.device_id());
}

int DeviceList(Invocation& inv) {
  std::string tenant;
  int exit = 0;
  if (!RequireFlag(inv, "tenant", &tenant, &exit)) return exit;
  rv1::ListDevicesRequest base;
  base.set_tenant_id(tenant);
  base.set_product_key(inv.flags.Get("product"));
  if (inv.flags.Has("status")) {
    auto st = ParseEnumName(rv1::DeviceStatus_descriptor(), inv.flags.Get("status"));
    if (!st.ok()) return inv.UsageError(absl::StrCat("--status: ", st.status().message()));
    base.set_status(static_cast<rv1::DeviceStatus>(*st));
  }
  auto tags = ParseTagFlags(inv.flags.GetAll("tag"));
  if (!tags.ok()) return inv.UsageError(tags.status().message());
  for (const auto& [k, v] : *tags) (*base.mutable_tags())[k] = v;
  auto r = OpenRegistry(inv, &exit);
  if (!r) return exit;
  std::vector<rv1::Device> items;
  int rc = ListPages(
      inv, *r->conn, "DeviceRegistry.ListDevices",
      [&](grpc::ClientContext* c, int32_t size, const std::string& token, std::string* next) {
        rv1::ListDevicesRequest req = base;
        req.set_page_size(size);
        req.set_page_token(token);
        rv1::ListDevicesResponse resp;
        grpc::Status s = r->stub->ListDevices(c, req, &resp);
        for (auto& d : *resp.mutable_devices()) items.push_back(std::move(d));
        *next = resp.next_page_token();
        return s;
      });
  if (rc != kExitOk) return rc;
  PrintResources(inv, AsMessages(items),
                 {{"DEVICE", "device_id"},
                  {"PRODUCT", "product_key"},
                  {"STATUS", "status"},
                  {"TAGS", "tags"},
                  {"UPDATED", "update_time"}},
                 false);
  return kExitOk;
}

int DeviceSetStatus(Invocation& inv, rv1::DeviceStatus status) {
  rv1::SetDeviceStatusRequest req;
  std::string tenant;
  int exit = 0;
  if (!RequireFlag(inv, "tenant", &tenant, &exit)) return exit;
  req.set_tenant_id(tenant);
  req.set_device_id(inv.args[0]);
  req.set_status(status);
  req.set_etag(inv.flags.Get("etag"));
  auto r = OpenRegistry(inv, &exit);
  if (!r) return exit;
  rv1::Device resp;
  if (int rc = CallUnary(
          inv, *r->conn, "DeviceRegistry.SetDeviceStatus",
          [&](grpc::ClientContext* c) { return r->stub->SetDeviceStatus(c, req, &resp); })) {
    return rc;
  }
  PrintResource(inv, &resp, false);
  return kExitOk;
}

int DeviceRegenerateKey(Invocation& inv) {
  rv1::RegenerateDeviceKeyRequest req;
  std::string tenant;
  std::string slot;
  int exit = 0;
  if (!RequireFlag(inv, "tenant", &tenant, &exit)) return exit;
  if (!RequireFlag(inv, "slot", &slot, &exit)) return exit;
  auto v = ParseEnumName(rv1::KeySlot_descriptor(), slot);
  if (!v.ok()) return inv.UsageError(absl::StrCat("--slot: ", v.status().message()));
  req.set_tenant_id(tenant);
  req.set_device_id(inv.args[0]);
  req.set_slot(static_cast<rv1::KeySlot>(*v));
  req.set_etag(inv.flags.Get("etag"));
  auto r = OpenRegistry(inv, &exit);
  if (!r) return exit;
  rv1::Device resp;
  if (int rc = CallUnary(
          inv, *r->conn, "DeviceRegistry.RegenerateDeviceKey",
          [&](grpc::ClientContext* c) { return r->stub->RegenerateDeviceKey(c, req, &resp); })) {
    return rc;
  }
  PrintResource(inv, &resp, ShowKeys(inv));
  return kExitOk;
}

int DeviceSetThumbprints(Invocation& inv) {
  rv1::SetDeviceThumbprintsRequest req;
  std::string tenant;
  int exit = 0;
  if (!RequireFlag(inv, "tenant", &tenant, &exit)) return exit;
  if (!inv.flags.GivenOnCommandLine("primary") && !inv.flags.GivenOnCommandLine("secondary")) {
    return inv.UsageError("give --primary and/or --secondary (an empty value clears a slot)");
  }
  req.set_tenant_id(tenant);
  req.set_device_id(inv.args[0]);
  req.set_primary_thumbprint(inv.flags.Get("primary"));
  req.set_secondary_thumbprint(inv.flags.Get("secondary"));
  req.set_etag(inv.flags.Get("etag"));
  auto r = OpenRegistry(inv, &exit);
  if (!r) return exit;
  rv1::Device resp;
  if (int rc = CallUnary(
          inv, *r->conn, "DeviceRegistry.SetDeviceThumbprints",
          [&](grpc::ClientContext* c) { return r->stub->SetDeviceThumbprints(c, req, &resp); })) {
    return rc;
  }
  PrintResource(inv, &resp, false);
  return kExitOk;
}

// --- import / export ---------------------------------------------------------

struct Rejection {
  int64_t line = 0;
  int64_t index = -1;  // position in the stream; -1 for rows never sent
  std::string device_id;
  std::string reason;
  std::string message;
};

int DeviceImport(Invocation& inv) {
  std::string tenant;
  std::string path;
  int exit = 0;
  if (!RequireFlag(inv, "tenant", &tenant, &exit)) return exit;
  if (!RequireFlag(inv, "file", &path, &exit)) return exit;
  auto format = DeviceFileFormatFor(path, inv.flags.Get("format"));
  if (!format.ok()) return inv.UsageError(format.status().message());
  auto batch_size = inv.flags.GetInt("batch_size");
  if (!batch_size.ok()) return inv.UsageError(batch_size.status().message());
  if (*batch_size < 1 || *batch_size > 10000) {
    return inv.UsageError("--batch_size must be 1 to 10000");
  }
  auto generate = inv.flags.GetBool("generate_keys");
  if (!generate.ok()) return inv.UsageError(generate.status().message());
  const bool dry_run = inv.flags.IsSet("dry_run");

  std::ifstream file;
  std::istream* in = &std::cin;
  int64_t total_bytes = -1;
  if (path != "-") {
    file.open(path, std::ios::binary | std::ios::ate);
    if (!file) return inv.LocalError(absl::StrCat("cannot read '", path, "'"));
    total_bytes = static_cast<int64_t>(file.tellg());
    file.seekg(0);
    in = &file;
  }

  std::optional<ServiceClient<rv1::DeviceRegistry>> r;
  grpc::ClientContext context;
  rv1::ImportDevicesResponse response;
  std::unique_ptr<grpc::ClientWriter<rv1::ImportDevicesRequest>> writer;
  if (!dry_run) {
    r = OpenRegistry(inv, &exit);
    if (!r) return exit;
    r->conn->PrepareStream(&context);
    writer = r->stub->ImportDevices(&context, &response);
  }

  DeviceReader reader(in, *format, tenant);
  ProgressBar progress(&inv.err(), inv.io.err_is_tty, !inv.flags.IsSet("no_progress"));
  std::vector<int64_t> line_of_index;  // stream index -> file line
  std::vector<Rejection> local;
  int64_t local_rejected = 0;
  int64_t sent = 0;
  bool stream_broken = false;
  rv1::ImportDevicesRequest batch;
  auto flush = [&]() {
    if (batch.devices_size() == 0) return;
    if (writer) {
      batch.set_tenant_id(tenant);
      batch.set_generate_keys(*generate);
      if (!writer->Write(batch)) stream_broken = true;
    }
    sent += batch.devices_size();
    batch.clear_devices();
  };
  rv1::Device device;
  RowError row_error;
  while (!stream_broken) {
    auto next = reader.Next(&device, &row_error);
    if (!next.ok()) {
      if (writer) context.TryCancel();
      if (writer) (void)writer->Finish();
      progress.Finish(sent, local_rejected);
      return inv.LocalError(absl::StrCat(path, ": ", next.status().message()));
    }
    if (*next == DeviceReader::Result::kEof) break;
    if (*next == DeviceReader::Result::kRowError) {
      ++local_rejected;
      if (local.size() < 1000) {
        local.push_back({row_error.line, -1, "", "PARSE_ERROR", row_error.message});
      }
    } else {
      line_of_index.push_back(reader.line());
      batch.add_devices()->Swap(&device);
      if (batch.devices_size() >= *batch_size) flush();
    }
    double fraction = -1;
    if (total_bytes > 0) {
      const auto pos = in->tellg();
      if (pos >= 0) fraction = static_cast<double>(pos) / static_cast<double>(total_bytes);
    }
    progress.Update(sent + batch.devices_size(), local_rejected, fraction);
  }
  if (!stream_broken) flush();
  progress.Finish(sent, local_rejected);

  std::vector<Rejection> rejections = local;
  int64_t imported = dry_run ? sent : 0;
  int64_t server_rejected = 0;
  if (writer) {
    writer->WritesDone();
    grpc::Status status = writer->Finish();
    if (!status.ok()) {
      inv.err() << "import stopped after " << sent << " devices were sent; batches the server "
                << "committed before the failure stay imported\n";
      return ReportRpcError(inv, status, "DeviceRegistry.ImportDevices", r->conn->settings());
    }
    imported = response.imported();
    server_rejected = response.rejected();
    for (const auto& e : response.errors()) {
      Rejection rej;
      rej.index = e.index();
      rej.line = e.index() >= 0 && e.index() < static_cast<int64_t>(line_of_index.size())
                     ? line_of_index[e.index()]
                     : 0;
      rej.device_id = e.device_id();
      rej.reason = e.reason();
      rej.message = e.message();
      rejections.push_back(std::move(rej));
    }
  }
  std::sort(rejections.begin(), rejections.end(),
            [](const Rejection& a, const Rejection& b) { return a.line < b.line; });
  const int64_t rejected_total = local_rejected + server_rejected;
  if (JsonOutput(inv)) {
    inv.out() << ToJson(response) << "\n";
    for (const auto& rej : local) {
      inv.err() << "line " << rej.line << ": " << rej.message << "\n";
    }
  } else {
    inv.out() << (dry_run ? "parsed " : "imported ") << imported << " of "
              << (sent + local_rejected) << " devices in "
              << absl::FormatDuration(absl::Trunc(progress.Elapsed(), absl::Milliseconds(1)))
              << (dry_run ? " (dry run: nothing sent)" : "");
    if (rejected_total > 0) {
      inv.out() << "; " << rejected_total << " rejected (" << local_rejected << " unreadable rows, "
                << server_rejected << " refused by the server)";
    }
    inv.out() << "\n";
    for (const auto& rej : rejections) {
      inv.out() << "  line " << rej.line;
      if (rej.index >= 0) inv.out() << " (#" << rej.index << ")";
      if (!rej.device_id.empty()) inv.out() << " " << rej.device_id;
      inv.out() << ": " << rej.reason;
      if (!rej.message.empty()) inv.out() << ": " << rej.message;
      inv.out() << "\n";
    }
    const auto listed = static_cast<int64_t>(rejections.size());
    if (rejected_total > listed) {
      inv.out() << "  ... and " << (rejected_total - listed) << " more\n";
    }
  }
  return rejected_total > 0 ? kExitCheckFailed : kExitOk;
}

int DeviceExport(Invocation& inv) {
  std::string tenant;
  int exit = 0;
  if (!RequireFlag(inv, "tenant", &tenant, &exit)) return exit;
  const std::string fmt = inv.flags.Get("format");
  if (fmt != "jsonl" && fmt != "csv") return inv.UsageError("--format must be jsonl or csv");
  const std::string output = inv.flags.Get("output");
  ExportOutput sink;
  if (absl::Status st = sink.Open(output, &inv.out()); !st.ok()) {
    return inv.LocalError(st.message());
  }
  std::ostream* out = &sink.stream();
  auto r = OpenRegistry(inv, &exit);
  if (!r) return exit;
  rv1::ExportDevicesRequest req;
  req.set_tenant_id(tenant);
  req.set_include_secrets(ShowKeys(inv));
  grpc::ClientContext context;
  r->conn->PrepareStream(&context);
  auto reader = r->stub->ExportDevices(&context, req);
  if (fmt == "csv") *out << CsvLine(DeviceCsvColumns());
  rv1::Device d;
  int64_t n = 0;
  bool redacted = false;
  std::vector<std::string> unreadable;  // exported without keys: they did not open
  ProgressBar progress(&inv.err(), inv.io.err_is_tty, ExportShowsProgress(inv, sink.to_file()));
  while (reader->Read(&d)) {
    if (!ShowKeys(inv)) redacted |= RedactSecrets(&d);
    if (d.keys_unreadable()) unreadable.push_back(d.device_id());
    *out << (fmt == "csv" ? CsvLine(DeviceCsvRow(d)) : ToJson(d) + "\n");
    ++n;
    progress.Update(n, 0, -1);
  }
  grpc::Status status = reader->Finish();
  progress.Finish(n, 0);
  if (!status.ok()) {
    inv.err() << "export incomplete: " << n << " devices read"
              << (sink.to_file() ? ", nothing written to " + output : std::string()) << "\n";
    return ReportRpcError(inv, status, "DeviceRegistry.ExportDevices", r->conn->settings());
  }
  if (absl::Status st = sink.Commit(); !st.ok()) return inv.LocalError(st.message());
  if (redacted) inv.err() << "note: secrets omitted; pass --show-keys to export them\n";
  if (sink.to_file()) inv.err() << "exported " << n << " devices to " << output << "\n";
  if (!unreadable.empty()) {
    // A backup that silently lacks keys would only be found out on restore.
    const size_t named = std::min<size_t>(unreadable.size(), 10);
    inv.err() << "error: " << unreadable.size()
              << " device(s) exported WITHOUT keys: the registry cannot open their stored keys "
                 "(a damaged row, or keys sealed under another master key), and the identity "
                 "service refuses them: "
              << absl::StrJoin(unreadable.begin(),
                               unreadable.begin() + static_cast<std::ptrdiff_t>(named), ", ")
              << (unreadable.size() > named ? ", ..." : "")
              << "\n  give each a new pair: iotauthctl device regenerate-key DEVICE --tenant "
              << tenant << " --slot primary\n";
    return kExitCheckFailed;
  }
  return kExitOk;
}

// --- enrollment groups -------------------------------------------------------

int GroupCreate(Invocation& inv) {
  rv1::CreateEnrollmentGroupRequest req;
  rv1::EnrollmentGroup* g = req.mutable_group();
  std::string tenant;
  std::string product;
  int exit = 0;
  if (!RequireFlag(inv, "tenant", &tenant, &exit)) return exit;
  if (!RequireFlag(inv, "product", &product, &exit)) return exit;
  g->set_tenant_id(tenant);
  g->set_id(inv.args[0]);
  g->set_product_key(product);
  g->set_enabled(!inv.flags.IsSet("disabled"));
  auto key = SecretFromFlags(inv, "group_key", "group_key_file", true);
  if (!key.ok()) return StatusToExit(inv, key.status());
  g->set_group_key(*key);
  req.set_generate_key(key->empty());
  auto rules = ParseRuleFlags(inv.flags.GetAll("rule"));
  if (!rules.ok()) return inv.UsageError(rules.status().message());
  for (auto& rule : *rules) *g->add_initial_rules() = rule;
  auto r = OpenRegistry(inv, &exit);
  if (!r) return exit;
  rv1::EnrollmentGroup resp;
  if (int rc = CallUnary(
          inv, *r->conn, "DeviceRegistry.CreateEnrollmentGroup",
          [&](grpc::ClientContext* c) { return r->stub->CreateEnrollmentGroup(c, req, &resp); })) {
    return rc;
  }
  PrintResource(inv, &resp, ShowKeys(inv));
  return kExitOk;
}

int GroupGet(Invocation& inv) {
  rv1::GetEnrollmentGroupRequest req;
  std::string tenant;
  int exit = 0;
  if (!RequireFlag(inv, "tenant", &tenant, &exit)) return exit;
  req.set_tenant_id(tenant);
  req.set_group_id(inv.args[0]);
  req.set_include_secrets(ShowKeys(inv));
  auto r = OpenRegistry(inv, &exit);
  if (!r) return exit;
  rv1::EnrollmentGroup resp;
  if (int rc = CallUnary(
          inv, *r->conn, "DeviceRegistry.GetEnrollmentGroup",
          [&](grpc::ClientContext* c) { return r->stub->GetEnrollmentGroup(c, req, &resp); })) {
    return rc;
  }
  PrintResource(inv, &resp, ShowKeys(inv));
  return kExitOk;
}

int GroupUpdate(Invocation& inv) {
  rv1::UpdateEnrollmentGroupRequest req;
  std::string tenant;
  int exit = 0;
  if (!RequireFlag(inv, "tenant", &tenant, &exit)) return exit;
  rv1::EnrollmentGroup* g = req.mutable_group();
  g->set_tenant_id(tenant);
  g->set_id(inv.args[0]);
  auto* mask = req.mutable_update_mask();
  if (inv.flags.GivenOnCommandLine("product")) {
    g->set_product_key(inv.flags.Get("product"));
    mask->add_paths("product_key");
  }
  if (inv.flags.GivenOnCommandLine("enabled")) {
    g->set_enabled(inv.flags.IsSet("enabled"));
    mask->add_paths("enabled");
  }
  if (inv.flags.GivenOnCommandLine("rule") || inv.flags.IsSet("clear_rules")) {
    auto rules = ParseRuleFlags(inv.flags.GetAll("rule"));
    if (!rules.ok()) return inv.UsageError(rules.status().message());
    for (auto& rule : *rules) *g->add_initial_rules() = rule;
    mask->add_paths("initial_rules");
  }
  if (mask->paths().empty()) {
    return inv.UsageError("nothing to update: give --product, --enabled, --rule or --clear_rules");
  }
  req.set_etag(inv.flags.Get("etag"));
  auto r = OpenRegistry(inv, &exit);
  if (!r) return exit;
  rv1::EnrollmentGroup resp;
  if (int rc = CallUnary(
          inv, *r->conn, "DeviceRegistry.UpdateEnrollmentGroup",
          [&](grpc::ClientContext* c) { return r->stub->UpdateEnrollmentGroup(c, req, &resp); })) {
    return rc;
  }
  PrintResource(inv, &resp, ShowKeys(inv));
  return kExitOk;
}

int GroupDelete(Invocation& inv) {
  rv1::DeleteEnrollmentGroupRequest req;
  std::string tenant;
  int exit = 0;
  if (!RequireFlag(inv, "tenant", &tenant, &exit)) return exit;
  req.set_tenant_id(tenant);
  req.set_group_id(inv.args[0]);
  req.set_etag(inv.flags.Get("etag"));
  auto r = OpenRegistry(inv, &exit);
  if (!r) return exit;
  rv1::DeleteResponse resp;
  if (int rc = CallUnary(
          inv, *r->conn, "DeviceRegistry.DeleteEnrollmentGroup",
          [&](grpc::ClientContext* c) { return r->stub->DeleteEnrollmentGroup(c, req, &resp); })) {
    return rc;
  }
  return PrintDeleted(inv, "enrollment group", req.group_id());
}

int GroupList(Invocation& inv) {
  std::string tenant;
  int exit = 0;
  if (!RequireFlag(inv, "tenant", &tenant, &exit)) return exit;
  auto r = OpenRegistry(inv, &exit);
  if (!r) return exit;
  std::vector<rv1::EnrollmentGroup> items;
  int rc = ListPages(
      inv, *r->conn, "DeviceRegistry.ListEnrollmentGroups",
      [&](grpc::ClientContext* c, int32_t size, const std::string& token, std::string* next) {
        rv1::ListEnrollmentGroupsRequest req;
        req.set_tenant_id(tenant);
        req.set_page_size(size);
        req.set_page_token(token);
        rv1::ListEnrollmentGroupsResponse resp;
        grpc::Status s = r->stub->ListEnrollmentGroups(c, req, &resp);
        for (auto& g : *resp.mutable_groups()) items.push_back(std::move(g));
        *next = resp.next_page_token();
        return s;
      });
  if (rc != kExitOk) return rc;
  PrintResources(inv, AsMessages(items),
                 {{"GROUP", "id"},
                  {"PRODUCT", "product_key"},
                  {"ENABLED", "enabled"},
                  {"UPDATED", "update_time"}},
                 false);
  return kExitOk;
}

// --- CA certificates -----------------------------------------------------------

int CaCreate(Invocation& inv) {
  rv1::CreateCaCertificateRequest req;
  std::string tenant;
  std::string cert_file;
  int exit = 0;
  if (!RequireFlag(inv, "tenant", &tenant, &exit)) return exit;
  if (!RequireFlag(inv, "cert_file", &cert_file, &exit)) return exit;
  auto pem = AppOf(inv).read_file(cert_file);
  if (!pem.ok()) return inv.LocalError(pem.status().message());
  rv1::CaCertificate* ca = req.mutable_ca();
  ca->set_tenant_id(tenant);
  ca->set_certificate_pem(*pem);
  ca->set_jit_registration(inv.flags.IsSet("jit_registration"));
  ca->set_jit_product_key(inv.flags.Get("jit_product"));
  ca->set_jit_auto_enable(inv.flags.IsSet("jit_auto_enable"));
  auto r = OpenRegistry(inv, &exit);
  if (!r) return exit;
  rv1::CaCertificate resp;
  if (int rc = CallUnary(
          inv, *r->conn, "DeviceRegistry.CreateCaCertificate",
          [&](grpc::ClientContext* c) { return r->stub->CreateCaCertificate(c, req, &resp); })) {
    return rc;
  }
  if (!JsonOutput(inv)) resp.clear_certificate_pem();  // long; `ca get --json` has it
  PrintResource(inv, &resp, false);
  return kExitOk;
}

int CaGet(Invocation& inv) {
  rv1::GetCaCertificateRequest req;
  std::string tenant;
  int exit = 0;
  if (!RequireFlag(inv, "tenant", &tenant, &exit)) return exit;
  req.set_tenant_id(tenant);
  req.set_ca_id(inv.args[0]);
  auto r = OpenRegistry(inv, &exit);
  if (!r) return exit;
  rv1::CaCertificate resp;
  if (int rc = CallUnary(
          inv, *r->conn, "DeviceRegistry.GetCaCertificate",
          [&](grpc::ClientContext* c) { return r->stub->GetCaCertificate(c, req, &resp); })) {
    return rc;
  }
  if (inv.flags.IsSet("pem")) {
    inv.out() << resp.certificate_pem();
    return kExitOk;
  }
  if (!JsonOutput(inv)) resp.clear_certificate_pem();
  PrintResource(inv, &resp, false);
  return kExitOk;
}

int CaList(Invocation& inv) {
  std::string tenant;
  int exit = 0;
  if (!RequireFlag(inv, "tenant", &tenant, &exit)) return exit;
  auto r = OpenRegistry(inv, &exit);
  if (!r) return exit;
  std::vector<rv1::CaCertificate> items;
  int rc = ListPages(
      inv, *r->conn, "DeviceRegistry.ListCaCertificates",
      [&](grpc::ClientContext* c, int32_t size, const std::string& token, std::string* next) {
        rv1::ListCaCertificatesRequest req;
        req.set_tenant_id(tenant);
        req.set_page_size(size);
        req.set_page_token(token);
        rv1::ListCaCertificatesResponse resp;
        grpc::Status s = r->stub->ListCaCertificates(c, req, &resp);
        for (auto& ca : *resp.mutable_cas()) items.push_back(std::move(ca));
        *next = resp.next_page_token();
        return s;
      });
  if (rc != kExitOk) return rc;
  PrintResources(inv, AsMessages(items),
                 {{"CA", "id"},
                  {"STATUS", "status"},
                  {"SUBJECT", "subject"},
                  {"NOT AFTER", "not_after"},
                  {"SHA256", "sha256_fingerprint"}},
                 false);
  return kExitOk;
}

int CaDelete(Invocation& inv) {
  rv1::DeleteCaCertificateRequest req;
  std::string tenant;
  int exit = 0;
  if (!RequireFlag(inv, "tenant", &tenant, &exit)) return exit;
  req.set_tenant_id(tenant);
  req.set_ca_id(inv.args[0]);
  req.set_etag(inv.flags.Get("etag"));
  auto r = OpenRegistry(inv, &exit);
  if (!r) return exit;
  rv1::DeleteResponse resp;
  if (int rc = CallUnary(
          inv, *r->conn, "DeviceRegistry.DeleteCaCertificate",
          [&](grpc::ClientContext* c) { return r->stub->DeleteCaCertificate(c, req, &resp); })) {
    return rc;
  }
  return PrintDeleted(inv, "CA certificate", req.ca_id());
}

// --- watch -----------------------------------------------------------------------

int Watch(Invocation& inv) {
  int exit = 0;
  auto r = OpenRegistry(inv, &exit);
  if (!r) return exit;
  rv1::WatchChangesRequest req;
  req.set_cursor(inv.flags.Get("cursor"));
  req.set_tenant_id(inv.flags.Get("tenant"));
  grpc::ClientContext context;
  r->conn->PrepareStream(&context);
  auto reader = r->stub->WatchChanges(&context, req);
  rv1::ChangeEvent e;
  while (reader->Read(&e)) {
    if (JsonOutput(inv)) {
      inv.out() << ToJson(e) << "\n";
    } else {
      inv.out() << FormatTimestamp(e.time()) << "  " << FieldValue(e, "type") << "  "
                << FieldValue(e, "resource_type") << "  " << e.tenant_id() << "/"
                << e.resource_id();
      if (!e.etag().empty()) inv.out() << "  etag=" << e.etag();
      inv.out() << "  cursor=" << e.cursor() << "\n";
    }
    inv.out().flush();
  }
  grpc::Status status = reader->Finish();
  if (!status.ok()) {
    if (!e.cursor().empty()) inv.err() << "resume with --cursor " << e.cursor() << "\n";
    return ReportRpcError(inv, status, "DeviceRegistry.WatchChanges", r->conn->settings());
  }
  return kExitOk;
}

// --- admin ---------------------------------------------------------------------

int AdminRewrapSecrets(Invocation& inv) {
  auto batch_size = inv.flags.GetInt("batch_size");
  if (!batch_size.ok()) return inv.UsageError(batch_size.status().message());
  if (*batch_size < 1 || *batch_size > 10000) {
    return inv.UsageError("--batch_size must be 1 to 10000");
  }
  int exit = 0;
  auto r = OpenRegistry(inv, &exit);
  if (!r) return exit;
  rv1::RewrapSecretsRequest req;
  req.set_batch_size(static_cast<int32_t>(*batch_size));
  grpc::ClientContext context;
  r->conn->PrepareStream(&context);
  auto reader = r->stub->RewrapSecrets(&context, req);
  ProgressBar progress(&inv.err(), inv.io.err_is_tty, !inv.flags.IsSet("no_progress"));
  rv1::RewrapSecretsProgress p;
  rv1::RewrapSecretsProgress last;
  bool done = false;
  while (reader->Read(&p)) {
    last = p;
    done = done || p.done();
    const double fraction = p.rows_total() > 0 ? static_cast<double>(p.rows_done()) /
                                                     static_cast<double>(p.rows_total())
                                               : -1;
    progress.Update(p.rows_done(), 0, fraction);
  }
  progress.Finish(last.rows_done(), 0);
  grpc::Status status = reader->Finish();
  if (!status.ok()) {
    inv.err() << "rewrap stopped after " << last.rows_done() << " of " << last.rows_total()
              << " rows; batches already committed stay re-wrapped; run the command again to "
                 "finish\n";
    return ReportRpcError(inv, status, "DeviceRegistry.RewrapSecrets", r->conn->settings());
  }
  if (JsonOutput(inv)) {
    inv.out() << ToJson(last) << "\n";
  } else {
    inv.out() << "re-wrapped secrets under the current master key: " << last.rows_done() << " of "
              << last.rows_total() << " rows in "
              << absl::FormatDuration(absl::Trunc(progress.Elapsed(), absl::Milliseconds(1)))
              << "\n";
  }
  if (!done) {
    inv.err() << "error: the server ended the stream without reporting completion\n";
    return kExitCheckFailed;
  }
  return kExitOk;
}

}  // namespace

void AddRegistryCommands(Command& root) {
  // tenant
  Command& tenant = root.Sub("tenant", "Manage tenants (the isolation boundary)");
  AddTenantFieldFlags(tenant.Sub("create", "Create a tenant")
                          .Args("TENANT_ID", 1, 1)
                          .Flag(kShowKeysFlag)
                          .Run(TenantCreate));
  tenant.Sub("get", "Show a tenant").Args("TENANT_ID", 1, 1).Flag(kShowKeysFlag).Run(TenantGet);
  AddTenantFieldFlags(tenant.Sub("update", "Change a tenant's fields (only the flags given)")
                          .Args("TENANT_ID", 1, 1)
                          .Flag(kEtagFlag)
                          .Flag(kShowKeysFlag)
                          .Run(TenantUpdate));
  tenant.Sub("delete", "Delete a tenant").Args("TENANT_ID", 1, 1).Flag(kEtagFlag).Run(TenantDelete);
  AddPageFlags(tenant.Sub("list", "List tenants").Run(TenantList));

  // product
  Command& product = root.Sub("product", "Manage products (credential policy, default rules)");
  AddProductFieldFlags(product.Sub("create", "Create a product")
                           .Args("PRODUCT_KEY", 1, 1)
                           .Flag(kTenantFlag)
                           .Flag(kShowKeysFlag)
                           .Run(ProductCreate));
  product.Sub("get", "Show a product")
      .Args("PRODUCT_KEY", 1, 1)
      .Flag(kTenantFlag)
      .Flag(kShowKeysFlag)
      .Run(ProductGet);
  AddProductFieldFlags(product.Sub("update", "Change a product's fields (only the flags given)")
                           .Args("PRODUCT_KEY", 1, 1)
                           .Flag(kTenantFlag)
                           .Flag(kEtagFlag)
                           .Flag({"clear_rules", "", "Remove every default rule"})
                           .Flag(kShowKeysFlag)
                           .Run(ProductUpdate));
  product.Sub("delete", "Delete a product")
      .Args("PRODUCT_KEY", 1, 1)
      .Flag(kTenantFlag)
      .Flag(kEtagFlag)
      .Run(ProductDelete);
  AddPageFlags(product.Sub("list", "List a tenant's products").Flag(kTenantFlag).Run(ProductList));

  // device
  const FlagSpec status_flag{
      "status", "STATUS",
      absl::StrCat("Device status: ", EnumChoices(rv1::DeviceStatus_descriptor()))};
  const FlagSpec tag_flag{"tag", "KEY=VALUE", "Tag", "", "", true};
  Command& device = root.Sub("device", "Manage devices and their credentials");
  device.Sub("create", "Create a device (generates a key pair unless keys are given)")
      .Args("DEVICE_ID", 1, 1)
      .Flag(kTenantFlag)
      .Flag({"product", "PRODUCT_KEY", "Product of the device"})
      .Flag(status_flag)
      .Flag(tag_flag)
      .Flag(kRuleFlag)
      .Flag({"primary_key", "BASE64", "Primary symmetric key (default: generated)"})
      .Flag({"primary_key_file", "FILE", "Read the primary key from a file"})
      .Flag({"secondary_key", "BASE64", "Secondary symmetric key"})
      .Flag({"secondary_key_file", "FILE", "Read the secondary key from a file"})
      .Flag({"no_keys", "", "Do not generate keys (X.509 devices)"})
      .Flag({"primary_thumbprint", "HEX", "SHA-256 thumbprint of a self-signed certificate"})
      .Flag({"secondary_thumbprint", "HEX", "Second self-signed certificate thumbprint"})
      .Flag({"ca_signed_allowed", "", "Accept certificates from the tenant's registered CAs"})
      .Flag(kShowKeysFlag)
      .Run(DeviceCreate);
  device.Sub("get", "Show a device")
      .Args("DEVICE_ID", 1, 1)
      .Flag(kTenantFlag)
      .Flag(kShowKeysFlag)
      .Run(DeviceGet);
  device.Sub("update", "Change a device's product, tags, rules (only the flags given)")
      .Args("DEVICE_ID", 1, 1)
      .Flag(kTenantFlag)
      .Flag({"product", "PRODUCT_KEY", "Move the device to this product"})
      .Flag({"tag", "KEY=VALUE", "Replace the tags with these", "", "", true})
      .Flag({"clear_tags", "", "Remove every tag"})
      .Flag({"rule", "EFFECT:ACTION:FILTER", "Replace the rules with these", "", "", true})
      .Flag({"clear_rules", "", "Remove every device rule"})
      .Flag({"ca_signed_allowed", "",
             "Accept CA-signed certificates (--ca_signed_allowed=false to stop)"})
      .Flag(kEtagFlag)
      .Flag(kShowKeysFlag)
      .Run(DeviceUpdate);
  device.Sub("delete", "Delete a device")
      .Args("DEVICE_ID", 1, 1)
      .Flag(kTenantFlag)
      .Flag(kEtagFlag)
      .Run(DeviceDelete);
  AddPageFlags(
      device.Sub("list", "List a tenant's devices (never shows keys)")
          .Flag(kTenantFlag)
          .Flag({"product", "PRODUCT_KEY", "Only devices of this product"})
          .Flag(status_flag)
          .Flag({"tag", "KEY=VALUE", "Only devices with this tag (all must match)", "", "", true})
          .Run(DeviceList));
  device.Sub("enable", "Let a device connect again")
      .Args("DEVICE_ID", 1, 1)
      .Flag(kTenantFlag)
      .Flag(kEtagFlag)
      .Run([](Invocation& inv) { return DeviceSetStatus(inv, rv1::DEVICE_STATUS_ENABLED); });
  device.Sub("disable", "Refuse a device's connects (takes effect within a second)")
      .Args("DEVICE_ID", 1, 1)
      .Flag(kTenantFlag)
      .Flag(kEtagFlag)
      .Run([](Invocation& inv) { return DeviceSetStatus(inv, rv1::DEVICE_STATUS_DISABLED); });
  device.Sub("regenerate-key", "Replace the primary or secondary key (the other keeps working)")
      .Args("DEVICE_ID", 1, 1)
      .Flag(kTenantFlag)
      .Flag({"slot", "primary|secondary", "Which key to regenerate"})
      .Flag(kEtagFlag)
      .Flag(kShowKeysFlag)
      .Run(DeviceRegenerateKey);
  device.Sub("set-thumbprints", "Set the self-signed certificate thumbprints")
      .Args("DEVICE_ID", 1, 1)
      .Flag(kTenantFlag)
      .Flag({"primary", "HEX", "Primary SHA-256 thumbprint (empty clears)"})
      .Flag({"secondary", "HEX", "Secondary SHA-256 thumbprint (empty clears)"})
      .Flag(kEtagFlag)
      .Run(DeviceSetThumbprints);
  device.Sub("import", "Bulk-import devices from CSV or JSON Lines (streamed, batched)")
      .Description(absl::StrCat(
          "CSV needs a header row; columns: ", absl::StrJoin(DeviceCsvColumns(), ", "),
          ", tag:<name>. Only device_id is required. tags is k=v;k2=v2 or a JSON object.\n"
          "JSON Lines: one Device in proto JSON per line (what 'device export' writes).\n"
          "Unreadable rows are skipped and listed with their line number; rows the server\n"
          "refuses are listed with line, stream index and reason. Exit code 5 when any row\n"
          "was rejected."))
      .Flag(kTenantFlag)
      .Flag({"file", "PATH", "devices.csv or devices.jsonl ('-' for stdin, then give --format)"})
      .Flag({"format", "csv|jsonl", "File format (default: from the extension)"})
      .Flag({"batch_size", "N", "Devices per stream message", "1000"})
      .Flag({"generate_keys", "", "Generate keys for devices without keys", "true"})
      .Flag({"dry_run", "", "Only parse and validate the file locally"})
      .Flag({"no_progress", "", "No progress bar on stderr"})
      .Run(DeviceImport);
  device.Sub("export", "Export every device of a tenant as JSON Lines or CSV")
      .Flag(kTenantFlag)
      .Flag({"format", "jsonl|csv", "Output format", "jsonl"})
      .Flag({"output", "FILE", "Write to a file instead of stdout"})
      .Flag({"show_keys", "", "Include the symmetric keys (admin only)"})
      .Flag({"no_progress", "", "No progress line on stderr"})
      .Run(DeviceExport);

  // group
  Command& group = root.Sub("group", "Manage enrollment groups (DPS-style derived device keys)");
  group.Sub("create", "Create an enrollment group (generates the group key unless given)")
      .Args("GROUP_ID", 1, 1)
      .Flag(kTenantFlag)
      .Flag({"product", "PRODUCT_KEY", "Product devices register into"})
      .Flag({"group_key", "BASE64", "Group key (default: generated)"})
      .Flag({"group_key_file", "FILE", "Read the group key from a file"})
      .Flag(kRuleFlag)
      .Flag({"disabled", "", "Create the group disabled"})
      .Flag(kShowKeysFlag)
      .Run(GroupCreate);
  group.Sub("get", "Show an enrollment group")
      .Args("GROUP_ID", 1, 1)
      .Flag(kTenantFlag)
      .Flag(kShowKeysFlag)
      .Run(GroupGet);
  group.Sub("update", "Change a group's product, rules or enabled flag")
      .Args("GROUP_ID", 1, 1)
      .Flag(kTenantFlag)
      .Flag({"product", "PRODUCT_KEY", "Product devices register into"})
      .Flag({"enabled", "", "Enable (--enabled) or disable (--enabled=false) the group"})
      .Flag({"rule", "EFFECT:ACTION:FILTER", "Replace the initial rules with these", "", "", true})
      .Flag({"clear_rules", "", "Remove every initial rule"})
      .Flag(kEtagFlag)
      .Flag(kShowKeysFlag)
      .Run(GroupUpdate);
  group.Sub("delete", "Delete an enrollment group")
      .Args("GROUP_ID", 1, 1)
      .Flag(kTenantFlag)
      .Flag(kEtagFlag)
      .Run(GroupDelete);
  AddPageFlags(
      group.Sub("list", "List a tenant's enrollment groups").Flag(kTenantFlag).Run(GroupList));

  // ca
  Command& ca =
      root.Sub("ca", "Tenant CA certificates: records, proof of possession, the issuing CA");
  ca.Sub("create", "Register a CA certificate")
      .Flag(kTenantFlag)
      .Flag({"cert_file", "FILE", "PEM CA certificate"})
      .Flag({"jit_registration", "", "Register unknown devices on their first valid connect"})
      .Flag({"jit_product", "PRODUCT_KEY", "Product of just-in-time registered devices"})
      .Flag({"jit_auto_enable", "", "JIT devices start enabled (else pending approval)"})
      .Run(CaCreate);
  ca.Sub("get", "Show a CA certificate record")
      .Args("CA_ID", 1, 1)
      .Flag(kTenantFlag)
      .Flag({"pem", "", "Print only the PEM certificate"})
      .Run(CaGet);
  AddPageFlags(ca.Sub("list", "List a tenant's CA certificates").Flag(kTenantFlag).Run(CaList));
  ca.Sub("delete", "Delete a CA certificate record")
      .Args("CA_ID", 1, 1)
      .Flag(kTenantFlag)
      .Flag(kEtagFlag)
      .Run(CaDelete);
  // upload, verification-code, verify, enable, disable, create-issuing.
  AddCaLifecycleCommands(ca);

  // admin
  Command& admin = root.Sub("admin", "Server maintenance (admin role)");
  admin.Sub("rewrap-secrets", "Re-encrypt every stored secret under the current master key")
      .Description(
          "Run after deploying a new storage.master_key_file with the old key listed in\n"
          "storage.previous_master_key_files. The registry keeps serving meanwhile; an\n"
          "interrupted run is safe to repeat. Once it completes, the old key can be retired.")
      .Flag({"batch_size", "N", "Rows re-encrypted per transaction (1 to 10000)", "1000"})
      .Flag({"no_progress", "", "No progress bar on stderr"})
      .Run(AdminRewrapSecrets);

  // watch
  root.Sub("watch", "Stream registry change events (WatchChanges) until interrupted")
      .Flag({"tenant", "ID", "Only this tenant (empty: all, admin only)", "", "IOTAUTH_TENANT"})
      .Flag({"cursor", "CURSOR",
             "Resume after this cursor; '0' replays the retained log; "
             "empty starts from now"})
      .Run(Watch);
}

}  // namespace iotauth::cli
