"""C++ code generation for the project's protos with Debian's protoc and grpc_cpp_plugin.

Generated headers are included by their workspace path, e.g.
`#include "proto/iotauth/identity/v1/identity.pb.h"`.
"""

load("@rules_cc//cc:defs.bzl", "cc_library")

_PROTOC = "/usr/bin/protoc"
_GRPC_PLUGIN = "/usr/bin/grpc_cpp_plugin"

def iotauth_cc_proto(name, srcs, deps = [], grpc = True, visibility = None):
    """Generates a cc_library from `srcs` (.proto files in this package).

    Args:
      name: library name.
      srcs: .proto files of this package.
      deps: other iotauth_cc_proto targets whose protos `srcs` import.
      grpc: also generate gRPC service stubs.
      visibility: visibility of the library.
    """
    stems = [s[:-len(".proto")] for s in srcs]
    hdrs = [s + ".pb.h" for s in stems]
    ccs = [s + ".pb.cc" for s in stems]
    if grpc:
        hdrs += [s + ".grpc.pb.h" for s in stems]
        ccs += [s + ".grpc.pb.cc" for s in stems]
    plugin = ""
    if grpc:
        plugin = "--plugin=protoc-gen-grpc=%s --grpc_out=$(GENDIR) " % _GRPC_PLUGIN
    dep_protos = [d + "_protos" for d in deps]
    native.filegroup(
        name = name + "_protos",
        srcs = srcs + dep_protos,
        visibility = ["//visibility:public"],
    )
    native.genrule(
        name = name + "_gen",
        srcs = srcs + dep_protos,
        outs = hdrs + ccs,
        cmd = "%s -I. --cpp_out=$(GENDIR) %s%s" % (
            _PROTOC,
            plugin,
            " ".join(["$(location %s)" % s for s in srcs]),
        ),
    )
    cc_library(
        name = name,
        srcs = ccs,
        hdrs = hdrs,
        deps = deps + ["@system//:protobuf"] + (["@system//:grpcpp"] if grpc else []),
        visibility = visibility,
    )

def iotauth_descriptor_set(name, protos, deps = [], system_protos = [], visibility = None):
    """A FileDescriptorSet (with imports and docs) for clients that build messages
    dynamically, such as the Python end-to-end tests."""
    native.genrule(
        name = name,
        srcs = protos + deps,
        outs = [name + ".pb"],
        cmd = "%s -I. -I/usr/share/grpc-proto --include_imports --include_source_info " % _PROTOC +
              "--descriptor_set_out=$@ " + " ".join(["$(location %s)" % p for p in protos] + system_protos),
        visibility = visibility,
    )
