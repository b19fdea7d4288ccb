#!/usr/bin/env python3
"""Writes the committed seed corpus, fuzz/seeds/<target>/: a few small valid and near-valid
inputs per target, so each bounded run starts from the interesting shapes instead of from
nothing. Standard library only; run it again after changing an input format:

    python3 fuzz/make_seeds.py
"""

import base64
import os
import struct
import zlib

SEEDS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def token(prefix: str, random: str) -> str:
    """A token as Tessera formats it: CRC32 of the random part in six base62 digits."""
    value = zlib.crc32(random.encode())
    digits = ""
    for _ in range(6):
        digits = BASE62[value % 62] + digits
        value //= 62
    return f"{prefix}_{random}{digits}"


# Protocol buffers, just enough for Envoy's CheckRequest.
def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field(number: int, payload) -> bytes:
    if isinstance(payload, str):
        payload = payload.encode()
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def string_map(number: int, items: dict) -> bytes:
    return b"".join(field(number, field(1, k) + field(2, v)) for k, v in items.items())


def envoy_request(method, path, source, headers=None, extensions=None, body=None, raw_headers=None):
    http = field(2, method) + string_map(3, headers or {}) + field(4, path)
    if body is not None:
        http += field(11, body)
    if raw_headers:
        header_map = b"".join(field(1, field(1, k) + field(3, v)) for k, v in raw_headers)
        http += field(13, header_map)
    socket_address = field(2, source)
    peer = field(1, field(1, socket_address))
    attributes = field(1, peer) + field(4, field(2, http)) + string_map(10, extensions or {})
    return field(1, attributes)


def write(target: str, name: str, data) -> None:
    if isinstance(data, str):
        data = data.encode()
    directory = os.path.join(SEEDS, target)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)


def main() -> None:
    valid = token("tsk", "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy")
    write("token_parser", "valid", valid)
    write("token_parser", "bad_checksum", valid[:-1] + ("0" if valid[-1] != "0" else "1"))
    write("token_parser", "changed_random", valid[:6] + "Z" + valid[7:])
    write("token_parser", "too_short", valid[:-1])
    write("token_parser", "not_base62", valid[:10] + "-" + valid[11:])
    write("token_parser", "wrong_prefix", "abc" + valid[3:])
    write("token_parser", "other_prefix", "acme2\n" + token("acme2", "0" * 30))
    write("token_parser", "bad_prefix", "Acme\nAcme_" + "0" * 36)

    write("permission_matching", "grants_and_ceiling",
          "orders:*\n*:read\nfn:OrderList_Load_Query\n\norders:read\nproducts:*\n*:write")
    write("permission_matching", "everything", "*\n\n*:*\norders:read")
    write("permission_matching", "near_valid",
          "ord*:read\norders:re ad\norders:\na:b:c\n\norders\n" + "a" * 130 + ":b")
    write("permission_matching", "charset", "my-svc.v2:list_all\nfn:X\n\nmy-svc.v2:*")

    write("cidr_parsing", "mixed",
          "10.0.0.0/8,2001:db8::/32,192.0.2.7\n10.1.2.3\n2001:db8::1\n11.0.0.1\n"
          "198.51.100.7, 203.0.113.9, 10.0.0.2")
    write("cidr_parsing", "host_bits_and_mapped",
          "10.1.2.3/8, ::ffff:192.0.2.0/120,::ffff:198.51.100.7\n::ffff:192.0.2.1\n"
          "[2001:db8::1]:443\n192.0.2.1:443, unknown")
    write("cidr_parsing", "edges", "0.0.0.0/0,::/0,255.255.255.255/32\n0.0.0.0\n::\n")
    write("cidr_parsing", "invalid", "10.0.0.0/8,10.0.0.0/33,abc\n10.0.0.1")

    stamp = struct.pack("<q", 1_780_000_000)
    tag = bytes(range(32))
    write("signature_parsing", "padded", stamp + base64.b64encode(tag))
    write("signature_parsing", "unpadded", stamp + base64.b64encode(tag).rstrip(b"="))
    write("signature_parsing", "spaced", stamp + b"  " + base64.b64encode(tag) + b"\n")
    write("signature_parsing", "short", stamp + base64.b64encode(tag[:31]))
    write("signature_parsing", "url_alphabet", stamp + base64.urlsafe_b64encode(b"\xfb" * 32))
    write("signature_parsing", "sealed_shape", b"\x01" + bytes(24) + bytes(range(60)))

    write("envoy_mapping", "bearer_get", envoy_request(
        "GET", "/api/v1/orders/42?page=2", "192.0.2.1",
        headers={"authorization": "Bearer " + valid, "user-agent": "curl/8.0"}))
    write("envoy_mapping", "route_extensions", envoy_request(
        "POST", "/api/v1/orders", "10.0.0.1",
        headers={"x-api-key": valid, "x-tenant": "globex"},
        extensions={"tenant": "acme", "permission": "orders:write", "endpoint": "orders.create"}))
    write("envoy_mapping", "signed_forwarded", envoy_request(
        "PUT", "/api/v1/orders/7", "10.0.0.1",
        headers={"authorization": valid, "x-forwarded-for": "6.6.6.6, 198.51.100.7, 10.0.0.2",
                 "x-tessera-signature": base64.b64encode(tag).decode(),
                 "x-tessera-timestamp": "1780000000", "x-tessera-token-id": "forged"},
        body="{}"))
    write("envoy_mapping", "raw_header_map", envoy_request(
        "get", "/health", "::ffff:192.0.2.9", raw_headers=[
            ("authorization", b"bearer   " + valid.encode()), ("x-tenant", b"a b"),
            ("x-tessera-signature", b"sig"), ("x-tessera-signature", b"again")]))
    write("envoy_mapping", "unmatched", envoy_request(
        "DELETE", "/admin", "not an address", headers={"x-tenant": "*"}))
    write("envoy_mapping", "traversal", envoy_request(
        "FROB", "/api/v1/orders/%2e%2e/admin?x=1", "192.0.2.1",
        headers={"authorization": "Bearer " + valid}))
    write("envoy_mapping", "dot_segments", envoy_request(
        "GET", "//api/v1/orders/../%6frders/./42", "192.0.2.1",
        headers={"authorization": "Bearer " + valid}))

    # Path traversal and parser-differential tricks (tests/api/envoy.rs holds the full corpus).
    for name, target in [
        ("plain", "/api/v1/orders/42?page=2"),
        ("dot_segments", "/api/v1/orders/a/./b/../../42/"),
        ("merged_slashes", "//api///v1/orders//42"),
        ("encoded_letters", "/api/v1/%6frders/%34%32"),
        ("encoded_dots", "/api/v1/orders/%2e%2e/.%2E/admin"),
        ("encoded_separators", "/api/v1/orders/..%2f..%5cadmin"),
        ("backslash", "/api/v1/orders/..\\admin"),
        ("double_encoding", "/api/v1/orders/%252e%252e%252fadmin"),
        ("overlong_utf8", "/api/v1/orders/%c0%ae%c0%ae/%e0%80%af"),
        ("path_parameters", "/..;/admin/orders;jsessionid=1/42"),
        ("control_bytes", "/api/v1/orders/42%00%0d%0a\t"),
        ("fullwidth", "/api/v1/orders/%ef%bc%8e%ef%bc%8e/caf%C3%A9"),
        ("ambiguous", "/api/v1/orders//../../admin"),
        ("above_root", "/api/../../admin"),
        ("absolute_form", "http://api.example.com/api/v1/orders/42"),
        ("asterisk", "*"),
        ("query_and_fragment", "/a/b?c=/../d&e=%2e%2e#f"),
        ("kept_encoded", "/a%25b%3Fc%23d%20e%3bf/%7e%3a"),
    ]:
        write("request_target", name, target)

    def admin_request(seconds, nanos, ts_seconds, ts_nanos, lines):
        return struct.pack("<qiqi", seconds, nanos, ts_seconds, ts_nanos) + "\n".join(lines).encode()

    fields = ["acme", "alice", "ci deploy", "", "orders:read,orders:*", "reader", "10.0.0.0/8",
              "expires_at,name"]
    write("admin_request", "valid_ttl", admin_request(86_400, 0, 1_900_000_000, 0, fields))
    write("admin_request", "max_seconds", admin_request(2**63 - 1, 999_999_999, 2**63 - 1, 0, fields))
    write("admin_request", "min_seconds", admin_request(-2**63, -999_999_999, -2**63, -1, fields))
    write("admin_request", "past_chrono_range", admin_request(9_000_000_000_000, 0, 8_210_298_412_800, 0,
                                                               fields))
    write("admin_request", "bad_fields", admin_request(0, -1, 0, 2**31 - 1,
                                                       ["a b", "", "x" * 200, "", "bad", "", "300.0.0.1",
                                                        "secret_hash,expires_at"]))


if __name__ == "__main__":
    main()
