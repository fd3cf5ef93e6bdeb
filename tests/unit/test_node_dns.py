"""The real node's DNS responder (tests/testenv/node_dns.py) over real sockets on loopback."""

from __future__ import annotations

import socket
import struct

import pytest

from tests.testenv.node_dns import DnsServer, answer

RECORDS = {"kubernetes.default.svc.cluster.local": "10.0.0.1"}

# A query as glibc sends it: id 0x1234, RD, one question, an EDNS OPT record in "additional".
QUERY_A = bytes.fromhex(
    "1234 0100 0001 0000 0000 0001"
    "0a6b756265726e65746573 0764656661756c74 03737663 07636c7573746572 056c6f63616c 00"
    "0001 0001"
    "00 0029 04d0 00000000 0000"
)
QUESTION = QUERY_A[12:-11]


def test_a_query_for_the_kubernetes_service_is_answered_with_its_cluster_ip() -> None:
    reply = answer(QUERY_A, RECORDS)
    assert reply is not None
    ident, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", reply[:12])
    assert ident == 0x1234 and flags == 0x8500  # response, authoritative, RD echoed, NOERROR
    assert (qd, an, ns, ar) == (1, 1, 0, 0)
    assert reply[12 : 12 + len(QUESTION)] == QUESTION
    rr = reply[12 + len(QUESTION) :]
    assert rr == bytes.fromhex("c00c 0001 0001 00000005 0004 0a000001")


def test_other_names_are_nxdomain_and_other_types_no_data() -> None:
    other = QUERY_A.replace(b"\x0akubernetes", b"\x0akubernetez")
    reply = answer(other, RECORDS)
    assert reply is not None and struct.unpack("!H", reply[2:4])[0] & 0xF == 3
    assert struct.unpack("!H", reply[6:8])[0] == 0
    aaaa = QUERY_A[:-15] + b"\x00\x1c\x00\x01" + QUERY_A[-11:]
    reply = answer(aaaa, RECORDS)
    assert reply is not None and struct.unpack("!HH", reply[2:4] + reply[6:8]) == (0x8500, 0)
    upper = QUERY_A.replace(b"\x0akubernetes", b"\x0aKUBERNETES")
    assert answer(upper, RECORDS) is not None
    assert struct.unpack("!H", answer(upper, RECORDS)[6:8])[0] == 1  # type: ignore[index]


def test_malformed_messages_get_formerr_or_nothing() -> None:
    assert answer(b"\x12", RECORDS) is None
    reply = answer(QUERY_A[:20], RECORDS)  # the name runs past the end
    assert reply is not None and reply[:4] == b"\x12\x34\x80\x01"


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_the_server_answers_over_udp_and_tcp(transport: str) -> None:
    server = DnsServer("127.0.0.1", 0, RECORDS)
    try:
        if transport == "udp":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(5)
                s.sendto(QUERY_A, server.address)
                reply = s.recv(4096)
        else:
            with socket.create_connection(server.address, timeout=5) as s:
                s.sendall(struct.pack("!H", len(QUERY_A)) + QUERY_A)
                (length,) = struct.unpack("!H", s.recv(2))
                reply = b""
                while len(reply) < length:
                    reply += s.recv(length - len(reply))
        assert reply.endswith(bytes.fromhex("0a000001"))
    finally:
        server.close()
