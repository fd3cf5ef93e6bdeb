"""The real node's cluster DNS: a tiny authoritative responder for the names the tests need.

In a cluster CoreDNS answers ``<service>.<namespace>.svc.<clusterDomain>``; in-cluster clients
reach the API server as ``kubernetes.default.svc``. The fixture's kubelet sets each pod's
``resolv.conf`` (``clusterDNS``, ``clusterDomain``: nameserver, search list, ``ndots:5``) to
this responder on the bridge's address, UDP and TCP port 53. It answers A queries for the
names it holds (case-insensitive, absolute names, as the pod's resolver asks them after
appending its search domains), "no data" for other types of a known name, and NXDOMAIN for
every other name. It never forwards a query anywhere: pods resolve nothing outside this
machine's test network.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Mapping

CLUSTER_DOMAIN = "cluster.local"
TTL = 5
TYPE_A = 1
CLASS_IN = 1
RCODE_OK, RCODE_FORMERR, RCODE_NXDOMAIN, RCODE_NOTIMP = 0, 1, 3, 4


class Query(Exception):
    """A message this responder cannot parse (answered FORMERR when it has an id)."""


def _parse_question(msg: bytes) -> tuple[int, int, str, int, int, int]:
    """(id, flags, qname, qtype, qclass, end offset of the question)."""
    if len(msg) < 12:
        raise Query("short header")
    ident, flags, qdcount = struct.unpack("!HHH", msg[:6])
    if flags & 0x8000 or qdcount != 1:
        raise Query("not one question")
    labels, pos = [], 12
    while True:
        if pos >= len(msg):
            raise Query("name runs past the message")
        length = msg[pos]
        pos += 1
        if length == 0:
            break
        if length & 0xC0 or pos + length > len(msg):  # no compression in a question
            raise Query("bad label")
        labels.append(msg[pos : pos + length].decode("ascii", "replace"))
        pos += length
    if pos + 4 > len(msg):
        raise Query("short question")
    qtype, qclass = struct.unpack("!HH", msg[pos : pos + 4])
    return ident, flags, ".".join(labels).lower(), qtype, qclass, pos + 4


def answer(msg: bytes, records: Mapping[str, str]) -> bytes | None:
    """The response to one DNS message (None: not worth an answer)."""
    try:
        ident, flags, name, qtype, qclass, end = _parse_question(msg)
    except Query:
        if len(msg) < 12:
            return None
        (ident,) = struct.unpack("!H", msg[:2])
        return struct.pack("!HHHHHH", ident, 0x8000 | RCODE_FORMERR, 0, 0, 0, 0)
    question = msg[12:end]
    opcode = (flags >> 11) & 0xF
    rd = flags & 0x0100
    if opcode != 0:
        rcode, answers = RCODE_NOTIMP, b""
    elif name.rstrip(".") not in records:
        rcode, answers = RCODE_NXDOMAIN, b""
    elif qtype == TYPE_A and qclass == CLASS_IN:
        rcode = RCODE_OK
        address = socket.inet_aton(records[name.rstrip(".")])
        # the name by a pointer to the question's (offset 12), type A, class IN, TTL, RDATA
        answers = struct.pack("!HHHIH", 0xC00C, TYPE_A, CLASS_IN, TTL, 4) + address
    else:
        rcode, answers = RCODE_OK, b""  # the name exists, with no record of that type
    out_flags = 0x8000 | (opcode << 11) | 0x0400 | rd | rcode  # QR, opcode, AA, RD, RCODE
    count = 1 if answers else 0
    return struct.pack("!HHHHHH", ident, out_flags, 1, count, 0, 0) + question + answers


class DnsServer:
    """Serves ``records`` (absolute name -> IPv4 address) on (host, port), UDP and TCP."""

    def __init__(self, host: str, port: int, records: Mapping[str, str]) -> None:
        self.records: dict[str, str] = {k.lower().rstrip("."): v for k, v in records.items()}
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((host, port))
        self.address = self.udp.getsockname()
        self.tcp = socket.create_server((host, self.address[1]))
        for sock in (self.udp, self.tcp):
            sock.settimeout(0.5)  # to see close() soon
        self._closed = False
        threading.Thread(target=self._serve_udp, daemon=True, name="dns-udp").start()
        threading.Thread(target=self._serve_tcp, daemon=True, name="dns-tcp").start()

    def add(self, name: str, address: str) -> None:
        self.records[name.lower().rstrip(".")] = address

    def _serve_udp(self) -> None:
        while not self._closed:
            try:
                msg, peer = self.udp.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            reply = answer(msg, self.records)
            if reply is not None:
                with contextlib.suppress(OSError):
                    self.udp.sendto(reply, peer)

    def _serve_tcp(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.tcp.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._tcp_conn, args=(conn,), daemon=True).start()

    def _tcp_conn(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        with conn, contextlib.suppress(OSError):
            while True:
                head = _read_exactly(conn, 2)
                if head is None:
                    return
                msg = _read_exactly(conn, struct.unpack("!H", head)[0])
                if msg is None:
                    return
                reply = answer(msg, self.records)
                if reply is None:
                    return
                conn.sendall(struct.pack("!H", len(reply)) + reply)

    def close(self) -> None:
        self._closed = True
        for sock in (self.udp, self.tcp):
            with contextlib.suppress(OSError):
                sock.close()


def _read_exactly(conn: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data
