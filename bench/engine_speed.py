"""Engine-only throughput (no file I/O): ns per packet for encrypt and decrypt of one batch.

    python -m bench.engine_speed [--batch 1024] [--repeats 5]

Each measurement replays the same batch: the buffer is restored before every run and the
restore cost, timed separately in the same loop shape, is subtracted. Reported values are
medians over repeats. This is a precursor of `spu bench` (issue 3): no ceiling or baseline
columns yet.
"""
from __future__ import annotations

import argparse
import ipaddress
import struct
import time

import numpy as np

from engine.batch import PacketBatch
from engine.engine import Engine
from engine.sa import PROTO_ESP, SAConfig

SUITES = {
    "rfc4106(gcm(aes))/128": dict(aead="rfc4106(gcm(aes))", aead_key=bytes(20), icv_bits=128),
    "cbc(aes)/128+hmac(sha1)/96": dict(enc="cbc(aes)", enc_key=bytes(16), auth="hmac(sha1)",
                                       auth_key=bytes(20), icv_bits=96),
    "rfc7539esp(chacha20,poly1305)": dict(aead="rfc7539esp(chacha20,poly1305)",
                                          aead_key=bytes(36), icv_bits=128),
}


def udp_packet(size: int) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, size, 0, 0x4000, 64, 17, 0,
                     bytes([10, 1, 0, 1]), bytes([10, 2, 0, 1]))
    return ip + struct.pack("!HHHH", 1, 2, size - 20, 0) + bytes(size - 28)


def _median_ns(run, restore, n_packets: int, repeats: int, rounds: int) -> float:
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(rounds):
            restore()
            run()
        both = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(rounds):
            restore()
        samples.append((both - (time.perf_counter() - t)) / rounds / n_packets * 1e9)
    return float(np.median(samples))


def measure(suite: str, size: int, batch: int, repeats: int, rounds: int = 50) -> tuple:
    cfg = SAConfig(src=ipaddress.ip_address("192.0.2.1"), dst=ipaddress.ip_address("192.0.2.2"),
                   proto=PROTO_ESP, spi=0x1001, esn=True, **SUITES[suite])
    enc, dec = Engine(), Engine()
    enc.install(cfg, "out")
    dec.install(cfg, "in")
    b = PacketBatch.from_packets([udp_packet(size)] * batch)
    off, length, buf = b.off.copy(), b.length.copy(), b.buf.copy()

    def restore_plain():
        np.copyto(b.buf, buf); np.copyto(b.off, off); np.copyto(b.length, length)
        b.drop[:] = 0; b.sa[:] = -1

    t_enc = _median_ns(lambda: enc.encrypt(b), restore_plain, batch, repeats, rounds)
    restore_plain()
    enc.encrypt(b)
    if np.any(b.drop[:batch]):
        raise RuntimeError("encrypt dropped packets")
    e = PacketBatch.from_packets(b.packets())
    eoff, elen, ebuf = e.off.copy(), e.length.copy(), e.buf.copy()

    def restore_esp():
        np.copyto(e.buf, ebuf); np.copyto(e.off, eoff); np.copyto(e.length, elen)
        e.drop[:] = 0
        dec.sad.top[:] = 0
        dec.sad.bitmap[:] = 0

    t_dec = _median_ns(lambda: dec.decrypt(e), restore_esp, batch, repeats, rounds)
    if np.any(e.drop[:batch]):
        raise RuntimeError("decrypt dropped packets")
    return t_enc, t_dec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sizes", default="64,1400")
    args = ap.parse_args()
    print(f"backend: {Engine.backend()}; batch {args.batch}; median of {args.repeats}")
    print(f"{'suite':34} {'size':>5} {'enc ns/pkt':>10} {'enc Gbit/s':>10} "
          f"{'dec ns/pkt':>10} {'dec Gbit/s':>10}")
    for suite in SUITES:
        for size in (int(s) for s in args.sizes.split(",")):
            te, td = measure(suite, size, args.batch, args.repeats)
            print(f"{suite:34} {size:5d} {te:10.0f} {size * 8 / te:10.2f} "
                  f"{td:10.0f} {size * 8 / td:10.2f}")


if __name__ == "__main__":
    main()
