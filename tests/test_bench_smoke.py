"""`spu bench` (issue 3): a tiny run end to end, and the pieces its numbers stand on.

Never asserts timings: only that the run completes, the JSON is well-formed with every key
and sane values, and the table is printed. The other tests check what the bench's numbers
mean: the staged passes (ceiling and --profile) do what Engine.encrypt/decrypt do, and the
Python and scapy baselines do the same ESP work as the engine (each opens the other's
packets).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from bench import reference, runner
from bench.ceiling import Ceiling, Passes
from bench.workload import (ALL_SUITES, DEFAULT_SUITES, IMIX_PATTERN, SuiteError, packets,
                            parse_sizes, parse_suite, parse_suites)
from engine.batch import PacketBatch
from engine.engine import Engine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

REQUIRED_KEYS = ("suite", "mode", "size", "direction", "workers", "batch", "backend", "mpps",
                 "gbps", "ns_per_packet", "ceiling_mpps", "ratio_to_ceiling", "python_mpps",
                 "scapy_mpps")


def _positive(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


def test_spu_bench_tiny_run(tmp_path):
    out = tmp_path / "bench.json"
    suite = "rfc4106(gcm(aes))/128"
    p = subprocess.run(
        [sys.executable, "-m", "engine.cli", "bench", "--suites", suite, "--sizes",
         "64,1400,imix", "--duration", "0.2", "--batch", "64", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    records = json.loads(out.read_text())
    assert isinstance(records, list) and len(records) == 6
    cases = {(r["size"], r["direction"]) for r in records}
    assert cases == {(s, d) for s in (64, 1400, "imix") for d in ("encrypt", "decrypt")}
    for r in records:
        for k in REQUIRED_KEYS:
            assert k in r, k
        assert r["suite"] == suite and r["mode"] == "tunnel"
        assert r["workers"] == 1 and r["batch"] == 64
        assert r["backend"] in Engine.backend()      # the backend that ran the suite
        for k in ("mpps", "gbps", "gbps_wire", "ns_per_packet", "ceiling_mpps",
                  "ratio_to_ceiling", "python_mpps"):
            assert _positive(r[k]), (k, r[k])
        assert r["mpps_min"] <= r["mpps"] <= r["mpps_max"]
        assert r["scapy_mpps"] is None or _positive(r["scapy_mpps"])
        # wire bytes carry the ESP overhead: 20 outer + 8 ESP + 8 IV + pad/trailer + 16 ICV
        assert r["wire_bytes"] >= r["payload_bytes"] + 20 + 8 + 8 + 2 + 16
        if r["size"] == "imix":     # 64 packets: 5 IMIX periods and 4 more packets
            assert 64 < r["payload_bytes"] < 1500
        else:
            assert r["payload_bytes"] == r["size"]
    # the table: a heading per suite, the column header, one row per case, the footer
    assert suite in p.stdout and "Mpps" in p.stdout and "ceiling" in p.stdout
    assert "crypto backend" in p.stdout and "estimate" in p.stdout
    rows = [ln for ln in p.stdout.splitlines() if ln.split()[:2] in
            (["64", "enc"], ["64", "dec"], ["1400", "enc"], ["1400", "dec"],
             ["imix", "enc"], ["imix", "dec"])]
    assert len(rows) == 6
    assert "6/6" in p.stderr            # the progress bar reached the end


def test_cli_refuses_bad_workers_and_names(capsys):
    for argv in (["--workers", "0"], ["--workers", "1,two"], ["--suites", "gcm(aes)"],
                 ["--sizes", "12"], ["--directions", "sideways"]):
        with pytest.raises(SystemExit) as e:
            runner.main(argv)
        assert e.value.code == 2
    err = capsys.readouterr().err
    assert "bad worker count" in err and "unknown cipher" in err
    assert runner.build_parser().parse_args(["--workers", "2,1,2"]).workers == [1, 2]


def _marked(marker: str) -> list[int]:
    """Live processes (of this user) whose environment holds `marker`."""
    pids = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/environ", "rb") as f:
                if marker.encode() in f.read():
                    pids.append(int(p))
        except OSError:
            pass
    return pids


def test_spu_bench_workers_1_2(tmp_path):
    """`--workers 1,2`: records for 1 (in-process) and 2 (SpuCluster) workers, the footer
    ratio; no worker process and no shared-memory segment outlives the run."""
    from engine import ring

    out = tmp_path / "bench.json"
    suite = "rfc4106(gcm(aes))/128"
    marker = f"PYSPU_BENCH_TEST={os.getpid()}_{tmp_path.name}"
    env = dict(os.environ, PYSPU_BENCH_TEST=marker.split("=", 1)[1])
    p = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "bench", "--workers", "1,2", "--suites", suite,
         "--sizes", "1400", "--duration", "0.2", "--no-baselines", "--json", str(out)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = p.communicate(timeout=300)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, stderr
    records = json.loads(out.read_text())
    by = {(r["workers"], r["direction"]): r for r in records}
    assert set(by) == {(w, d) for w in (1, 2) for d in ("encrypt", "decrypt")}
    for r in records:
        for k in REQUIRED_KEYS:
            assert k in r, k
        assert r["suite"] == suite and r["size"] == 1400 and _positive(r["mpps"])
        assert r["python_mpps"] is None and r["scapy_mpps"] is None
    for d in ("encrypt", "decrypt"):
        assert by[2, d]["ceiling_mpps"] == by[1, d]["ceiling_mpps"]
    rows = [ln for ln in stdout.splitlines() if ln.split()[:2] in
            (["1400", "enc"], ["1400", "dec"])]
    assert len(rows) == 4 and sum("2 workers" in ln for ln in rows) == 2
    assert sum("2 workers / 1 worker" in ln for ln in stdout.splitlines()) == 2
    # nothing left behind: worker processes (found by the environment they inherited)
    # and the /dev/shm segments named after the bench process
    deadline = time.monotonic() + 10
    while _marked(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _marked(marker) == []
    assert ring.leaked(p.pid) == []


def test_plot_without_matplotlib_is_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)    # import matplotlib -> ImportError
    assert runner.main(["--plot", str(tmp_path / "x.png")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "matplotlib" in err[0]


def test_without_scapy_the_column_is_null(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "scapy.layers.ipsec", None)
    out = tmp_path / "b.json"
    assert runner.main(["--suites", "rfc4106(gcm(aes))/128", "--sizes", "64", "--directions",
                        "encrypt", "--batch", "16", "--duration", "0.05", "--repeats", "2",
                        "--json", str(out)]) == 0
    (rec,) = json.loads(out.read_text())
    assert rec["scapy_mpps"] is None and _positive(rec["python_mpps"])
    assert "no scapy baseline" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------
# workload
# ---------------------------------------------------------------------------------------
def test_suite_names():
    assert [s.name for s in parse_suites("default")] == list(DEFAULT_SUITES)
    assert [s.name for s in parse_suites("all")] == list(ALL_SUITES)
    assert parse_suite("rfc4106(gcm(aes))").name == "rfc4106(gcm(aes))/128"
    assert parse_suite("rfc4106(gcm(aes))/256/64").icv_bits == 64
    assert parse_suite("cbc(aes)+hmac(sha256)").name == "cbc(aes)/128+hmac(sha256)/128"
    assert parse_suite("hmac(sha1)").name == "ecb(cipher_null)+hmac(sha1)/96"
    both = parse_suites("rfc7539esp(chacha20,poly1305),cbc(aes)/256+hmac(sha512)/256")
    assert [s.name for s in both] == ["rfc7539esp(chacha20,poly1305)",
                                      "cbc(aes)/256+hmac(sha512)/256"]
    for bad in ("cbc(aes)/100", "rfc4106(gcm(aes))+hmac(sha1)", "cbc(aes)+hmac(sha1)/20",
                "nothing"):
        with pytest.raises(SuiteError):
            parse_suite(bad)


def test_sizes_and_imix():
    assert parse_sizes("64, 1400,imix,64") == [64, 1400, "imix"]
    assert parse_sizes("default")[-1] == "imix"
    sizes = [len(p) for p in packets("imix", 24)]
    assert sorted(sizes[:12]) == sorted(IMIX_PATTERN)
    assert sizes.count(64) == 14 and sizes.count(576) == 8 and sizes.count(1500) == 2
    assert all(len(p) == 1400 for p in packets(1400, 3))


# ---------------------------------------------------------------------------------------
# the staged passes are the engine's passes
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["rfc4106(gcm(aes))/128", "cbc(aes)/128+hmac(sha1)/96"])
def test_staged_passes_equal_engine(name):
    cfg = parse_suite(name).sa()
    plain = packets("imix", 24)

    def engines():
        out, inb = Engine(max_sas=4), Engine(max_sas=4)
        out.install(cfg, "out")
        inb.install(cfg, "in")
        return out, inb

    out, inb = engines()
    b1 = PacketBatch.from_packets(plain)
    out.encrypt(b1)
    out2, inb2 = engines()
    b2 = PacketBatch.from_packets(plain)
    Passes(out2, b2, "encrypt").run()
    if "cbc" not in name:          # CBC IVs come from a random per-SA key: compare lengths
        assert b1.packets() == b2.packets()
    assert [len(p) for p in b1.packets()] == [len(p) for p in b2.packets()]
    assert out.stats() == out2.stats()

    d1 = PacketBatch.from_packets(b1.packets())
    inb.decrypt(d1)
    d2 = PacketBatch.from_packets(b1.packets())
    Passes(inb2, d2, "decrypt").run()
    assert d1.packets() == d2.packets() == plain
    assert inb.stats() == inb2.stats()


@pytest.mark.parametrize("direction", ["encrypt", "decrypt"])
def test_ceiling_repeats_the_crypto_pass(direction):
    cfg = parse_suite("cbc(aes)/128+hmac(sha1)/96").sa()
    eng = Engine(max_sas=4)
    eng.install(cfg, "out" if direction == "encrypt" else "in")
    plain = packets(256, 8)
    if direction == "decrypt":
        src = Engine(max_sas=4)
        src.install(cfg, "out")
        b = PacketBatch.from_packets(plain)
        src.encrypt(b)
        plain = b.packets()
    c = Ceiling(Passes(eng, PacketBatch.from_packets(plain), direction))
    c.setup()
    for _ in range(3):             # decrypt needs its input back every time: restore
        if c.needs_restore:
            c.restore()
        c.run()
        c.check()


# ---------------------------------------------------------------------------------------
# the baselines do the engine's work
# ---------------------------------------------------------------------------------------
def _engine_fns(cfg):
    def enc(pkts):
        e = Engine(max_sas=4)
        e.install(cfg, "out")
        b = PacketBatch.from_packets(pkts)
        e.encrypt(b)
        assert not b.drop[:b.count].any()
        return b.packets()

    def dec(pkts):
        e = Engine(max_sas=4)
        e.install(cfg, "in")
        b = PacketBatch.from_packets(pkts)
        e.decrypt(b)
        return [None if b.drop[i] else b.packet(i) for i in range(b.count)]
    return enc, dec


@pytest.mark.parametrize("name", list(ALL_SUITES) + ["rfc4106(gcm(aes))/128/96"])
def test_python_baseline_interoperates(name):
    cfg = parse_suite(name).sa()
    enc, dec = _engine_fns(cfg)
    ref = reference.PythonESP(cfg)
    reference.check_against_engine(ref, enc, dec, packets(64, 3) + packets("imix", 12))
    # and it drops what it must: a replayed packet, a flipped ICV bit
    ref.reset()
    esp = enc(packets(100, 2))
    assert ref.decrypt(esp[0]) is not None and ref.decrypt(esp[0]) is None
    bad = bytearray(esp[1])
    bad[-1] ^= 1
    assert ref.decrypt(bytes(bad)) is None


@pytest.mark.parametrize("name", DEFAULT_SUITES)
def test_scapy_baseline_interoperates(name):
    pytest.importorskip("scapy.layers.ipsec")
    cfg = parse_suite(name).sa()
    enc, dec = _engine_fns(cfg)
    reference.check_against_engine(reference.ScapyESP(cfg), enc, dec,
                                   packets(64, 2) + packets("imix", 12))


def test_timing_helpers_report_medians():
    calls = []
    (t,) = runner.time_batches([runner.Replay(lambda: calls.append(1), None, 4, 0.01)], 3)
    assert t is not None and t.repeats == 3 and t.ns_min <= t.ns <= t.ns_max
    assert len(calls) >= 9                                  # at least 3 rounds per repeat
    seen, resets = [], []
    t = runner.time_packets(seen.append, [bytes([i]) for i in range(40)],
                            lambda: resets.append(len(seen)), 0.01, 3, quantum=12)
    assert t is not None and t.repeats == 3
    assert len(seen) % 24 == 0                              # whole chunks of IMIX periods
    assert all(s % 24 == 0 for s in resets)                 # reset at every pass start
    assert {x[0] for x in seen} == set(range(24))           # the sample: 1 chunk of 24


# ---------------------------------------------------------------------------------------
# --profile (bench/stages.py) and --perf (bench/perf.py)
# ---------------------------------------------------------------------------------------
STAGE_KEYS = ("parse_lookup_ns", "replay_ns", "crypto_ns", "headers_ns", "dispatch_ns",
              "io_ns")


def test_profile_stages_add_up(tmp_path, capsys):
    """The stages are in the JSON, non-negative, and add up to the profile's total (whole
    Engine call + I/O) within what this run says it clamped (plus JSON rounding)."""
    out = tmp_path / "p.json"
    assert runner.main(["--suites", "cbc(aes)/128+hmac(sha1)/96", "--sizes", "64,imix",
                        "--batch", "16", "--duration", "0.05", "--repeats", "2",
                        "--no-baselines", "--profile", "--json", str(out)]) == 0
    records = json.loads(out.read_text())
    assert len(records) == 4
    for r in records:
        p = r["profile"]
        for k in STAGE_KEYS + ("total_ns", "engine_ns", "clamped_ns"):
            assert isinstance(p[k], (int, float)) and math.isfinite(p[k]) and p[k] >= 0, k
        assert p["total_ns"] > 0 and p["rounds"] >= 5
        staged = sum(p[k] for k in STAGE_KEYS)
        assert abs(staged - p["total_ns"]) <= p["clamped_ns"] + 1e-3 * p["total_ns"]
        assert abs(p["total_ns"] - p["engine_ns"] - p["io_ns"]) <= 1e-3 * p["total_ns"]
        assert abs(sum(p["percent"].values()) - 100 * staged / p["total_ns"]) < 0.1
    text = capsys.readouterr().out
    assert "per-stage profile" in text and "parse+SA" in text and "dispatch" in text


def _esp_engines(name="rfc4106(gcm(aes))/128", n=12):
    cfg = parse_suite(name).sa()
    out, inb = Engine(max_sas=4), Engine(max_sas=4)
    out.install(cfg, "out")
    inb.install(cfg, "in")
    plain = packets("imix", n)
    b = PacketBatch.from_packets(plain)
    out.encrypt(b)
    return cfg, plain, b.packets(), inb


def test_prefix_kernels_stop_where_prepare_decides():
    """The profile's prefix kernels reach the same SA and replay decisions as the engine's
    prepare pass: the packets a stage boundary keeps are the ones prepare keeps."""
    from bench.stages import StageProfile
    from engine.ops import OP_SA

    cfg, plain, esp, inb = _esp_engines()
    bad = bytearray(esp[3])
    bad[20] ^= 0xFF                               # another SPI: no SA
    pkts = esp[:3] + [bytes(bad)] + esp[4:] + esp[:2]      # two in-batch duplicates
    for rnd in range(2):                          # the second time every packet is a replay
        b = PacketBatch.from_packets(pkts)
        sp = StageProfile(inb, b, "decrypt", lambda: None, pkts)
        sp._upto_lookup()
        lookup = sp.out[:b.count].copy()
        sp._upto_replay()
        replay = sp.out[:b.count].copy()
        sp.p.prepare()
        want = np.array(sp.p.ops[:b.count, OP_SA])
        assert lookup[3] == -1 and (lookup >= 0).sum() == len(pkts) - 1
        assert (replay == want).all(), (rnd, replay, want)
        assert (want >= 0).sum() == (len(pkts) - 1 if rnd == 0 else 0)
        sp.p.crypto()
        sp.p.finish()                             # advances the window for round 2

    eng = Engine(max_sas=4)
    eng.install(cfg, "out")
    b = PacketBatch.from_packets(plain)
    sp = StageProfile(eng, b, "encrypt", lambda: None, plain)
    seq0 = int(eng.sad.rec["seq_out"].max())
    sp._upto_replay()
    assert (sp.out[:b.count] >= 0).all()
    assert int(eng.sad.rec["seq_out"].max()) == seq0 + b.count      # one number per packet


def test_perf_without_profilers_is_one_line(monkeypatch, capsys):
    from bench import perf
    monkeypatch.setattr(perf.shutil, "which", lambda name: None)
    assert runner.main(["--suites", "rfc4106(gcm(aes))/128", "--sizes", "64",
                        "--perf", "/nonexistent/x.data"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "perf is not installed" in err[0] and "py-spy" in err[0]
    assert "Traceback" not in err[0]


def test_perf_map_names_the_kernels(tmp_path):
    from bench import perf
    _esp_engines()                               # the kernels are compiled (or loaded)
    syms = perf.jit_symbols()
    names = [n for _, n in syms]
    assert "numba:engine.kernels_esp.prepare_encrypt" in names
    path = perf.write_perf_map(pid=10**9 + os.getpid())
    try:
        with open(path) as f:
            lines = f.read().splitlines()
        assert len(lines) == len(syms)
        for ln in lines:
            addr, size, name = ln.split(" ", 2)
            assert int(addr, 16) > 0 and int(size, 16) > 0 and name.startswith("numba:")
    finally:
        os.unlink(path)


def test_perf_run_gives_a_report_or_one_line(tmp_path):
    """--perf end to end: with a usable perf (or py-spy), a report naming the Numba kernels;
    without, one line on stderr and exit status 1, never a traceback."""
    data = tmp_path / "spu.data"
    p = subprocess.run(
        [sys.executable, "-m", "engine.cli", "bench", "--suites", "rfc4106(gcm(aes))/128",
         "--sizes", "64", "--batch", "64", "--duration", "0.3", "--repeats", "2",
         "--no-baselines", "--perf", str(data)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert "Traceback" not in p.stderr
    if p.returncode == 1:
        assert len([ln for ln in p.stderr.splitlines() if ln.startswith("spu: error")]) == 1
        return
    assert p.returncode == 0, p.stderr
    assert "perf report" in p.stdout or "py-spy" in p.stdout
    if "perf report" in p.stdout:
        assert "wrote /tmp/perf-" in p.stderr          # the JIT map for the child's pid
        os.unlink(p.stderr.split("wrote ", 1)[1].split()[0])
        report = p.stdout.split("perf report", 1)[1].splitlines()[1:]
        assert report and all("%" in ln for ln in report)
        jit = [ln for ln in report if "[JIT]" in ln]  # JIT code in the top entries is named
        assert all("numba:" in ln for ln in jit), jit


def test_spu_scaling_bench_shows_its_blocks(tmp_path):
    """`python -m engine.spu_bench --show-blocks`: every configuration's median and the
    median of each block it ran, in the JSON and on stdout."""
    out = tmp_path / "scaling.json"
    p = subprocess.run(
        [sys.executable, "-m", "engine.spu_bench", "--batch", "64", "--batches", "4",
         "--duration", "0.6", "--directions", "encrypt", "--show-blocks", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    res = json.loads(out.read_text())
    rows = {(r["config"], r["workers"]): r for r in res["results"]}
    assert set(rows) == {("inprocess", 1), ("workers", 1), ("workers", 2)}
    for r in rows.values():
        blocks = r["block_ns_per_packet"]
        assert len(blocks) >= 1 and all(_positive(b) for b in blocks)
        assert min(blocks) <= r["ns_per_packet"] * (1 + 1e-9) and \
            r["ns_per_packet"] <= max(blocks) * (1 + 1e-9)
    assert p.stdout.count("blocks, in order") == 3
    assert _positive(res["speedup"]["encrypt"]["2"])         # (JSON keys are strings)
    assert res["arrival"] == "owner" and "copied in by the owner" in p.stdout


@pytest.mark.parametrize("arrival", ["fill", "dispatcher"])
def test_spu_scaling_bench_other_arrivals(tmp_path, arrival):
    """`--arrival fill` (the dispatcher copies each batch in, as `spu encrypt` does) and
    `--arrival dispatcher` (the arrival area, copied in by the dispatcher) run the same
    data path to the end: no packet dropped (the benchmark raises if one is)."""
    out = tmp_path / "scaling.json"
    p = subprocess.run(
        [sys.executable, "-m", "engine.spu_bench", "--batch", "64", "--batches", "4",
         "--duration", "0.3", "--arrival", arrival, "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    res = json.loads(out.read_text())
    assert res["arrival"] == arrival and f"copied in by the {arrival}" in p.stdout
    assert {(r["direction"], r["config"], r["workers"]) for r in res["results"]} == \
        {(d, c, w) for d in ("encrypt", "decrypt") for c, w in
         (("inprocess", 1), ("workers", 1), ("workers", 2))}
