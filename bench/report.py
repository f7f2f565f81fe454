"""`spu bench` output: one record per case, the table on stdout, JSON, the plot.

Record keys (the --json contract; values are null where a measurement did not run):
    suite, mode, size ("imix" or bytes), direction, workers, batch, backend,
    mpps, mpps_min, mpps_max, repeats, gbps (payload), gbps_wire, ns_per_packet,
    cycles_per_byte, cpu_mhz, payload_bytes, wire_bytes (mean per packet),
    ceiling_mpps, ceiling_gbps, ratio_to_ceiling, python_mpps, python_packets,
    scapy_mpps, scapy_packets, speedup_vs_python, profile
Payload bytes are the plaintext IP packets; wire bytes are the ESP packets (outer IPv4
header, ESP header, IV, padding, trailer and ICV included), in either direction.
workers is 1 for the in-process engine; a record with workers N > 1 (`--workers 1,N`) is
SpuCluster with N SPUs, the dispatcher's own and N-1 worker processes (worker_record):
mpps_min/mpps_max null, repeats = its rounds, ceiling_* = one core's ceiling from the
1-worker record, baselines null.
profile (--profile, else null): bench/stages.py's stages, parse_lookup_ns, replay_ns,
crypto_ns, headers_ns, dispatch_ns, io_ns, adding up to total_ns (engine_ns + io_ns) within
clamped_ns, with percent, the passes and their call costs; on a workers N > 1 record,
handoff_profile's inprocess_ns, one_worker_ns, handoff_ns, workers_ns.
"""
from __future__ import annotations

import json
from typing import IO, Optional, Sequence

KEYS = ("suite", "mode", "size", "direction", "workers", "batch", "backend", "mpps",
        "mpps_min", "mpps_max", "repeats", "gbps", "gbps_wire", "ns_per_packet",
        "cycles_per_byte", "cpu_mhz", "payload_bytes", "wire_bytes", "ceiling_mpps",
        "ceiling_gbps", "ratio_to_ceiling", "python_mpps", "python_packets", "scapy_mpps",
        "scapy_packets", "speedup_vs_python", "profile")


def _sig(v: Optional[float], digits: int = 5) -> Optional[float]:
    return None if v is None else float(f"{v:.{digits}g}")


def record(suite, size, direction: str, batch: int, meta: dict, m: dict) -> dict:
    eng, ceil, py, sc = m["engine"], m["ceiling"], m["python"], m["scapy"]
    pay, wire = m["payload_bytes"], m["wire_bytes"]
    mhz = meta["cpu"]["mhz"]
    mpps = eng.mpps if eng else None
    prof = _rounded(m["profile"]) if m["profile"] else None
    return {
        "suite": suite.name, "mode": "tunnel", "size": size, "direction": direction,
        "workers": meta["workers"], "batch": batch, "backend": meta["backend"],
        "mpps": _sig(mpps), "mpps_min": _sig(eng.mpps_min) if eng else None,
        "mpps_max": _sig(eng.mpps_max) if eng else None,
        "repeats": eng.repeats if eng else 0,
        "gbps": _sig(mpps * pay * 8 / 1e3) if eng else None,
        "gbps_wire": _sig(mpps * wire * 8 / 1e3) if eng else None,
        "ns_per_packet": _sig(eng.ns) if eng else None,
        "cycles_per_byte": _sig(eng.ns * mhz / 1e3 / pay, 4) if eng and mhz else None,
        "cpu_mhz": mhz, "payload_bytes": _sig(pay), "wire_bytes": _sig(wire),
        "ceiling_mpps": _sig(ceil.mpps) if ceil else None,
        "ceiling_gbps": _sig(ceil.mpps * pay * 8 / 1e3) if ceil else None,
        "ratio_to_ceiling": _sig(mpps / ceil.mpps, 4) if eng and ceil else None,
        "python_mpps": _sig(py.mpps) if py else None,
        "python_packets": py.packets if py else None,
        "scapy_mpps": _sig(sc.mpps) if sc else None,
        "scapy_packets": sc.packets if sc else None,
        "speedup_vs_python": _sig(mpps / py.mpps, 4) if eng and py else None,
        "profile": prof,
    }


def _rounded(v):
    """A profile record (bench/stages.py) with its floats to 5 significant digits."""
    if isinstance(v, dict):
        return {k: _rounded(x) for k, x in v.items()}
    return _sig(v) if isinstance(v, float) else v


def worker_record(base: dict, row: dict, tunnels: int) -> dict:
    """The record of one SpuCluster measurement (engine.spu.measure_scaling's `row`, N > 1
    workers) beside `base`, the in-process record of the same suite, size, direction and
    batch: same keys; its ceiling is that one core's ceiling (so /ceil may exceed 1), the
    baselines are null, and min-max is not measured (each value is a median round)."""
    mpps = row["mpps"]
    pay, wire, mhz = base["payload_bytes"], base["wire_bytes"], base["cpu_mhz"]
    ceil = base["ceiling_mpps"]
    rec = dict.fromkeys(KEYS)
    rec.update(
        suite=base["suite"], mode=base["mode"], size=base["size"],
        direction=row["direction"], workers=row["workers"], batch=base["batch"],
        backend=base["backend"], mpps=_sig(mpps), repeats=row["rounds"],
        gbps=_sig(mpps * pay * 8 / 1e3), gbps_wire=_sig(mpps * wire * 8 / 1e3),
        ns_per_packet=_sig(row["ns_per_packet"]),
        cycles_per_byte=_sig(row["ns_per_packet"] * mhz / 1e3 / pay, 4) if mhz else None,
        cpu_mhz=mhz, payload_bytes=pay, wire_bytes=wire, ceiling_mpps=ceil,
        ceiling_gbps=base["ceiling_gbps"],
        ratio_to_ceiling=_sig(mpps / ceil, 4) if ceil else None)
    return rec


def handoff_profile(results: Sequence[dict], row: dict) -> dict:
    """`--profile` on a SpuCluster record (workers N > 1): the ring hand-off cost, from the
    same measure_scaling run (engine.spu_bench): the in-process engine fed the same stream
    (same input copies, one process) against SpuCluster with 1 worker; their difference
    is what moving batches through the shared-memory ring to a worker and back costs per
    packet. The N-worker value runs in parallel, so it is not split further."""
    d = row["direction"]
    inproc = next(r for r in results if r["direction"] == d and r["config"] == "inprocess")
    one = next(r for r in results if r["direction"] == d and r["config"] == "workers"
               and r["workers"] == 1)
    return {"inprocess_ns": _sig(inproc["ns_per_packet"]),
            "one_worker_ns": _sig(one["ns_per_packet"]),
            "handoff_ns": _sig(one["ns_per_packet"] - inproc["ns_per_packet"]),
            "workers_ns": _sig(row["ns_per_packet"])}


# ---------------------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------------------
def _f(v: Optional[float], width: int, spec: str = ".3g") -> str:
    if v is None:
        return "-".rjust(width)
    return format(v, spec).rjust(width)


def _num(v: Optional[float], width: int) -> str:
    """3 significant digits, without exponents for the magnitudes a bench produces."""
    if v is None:
        return "-".rjust(width)
    if v >= 100:
        return f"{v:.0f}".rjust(width)
    if v >= 10:
        return f"{v:.1f}".rjust(width)
    if v >= 1:
        return f"{v:.2f}".rjust(width)
    if v >= 0.01:
        return f"{v:.3f}".rjust(width)
    return f"{v:.2g}".rjust(width)


HEADER = (f"{'size':>5} {'dir':3} {'Mpps':>6} {'min-max':>11} {'Gbit/s':>7} {'wire':>6} "
          f"{'ns/pkt':>7} {'cyc/B':>6} | {'ceiling':>7} {'/ceil':>5} | {'Python':>7} "
          f"{'x Py':>5} | {'scapy':>7}")


def _workers_text(meta: dict) -> str:
    counts = meta.get("worker_counts") or [1]
    if max(counts) == 1:
        return "1 worker"
    return f"workers {','.join(map(str, counts))} (1: in-process engine; N > 1: SpuCluster)"


def print_table(records: list[dict], meta: dict, notes: dict, out: IO[str],
                scaling: Sequence[dict] = ()) -> None:
    cpu = meta["cpu"]
    mhz = cpu["mhz"]
    w = out.write
    w(f"spu bench: crypto backend {meta['backend']}; {_workers_text(meta)}; "
      f"tunnel mode, IPv4 outer, IPv4/UDP inner\n")
    w(f"CPU: {cpu['model'] or 'unknown'}, {cpu['cores']} cores, "
      + (f"{mhz:.0f} MHz" if mhz else "MHz unknown")
      + f"; Python {meta['python']}; {meta['duration']:g} s per case, medians of "
      f"{meta['repeats']} repeats; wall time {meta.get('wall_s', 0):.0f} s"
      + _load_text(meta.get("load")) + "\n")
    groups: dict = {}           # measured order, worker rows after their suite's own
    for r in records:
        groups.setdefault((r["suite"], r["batch"], r["workers"]), []).append(r)
    for (suite, batch, workers), rows in groups.items():
        how = "" if workers == 1 else (f"; {workers} SPU workers, SpuCluster streamed, "
                                       f"ceiling of one core")
        w(f"\n{suite}  (batch {batch}; crypto {rows[0]['backend']}{how})\n{HEADER}\n")
        for r in rows:
            _row(r, w)
    py_n = sorted({r["python_packets"] for r in records if r["python_packets"]})

    sc_n = sorted({r["scapy_packets"] for r in records if r["scapy_packets"]})
    w("\nMpps: engine (Engine.encrypt/decrypt on one batch, replayed), median and min-max "
      "over repeats.\n"
      "Gbit/s: payload = the plaintext IP packets; wire = the ESP packets (outer header, ESP "
      "header, IV, padding, trailer, ICV).\n"
      + (f"cyc/B: ns/pkt x {mhz:.0f} MHz / payload bytes; the clock is /proc/cpuinfo "
         f"'cpu MHz', so cycles are an estimate (turbo and scaling unseen).\n" if mhz else
         "cyc/B: not shown, /proc/cpuinfo gives no 'cpu MHz'.\n")
      + "ceiling: the engine's own crypto pass alone (Engine.esp_crypto) on op rows prepared "
      "once, same packets; /ceil = engine / ceiling.\n"
      "Python: per-packet ESP on the cryptography package (bench/reference.py)"
      + (f", {_span(py_n)} packets per repeat" if py_n else "")
      + "; x Py = engine / Python.\n"
      "scapy: scapy's SecurityAssociation with IP(bytes) and bytes()"
      + (f", {_span(sc_n)} packets per repeat (cycling through the first "
         f"{meta['scapy_sample']} at most)" if sc_n else "") + ".\n")
    if scaling:
        _print_scaling(scaling, w)
    for text in notes.values():
        w(f"note: {text}\n")


def _row(r: dict, w) -> None:
    if r["workers"] > 1:        # no spread measured: the column names the worker count
        spread = f"{r['workers']} workers"
    else:
        spread = (f"{_num(r['mpps_min'], 5).strip()}-{_num(r['mpps_max'], 5).strip()}"
                  if r["mpps"] is not None else "-")
    w(f"{str(r['size']):>5} {r['direction'][:3]:3} {_num(r['mpps'], 6)} {spread:>11} "
      f"{_num(r['gbps'], 7)} {_num(r['gbps_wire'], 6)} {_num(r['ns_per_packet'], 7)} "
      f"{_num(r['cycles_per_byte'], 6)} | {_num(r['ceiling_mpps'], 7)} "
      f"{_f(r['ratio_to_ceiling'], 5, '.2f')} | {_num(r['python_mpps'], 7)} "
      f"{_num(r['speedup_vs_python'], 5)} | {_num(r['scapy_mpps'], 7)}\n")


def _print_scaling(scaling: Sequence[dict], w) -> None:
    """The "N workers / 1 worker" footer: both from SpuCluster, in the same rounds."""
    t = scaling[0]
    w(f"N workers: SpuCluster with N SPUs (the dispatcher is SPU 0, beside N-1 worker "
      f"processes), {t['tunnels']} tunnels of the suite interleaved, batches streamed "
      f"through a ring as `spu encrypt/decrypt --workers N` does minus the file I/O "
      f"(engine/spu_bench.py); 1 worker = the dispatcher alone; median rounds, "
      f"configurations alternating; /ceil against one core's ceiling.\n")
    for s in scaling:
        for d, ratios in s["speedup"].items():
            mp = {x["workers"]: x["mpps"] for x in s["results"] if x["direction"] == d}
            parts = [f"{n} worker{'s' if n > 1 else ''} {mp[n]:.3g} Mpps"
                     for n in sorted(mp)]
            rat = ", ".join(f"{n} workers / 1 worker = {x:.2f}x"
                            for n, x in sorted(ratios.items()) if n > 1)
            w(f"scaling {s['suite']} {s['size']} {d[:3]} batch {s['batch']}: "
              f"{'; '.join(parts)}: {rat}\n")


def _load_text(load) -> str:
    if not load or load[0] is None:
        return ""
    after = f" -> {load[1]:.1f}" if load[1] is not None else ""
    return f"; load average {load[0]:.1f}{after}"


def _span(ns: list[int]) -> str:
    return str(ns[0]) if len(ns) == 1 or ns[0] == ns[-1] else f"{ns[0]}-{ns[-1]}"


def print_profile(records: list[dict], out: IO[str]) -> None:
    """`--profile`: ns/packet and percent per stage (bench/stages.py says how each is
    measured); the stages add up to `total` (the whole Engine call + filling the batch)."""
    from .stages import STAGES

    w = out.write
    w("\nper-stage profile: ns/packet (percent of total); total = whole Engine call + I/O "
      "(filling the batch), both measured in the profile's own rounds\n")
    names = {"parse_lookup": "parse+SA", "replay": "replay", "crypto": "crypto",
             "headers": "headers", "dispatch": "dispatch", "io": "I/O"}
    w(f"{'suite':30} {'size':>5} {'dir':3} "
      + " ".join(f"{names[k]:>13}" for k in STAGES)
      + f" {'total':>7} {'table':>7} {'clamped':>7}\n")
    for r in records:
        p = r["profile"]
        if r["workers"] > 1:
            continue
        tot = p["total_ns"] or 1.0

        def cell(k: str, p: dict = p, tot: float = tot) -> str:
            v = p[f"{k}_ns"]
            return f"{v:6.1f} ({100 * v / tot:3.0f}%)"

        w(f"{r['suite'][:30]:30} {str(r['size']):>5} {r['direction'][:3]:3} "
          + " ".join(f"{cell(k):>13}" for k in STAGES)
          + f" {_num(p['total_ns'], 7)} {_num(r['ns_per_packet'], 7)} "
          f"{_num(p['clamped_ns'], 7)}\n")
    w("parse+SA: parse and SA/policy lookup; replay: decrypt pre-check + in-order advance, "
      "encrypt sequence numbers;\n"
      "headers: encapsulation/decapsulation writes and checks, padding, trailer, counters; "
      "dispatch: Python glue and\n"
      "per-call cost of the engine's passes; I/O: PacketBatch.clear + add_many of the "
      "workload. Each stage is a\n"
      "difference of medians of partial pipelines on the same batch (bench/stages.py); "
      "negatives are shown as 0 and\n"
      "summed in 'clamped'; 'table' is the engine's ns/packet above (total minus I/O "
      "should be near it).\n")
    for r in records:
        p = r["profile"]
        if r["workers"] > 1:
            w(f"ring hand-off {r['suite']} {r['size']} {r['direction'][:3]}: in-process "
              f"engine on the same stream {p['inprocess_ns']:.1f} ns/pkt, SpuCluster 1 worker "
              f"{p['one_worker_ns']:.1f}: hand-off {p['handoff_ns']:.1f} ns/pkt; "
              f"{r['workers']} workers {p['workers_ns']:.1f} ns/pkt (parallel, not split)\n")


# ---------------------------------------------------------------------------------------
# JSON and plot
# ---------------------------------------------------------------------------------------
def write_json(records: list[dict], path: str) -> None:
    with open(path, "w") as f:
        json.dump(records, f, indent=1)
        f.write("\n")


def plot_missing() -> Optional[str]:
    """None if plotting is possible, else the name of the missing package."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "matplotlib"
    return None


def _size_order(size) -> float:
    return float("inf") if size == "imix" else float(size)


def plot(records: list[dict], path: str, meta: dict) -> None:
    """Payload Gbit/s vs packet size, one line per suite, its ceiling dashed in the same
    colour; one panel per direction (and batch size, if several)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for r in records if r["workers"] == 1]     # the in-process engine
    panels = sorted({(r["direction"], r["batch"]) for r in records},
                    key=lambda p: (p[0] != "encrypt", p[1]))
    sizes = sorted({r["size"] for r in records}, key=_size_order)
    x = {s: i for i, s in enumerate(sizes)}
    suites = list(dict.fromkeys(r["suite"] for r in records))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.8), squeeze=False,
                             sharey=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (direction, batch) in zip(axes[0], panels):
        for k, suite in enumerate(suites):
            rows = sorted((r for r in records if r["suite"] == suite
                           and r["direction"] == direction and r["batch"] == batch),
                          key=lambda r: _size_order(r["size"]))
            if not rows:
                continue
            c = colours[k % len(colours)]
            fixed = [r for r in rows if r["size"] != "imix"]   # a line over sizes; IMIX
            mixed = [r for r in rows if r["size"] == "imix"]   # is a point of its own
            for part, style, label in ((fixed, "o-", suite), (mixed, "D", None)):
                if not part:
                    continue
                xs = [x[r["size"]] for r in part]
                ax.plot(xs, [r["gbps"] or 0 for r in part], style, color=c,
                        label=label if label else ("_" + suite if fixed else suite))
                ax.plot(xs, [r["ceiling_gbps"] or 0 for r in part],
                        "--" if style == "o-" else "_", markersize=18, color=c, alpha=0.6,
                        label=f"{suite} ceiling" if (label or not fixed) else "_")
        ax.set_xticks(range(len(sizes)), [str(s) for s in sizes])
        ax.set_xlabel("packet size (bytes)")
        ax.set_title(f"{direction}, batch {batch}")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("Gbit/s (payload)")
    axes[0][-1].legend(fontsize="x-small", loc="upper left")
    fig.suptitle(f"spu bench: engine (solid) vs crypto ceiling (dashed); {meta['backend']}, "
                 f"{meta['workers']} worker", fontsize="medium")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
