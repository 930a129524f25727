#!/usr/bin/env python3
"""Independent implementation of the canonical encodings (canonical.h, versions 1 and 2).

Prints the hashes that canonical_test.cc expects for its FixedEvent(): version 1,
then version 2 (hash and size), then version 2 with long fields. Run:
  python3 services/audit/canonical_golden.py
"""
import hashlib
import struct

PREV = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
ATTRS = {b"zeta": b"last", b"alpha": b"first"}
STRINGS = [  # event_id, tenant_id, product_key, device_id, reason, credential_type,
    # credential_fingerprint, caller, peer_address, request_id
    b"0123456789abcdef0123456789abcdef", b"tenant-a", b"prod-1", b"dev-7",
    b"DENY_REASON_BAD_SIGNATURE", b"CREDENTIAL_TYPE_SAS", b"sha256:abcd", b"gateway-1",
    b"ipv4:10.0.0.1:5555", b"req-9",
]


def u32(v):
    return struct.pack(">I", v & 0xFFFFFFFF)


def u64(v):
    return struct.pack(">Q", v & 0xFFFFFFFFFFFFFFFF)


def field(number, payload):
    return u32(number) + u32(len(payload)) + payload


def varint(v):
    out = b""
    while v >= 0x80:
        out += bytes([(v & 0x7F) | 0x80])
        v >>= 7
    return out + bytes([v])


def v1():
    amap = b"".join(u32(len(k)) + k + u32(len(v)) + v for k, v in sorted(ATTRS.items()))
    s = STRINGS
    enc = b"iotauth.audit.v1.AuditEvent/1"
    enc += field(1, u64(42))
    enc += field(2, s[0])
    enc += field(3, u64(1700000000) + u32(123456789))
    enc += field(4, u32(1))  # EVENT_TYPE_AUTHENTICATION
    enc += field(5, s[1])
    enc += field(6, s[2])
    enc += field(7, s[3])
    enc += field(8, u32(2))  # OUTCOME_DENY
    for number, value in zip(range(9, 15), s[4:]):
        enc += field(number, value)
    enc += field(15, u64(0) + u32(250000))
    enc += field(16, amap)
    enc += field(17, PREV.encode())
    return hashlib.sha256(bytes.fromhex(PREV) + enc).hexdigest()


def v2(strings=STRINGS, attrs=ATTRS):
    enc = b"iaudit/2" + u64(42) + bytes.fromhex(PREV)
    enc += bytes([0x03])  # time and duration set
    enc += u64(1700000000) + u32(123456789)
    enc += u32(1) + u32(2)  # type, outcome
    enc += u64(0) + u32(250000)
    enc += b"".join(varint(len(x)) + x for x in strings)
    enc += varint(len(attrs))
    enc += b"".join(varint(len(k)) + k + varint(len(v)) + v for k, v in sorted(attrs.items()))
    enc += b"\xa5"
    return hashlib.sha256(enc).hexdigest(), len(enc)


def main():
    print(v1())
    digest, size = v2()
    print(digest, size)
    # Multi-byte varints: a 200-byte reason (2 bytes), a 20000-byte value (3 bytes).
    strings = list(STRINGS)
    strings[4] = b"r" * 200
    attrs = dict(ATTRS)
    attrs[b"zeta"] = b"v" * 20000
    digest, size = v2(strings, attrs)
    print(digest, size)


if __name__ == "__main__":
    main()
