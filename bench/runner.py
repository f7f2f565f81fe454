"""`spu bench`: engine throughput beside its crypto ceiling and two Python baselines.

For every case (suite x packet size x direction x batch size) the runner measures, on the
same generated packets (bench/workload.py):

- the engine: Engine.encrypt / Engine.decrypt over one batch, replayed: the batch is
  restored before every run (both directions work in place) outside the clocked call;
- the ceiling (bench/ceiling.py): the engine's own crypto pass on op rows prepared once,
  so engine / ceiling is a ratio measured in one run;
- a per-packet Python ESP on `cryptography` and scapy's SecurityAssociation
  (bench/reference.py), on the same packets for as long as their budget lasts (scapy
  cycles through at most the first 200).

`--duration` seconds per case are shared out: engine 40%, ceiling 30%, Python 15%,
scapy 15% (plus 30% more with --profile), in wall time: a busy machine gives fewer
samples, not a longer run. Each share is split into `--repeats` repeats of clocked
rounds (batches, or chunks of packets for the baselines); a repeat's value is its median
round, and the report gives the median of the repeats with their min-max spread.
Medians, not sums: on a shared machine a round that lost the CPU to another process
would otherwise count as engine time. (The first design, a restore-only loop subtracted
from a restore+run loop, read 2x too slow under a load of 3 on 2 cores.)

`--workers 1,N`: for each suite, size and direction, N > 1 also runs SpuCluster with N
SPUs (the dispatcher's own and N-1 worker processes) and with 1, in the same alternating
rounds (engine.spu.measure_scaling: batches streamed as `spu encrypt/decrypt --workers N`
does, minus the file I/O); records with "workers": N, and a footer of "N workers / 1
worker" ratios from that one run.

Only the top-level imports here are cheap (argparse and the pure-Python algorithm
table), so that `spu --help` stays fast.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from .workload import (DEFAULT_SIZES, DEFAULT_SUITES, IMIX_PATTERN, Suite, SuiteError,
                       imix_mean, parse_sizes, parse_suites, size_list)

DEFAULT_DURATION = 0.8
DEFAULT_REPEATS = 5
DEFAULT_BATCH = 1024
SCAPY_SAMPLE = 200
SHARE = {"engine": 0.40, "ceiling": 0.30, "python": 0.15, "scapy": 0.15, "profile": 0.30}
DIRECTIONS = ("encrypt", "decrypt")
WORKER_PACKETS = 16384     # packets per SpuCluster round (batches of --batch, at least 8)


class BenchError(Exception):
    """A one-line, user-facing error."""


# ---------------------------------------------------------------------------------------
# arguments
# ---------------------------------------------------------------------------------------
def _arg(parse: Callable):
    def conv(text: str):
        try:
            return parse(text)
        except SuiteError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    conv.__name__ = parse.__name__
    return conv


def _directions(text: str) -> list[str]:
    out = []
    for d in (p.strip() for p in text.split(",")):
        items = DIRECTIONS if d == "both" else (d,)
        for item in items:
            if item not in DIRECTIONS:
                raise argparse.ArgumentTypeError(
                    f"bad direction {item!r} (encrypt, decrypt or both)")
            if item not in out:
                out.append(item)
    return out


def _batches(text: str) -> list[int]:
    out = []
    for p in text.split(","):
        if not p.strip().isdigit() or not 1 <= int(p) <= 65536:
            raise argparse.ArgumentTypeError(f"bad batch size {p.strip()!r} (1..65536 packets)")
        out.append(int(p))
    return out


MAX_WORKERS = 64           # engine.spu.MAX_SPUS (not imported: `spu --help` stays fast)


def _workers(text: str) -> list[int]:
    out = []
    for p in text.split(","):
        if not p.strip().isdigit() or not 1 <= int(p) <= MAX_WORKERS:
            raise argparse.ArgumentTypeError(
                f"bad worker count {p.strip()!r} (1..{MAX_WORKERS})")
        out.append(int(p))
    return sorted(set(out))


def _positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad number {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return v


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"bad count {text!r} (a positive integer)")
    return int(text)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `spu bench` options (engine/cli.py adds them to its `bench` subcommand)."""
    p.add_argument("--suites", type=_arg(parse_suites), default=None, metavar="LIST",
                   help="algorithm suites, comma-separated, named as in SA lines with key "
                        "and ICV bits: CIPHER[/KEYBITS[/ICVBITS]][+AUTH[/ICVBITS]], e.g. "
                        "'rfc4106(gcm(aes))/256,cbc(aes)/128+hmac(sha1)/96'; 'default' "
                        f"({len(DEFAULT_SUITES)} suites) or 'all' (every algorithm)")
    p.add_argument("--sizes", type=_arg(parse_sizes), default=None, metavar="LIST",
                   help="IP packet sizes in bytes and/or 'imix' (7:4:1 of 64/576/1500), "
                        "default: " + ",".join(map(str, DEFAULT_SIZES)))
    p.add_argument("--directions", type=_directions, default=list(DIRECTIONS),
                   metavar="LIST", help="encrypt, decrypt or both (default both)")
    p.add_argument("--batch", type=_batches, default=[DEFAULT_BATCH], metavar="N[,N..]",
                   help=f"packets per batch, one or more (default {DEFAULT_BATCH})")
    p.add_argument("--workers", type=_workers, default=[1], metavar="N[,N..]",
                   help="SPU worker counts, e.g. 1,2 (default 1). 1 is the in-process "
                        "engine, always measured. Each N > 1 adds, per suite, size and "
                        "direction, a row (and a JSON record with \"workers\": N) measured "
                        "through SpuCluster with N SPUs (this process and N-1 worker "
                        "processes), batches streamed as "
                        "`spu encrypt/decrypt --workers N` does (8 tunnels, no file I/O; "
                        "engine/spu_bench.py), plus a 1-worker SpuCluster run in the same "
                        "rounds, and the footer gives N workers / 1 worker; IMIX has no "
                        "worker rows")
    p.add_argument("--duration", type=_positive, default=DEFAULT_DURATION, metavar="SEC",
                   help="timed seconds per case, shared by the engine, the ceiling and the "
                        f"baselines, each split into --repeats repeats (default "
                        f"{DEFAULT_DURATION})")
    p.add_argument("--repeats", type=_count, default=DEFAULT_REPEATS, metavar="N",
                   help=f"repeats per measurement; medians are reported (default "
                        f"{DEFAULT_REPEATS})")
    p.add_argument("--backend", choices=("auto", "openssl", "ipsec-mb"), default="auto",
                   help="crypto backend of the engines (engine/backends.py): auto = Intel "
                        "multi-buffer where it runs the suite, else OpenSSL (default)")
    p.add_argument("--no-baselines", action="store_true",
                   help="skip the Python and scapy baselines (their columns are null)")
    p.add_argument("--profile", action="store_true",
                   help="also split each case into stages: parse+SA lookup, replay, "
                        "crypto, headers/padding, dispatch and I/O, in ns/packet and "
                        "percent (a \"profile\" object per --json record; partial "
                        "pipelines differenced, bench/stages.py; with --workers, the ring "
                        "hand-off)")
    p.add_argument("--perf", nargs="?", const="perf.data", default=None, metavar="DATA",
                   help="run this bench again in a child process under `perf record -g` "
                        "(Numba kernels named through /tmp/perf-<pid>.map) and print the "
                        "top of `perf report`; DATA is perf's output (default perf.data). "
                        "Without a usable perf, `py-spy record --native` if installed "
                        "(bench/perf.py)")
    p.add_argument("--json", metavar="FILE", default=None,
                   help="write one record per case as a JSON list")
    p.add_argument("--plot", metavar="FILE.png", default=None,
                   help="plot throughput vs packet size per suite with the ceiling "
                        "(needs matplotlib)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spu bench", description="Measure the engine on a generated workload, beside "
        "its crypto ceiling and per-packet Python and scapy baselines.")
    add_arguments(p)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run(build_parser().parse_args(argv))


# ---------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------
@dataclass
class Timing:
    """ns per packet, median over repeats, and the spread."""
    ns: float
    ns_min: float
    ns_max: float
    repeats: int
    packets: int      # packets per repeat

    @property
    def mpps(self) -> float:
        return 1e3 / self.ns

    @property
    def mpps_min(self) -> float:
        return 1e3 / self.ns_max

    @property
    def mpps_max(self) -> float:
        return 1e3 / self.ns_min


def _summary(samples: list[float], packets: int) -> Optional[Timing]:
    good = sorted(s for s in samples if s > 0)
    if not good:
        return None        # clock noise larger than the work: no number, not a wrong one
    return Timing(_median(good), good[0], good[-1], len(good), packets)


_CLOCK_OVERHEAD: list[float] = []


def clock_overhead() -> float:
    """Seconds one perf_counter() pair costs (median), subtracted from every sample."""
    if not _CLOCK_OVERHEAD:
        c = time.perf_counter
        ts = []
        for _ in range(501):
            t = c()
            ts.append(c() - t)
        _CLOCK_OVERHEAD.append(sorted(ts)[len(ts) // 2])
    return _CLOCK_OVERHEAD[0]


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


@dataclass
class Replay:
    """One thing to replay on a batch of n packets: `run` clocked, `restore` (if any) not."""
    run: Callable[[], None]
    restore: Optional[Callable[[], None]]
    n: int
    budget: float       # seconds for all its repeats


def time_batches(jobs: list[Replay], repeats: int) -> list[Optional[Timing]]:
    """Replay batches. Every round restores the batch (untimed: in-place work destroys its
    input) and clocks `run` alone; a repeat runs rounds for its slice of the job's budget
    (at least 3) and its value is the median round, so a round that lost the CPU to another
    process does not count. The jobs' repeats are interleaved (engine, ceiling, engine,
    ceiling, ...) so that a ratio between them sees the same machine. Budgets are wall
    time: a busy machine gives fewer rounds, not a longer run. The caller has warmed each
    `run` up already."""
    clock = time.perf_counter
    ovh = clock_overhead()
    values: list[list[float]] = [[] for _ in jobs]
    rounds = [0] * len(jobs)
    for _ in range(repeats):
        for k, j in enumerate(jobs):
            ts: list[float] = []
            end = clock() + j.budget / repeats
            while len(ts) < 3 or clock() < end:
                if j.restore:
                    j.restore()
                t = clock()
                j.run()
                ts.append(clock() - t - ovh)
            values[k].append(_median(ts) / j.n * 1e9)
            rounds[k] += len(ts)
    return [_summary(v, j.n * r // repeats) for v, j, r in zip(values, jobs, rounds)]


def time_packets(fn: Callable[[bytes], object], items: list[bytes], reset: Callable[[], None],
                 budget: float, repeats: int, cap: Optional[int] = None,
                 quantum: int = 1) -> Optional[Timing]:
    """Per-packet baselines: `fn` on the packets of `items` (the first `cap`) one by one,
    in clocked chunks of whole `quantum`s (IMIX periods); a repeat goes on for its slice of
    the budget (at least one chunk), cycling through the sample with `reset` (untimed, a
    fresh SA state) at every start. A repeat's value is its median chunk."""
    clock = time.perf_counter
    ovh = clock_overhead()
    items = items[:cap] if cap else items
    chunk = min(len(items), -(-16 // quantum) * quantum)
    usable = len(items) // chunk * chunk
    values, done = [], 0
    for _ in range(repeats):
        ts: list[float] = []
        end = clock() + budget / repeats
        pos = usable
        while not ts or clock() < end:
            if pos >= usable:
                reset()
                pos = 0
            part = items[pos:pos + chunk]
            pos += chunk
            t = clock()
            for x in part:
                fn(x)
            ts.append((clock() - t - ovh) / chunk)
        values.append(_median(ts) * 1e9)
        done += len(ts) * chunk
    return _summary(values, done // repeats)


# ---------------------------------------------------------------------------------------
# the machine
# ---------------------------------------------------------------------------------------
def cpu_info() -> dict:
    """CPU model and its frequency from /proc/cpuinfo ("cpu MHz": the nominal or current
    clock as the kernel reports it; cycles derived from it are an estimate)."""
    model, mhz = None, None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key == "cpu MHz" and mhz is None:
                    try:
                        mhz = float(value)
                    except ValueError:
                        pass
    except OSError:
        pass
    return {"model": model, "mhz": mhz, "cores": os.cpu_count()}


# ---------------------------------------------------------------------------------------
# progress (stderr, plain text)
# ---------------------------------------------------------------------------------------
class Progress:
    WIDTH = 28

    def __init__(self, total: int, stream=None):
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.t0 = time.monotonic()
        self._last = 0

    @staticmethod
    def _clock(s: float) -> str:
        s = int(s + 0.5)
        return f"{s // 60}:{s % 60:02d}"

    def show(self, what: str) -> None:
        el = time.monotonic() - self.t0
        eta = el / self.done * (self.total - self.done) if self.done else None
        fill = self.WIDTH * self.done // max(self.total, 1)
        bar = "#" * fill + "." * (self.WIDTH - fill)
        text = (f"[{bar}] {self.done}/{self.total} {self._clock(el)} elapsed"
                + (f", ~{self._clock(eta)} left" if eta is not None else "") + f"  {what}")
        if self.tty:
            pad = max(0, self._last - len(text))
            self.stream.write("\r" + text + " " * pad)
            self._last = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def step(self, what: str) -> None:
        self.done += 1
        self.show(what)

    def doing(self, what: str) -> None:
        """What runs now: shown on a terminal only (a log gets one line per finished case)."""
        if self.tty:
            self.show(what)

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _load() -> Optional[float]:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def note(text: str) -> None:
    print(f"spu bench: {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# one suite's setup, one case's measurements
# ---------------------------------------------------------------------------------------
class SuiteBench:
    """Both engines (one "out", one "in" SA), the baselines and their cross-checks."""

    def __init__(self, suite: Suite, baselines: bool, notes: dict, backend: str = "auto"):
        from engine.engine import Engine

        from .reference import PythonESP, ScapyESP, check_against_engine, scapy_missing
        from .workload import packets

        self.suite = suite
        self.cfg = suite.sa()
        self.backend = backend
        self.enc = Engine(max_sas=4, backend=backend)
        self.slot_out = self.enc.install(self.cfg, "out")
        self.ran_on = self.enc.backend_of(self.slot_out)     # what the records say ran
        self.dec = Engine(max_sas=4, backend=backend)
        self.dec.install(self.cfg, "in")
        self.python = self.scapy = None
        sample = packets(64, 4) + packets(1400, 2) + packets("imix", 12)
        if not baselines:
            return
        self.python = PythonESP(self.cfg)
        check_against_engine(self.python, self.engine_encrypt, self.engine_decrypt, sample)
        why = scapy_missing()
        if why:
            notes.setdefault("scapy", f"{why}: no scapy baseline (scapy_mpps null)")
            return
        try:
            self.scapy = ScapyESP(self.cfg)
            check_against_engine(self.scapy, self.engine_encrypt, self.engine_decrypt, sample)
        except NotImplementedError as e:
            notes.setdefault(f"scapy-{suite.name}", f"{suite.name}: {e}")
            self.scapy = None

    # fresh-engine conveniences for the cross-checks (not timed)
    def engine_encrypt(self, pkts: list[bytes]) -> list[bytes]:
        from engine.batch import PacketBatch
        from engine.engine import Engine
        e = Engine(max_sas=4, backend=self.backend)
        e.install(self.cfg, "out")
        b = PacketBatch.from_packets(pkts)
        e.encrypt(b)
        if b.drop[:b.count].any():
            raise RuntimeError(f"{self.suite.name}: the engine dropped bench packets on encrypt")
        return b.packets()

    def engine_decrypt(self, pkts: list[bytes]) -> list[Optional[bytes]]:
        from engine.batch import PacketBatch
        from engine.engine import Engine
        e = Engine(max_sas=4, backend=self.backend)
        e.install(self.cfg, "in")
        b = PacketBatch.from_packets(pkts)
        e.decrypt(b)
        return [None if b.drop[i] else b.packet(i) for i in range(b.count)]


class CaseData:
    """One (suite, size, batch): the plaintext batch, its ESP batch, restore closures."""

    def __init__(self, sb: SuiteBench, size, batch: int):
        import numpy as np

        from engine.batch import PacketBatch

        from .workload import packets

        self.plain = packets(size, batch)
        self.quantum = len(IMIX_PATTERN) if size == "imix" else 1
        self.esp = sb.engine_encrypt(self.plain)
        self.payload_bytes = sum(map(len, self.plain))
        self.wire_bytes = sum(map(len, self.esp))
        self.n = batch
        self.P = PacketBatch.from_packets(self.plain)
        self.E = PacketBatch.from_packets(self.esp)
        snap = {}
        for name, b in (("P", self.P), ("E", self.E)):
            snap[name] = (b.buf.copy(), b.off.copy(), b.length.copy())
        rec = sb.enc.sad.rec
        slot = sb.slot_out
        top, bitmap = sb.dec.sad.top, sb.dec.sad.bitmap

        def restore_plain():
            buf, off, length = snap["P"]
            np.copyto(self.P.buf, buf)
            np.copyto(self.P.off, off)
            np.copyto(self.P.length, length)
            self.P.drop[:] = 0
            self.P.sa[:] = -1
            rec["seq_out"][slot] = 0      # same sequence numbers, same IVs every run

        def restore_esp():
            buf, off, length = snap["E"]
            np.copyto(self.E.buf, buf)
            np.copyto(self.E.off, off)
            np.copyto(self.E.length, length)
            self.E.drop[:] = 0
            self.E.sa[:] = -1
            top[:] = 0                    # a fresh replay window: the batch is new again
            bitmap[:] = 0

        self.restore_plain = restore_plain
        self.restore_esp = restore_esp

    def copy(self, direction: str):
        """A second batch of the same packets (the ceiling's own)."""
        from engine.batch import PacketBatch
        return PacketBatch.from_packets(self.plain if direction == "encrypt" else self.esp)


def measure_case(sb: SuiteBench, cd: CaseData, direction: str, args) -> dict:
    from .ceiling import Ceiling, Passes

    D, R, n = args.duration, args.repeats, cd.n
    enc = direction == "encrypt"
    eng = sb.enc if enc else sb.dec
    batch = cd.P if enc else cd.E
    restore = cd.restore_plain if enc else cd.restore_esp
    process = eng.encrypt if enc else eng.decrypt

    # the engine, and the ceiling: the crypto pass alone on op rows prepared once, on a
    # copy of the batch (so that the two can alternate repeats)
    restore()
    process(batch)                                  # warm-up (and JIT load)
    restore()
    ceil = Ceiling(Passes(eng, cd.copy(direction), direction))
    ceil.setup()
    ceil.run()
    ceil.check()
    engine, ceiling = time_batches(
        [Replay(lambda: process(batch), restore, n, SHARE["engine"] * D),
         Replay(ceil.run, ceil.restore if ceil.needs_restore else None, n,
                SHARE["ceiling"] * D)], R)
    ceil.restore()
    ceil.run()
    ceil.check()
    restore()                                       # the last round's output may be gone:
    process(batch)                                  # run once more to check the output
    if batch.drop[:n].any():
        raise RuntimeError(f"{sb.suite.name} {direction}: the engine dropped bench packets")
    if not enc and batch.packets() != cd.plain:
        raise RuntimeError(f"{sb.suite.name}: decrypt did not recover the packets")

    # the stage profile (bench/stages.py): partial pipelines on the same batch, differenced
    profile = None
    if args.profile:
        from .stages import StageProfile
        sp = StageProfile(eng, batch, direction, restore, cd.plain if enc else cd.esp)
        profile = sp.measure(SHARE["profile"] * D, clock_overhead())

    # the baselines
    python = scapy = None
    src = cd.plain if enc else cd.esp
    if sb.python is not None:
        ref = sb.python
        python = time_packets(ref.encrypt if enc else ref.decrypt, src, ref.reset,
                              SHARE["python"] * D, R, quantum=cd.quantum)
    if sb.scapy is not None:
        ref = sb.scapy
        scapy = time_packets(ref.encrypt if enc else ref.decrypt, src, ref.reset,
                             SHARE["scapy"] * D, min(R, 3), cap=SCAPY_SAMPLE,
                             quantum=cd.quantum)

    return {"engine": engine, "ceiling": ceiling, "python": python, "scapy": scapy,
            "profile": profile, "payload_bytes": cd.payload_bytes / n,
            "wire_bytes": cd.wire_bytes / n}


def measure_workers(sb: SuiteBench, size: int, batch: int, args, doing=None) -> dict:
    """SpuCluster throughput with 1 and each requested N > 1 workers, both directions, in
    the same alternating rounds: engine.spu.measure_scaling (the streamed data path of
    `spu encrypt/decrypt --workers N`, on tunnels with this suite's transform), no
    in-process row (the case above measured that). The 1-worker run is the base of the
    "N workers / 1 worker" ratios. Starts and closes its own worker processes."""
    from engine.spu import measure_scaling

    workers = sorted({1, *args.workers})
    return measure_scaling(workers, size, args.directions, batch=batch,
                           batches=max(8, WORKER_PACKETS // batch), duration=args.duration,
                           template=sb.cfg, inprocess=args.profile, backend=args.backend,
                           progress=doing)


# ---------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------
def run(args) -> int:
    from .perf import ProfilerError
    try:
        if getattr(args, "perf", None):
            from .perf import run as run_profiled
            return run_profiled(args)
        return _run(args)
    except (BenchError, RuntimeError, ProfilerError) as e:   # RuntimeError: a failed
        print(f"spu: error: {e}", file=sys.stderr)            # output cross-check
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


def _run(args) -> int:
    from . import report

    if args.plot:
        missing = report.plot_missing()
        if missing:
            raise BenchError(f"--plot needs the Python package {missing!r}, which is not "
                             f"installed (pip install {missing})")
    suites = args.suites or parse_suites("default")
    sizes = args.sizes or list(DEFAULT_SIZES)
    cases = [(s, b, z, d) for s in suites for b in args.batch for z in sizes
             for d in args.directions]
    spu = max(args.workers) > 1
    spu_cases = ([(s, b, z) for s in suites for b in args.batch for z in sizes if z != "imix"]
                 if spu else [])
    t_start = time.monotonic()
    note(f"{len(cases)} cases ({len(suites)} suites x {len(args.batch)} batch sizes x "
         f"{len(sizes)} sizes x {len(args.directions)} directions), about {args.duration:g} s "
         f"each" + (f", and {len(spu_cases)} SpuCluster runs (workers "
                    f"{','.join(map(str, sorted({1, *args.workers})))}, both directions "
                    f"{args.duration:g} s each)" if spu else "") + "; loading the engine")
    from engine.engine import Engine

    notes: dict[str, str] = {}
    records: list[dict] = []
    profiles: list[dict] = []
    meta = {"backend": Engine(max_sas=1, backend=args.backend).backend(), "cpu": cpu_info(),
            "workers": 1, "worker_counts": sorted({1, *args.workers}),
            "duration": args.duration, "repeats": args.repeats,
            "python": sys.version.split()[0], "load": (_load(), None),
            "scapy_sample": SCAPY_SAMPLE}
    off_mix = [b for b in args.batch
               if abs(sum(size_list("imix", b)) / b / imix_mean() - 1) > 0.01]
    if "imix" in sizes and off_mix:
        notes["imix"] = (f"IMIX repeats a {len(IMIX_PATTERN)}-packet pattern (7:4:1); a batch "
                         f"of {off_mix[0]} holds too few periods for that mix (its bytes are "
                         f"counted as they are)")
    if spu and "imix" in sizes:
        notes["workers-imix"] = ("no SpuCluster rows for IMIX (its workload generator "
                                 "takes one packet size)")
    scaling: list[dict] = []
    progress = Progress(len(cases) + len(spu_cases))
    progress.doing("setting up")
    try:
        for suite in suites:
            sb = SuiteBench(suite, not args.no_baselines, notes, args.backend)
            for batch in args.batch:
                for size in sizes:
                    cd = CaseData(sb, size, batch)
                    for direction in args.directions:
                        progress.doing(f"{suite.name} {size} {direction} batch {batch}")
                        m = measure_case(sb, cd, direction, args)
                        rec = report.record(suite, size, direction, batch,
                                            dict(meta, backend=sb.ran_on), m)
                        records.append(rec)
                        if m["profile"]:
                            profiles.append(rec)
                        progress.step(f"{suite.name} {size} {direction} batch {batch}")
                    if spu and size != "imix":
                        what = f"{suite.name} {size} batch {batch} SPU workers"
                        progress.doing(what)
                        res = measure_workers(
                            sb, size, batch, args,
                            lambda row, w=what: progress.doing(
                                f"{w}: {row['direction']} {row['workers']} done"))
                        base = {r["direction"]: r for r in records[-len(args.directions):]}
                        rows = [r for r in res["results"] if r["config"] == "workers"]
                        for row in rows:
                            if row["workers"] > 1 and row["workers"] in args.workers:
                                records.append(report.worker_record(
                                    base[row["direction"]], row, res["tunnels"]))
                                if args.profile:
                                    records[-1]["profile"] = report.handoff_profile(
                                        res["results"], row)
                                    profiles.append(records[-1])
                        scaling.append({"suite": suite.name, "size": size, "batch": batch,
                                        "backend": res["backend"], "tunnels": res["tunnels"],
                                        "results": rows, "speedup": res["speedup"]})
                        progress.step(what)
    finally:
        progress.close()
    if args.no_baselines:
        notes["baselines"] = "Python and scapy baselines skipped (--no-baselines)"
    meta["wall_s"] = time.monotonic() - t_start
    meta["load"] = (meta["load"][0], _load())
    if meta["load"][0] and meta["load"][0] >= 1.0:
        notes["load"] = (f"other work was running (load average {meta['load'][0]:.1f} before "
                         f"the run, on {meta['cpu']['cores']} cores): expect noise; ratios "
                         f"measured in one run (/ceil, x Py) hold up better than absolutes")
    report.print_table(records, meta, notes, sys.stdout, scaling)
    if profiles:
        report.print_profile(profiles, sys.stdout)
    if args.json:
        report.write_json(records, args.json)
    if args.plot:
        report.plot(records, args.plot, meta)
    from .perf import maybe_write_perf_map
    maybe_write_perf_map()                      # only when run by --perf
    return 0


if __name__ == "__main__":
    sys.exit(main())
