"""`spu demo`: the main job on an embedded default.

Generates a capture of IPv4 and IPv6 UDP/TCP traffic, runs `spu encrypt` and `spu decrypt`
over it with an embedded SA file (AES-128-GCM over IPv4 with ESN, AES-256-CBC +
HMAC-SHA-256-128 over IPv6), prints the counters and checks that the decrypted capture
equals the original. The demo keys are public: never use them for real traffic.
"""
from __future__ import annotations

import os
import struct
import tempfile
import time

from .cli import run_pcap
from .sa import parse_sa_text

DEMO_SAS = """\
# Demo SAs (public keys: for demonstration only)
src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x00001001 mode tunnel replay-window 1024 \\
    flag esn aead 'rfc4106(gcm(aes))' 0x000102030405060708090a0b0c0d0e0fdeadbeef 128 \\
    sel src 10.1.0.0/16 dst 10.2.0.0/16
src 2001:db8::1 dst 2001:db8::2 proto esp spi 0x00001002 mode tunnel \\
    enc 'cbc(aes)' 0x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f \\
    auth-trunc 'hmac(sha256)' \\
        0x2021222324252627282930313233343536373839404142434445464748495051 128 \\
    sel src fd00:1::/48 dst fd00:2::/48
"""

SIZES = (64, 128, 256, 512, 1024, 1400, 1500)


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _packet(k: int, size: int) -> bytes:
    """One IPv4 or IPv6 UDP/TCP packet of `size` bytes (the demo's traffic mix)."""
    v6 = k % 4 == 3
    udp = k % 3 != 0
    proto = 17 if udp else 6
    l4 = (struct.pack("!HHHH", 1024 + k % 5000, 53 if udp else 443, 0, 0) if udp
          else struct.pack("!HHIIBBHHH", 1024 + k % 5000, 443, k, 0, 0x50, 0x10, 65535, 0, 0))
    hdr = 40 if v6 else 20
    payload = bytes((k + j) & 0xFF for j in range(max(0, size - hdr - len(l4))))
    body = bytearray(l4 + payload)
    if udp:
        struct.pack_into("!H", body, 4, len(body))
    if v6:
        src = bytes.fromhex("fd000001000000000000000000000000")[:15] + bytes([k & 0xFF])
        dst = bytes.fromhex("fd000002000000000000000000000000")[:15] + bytes([(k >> 8) & 0xFF])
        return struct.pack("!IHBB", 0x60000000, len(body), proto, 64) + src + dst + bytes(body)
    src = bytes([10, 1, (k >> 8) & 0xFF, k & 0xFF])
    dst = bytes([10, 2, 0, (k % 250) + 1])
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), k & 0xFFFF, 0x4000,
                               64, proto, 0, src, dst))
    struct.pack_into("!H", ip, 10, _csum(bytes(ip)))
    return bytes(ip) + bytes(body)


def run_demo(n_packets: int = 100_000, keep_dir: str | None = None) -> int:
    from .engine import Engine
    from .pcap import LINKTYPE_RAW, read_pcap, write_pcap

    work = keep_dir or tempfile.mkdtemp(prefix="spu-demo-")
    os.makedirs(work, exist_ok=True)
    plain, enc, dec = (os.path.join(work, f) for f in ("plain.pcap", "esp.pcap", "decrypted.pcap"))
    sas = parse_sa_text(DEMO_SAS)
    packets = [_packet(k, SIZES[k % len(SIZES)]) for k in range(n_packets)]
    write_pcap(plain, packets, linktype=LINKTYPE_RAW)
    total_bytes = sum(len(p) for p in packets)
    print(f"pyspu demo: {n_packets} packets ({total_bytes / 1e6:.1f} MB, IPv4+IPv6, "
          f"sizes {SIZES}) in {work}")
    print(f"crypto backend: {Engine.backend()}")
    for direction, src, dst in (("encrypt", plain, enc), ("decrypt", enc, dec)):
        t0 = time.perf_counter()
        stats = run_pcap(direction, sas, src, dst, os.path.join(work, f"{direction}.json"))
        dt = time.perf_counter() - t0
        drops = {k: v for k, v in stats["dropped"].items() if v}
        print(f"spu {direction}: in {stats['packets_in']} out {stats['packets_out']} "
              f"dropped {drops or 0}  ({dt:.2f} s with file I/O, "
              f"{stats['packets_in'] / dt / 1e3:.0f} kpps)")
    recovered = [p for _, p in read_pcap(dec)]
    same = sum(a == b for a, b in zip(recovered, packets))
    print(f"round trip: {same}/{n_packets} packets identical to the original")
    return 0 if same == n_packets and len(recovered) == n_packets else 1
