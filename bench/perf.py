"""`spu bench --perf`: the same bench run again under a sampling profiler, JIT code named.

perf (Debian: linux-perf) samples native stacks; it names the Cython extensions' functions
from their symbol tables (setup.py does not strip them), but Numba's kernels live in
anonymous memory that LLVM's MCJIT allocated. llvmlite only ships LLVM's Intel (VTune) JIT
listener, so NUMBA_ENABLE_PROFILING gives perf nothing; instead the profiled process
writes perf's JIT map, /tmp/perf-<pid>.map ("START SIZE name" lines, hex), from the
addresses of every compiled kernel (`write_perf_map`), and `perf report` reads it.

Without a usable perf (not installed, or not permitted: kernel.perf_event_paranoid), py-spy
`record --native` runs instead if it is installed; otherwise a one-line error.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from typing import Optional

ENV_MAP = "PYSPU_PERF_MAP"     # set in the profiled child: write the perf map at its end
TOP = 25                       # report lines printed
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ProfilerError(Exception):
    """A one-line, user-facing error."""


# ---------------------------------------------------------------------------------------
# the perf map (written by the profiled process itself)
# ---------------------------------------------------------------------------------------
def _regions() -> list[tuple[int, int]]:
    out = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                lo, _, hi = line.split()[0].partition("-")
                out.append((int(lo, 16), int(hi, 16)))
    except OSError:
        pass
    return out


def jit_symbols() -> list[tuple[int, str]]:
    """(address, name) of every compiled overload of the Numba dispatchers in the engine's
    and the bench's modules: the kernel itself and its CPython wrapper."""
    from numba.core.dispatcher import Dispatcher

    seen: dict[int, str] = {}
    for modname, mod in list(sys.modules.items()):
        if not modname.startswith(("engine.", "bench.")) or mod is None:
            continue
        for attr, obj in list(vars(mod).items()):
            if not isinstance(obj, Dispatcher):
                continue
            label = f"{obj.py_func.__module__}.{obj.py_func.__qualname__}"
            for sig, cres in list(obj.overloads.items()):
                lib = getattr(cres, "library", None)
                fndesc = getattr(cres, "fndesc", None)
                if lib is None or fndesc is None:
                    continue
                for name, suffix in ((fndesc.llvm_func_name, ""),
                                     (fndesc.llvm_cpython_wrapper_name, " [cpython wrapper]")):
                    try:
                        addr = lib.get_pointer_to_function(name)
                    except Exception:       # noqa: BLE001 (a symbol the library lacks)
                        addr = 0
                    if addr:
                        seen.setdefault(addr, f"numba:{label}{suffix}")
    return sorted(seen.items())


def write_perf_map(pid: Optional[int] = None) -> Optional[str]:
    """Write /tmp/perf-<pid>.map for the JIT code; returns its path (None if nothing was
    compiled). Sizes: up to the next known symbol or the end of the memory mapping,
    whichever is first (MCJIT keeps no symbol sizes for code loaded from Numba's cache)."""
    syms = jit_symbols()
    if not syms:
        return None
    regions = _regions()
    path = f"/tmp/perf-{pid or os.getpid()}.map"
    lines = []
    for k, (addr, name) in enumerate(syms):
        end = next((hi for lo, hi in regions if lo <= addr < hi), addr + 0x1000)
        if k + 1 < len(syms):
            end = min(end, syms[k + 1][0])
        lines.append(f"{addr:x} {end - addr:x} {name}\n")
    with open(path, "w") as f:
        f.writelines(lines)
    return path


def maybe_write_perf_map() -> None:
    """Called at the end of a bench run: writes the map when run by `--perf`."""
    if os.environ.get(ENV_MAP):
        path = write_perf_map()
        if path:
            print(f"spu bench: wrote {path} (Numba JIT symbols for perf)", file=sys.stderr)


# ---------------------------------------------------------------------------------------
# running the bench under a profiler
# ---------------------------------------------------------------------------------------
def bench_argv(args) -> list[str]:
    """The `spu bench` options of `args` as a command line, minus --perf."""
    out: list[str] = []
    if args.suites:
        out += ["--suites", ",".join(s.name for s in args.suites)]
    if args.sizes:
        out += ["--sizes", ",".join(map(str, args.sizes))]
    out += ["--directions", ",".join(args.directions), "--batch",
            ",".join(map(str, args.batch)), "--workers", ",".join(map(str, args.workers)),
            "--duration", repr(args.duration), "--repeats", str(args.repeats),
            "--backend", args.backend]
    if args.no_baselines:
        out.append("--no-baselines")
    if args.profile:
        out.append("--profile")
    if args.json:
        out += ["--json", args.json]
    if args.plot:
        out += ["--plot", args.plot]
    return out


def _perf_problem(perf: str) -> Optional[str]:
    """Why perf cannot sample here, or None."""
    try:
        p = subprocess.run([perf, "record", "-q", "-e", "cpu-clock", "-o", os.devnull, "--",
                            "true"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{perf} does not run: {e}"
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or [f"exit status {p.returncode}"])[-1]
        return f"perf record is not usable here: {last.strip()}"
    return None


def _hardware_cycles(perf: str) -> bool:
    """Does the CPU's cycle counter work (a VM often has no PMU)?"""
    try:
        p = subprocess.run([perf, "stat", "-x,", "-e", "cycles", "true"], capture_output=True,
                           text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return p.returncode == 0 and "<not" not in p.stderr


def run(args) -> int:
    """`spu bench --perf [DATA]`: the bench in a child process under perf record -g (or
    py-spy record --native), then the top entries. Returns the exit status."""
    data = os.path.abspath(args.perf)
    perf = shutil.which("perf")
    why = _perf_problem(perf) if perf else "perf is not installed (Debian: apt install linux-perf)"
    env = dict(os.environ, **{ENV_MAP: "1"})
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    child = [sys.executable, "-m", "engine.cli", "bench", *bench_argv(args)]
    if why is None:
        return _run_perf(perf, data, child, env)
    spy = shutil.which("py-spy")
    if spy is None:
        raise ProfilerError(f"--perf: {why}; py-spy is not installed either (pip install "
                            f"py-spy)")
    print(f"spu bench: {why}; profiling with py-spy --native instead", file=sys.stderr)
    return _run_pyspy(spy, data, child, env)


def _run_perf(perf: str, data: str, child: list[str], env: dict) -> int:
    event = "cycles" if _hardware_cycles(perf) else "cpu-clock"
    print(f"spu bench: perf record -g -e {event} -o {data} (Numba symbols from "
          f"/tmp/perf-<pid>.map)", file=sys.stderr, flush=True)
    p = subprocess.run([perf, "record", "-q", "-g", "-e", event, "-o", data, "--", *child],
                       env=env, check=False)
    if p.returncode != 0:
        raise ProfilerError(f"--perf: the profiled bench failed (exit status {p.returncode})")
    rep = subprocess.run([perf, "report", "--stdio", "-i", data, "--no-children", "-g", "none",
                          "-F", "overhead,dso,sym", "--percent-limit", "0.5"],
                         capture_output=True, text=True, check=False)
    if rep.returncode != 0:
        last = (rep.stderr.strip().splitlines() or ["?"])[-1]
        raise ProfilerError(f"--perf: perf report failed: {last}")
    rows = [ln for ln in rep.stdout.splitlines() if ln.strip() and not ln.startswith("#")]
    print(f"\nperf report (self time, {event} samples, top {min(TOP, len(rows))} by "
          f"dso and symbol; full report: perf report -i {data}):")
    for ln in rows[:TOP]:
        print(ln.rstrip())
    return 0


def _run_pyspy(spy: str, data: str, child: list[str], env: dict) -> int:
    out = data if data.endswith(".txt") else data + ".txt"
    p = subprocess.run([spy, "record", "--native", "--format", "raw", "--rate", "500", "-o",
                        out, "--", *child], env=env, stdout=sys.stdout,
                       stderr=subprocess.PIPE, text=True, check=False)
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or [f"exit status {p.returncode}"])[-1]
        raise ProfilerError(f"--perf: py-spy record failed: {last.strip()}")
    print(f"\npy-spy (native frames; top {TOP} functions by self samples; collapsed stacks "
          f"in {out}):")
    for line in top_leaves(out)[:TOP]:
        print(line)
    return 0


def top_leaves(collapsed: str) -> list[str]:
    """The innermost frames of py-spy's raw (collapsed) stacks, by samples."""
    leaves: Counter = Counter()
    total = 0
    with open(collapsed) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not count.isdigit():
                continue
            total += int(count)
            leaves[stack.rsplit(";", 1)[-1]] += int(count)
    return [f"{100 * c / total:6.2f}%  {name}" for name, c in leaves.most_common()]
