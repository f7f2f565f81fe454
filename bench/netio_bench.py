"""Packets/s of the gateway's batched I/O paths, to know the per-packet syscall cost.

    sudo .venv/bin/python -m bench.netio_bench [--sizes 64,1400] [--packets 2000]
                                               [--rounds 5] [--batch 256] [--raw]

Builds two network namespaces joined by a veth pair (removed afterwards), a TUN device in
each, and one ESP tunnel (AES-128-GCM, RFC 3948 UDP encapsulation, or raw ESP with --raw)
between two Engines, then times each stage per packet:

    A (encrypt side):  tun_read -> Engine.encrypt -> udp_send      (ESP out of the veth)
    B (decrypt side):  udp_recv -> Engine.decrypt -> tun_write     (into B's kernel)

Each round first queues `--packets` inner UDP packets in A's TUN (kernel sockets in A send
to a host behind the tunnel; the TUN's txqueuelen holds them), then drains them through A
in batches, then drains what arrived in B's socket buffer through B. Queueing is not
timed, so the numbers are this process's cost per packet: syscalls, copies and crypto,
not a concurrent traffic generator's. Not a test; the numbers depend on the machine.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import select
import socket
import subprocess
import sys
import time
from contextlib import contextmanager

from engine.batch import PacketBatch
from engine.engine import Engine
from engine.netio import EspRawSocket, EspUdpSocket, Tun
from engine.sa import MODE_TUNNEL, PROTO_ESP, SAConfig, Selector

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000
A, B = "192.0.2.1", "192.0.2.2"
NET_A, NET_B = "10.61.1.0/24", "10.61.2.0/24"
HOST_A, HOST_B = "10.61.1.1", "10.61.2.1"
BIG = 64 << 20      # socket buffers that hold a whole round


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True, timeout=30)


@contextmanager
def netns(name: str):
    """Run the block in namespace `name`; fds opened inside stay there (setns(2))."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
        try:
            yield
        finally:
            _libc.setns(own, CLONE_NEWNET)
    finally:
        os.close(own)
        os.close(target)


def sa_config(raw: bool) -> SAConfig:
    from ipaddress import ip_address, ip_network
    return SAConfig(src=ip_address(A), dst=ip_address(B), proto=PROTO_ESP, spi=0x4242,
                    mode=MODE_TUNNEL, aead="rfc4106(gcm(aes))", aead_key=bytes(range(20)),
                    icv_bits=128, encap_sport=None if raw else 4500,
                    encap_dport=None if raw else 4500,
                    sel=Selector(ip_network(NET_A), ip_network(NET_B)))


class Bed:
    def __init__(self, raw: bool):
        tag = os.getpid() % 100000
        self.ns = (f"pyspu-nb{tag}-a", f"pyspu-nb{tag}-b")
        self.raw = raw
        self.made: list[str] = []

    def up(self) -> None:
        a, b = self.ns
        for ns in self.ns:
            sh("ip", "netns", "add", ns)
            self.made.append(ns)
        sh("ip", "link", "add", "nbv0", "netns", a, "type", "veth", "peer", "name", "nbv1",
           "netns", b)
        for ns, dev, addr in ((a, "nbv0", A), (b, "nbv1", B)):
            sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        with netns(a):
            self.tun_a = Tun.open("nbt0", mtu=1500)
            self.tun_a.configure([f"{HOST_A}/24"], [NET_B])
            self.out = EspRawSocket(A, buffer_bytes=BIG) if self.raw \
                else EspUdpSocket(A, buffer_bytes=BIG)
            self.gen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.gen.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BIG)
            self.gen.bind((HOST_A, 0))
        with netns(b):
            self.tun_b = Tun.open("nbt1", mtu=1500)
            self.tun_b.configure([f"{HOST_B}/24"], [NET_A])
            self.inp = EspRawSocket(B, buffer_bytes=BIG) if self.raw \
                else EspUdpSocket(B, buffer_bytes=BIG)
            self.sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sink.setsockopt(socket.SOL_SOCKET, 33, BIG)      # SO_RCVBUFFORCE
            self.sink.bind((HOST_B, 6000))
            self.sink.setblocking(False)
        for ns, dev in ((a, "nbt0"), (b, "nbt1")):
            sh("ip", "-n", ns, "link", "set", "dev", dev, "txqueuelen", "20000")
            sh("ip", "netns", "exec", ns, "sysctl", "-qw",
               f"net.ipv6.conf.{dev}.disable_ipv6=1")

    def down(self) -> None:
        for x in ("gen", "sink", "out", "inp", "tun_a", "tun_b"):
            if hasattr(self, x):
                getattr(self, x).close()
        for ns in self.made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def drain(fd: int, step, want: int, timeout: float = 5.0) -> tuple[int, int]:
    """Call step() until it has moved `want` packets (or the queue stays empty);
    returns (packets moved, ns spent inside step)."""
    moved, spent = 0, 0
    deadline = time.monotonic() + timeout
    while moved < want and time.monotonic() < deadline:
        t0 = time.perf_counter_ns()
        n = step()
        spent += time.perf_counter_ns() - t0
        moved += n
        if n == 0:
            select.select([fd], [], [], 0.05)
    return moved, spent


def run(bed: Bed, size: int, packets: int, rounds: int, batch_cap: int) -> dict:
    cfg = sa_config(bed.raw)
    eng_a, eng_b = Engine(), Engine()
    eng_a.install(cfg, "out")
    eng_b.install(cfg, "in")
    ba, bb = PacketBatch(batch_cap), PacketBatch(batch_cap)
    stage = {k: 0 for k in ("tun_read", "encrypt", "send", "recv", "decrypt", "tun_write")}
    moved_a = moved_b = 0
    payload = os.urandom(size)

    def step_a() -> int:
        ba.clear()
        t0 = time.perf_counter_ns()
        n = bed.tun_a.read(ba)
        t1 = time.perf_counter_ns()
        if n:
            eng_a.encrypt(ba)
            t2 = time.perf_counter_ns()
            bed.out.send(ba)
            t3 = time.perf_counter_ns()
            stage["encrypt"] += t2 - t1
            stage["send"] += t3 - t2
        stage["tun_read"] += t1 - t0
        return n

    def step_b() -> int:
        bb.clear()
        t0 = time.perf_counter_ns()
        got = bed.inp.recv(bb)
        n = got if isinstance(got, int) else got.packets
        t1 = time.perf_counter_ns()
        if n:
            eng_b.decrypt(bb)
            t2 = time.perf_counter_ns()
            bed.tun_b.write(bb)
            t3 = time.perf_counter_ns()
            stage["decrypt"] += t2 - t1
            stage["tun_write"] += t3 - t2
        stage["recv"] += t1 - t0
        return n

    span_a = span_b = 0
    for r in range(rounds + 1):          # round 0 warms up (Numba, caches), not counted
        for _ in range(packets):
            bed.gen.sendto(payload, (HOST_B, 6000))
        before = dict(stage)
        na, ta = drain(bed.tun_a.fileno(), step_a, packets)
        nb, tb = drain(bed.inp.fileno(), step_b, na)
        while True:                      # empty B's sink (not timed)
            try:
                bed.sink.recv(65536)
            except BlockingIOError:
                break
        if r == 0:
            stage.update(before)
            continue
        moved_a += na
        moved_b += nb
        span_a += ta
        span_b += tb
    per = {k: (v / moved_a if k in ("tun_read", "encrypt", "send") else v / max(moved_b, 1))
           for k, v in stage.items()}
    return {"size": size, "packets_a": moved_a, "packets_b": moved_b,
            "a_pps": moved_a / (span_a / 1e9) if span_a else 0.0,
            "b_pps": moved_b / (span_b / 1e9) if span_b else 0.0,
            "ns_per_packet": per, "lost": moved_a - moved_b,
            "errors": {"out": bed.out.counters()["tx_errno"],
                       "tun_b": bed.tun_b.counters()["tx_errno"]}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="64,1400", help="inner UDP payload bytes")
    ap.add_argument("--packets", type=int, default=2000, help="packets per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=256, help="PacketBatch capacity")
    ap.add_argument("--raw", action="store_true", help="raw ESP (IP proto 50), no NAT-T")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("netio_bench: needs root (network namespaces, TUN)", file=sys.stderr)
        return 1
    bed = Bed(args.raw)
    try:
        bed.up()
        print(f"backend: {Engine.backend()}; transport: "
              f"{'raw ESP' if args.raw else 'ESP-in-UDP (RFC 3948)'}; batch {args.batch}; "
              f"{args.rounds} rounds x {args.packets} packets")
        print(f"{'inner':>6} {'A kpps':>8} {'B kpps':>8}  ns/packet: "
              f"{'tun_read':>8} {'encrypt':>8} {'send':>8} | {'recv':>8} {'decrypt':>8} "
              f"{'tun_write':>9}  lost")
        for size in (int(s) for s in args.sizes.split(",")):
            r = run(bed, size, args.packets, args.rounds, args.batch)
            p = r["ns_per_packet"]
            errs = f"  errors {r['errors']}" if any(r["errors"].values()) else ""
            print(f"{size + 28:>6} {r['a_pps'] / 1e3:>8.1f} {r['b_pps'] / 1e3:>8.1f}  "
                  f"{'':>11}{p['tun_read']:>8.0f} {p['encrypt']:>8.0f} {p['send']:>8.0f} | "
                  f"{p['recv']:>8.0f} {p['decrypt']:>8.0f} {p['tun_write']:>9.0f}  "
                  f"{r['lost']}{errs}")
    finally:
        bed.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
