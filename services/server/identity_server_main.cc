// identity_server: the identity service alone, for split deployments (see README).
#include "services/server/server_main.h"

int main(int argc, char** argv) {
  return iotauth::ServerMain(argc, argv, {"identity"}, "identity_server");
}
