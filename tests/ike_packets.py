"""Packet helpers for the IKE tests: inner IPv4 packets to carry through negotiated SAs,
and the RFC 3948 UDP wrapping a socket strips off (the engine works on whole IP packets)."""
from __future__ import annotations

import ipaddress
import struct

from engine.batch import PacketBatch


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4(src: str, dst: str, proto: int, payload: bytes, ident: int = 1) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0, 64, proto, 0,
                      ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    return hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:] + payload


def icmp_echo(src: str, dst: str, seq: int = 1, data: bytes = b"pyspu-ike-test" * 4) -> bytes:
    body = struct.pack("!BBHHH", 8, 0, 0, 0x5053, seq) + data
    body = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
    return ipv4(src, dst, 1, body, seq)


def udp_payload(outer: bytes) -> tuple[bytes, int, int]:
    """(UDP payload, sport, dport) of an IPv4/UDP packet (what a socket would send)."""
    ihl = (outer[0] & 0x0F) * 4
    sport, dport = struct.unpack_from("!HH", outer, ihl)
    return outer[ihl + 8:], sport, dport


def udp_wrap(payload: bytes, src: str, dst: str, sport: int, dport: int) -> bytes:
    """The IPv4/UDP packet a socket received `payload` in (UDP checksum 0, RFC 3948 2.1)."""
    return ipv4(src, dst, 17, struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload)


def run(engine, packets: list[bytes], encrypt: bool) -> tuple[list[bytes], list[int]]:
    """Packets through engine.encrypt/decrypt: (output packets, drop reasons)."""
    batch = PacketBatch(capacity=max(4, len(packets)))
    for p in packets:
        batch.add(p)
    (engine.encrypt if encrypt else engine.decrypt)(batch)
    return [batch.packet(i) for i in range(batch.count)], \
        [int(batch.drop[i]) for i in range(batch.count)]
