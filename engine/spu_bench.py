"""SPU scaling: throughput of 1, 2, ... worker processes beside the in-process engine.

    .venv/bin/python -m engine.spu_bench                    # 1400-byte AES-128-GCM, 1 and 2
    .venv/bin/python -m engine.spu_bench --workers 1,2 --size 1400 --duration 6 --json s.json

`measure_scaling()` is what `spu bench` (bench/) can call. The workload is T tunnels
(tunnel-mode SAs from 192.0.2.1 to T peers) carrying IPv4/UDP packets of one size,
interleaved packet by packet, so every batch holds every tunnel. The peers are chosen so
that their anchors fall on the SPUs of the largest configuration measured in proportion
to the SPUs' shares of the logical SPUs, as many random tunnels would: this measures how
the data path scales, not how lucky a hash was with T tunnels (one SA is bound to one
SPU: a single tunnel never runs faster than one SPU).

What is timed, per round: `batches` batches streamed through SpuCluster.stream. The
packets arrive (by default, --arrival owner) in the cluster's arrival area, as a NIC's
DMA would leave them: the dispatcher (this process) classifies each batch there, runs its
own SPU's share (hosted, the default), hands the rest to the workers and waits for it;
each SPU copies its own packets into the batch (one memcpy each) and runs the engine on
them. With --arrival fill the dispatcher copies each batch in before classifying it, as
`spu encrypt/decrypt --workers N` does with what it reads from a capture. They compete
for the same cores. The in-process engine does the same copies and the engine work
alone. Configurations alternate in blocks (BLOCKS per
configuration and direction) so that ratios see the same machine, and each block starts
with an untimed round; medians of the timed rounds are reported. A round is 256 batches
(262,144 packets) by default: every round starts with an empty pipeline (the worker waits
for the first batch, the dispatcher for the last), about one batch's time, which was 1.5%
of a 64-batch round and is 0.4% of this one. Blocks, not single
rounds, because what is measured is streaming throughput: alternating round by round, a
multi-process configuration restarted from idle every 13 ms, and on this VM a core that
went idle comes back slowly: 2-SPU rounds ran 200-230 ns per 1400-byte packet where,
streaming on, they run 155-165.
(Batches staged in advance would be cold in cache: the workers would then measure the
memory system, not the data path.)
"""
from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import struct
import sys
import time
from typing import Optional, Sequence, Union

import numpy as np

from .anchor import AnchorMap, anchor_of, logical_of
from .batch import HEADROOM, SLOT_ALIGN, TAILROOM, PacketBatch
from .engine import Engine
from .sa import MODE_TUNNEL, PROTO_ESP, SAConfig, Selector
from .spu import DEFAULT_RING, SpuCluster, host_weight_arg

LOCAL = "192.0.2.1"
BLOCKS = 4      # blocks of rounds per configuration and direction (measure_scaling)
MAX_TUNNELS = 254 * 256   # tunnel k's inner destinations: 10.2.0.0/24 ... 10.255.255.0/24


def _gcm128() -> SAConfig:
    return SAConfig(src=ipaddress.ip_address(LOCAL), dst=ipaddress.ip_address("198.51.100.1"),
                    proto=PROTO_ESP, spi=0x100, mode=MODE_TUNNEL, replay_window=1024,
                    aead="rfc4106(gcm(aes))", aead_key=bytes(range(1, 21)), icv_bits=128)


def tunnels(count: int, spread: Union[int, np.ndarray],
            template: Optional[SAConfig] = None) -> list[SAConfig]:
    """`count` tunnel SAs (transform and keys of `template`, default AES-128-GCM) to peers
    whose anchors fall on the SPUs in proportion to their shares of the logical SPUs, as
    many tunnels hashed at random would on average. `spread`: an owner table
    (AnchorMap.owner, logical SPU -> SPU), or a number of equal SPUs (a fresh AnchorMap:
    logical SPU l is on SPU l % spread). Tunnel k protects 10.1.0.0/16 -> _inner(k).0/24."""
    if not 1 <= count <= MAX_TUNNELS:
        raise ValueError(f"tunnels must be 1..{MAX_TUNNELS}")
    template = template or _gcm128()
    owner = AnchorMap(range(spread)).owner if isinstance(spread, int) else np.asarray(spread)
    quota = _quotas(count, np.bincount(owner))
    per = [0] * len(quota)
    out: list[SAConfig] = []
    host = 0
    while len(out) < count:
        host += 1
        peer = ipaddress.ip_address(int(ipaddress.ip_address("198.51.100.0")) + host)
        cfg = dataclasses.replace(
            template, src=ipaddress.ip_address(LOCAL), dst=peer, spi=0x1000 + len(out),
            sel=Selector(ipaddress.ip_network("10.1.0.0/16"),
                         ipaddress.ip_network(f"{_inner(len(out))}.0/24")))
        w = int(owner[logical_of(anchor_of(cfg), len(owner))])
        if per[w] < quota[w]:
            per[w] += 1
            out.append(cfg)
    return out


def _inner(k: int) -> str:
    """The first three bytes of tunnel k's inner destination /24: 10.2.0 to 10.255.255."""
    return f"10.{2 + k // 256}.{k % 256}"


def _quotas(count: int, slots: np.ndarray) -> list[int]:
    """count split in proportion to slots, by largest remainder (ties: lowest SPU)."""
    exact = count * slots / slots.sum()
    quota = [int(x) for x in np.floor(exact)]
    for s in sorted(range(len(quota)), key=lambda s: (quota[s] - exact[s], s)):
        if sum(quota) == count:
            break
        quota[s] += 1
    return quota


def udp_packets(size: int, count: int, n_tunnels: int) -> list[bytes]:
    """IPv4/UDP packets of `size` bytes; packet i goes to tunnel i % n_tunnels."""
    out = []
    body = bytes(range(256)) * (size // 256 + 1)
    for i in range(count):
        k = i % n_tunnels
        hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, size, i & 0xFFFF, 0x4000, 64, 17,
                                    0, bytes([10, 1, i >> 8 & 0xFF, i & 0xFF]),
                                    ipaddress.ip_address(f"{_inner(k)}.1").packed))
        acc = sum(struct.unpack("!10H", hdr))
        while acc >> 16:
            acc = (acc & 0xFFFF) + (acc >> 16)
        struct.pack_into("!H", hdr, 10, ~acc & 0xFFFF)
        out.append(bytes(hdr) + struct.pack("!HHHH", 1024 + i % 512, 4791, size - 20, 0)
                   + body[:size - 28])
    return out


class _Source:
    """One batch worth of input packets, given to each batch the loop asks for, `count`
    batches per round: copied in with one memcpy (the packets' arrival: a NIC ring's DMA,
    a recvmmsg), or, with `arrival` (a cluster's arrival area), left there and pointed
    at (batch.arrive_from), for each packet's owner SPU to copy in."""

    def __init__(self, packets: list[bytes], count: int, data_bytes: int,
                 arrival: Optional[np.ndarray] = None):
        self.t = PacketBatch(len(packets), data_bytes=data_bytes)
        for p in packets:
            self.t.add(p)
        self.arrival = arrival
        if arrival is not None:
            if arrival.size < self.t.used:
                raise ValueError("the arrival area is smaller than one batch")
            arrival[:self.t.used] = self.t.buf[:self.t.used]
        self.count = count
        self.left = 0

    def start(self) -> "_Source":
        self.left = self.count
        return self

    def __call__(self, b: PacketBatch) -> int:
        if self.left == 0:
            return 0
        self.left -= 1
        t, n, used = self.t, self.t.count, self.t.used
        if self.arrival is None:
            np.copyto(b.buf[:used], t.buf[:used])
            for name in ("off", "slot_start", "slot_end"):
                np.copyto(getattr(b, name)[:n], getattr(t, name)[:n])
        else:                   # where they wait (the cluster lays out their slots)
            np.copyto(b.arrive_from[:n], t.off[:n])
        np.copyto(b.length[:n], t.length[:n])
        b.drop[:n] = 0
        b.sa[:n] = -1
        b.count, b.used = n, used
        return n


#: How the benchmark's packets get into the batches (measure_scaling `arrival`)
ARRIVALS = ("owner", "dispatcher", "fill")


def measure_scaling(workers: Sequence[int] = (1, 2), size: int = 1400,
                    directions: Sequence[str] = ("encrypt", "decrypt"), n_tunnels: int = 8,
                    batch: int = 1024, batches: int = 256, ring: int = DEFAULT_RING,
                    duration: float = 4.0, template: Optional[SAConfig] = None,
                    inprocess: bool = True, backend: str = "auto", progress=None,
                    host_spu: bool = True, host_weight: Optional[float] = None,
                    balance: Optional[float] = None, arrival: str = "owner") -> dict:
    """Throughput of the SPU data path for each worker count (and the in-process engine).

    A round streams `batches` batches of `batch` packets through SpuCluster.stream with a
    ring of `ring` batches, exactly as `spu encrypt/decrypt --workers N` does minus the
    file I/O: the dispatcher copies each batch in (the input), classifies it, hands it to
    the workers and waits for it. The in-process engine does the same copies and the
    engine work in one process. Decrypt runs replay the same ciphertexts every batch, so
    their SAs have anti-replay off (replay-window 0); the ICV is still checked.

    host_spu (default, as `spu encrypt --workers N` runs): N SPUs are this process and
    N-1 worker processes (1 worker: this process alone, through the same dispatch code);
    False: N worker processes beside a dispatcher that only dispatches. The tunnels'
    anchors follow the largest cluster's shares of the logical SPUs (the hosted SPU's
    share is smaller: SpuCluster host_weight, whose default depends on `arrival`).

    arrival "owner" (default): packets arrive in each cluster's arrival area, as a NIC's
    DMA leaves them, and each packet's owner SPU copies it into the batch, its SPU's
    packets side by side (SpuCluster arrival_bytes); "dispatcher": the same, but the
    dispatcher copies every packet in; "fill": the dispatcher copies each batch in before
    it is classified, in input order (as `spu encrypt` reads a capture), so the SPUs'
    packets are interleaved. Either way every packet is copied once, as in the
    in-process engine.

    Returns {"size", "tunnels", "batch", "batches", "ring", "backend", "host_spu", "arrival",
    "results": [{"direction", "config" ("inprocess" | "workers"), "workers", "host_spu",
    "mpps", "gbps" (IP payload bits), "ns_per_packet", "rounds", "block_ns_per_packet" (each
    block's median, in the order run)}], "speedup":
    {direction: {N: mpps(N workers) / mpps(1 worker)}}}. `duration` is the wall-clock
    budget per direction, shared by the configurations; each configuration's value is
    its median round.
    """
    if arrival not in ARRIVALS:
        raise ValueError(f"arrival must be one of {ARRIVALS}")
    workers = sorted(set(int(w) for w in workers))
    data_bytes = batch * (size + 128)
    area = data_bytes + batch * (HEADROOM + TAILROOM + SLOT_ALIGN)   # a batch's buffer
    area = area if arrival != "fill" else 0
    clusters: dict[int, SpuCluster] = {}
    results = []
    try:
        for w in workers:
            clusters[w] = SpuCluster(w, capacity=batch, data_bytes=data_bytes, ring=ring,
                                     max_sas=max(16, 2 * n_tunnels), backend=backend,
                                     host_spu=host_spu, host_weight=host_weight,
                                     balance=balance, arrival_bytes=area,
                                     arrival_copy="owner" if arrival == "fill" else arrival)
        # the tunnels follow the largest cluster's shares of the logical SPUs
        spread = clusters[workers[-1]].anchors.owner if workers else 1
        out_sas = tunnels(n_tunnels, spread, template)
        in_sas = [dataclasses.replace(c, replay_window=0) for c in out_sas]
        plain = udp_packets(size, batch, n_tunnels)
        peer = Engine(max_sas=max(16, 2 * n_tunnels))
        for cfg in out_sas:
            peer.install(cfg, "out")
        pb = PacketBatch.from_packets(plain)
        peer.encrypt(pb)
        inputs = {"encrypt": plain, "decrypt": pb.packets()}
        label = next(iter(clusters.values())).backend() if clusters else Engine.backend()
        own = PacketBatch(batch, data_bytes=data_bytes)
        for direction in directions:
            enc = direction == "encrypt"
            sas = out_sas if enc else in_sas
            configs: list[tuple[str, int, object, _Source]] = []
            if inprocess:
                eng = Engine(max_sas=max(16, 2 * n_tunnels), backend=backend)
                for cfg in sas:
                    eng.install(cfg, "out" if enc else "in")
                configs.append(("inprocess", 1, eng,
                                _Source(inputs[direction], batches, data_bytes)))
            for w, cl in clusters.items():
                for h in list(cl.handles()):
                    cl.remove(h)
                for cfg in sas:
                    cl.install(cfg, "out" if enc else "in")
                configs.append(("workers", w, cl, _Source(inputs[direction], batches,
                                                          data_bytes, cl.arrival)))
            times: list[list[float]] = [[] for _ in configs]
            blocks: list[list[float]] = [[] for _ in configs]    # each block's median
            # configurations alternate in blocks of rounds; each block starts with an
            # untimed warm-up round (see the module doc: steady state, not wake-up)
            end = time.monotonic() + duration
            block = duration / (BLOCKS * max(1, len(configs)))
            while not all(len(ts) >= 2 for ts in times) or time.monotonic() < end:
                for c, (kind, w, obj, source) in enumerate(configs):
                    _round(kind, obj, source.start(), enc, own)
                    stop = time.monotonic() + block
                    first = len(times[c])
                    while True:
                        times[c].append(_round(kind, obj, source.start(), enc, own))
                        if time.monotonic() >= stop:
                            break
                    blocks[c].append(float(np.median(times[c][first:])))
            pkts = batches * batch
            for (kind, w, _, _), ts, bl in zip(configs, times, blocks):
                med = float(np.median(ts))
                results.append({"direction": direction, "config": kind, "workers": w,
                                "host_spu": kind == "workers" and host_spu,
                                "mpps": pkts / med / 1e6,
                                "gbps": pkts * size * 8 / med / 1e9,
                                "ns_per_packet": med / pkts * 1e9, "rounds": len(ts),
                                "block_ns_per_packet": [b / pkts * 1e9 for b in bl]})
                if progress:
                    progress(results[-1])
    finally:
        for cl in clusters.values():
            cl.close()
    speedup: dict = {}
    for d in directions:
        base = [x["mpps"] for x in results
                if x["direction"] == d and x["config"] == "workers" and x["workers"] == 1]
        if base:
            speedup[d] = {x["workers"]: x["mpps"] / base[0] for x in results
                          if x["direction"] == d and x["config"] == "workers"}
    return {"size": size, "tunnels": n_tunnels, "batch": batch, "batches": batches,
            "ring": ring, "backend": label, "host_spu": host_spu, "arrival": arrival,
            "results": results, "speedup": speedup}


def _independent_main(barrier, results, sas, packets, enc, batches, data_bytes, duration,
                      backend) -> None:
    """One of N processes each running its own in-process engine on its own copy of the
    traffic, at the same time: what N cores give with no dispatch at all."""
    eng = Engine(max_sas=max(16, 2 * len(sas)), backend=backend)
    for cfg in sas:
        eng.install(cfg, "out" if enc else "in")
    source = _Source(packets, batches, data_bytes)
    own = PacketBatch(len(packets), data_bytes=data_bytes)
    _round("inprocess", eng, source.start(), enc, own)            # warm-up
    barrier.wait(timeout=120)
    ts = []
    end = time.monotonic() + duration
    while len(ts) < 3 or time.monotonic() < end:
        ts.append(_round("inprocess", eng, source.start(), enc, own))
    results.put(float(np.median(ts)))


def measure_independent(n: int, direction: str = "encrypt", size: int = 1400,
                        n_tunnels: int = 8, batch: int = 1024, batches: int = 256,
                        duration: float = 3.0, template: Optional[SAConfig] = None,
                        backend: str = "auto") -> dict:
    """The machine's own ceiling for n engines: n processes, each an in-process engine
    on its own traffic, measured at the same time (no dispatcher, nothing shared).
    Returns {"processes", "mpps" (aggregate), "ns_per_packet" (of the aggregate)}."""
    import multiprocessing as mp
    enc = direction == "encrypt"
    out_sas = tunnels(n_tunnels, 1, template)
    sas = out_sas if enc else [dataclasses.replace(c, replay_window=0) for c in out_sas]
    packets = udp_packets(size, batch, n_tunnels)
    if not enc:
        peer = Engine(max_sas=max(16, 2 * n_tunnels))
        for cfg in out_sas:
            peer.install(cfg, "out")
        pb = PacketBatch.from_packets(packets)
        peer.encrypt(pb)
        packets = pb.packets()
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(n), ctx.Queue()
    args = (barrier, results, sas, packets, enc, batches, batch * (size + 128), duration,
            backend)
    procs = [ctx.Process(target=_independent_main, args=args, daemon=True) for _ in range(n)]
    try:
        for p in procs:
            p.start()
        medians = [results.get(timeout=300) for _ in procs]
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join()
    mpps = sum(batches * batch / t for t in medians) / 1e6
    return {"processes": n, "mpps": mpps, "ns_per_packet": 1e3 / mpps}


def _round(kind: str, obj, source: _Source, enc: bool, own: PacketBatch) -> float:
    """One timed round; returns seconds. Raises if the engine dropped a packet."""
    bad = 0
    if kind == "workers":
        t = time.perf_counter()
        for b in obj.stream("encrypt" if enc else "decrypt", source):
            bad += int(b.drop[:b.count].any())
        t = time.perf_counter() - t
    else:
        run = obj.encrypt if enc else obj.decrypt
        t = time.perf_counter()
        while True:
            own.clear()
            if source(own) == 0:
                break
            run(own)
            bad += int(own.drop[:own.count].any())
        t = time.perf_counter() - t
    if bad:
        raise RuntimeError(f"{kind}: packets were dropped in the benchmark")
    return t


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.spu_bench", description=__doc__.split(
        "\n\n")[0])
    p.add_argument("--workers", default="1,2", help="worker counts (default 1,2)")
    p.add_argument("--size", type=int, default=1400, help="IP packet bytes (default 1400)")
    p.add_argument("--tunnels", type=int, default=8, help=f"1..{MAX_TUNNELS} (default 8)")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--batches", type=int, default=256,
                   help="batches per round (default 256: see the module doc)")
    p.add_argument("--ring", type=int, default=DEFAULT_RING,
                   help=f"ring batches in flight (default {DEFAULT_RING})")
    p.add_argument("--duration", type=float, default=4.0, help="seconds per direction")
    p.add_argument("--directions", default="encrypt,decrypt")
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--backend", default="auto", help="engine crypto backend (Engine)")
    p.add_argument("--dispatcher", choices=("hosted", "dedicated"), default="hosted",
                   help="hosted (default): the dispatcher is SPU 0 beside N-1 worker "
                        "processes (`spu encrypt --workers N`); dedicated: N worker "
                        "processes beside a dispatcher that only dispatches")
    p.add_argument("--balance", type=float, default=None, metavar="SEC",
                   help="move logical SPUs between SPUs by measured load every SEC "
                        "seconds of streaming (SpuCluster balance; default off)")
    p.add_argument("--host-weight", type=host_weight_arg, default=None,
                   help="the dispatcher's SPU's share of logical SPUs relative to a "
                        "worker's (default: SpuCluster's for the --arrival chosen)")
    p.add_argument("--arrival", choices=ARRIVALS, default="owner",
                   help="owner (default): packets wait in the arrival area and each SPU "
                        "copies in its own; dispatcher: the dispatcher copies them in; "
                        "fill: the dispatcher copies each batch in, in input order")
    p.add_argument("--show-blocks", action="store_true",
                   help="also print each block's median: the machine's phases show there")
    p.add_argument("--ceiling", action="store_true",
                   help="also run N independent in-process engines at once (no dispatch, "
                        "nothing shared): the machine's own ceiling for N workers")
    a = p.parse_args(argv)
    if not 1 <= a.tunnels <= MAX_TUNNELS:
        p.error(f"--tunnels must be 1..{MAX_TUNNELS}")

    def show(row):
        what = "in-process engine" if row["config"] == "inprocess" else \
            f"{row['workers']} worker{'s' if row['workers'] > 1 else ''}"
        print(f"  {row['direction']:8} {what:18} {row['mpps']:7.3f} Mpps {row['gbps']:7.2f} "
              f"Gbit/s {row['ns_per_packet']:7.1f} ns/pkt  ({row['rounds']} rounds)",
              flush=True)
        if a.show_blocks:
            print("    blocks, in order (median ns/pkt): "
                  + " ".join(f"{x:.0f}" for x in row["block_ns_per_packet"]), flush=True)

    res = measure_scaling([int(x) for x in a.workers.split(",")], a.size,
                          a.directions.split(","), a.tunnels, a.batch, a.batches, a.ring,
                          a.duration, backend=a.backend, progress=show,
                          host_spu=a.dispatcher == "hosted", host_weight=a.host_weight,
                          balance=a.balance, arrival=a.arrival)
    print(f"backend {res['backend']}; {a.size}-byte packets, {a.tunnels} tunnels, "
          f"batch {a.batch}; {a.dispatcher} dispatcher; copied in by the {a.arrival}")
    for d, s in res["speedup"].items():
        print(f"  {d}: " + ", ".join(f"{w} workers {x:.2f}x" for w, x in s.items()))
    if a.ceiling:
        res["independent"] = []
        for d in a.directions.split(","):
            for n in sorted({int(x) for x in a.workers.split(",")}):
                r = measure_independent(n, d, a.size, a.tunnels, a.batch, a.batches,
                                        a.duration / 2, backend=a.backend)
                r["direction"] = d
                res["independent"].append(r)
                print(f"  {d:8} {n} independent engine{'s' if n > 1 else ''} "
                      f"{r['mpps']:7.3f} Mpps {r['mpps'] * a.size * 8 / 1e3:7.2f} Gbit/s "
                      f"(aggregate, no dispatch)", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
