"""The engine's three passes called one by one: the crypto ceiling and the stage profile.

Engine.encrypt/decrypt (engine/engine.py) run prepare (Numba) -> crypto (Cython) ->
finish (Numba) over a batch. `Passes` calls the same kernels in the same order with the
same arguments, so that the bench can

- time the crypto pass alone on op rows prepared once (`crypto`): the ceiling, i.e. the
  engine's own native crypto on the same packets with no IPsec work around it, and
- time each pass separately for `spu bench --profile` (bench/stages.py runs these passes
  beside its prefix kernels; `profile_round` is the plain three-pass split).

Nothing here changes the engine. If Engine.encrypt/decrypt change their sequence of calls,
mirror it here; tests/test_bench_smoke.py checks that the staged passes produce the same
bytes as the engine.
"""
from __future__ import annotations

import time

import numpy as np

from engine.batch import PacketBatch
from engine.engine import Engine
from engine.kernels_esp import finish_decrypt, finish_encrypt, prepare_decrypt, prepare_encrypt
from engine.ops import OP_COLS


class Passes:
    """The passes of one engine over one batch, in one direction ("encrypt"/"decrypt")."""

    def __init__(self, engine: Engine, batch: PacketBatch, direction: str):
        if direction not in ("encrypt", "decrypt"):
            raise ValueError("direction must be 'encrypt' or 'decrypt'")
        self.engine = engine
        self.batch = batch
        self.direction = direction
        n = max(batch.count, 1)
        self.ops = np.zeros((n, OP_COLS), np.int64)    # the bench's own, not the engine's
        self.aux = np.zeros((n, 3), np.int64)

    # -- the three passes, exactly as Engine.encrypt / Engine.decrypt call them ----------
    def prepare(self) -> None:
        b, s, e = self.batch, self.engine.sad, self.engine
        if self.direction == "encrypt":
            prepare_encrypt(b.buf, b.off, b.length, b.slot_start, b.slot_end, b.drop, b.sa,
                            b.count, s.rec, s.addr, *s.policy, self.ops, s.ctr, e.gdrop)
        else:
            prepare_decrypt(b.buf, b.off, b.length, b.drop, b.sa, b.count, s.rec, s.addr,
                            s.in_hash, s.encap_ports, s.top, s.bitmap, self.ops, self.aux,
                            s.ctr, e.gdrop, s.ah_in > 0)

    def crypto(self) -> None:
        b = self.batch
        self.engine.esp_crypto(b.buf, self.ops, b.drop, b.count, self.direction == "encrypt")

    def finish(self) -> None:
        b, s, e = self.batch, self.engine.sad, self.engine
        n = b.count
        if self.direction == "encrypt":
            finish_encrypt(b.buf, b.off, b.length, b.drop, b.sa, n, s.rec, self.ops, s.ctr,
                           e.gdrop)
        else:
            finish_decrypt(b.buf, b.off, b.length, b.drop, b.sa, n, s.rec, s.addr, s.top,
                           s.bitmap, self.ops, self.aux, s.ctr, e.gdrop)
        e._account(b)

    def run(self) -> None:
        """All three passes: what Engine.encrypt / Engine.decrypt do."""
        self.prepare()
        self.crypto()
        self.finish()

    def profile_round(self) -> tuple[float, float, float]:
        """One batch through the three passes: seconds of prepare, crypto, finish."""
        t0 = time.perf_counter()
        self.prepare()
        t1 = time.perf_counter()
        self.crypto()
        t2 = time.perf_counter()
        self.finish()
        t3 = time.perf_counter()
        return t1 - t0, t2 - t1, t3 - t2


class Ceiling:
    """The crypto pass alone over op rows prepared once, on the case's own batch.

    `setup()` restores the batch (the caller's `restore`), runs the prepare pass once and
    snapshots the bytes. Then `run()` is the timed body: the engine's native crypto call.
    Encrypt can be repeated on its own output (same lengths, same work). An in-place decrypt
    destroys its input and a failed ICV would skip the cipher, so decrypt needs `restore()`
    before every run; the runner restores outside the clocked call.
    """

    def __init__(self, passes: Passes):
        self.p = passes
        self._buf = None

    @property
    def needs_restore(self) -> bool:
        return self.p.direction == "decrypt"

    def setup(self) -> None:
        b = self.p.batch
        self.p.prepare()
        if np.any(b.drop[:b.count]):
            raise RuntimeError(f"ceiling: the prepare pass dropped packets "
                               f"(reasons {sorted(set(b.drop[:b.count].tolist()))})")
        self._buf = b.buf.copy()

    def restore(self) -> None:
        b = self.p.batch
        np.copyto(b.buf, self._buf)
        b.drop[:b.count] = 0

    def run(self) -> None:
        self.p.crypto()

    def check(self) -> None:
        """After a run: every row went through the cipher (no ICV or cipher failure)."""
        b = self.p.batch
        if np.any(b.drop[:b.count]):
            raise RuntimeError("ceiling: the crypto pass dropped packets")
