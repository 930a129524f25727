#include "services/server/app.h"

namespace iotauth {
namespace {

class EmbeddedApp final : public App {
 public:
  std::vector<HostedService> Services() override { return {}; }
  absl::Status OnServing(ServerRunner&) override { return absl::OkStatus(); }
  void Stop() override {}
};

}  // namespace

absl::StatusOr<std::unique_ptr<App>> CreateApp(const iotauth::config::v1::ServerConfig& config,
                                               std::shared_ptr<prometheus::Registry> registry) {
  return std::make_unique<EmbeddedApp>();
}

}  // namespace iotauth
