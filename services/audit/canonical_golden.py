#!/usr/bin/env python3
"""Independent implementation of the canonical encoding (canonical.h, version 1).

Prints the hash that canonical_test.cc expects for its FixedEvent(). Run:
  python3 services/audit/canonical_golden.py
"""
import hashlib
import struct


def u32(v):
    return struct.pack(">I", v & 0xFFFFFFFF)


def u64(v):
    return struct.pack(">Q", v & 0xFFFFFFFFFFFFFFFF)


def field(number, payload):
    return u32(number) + u32(len(payload)) + payload


def main():
    prev = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
    attrs = {b"zeta": b"last", b"alpha": b"first"}
    amap = b"".join(u32(len(k)) + k + u32(len(v)) + v for k, v in sorted(attrs.items()))
    enc = b"iotauth.audit.v1.AuditEvent/1"
    enc += field(1, u64(42))
    enc += field(2, b"0123456789abcdef0123456789abcdef")
    enc += field(3, u64(1700000000) + u32(123456789))
    enc += field(4, u32(1))  # EVENT_TYPE_AUTHENTICATION
    enc += field(5, b"tenant-a")
    enc += field(6, b"prod-1")
    enc += field(7, b"dev-7")
    enc += field(8, u32(2))  # OUTCOME_DENY
    enc += field(9, b"DENY_REASON_BAD_SIGNATURE")
    enc += field(10, b"CREDENTIAL_TYPE_SAS")
    enc += field(11, b"sha256:abcd")
    enc += field(12, b"gateway-1")
    enc += field(13, b"ipv4:10.0.0.1:5555")
    enc += field(14, b"req-9")
    enc += field(15, u64(0) + u32(250000))
    enc += field(16, amap)
    enc += field(17, prev.encode())
    print(hashlib.sha256(bytes.fromhex(prev) + enc).hexdigest())


if __name__ == "__main__":
    main()
