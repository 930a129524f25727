"""End-to-end tests: a python script run against the real binaries."""

# What every script that starts iotauthd needs.
E2E_DATA = [
    "iotauth_harness.py",
    "//proto:iotauth_descriptors",
    "//services/server:iotauthd",
]

def py_e2e_test(name, data = [], size = "medium", server = True):
    """`<name>.py` run by run_py_test.sh with Debian's python3.

    With `server`, iotauthd, the descriptor set and the harness are data too;
    `data` adds the script's own (other binaries, files it reads).
    """
    native.sh_test(
        name = name,
        size = size,
        srcs = ["run_py_test.sh"],
        args = ["tests/e2e/%s.py" % name],
        data = (E2E_DATA if server else []) + [name + ".py"] + data,
        tags = ["e2e"],
    )
