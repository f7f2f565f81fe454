"""The `spu` command: pcap encrypt/decrypt through the engine, and a demo.

    spu encrypt --sa SAFILE IN.pcap OUT.pcap [--stats-json STATS.json]
    spu decrypt --sa SAFILE IN.pcap OUT.pcap [--stats-json STATS.json]
    spu demo [--packets N] [--dir DIR]
    spu bench [--suites ..] [--sizes ..] [--duration SEC] [--json FILE] [--plot FILE.png] ..
    spu gateway --config JUNOS.conf | spu status | spu request ACTION VPN   (ike/cli.py)

Contract: ../shared/CONTRACT-SPU.md. Errors are one line on stderr and exit status 1;
nothing the input contains can produce a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Optional

from .batch import PacketBatch
from .engine import Engine
from .sa import SAConfig, SAParseError, parse_sa_file

BATCH_PACKETS = 1024
BATCH_BYTES = BATCH_PACKETS * 1600 + 2 * 65536   # room for two maximum-size packets


class CliError(Exception):
    """A one-line, user-facing error."""


def _pcap():
    # imported lazily so `spu --help` does not compile the pcap kernels
    from . import pcap
    return pcap


def run_pcap(direction: str, sas: list[SAConfig], src: str, dst: str,
             stats_json: Optional[str] = None,
             warn: Callable[[str], None] = lambda m: None, workers: int = 1,
             host_spu: bool = True, host_weight: Optional[float] = None) -> dict:
    """Stream IN through a fresh engine into OUT; returns the stats dict.

    Memory stays bounded: one batch of BATCH_PACKETS packets at a time. workers > 1
    spreads the SAs over that many SPUs (engine/spu.py): this process and workers - 1
    worker processes, or (host_spu=False) workers worker processes.
    """
    if workers > 1:
        return _run_pcap_spu(direction, sas, src, dst, stats_json, warn, workers, host_spu,
                             host_weight)
    pcap = _pcap()
    eng = Engine(max_sas=max(16, len(sas)))
    for cfg in sas:
        eng.install(cfg, "out" if direction == "encrypt" else "in")
    process = eng.encrypt if direction == "encrypt" else eng.decrypt
    try:
        reader = pcap.PcapReader(src)
    except pcap.PcapError as e:
        raise CliError(f"{src}: {e}") from None
    with reader:
        with pcap.PcapWriter(dst, like=reader) as writer:
            batch = PacketBatch(BATCH_PACKETS, data_bytes=BATCH_BYTES)
            while True:
                batch.clear()
                if reader.fill(batch) == 0:
                    break
                process(batch)
                writer.write(batch)
        if reader.truncated:
            warn(f"{src}: the last record is truncated; counted as malformed")
    stats = eng.stats()
    if stats_json:
        with open(stats_json, "w") as f:
            json.dump(stats, f, indent=2)
            f.write("\n")
    return stats


def _run_pcap_spu(direction: str, sas: list[SAConfig], src: str, dst: str,
                  stats_json: Optional[str], warn: Callable[[str], None], workers: int,
                  host_spu: bool, host_weight: Optional[float]) -> dict:
    """run_pcap over SPU workers: the same output and counters as one engine, plus
    `lost` (packets inside a worker that died) and per-SPU counters in the JSON."""
    from .spu import SpuCluster, SpuError
    pcap = _pcap()
    try:
        reader = pcap.PcapReader(src)
    except pcap.PcapError as e:
        raise CliError(f"{src}: {e}") from None
    try:
        with reader, pcap.PcapWriter(dst, like=reader) as writer, \
                SpuCluster(workers, capacity=BATCH_PACKETS, data_bytes=BATCH_BYTES,
                           max_sas=max(16, len(sas)), host_spu=host_spu,
                           **({} if host_weight is None else {"host_weight": host_weight})
                           ) as spus:
            for cfg in sas:
                spus.install(cfg, "out" if direction == "encrypt" else "in")
            for batch in spus.stream(direction, reader.fill):
                writer.write(batch)
            stats = spus.stats(per_spu=True)
    except SpuError as e:
        raise CliError(str(e)) from None
    if reader.truncated:
        warn(f"{src}: the last record is truncated; counted as malformed")
    if stats_json:
        with open(stats_json, "w") as f:
            json.dump(stats, f, indent=2)
            f.write("\n")
    return stats


def _host_weight(text: str) -> float:
    from .spu import host_weight_arg        # lazily, as _run_pcap_spu imports SpuCluster
    return host_weight_arg(text)


def _workers(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 64:
        raise argparse.ArgumentTypeError(f"bad worker count {text!r} (1..64)")
    return int(text)


def _load_sas(path: str) -> list[SAConfig]:
    try:
        return parse_sa_file(path)
    except SAParseError as e:
        raise CliError(f"{path}: {e}") from None


def _cmd_pcap(args) -> int:
    sas = _load_sas(args.sa)
    run_pcap(args.command, sas, args.input, args.output, args.stats_json,
             warn=lambda m: print(f"spu: warning: {m}", file=sys.stderr),
             workers=args.workers, host_spu=not args.dedicated_dispatcher,
             host_weight=args.host_weight)
    return 0


def _cmd_demo(args) -> int:
    from .demo import run_demo
    return run_demo(args.packets, args.dir)


def _cmd_bench(args) -> int:
    from bench.runner import run
    return run(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spu", description="pyspu: a batched IPsec engine")
    sub = p.add_subparsers(dest="command", required=True)
    for name, what in (("encrypt", "protect every packet of a capture with the first SA "
                                   "whose selector matches"),
                       ("decrypt", "recover the packets of an ESP/AH capture")):
        c = sub.add_parser(name, help=what, description=what)
        c.add_argument("--sa", required=True, metavar="SAFILE",
                       help="SAs, one `ip xfrm state` line each")
        c.add_argument("input", metavar="IN.pcap")
        c.add_argument("output", metavar="OUT.pcap")
        c.add_argument("--stats-json", metavar="STATS.json", help="write counters as JSON")
        c.add_argument("--workers", type=_workers, default=1, metavar="N",
                       help="SPUs (default 1: the engine in this process); SAs are spread "
                            "over them by the anchor of their peers. This process is SPU 0 "
                            "beside N-1 worker processes, unless --dedicated-dispatcher")
        c.add_argument("--dedicated-dispatcher", action="store_true",
                       help="with --workers N: N worker processes, and this process only "
                            "dispatches (for machines with more cores than SPUs)")
        c.add_argument("--host-weight", type=_host_weight, default=None, metavar="W",
                       help="with --workers N: this process's SPU takes W times a worker's "
                            "share of the SAs' anchors (default 1/3: it also dispatches)")
        c.set_defaults(func=_cmd_pcap)
    d = sub.add_parser("demo", help="encrypt and decrypt a generated capture, print counters")
    d.add_argument("--packets", type=int, default=100_000)
    d.add_argument("--dir", default=None, help="keep the demo captures here")
    d.set_defaults(func=_cmd_demo)
    from bench.runner import add_arguments as bench_arguments   # argparse only: cheap
    b = sub.add_parser("bench", help="measure the engine on a generated workload beside its "
                       "crypto ceiling and Python baselines",
                       description="Measure the engine on a generated workload (suites x "
                       "packet sizes x directions x batch sizes) beside its crypto ceiling and "
                       "per-packet Python and scapy baselines. Table on stdout, progress on "
                       "stderr.")
    bench_arguments(b)
    b.set_defaults(func=_cmd_bench)
    from ike.cli import add_commands as gateway_commands     # argparse only: cheap
    gateway_commands(sub)
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as e:
        print(f"spu: error: {e}", file=sys.stderr)

    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        print(f"spu: error: {where}{e.strerror or e}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    return 1


if __name__ == "__main__":
    # `python -m engine.cli`: run the imported module, not this __main__ copy, so that
    # CliError raised from ike/cli.py (which imports engine.cli) is the class caught here
    from engine.cli import main as _main
    sys.exit(_main())
