// iotauthd: the all-in-one server (identity, registry and audit in one process),
// the embedded default.
#include "services/server/server_main.h"

int main(int argc, char** argv) { return iotauth::ServerMain(argc, argv, {}, "iotauthd"); }
