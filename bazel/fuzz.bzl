"""libFuzzer targets and the test that replays their seed corpus."""

load("@rules_cc//cc:defs.bzl", "cc_binary", "cc_test")
load("//bazel:copts.bzl", "IOTAUTH_COPTS")

def iotauth_fuzzer(name, srcs, deps):
    """A libFuzzer target `name` and `<name>_corpus_test`.

    `name` (tagged fuzz, manual) is built by tools/fuzz.sh with clang-14 and the
    sanitizers; the test links the same sources with a plain main() that runs every
    file of `<name>_corpus/` in this package once, so `bazel test` keeps the seeds
    passing without clang or libFuzzer.
    """
    cc_binary(
        name = name,
        srcs = srcs,
        copts = IOTAUTH_COPTS,
        # A test artifact: it may use the test fakes (testonly libraries).
        testonly = True,
        tags = [
            "fuzz",
            "manual",
        ],
        deps = deps,
    )
    corpus = name + "_corpus"
    cc_test(
        name = name + "_corpus_test",
        srcs = srcs,
        args = [native.package_name() + "/" + corpus],
        copts = IOTAUTH_COPTS,
        data = native.glob([corpus + "/**"]),
        deps = deps + ["//services/common:fuzz_corpus_main"],
    )
