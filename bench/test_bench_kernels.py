"""pytest-benchmark suite: the engine, its passes one by one, and the Python baseline.

    .venv/bin/python -m pytest bench/ --benchmark-only [--benchmark-compare] [-k gcm]

Not part of the test run (pyproject's testpaths is tests/). One batch of BATCH packets
per round; pytest-benchmark's numbers are per batch (divide by BATCH for ns/packet).
`spu bench` is the report for people; this is for comparing commits
(`--benchmark-autosave`, `--benchmark-compare`).
"""
from __future__ import annotations

import numpy as np
import pytest

from bench.ceiling import Ceiling, Passes
from bench.reference import PythonESP
from bench.workload import packets, parse_suite
from engine.batch import PacketBatch
from engine.engine import Engine

BATCH = 256
SUITES = ["rfc4106(gcm(aes))/128", "cbc(aes)/128+hmac(sha1)/96",
          "rfc7539esp(chacha20,poly1305)"]
SIZES = [64, 1400, "imix"]
ROUNDS = 60


class Case:
    """Engines and restorable batches for one suite and packet size."""

    def __init__(self, suite: str, size):
        self.cfg = parse_suite(suite).sa()
        self.enc, self.dec = Engine(max_sas=4), Engine(max_sas=4)
        self.slot = self.enc.install(self.cfg, "out")
        self.dec.install(self.cfg, "in")
        self.plain = packets(size, BATCH)
        b = PacketBatch.from_packets(self.plain)
        self.enc.encrypt(b)
        assert not b.drop[:BATCH].any()
        self.esp = b.packets()

    def batch(self, direction: str):
        """(batch, restore) for a direction; restore makes the batch new again."""
        b = PacketBatch.from_packets(self.plain if direction == "encrypt" else self.esp)
        buf, off, length = b.buf.copy(), b.off.copy(), b.length.copy()
        eng = self.enc if direction == "encrypt" else self.dec

        def restore():
            np.copyto(b.buf, buf)
            np.copyto(b.off, off)
            np.copyto(b.length, length)
            b.drop[:] = 0
            b.sa[:] = -1
            eng.sad.rec["seq_out"][:] = 0
            eng.sad.top[:] = 0
            eng.sad.bitmap[:] = 0
        return b, restore, eng


_cases: dict = {}


def case(suite: str, size) -> Case:
    if (suite, size) not in _cases:
        _cases[(suite, size)] = Case(suite, size)
    return _cases[(suite, size)]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("direction", ["encrypt", "decrypt"])
def test_engine(benchmark, suite, size, direction):
    c = case(suite, size)
    b, restore, eng = c.batch(direction)
    run = eng.encrypt if direction == "encrypt" else eng.decrypt
    restore()
    run(b)
    benchmark.extra_info.update(packets=BATCH, suite=suite, size=size)
    benchmark.pedantic(run, args=(b,), setup=restore, rounds=ROUNDS, warmup_rounds=2)
    assert not b.drop[:BATCH].any()


@pytest.mark.parametrize("stage", ["prepare", "crypto", "finish"])
@pytest.mark.parametrize("size", [64, 1400])
@pytest.mark.parametrize("direction", ["encrypt", "decrypt"])
def test_stage(benchmark, stage, size, direction):
    """One pass alone, the others run untimed around it (as in `spu bench --profile`)."""
    c = case(SUITES[0], size)
    b, restore, eng = c.batch(direction)
    p = Passes(eng, b, direction)
    before = {"prepare": [], "crypto": [p.prepare], "finish": [p.prepare, p.crypto]}[stage]

    def setup():
        restore()
        for f in before:
            f()
    restore()
    p.run()
    benchmark.extra_info.update(packets=BATCH)
    benchmark.pedantic(getattr(p, stage), setup=setup, rounds=ROUNDS, warmup_rounds=2)
    assert not b.drop[:BATCH].any()


@pytest.mark.parametrize("size", [64, 1400])
@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("direction", ["encrypt", "decrypt"])
def test_ceiling(benchmark, suite, size, direction):
    """The crypto pass alone on op rows prepared once (the `spu bench` ceiling)."""
    c = case(suite, size)
    b, restore, eng = c.batch(direction)
    restore()
    ceil = Ceiling(Passes(eng, b, direction))
    ceil.setup()
    benchmark.extra_info.update(packets=BATCH)
    benchmark.pedantic(ceil.run, setup=ceil.restore if ceil.needs_restore else None,
                       rounds=ROUNDS, warmup_rounds=2)
    if ceil.needs_restore:
        ceil.restore()
        ceil.run()
    ceil.check()


@pytest.mark.parametrize("size", [64, 1400])
@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("direction", ["encrypt", "decrypt"])
def test_python_baseline(benchmark, suite, size, direction):
    """Per-packet ESP on `cryptography` over the same BATCH packets."""
    c = case(suite, size)
    ref = PythonESP(c.cfg)
    fn = ref.encrypt if direction == "encrypt" else ref.decrypt
    src = c.plain if direction == "encrypt" else c.esp

    def loop():
        for p in src:
            fn(p)
    benchmark.extra_info.update(packets=BATCH)
    benchmark.pedantic(loop, setup=ref.reset, rounds=5, warmup_rounds=1)
