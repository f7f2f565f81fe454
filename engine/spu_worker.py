"""The SPU worker process: one Engine over its shard of the SAs (engine/spu.py dispatches).

Work arrives in two ways, and is handled strictly in order, which is what keeps every
SA's packets in order across installs, moves and removals:

- run requests, in the worker's shared segment (no system call while both sides are
  busy): req[q % QUEUE] = (encrypt, k, start, m), published by raising ctl[POSTED];
  the worker processes its packets start:start+m of ring batch k (bytes in place,
  copied in first from the arrival area for those waiting there; metadata in row_*),
  then raises ctl[COMPLETED]. A side with nothing to do polls for SPIN seconds, then
  raises its ASLEEP word and sleeps on the pipe, and the other side
  sends ("wake",) when it sees that word. The words are written and read with full
  memory barriers (kernels_dispatch.publish/observe): a request or result is visible
  before the word that announces it, and of "I posted / are you asleep?" and "I am
  asleep / anything posted?" one side always sees the other's store, so no wake-up is
  lost. A sleeper re-checks after NAP seconds anyway, twice as long each time up to
  IDLE_NAP.
- control messages over a multiprocessing Pipe, sent only when the worker has completed
  every run posted to it (the dispatcher waits for that):

    ("install", [(handle, cfg, direction, state), ...])  -> ("ok", None) | ("err", text)
    ("export", [handle, ...], remove)  -> ("ok", [state, ...])   exact SA state for a move
    ("remove", [handle, ...])  -> ("ok", None)
    ("stop",)

Packets never travel over the pipe (engine/ring.py). SAConfigs do, at install (the
control path), and are never logged. The engine's SA records, replay edges and counters
are views of this worker's shared segment, so the dispatcher reads sequence high-water
marks without asking; a worker that dies leaves them behind.

`state` (a dict, or None for a fresh SA) sets runtime state after install:
seq_out (last outbound number used), top (inbound window edge), bitmap (the window's
words, exact), all_seen (every number up to top counts as seen: the conservative resume
after a failure, when the dead worker's bitmap is gone).
"""
from __future__ import annotations

import os
import pickle
import signal
import time
from typing import Optional

import numpy as np

from . import ring
from .batch import PacketBatch
from .engine import Engine
from .kernels_dispatch import (arrive, arrive_all, arrive_rows, gather, observe, publish,
                               scatter)

_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)

# -- the run queue (engine/ring.py worker_layout: ctl, req) ---------------------------------
#: ctl words, each on a cache line of its own and written by one side only
POSTED = 0                # requests posted (dispatcher)
COMPLETED = 8             # requests completed (worker; results are written before it)
WORKER_ASLEEP = 16        # the worker sleeps on its pipe: wake it after posting
DISPATCHER_ASLEEP = 24    # the dispatcher sleeps on the pipes: wake it after completing
BUSY_NS = 32              # nanoseconds spent in runs (worker; read for balancing)
QUEUE = ring.QUEUE
SPIN = 200e-6             # seconds a side with nothing to do polls before it sleeps:
#                           about a batch's time, so a sleep and a wake-up (slow in a VM)
#                           are only paid when the other side really is idle; 0 when the
#                           cluster has more processes than cores (a spinner would take
#                           the core of the process it waits for)
NAP = 0.001               # a sleeper re-checks shared memory at least this often
IDLE_NAP = 0.064          # ... doubling up to this while a worker stays idle


# -- pipe messages: wake-ups packed by hand, control ones pickled ----------------------------
def send(conn, msg: tuple) -> None:
    if msg[0] == "wake":
        conn.send_bytes(b"W")
    else:
        conn.send_bytes(b"P" + pickle.dumps(msg, pickle.HIGHEST_PROTOCOL))


def recv(conn) -> tuple:
    data = conn.recv_bytes()
    if data == b"W":
        return ("wake",)
    return pickle.loads(data[1:])


def mark_seen_through(bitmap: np.ndarray, base: int, words: int, top: int) -> None:
    """Mark every sequence number <= top inside the window as seen (engine/replay.py
    layout: number q is bit q & 63 of word base + (q >> 6) % words). Numbers above top
    share only top's own word, and stay unmarked there."""
    if words == 0:
        return
    bitmap[base:base + words] = _ALL
    bit = top & 63
    keep = (1 << (bit + 1)) - 1
    bitmap[base + (top >> 6) % words] = np.uint64(keep)


class Worker:
    def __init__(self, conn, spec: dict):
        self.conn = conn
        self.id = spec["id"]
        cap, data, nring, max_sas = (spec["capacity"], spec["data_bytes"], spec["ring"],
                                     spec["max_sas"])
        self.ring_seg = ring.Segment.attach(spec["ring_name"],
                                            ring.ring_layout(nring, cap, data))
        self.batches = ring.ring_batches(self.ring_seg, nring, cap, data)
        self.seg = ring.Segment.attach(spec["seg_name"], ring.worker_layout(nring, cap, max_sas))
        self.idx = self.seg.arrays["idx"]
        self.arrival: Optional[np.ndarray] = None      # the arrival area (SpuCluster)
        if spec.get("arrival_name"):
            self.arrival_seg = ring.Segment.attach(spec["arrival_name"],
                                                   ring.arrival_layout(spec["arrival_bytes"]))
            self.arrival = self.arrival_seg.arrays["bytes"]
        self.spin = spec.get("spin", SPIN)
        self.ctl = self.seg.arrays["ctl"]
        self.req = self.seg.arrays["req"]
        self.eng = Engine(max_sas=max_sas, backend=spec.get("backend", "auto"))
        sad = self.eng.sad
        for name in ("rec", "top", "ctr"):       # the hot state lives in shared memory
            shared = self.seg.arrays[name]
            shared[...] = getattr(sad, name)
            setattr(sad, name, shared)
        self.view = PacketBatch(cap, data_bytes=1)   # metadata of this worker's packets
        self.view.buf = self.batches[0].buf
        a = self.seg.arrays
        #: per ring batch, this worker's packets' metadata (ring.worker_layout): the
        #: engine runs on these rows (run, not in_place)
        self.rows = [tuple(a["row_" + name][k] for name, _ in ring.ROWS)
                     for k in range(nring)]
        v = self.view
        self.own_rows = (v.off, v.length, v.slot_start, v.slot_end, v.drop, v.sa)
        self.eng.encrypt(self.view)              # load every kernel now, not in batch 1
        self.eng.decrypt(self.view)

    # -- data --------------------------------------------------------------------------
    def run(self, encrypt: bool, k: int, start: int, m: int, in_place: bool = False) -> None:
        """This worker's packets start:start+m of ring batch k: their bytes in place
        (copied in first from the arrival area for those waiting there), their metadata
        in row_*[k, start:start+m], where the dispatcher put it (hand_over) and where the
        engine leaves its results for the dispatcher to merge: a worker reads and writes
        no cache line of the batch's metadata, which it would share with other SPUs.
        in_place (the dispatcher's own SPU): packets idx[k, start:start+m], metadata
        gathered from the batch and scattered back into it."""
        b = self.batches[k]
        v = self.view
        if in_place:
            idx = self.idx[k, start:start + m]
            v.off, v.length, v.slot_start, v.slot_end, v.drop, v.sa = self.own_rows
            gather(idx, m, b.off, b.length, b.slot_start, b.slot_end, b.drop, b.sa,
                   v.off, v.length, v.slot_start, v.slot_end, v.drop, v.sa)
            if self.arrival is not None:
                arrive(idx, m, b.arrive_from, self.arrival, b.buf, b.off, b.length)
        else:
            off, length, slot_start, slot_end, drop, sa, src = \
                (r[start:] for r in self.rows[k])
            v.off, v.length, v.slot_start, v.slot_end, v.drop, v.sa = \
                off, length, slot_start, slot_end, drop, sa
            if self.arrival is not None:
                arrive_rows(m, src, self.arrival, b.buf, off, length)
        v.buf = b.buf
        v.count = m
        if encrypt:
            self.eng.encrypt(v)
        else:
            self.eng.decrypt(v)
        if in_place:
            scatter(idx, m, v.off, v.length, v.drop, v.sa, b.off, b.length, b.drop, b.sa)

    def run_batch(self, encrypt: bool, k: int, n: int) -> None:
        """All n packets of ring batch k, the dispatcher's own SPU owning every one: the
        engine on the batch itself (no gather, no scatter: 7 ns per packet)."""
        b = self.batches[k]
        b.count = n
        if self.arrival is not None:
            arrive_all(n, b.arrive_from, self.arrival, b.buf, b.off, b.length)
        if encrypt:
            self.eng.encrypt(b)
        else:
            self.eng.decrypt(b)

    # -- control -----------------------------------------------------------------------
    def _check_shared(self) -> None:
        sad = self.eng.sad
        for name in ("rec", "top", "ctr"):
            if getattr(sad, name) is not self.seg.arrays[name]:
                raise RuntimeError(f"the SA database replaced its {name!r} array: the SPU "
                                   "shared state no longer sees it")

    def op_install(self, items) -> None:
        sad = self.eng.sad
        done = []
        try:
            for handle, cfg, direction, state in items:
                self.eng.install(cfg, direction, slot=handle)
                done.append(handle)
                if state:
                    self._apply(handle, state)
        except (ValueError, OverflowError, KeyError):
            for h in done:
                sad.remove(h)
            raise
        self._check_shared()

    def _apply(self, s: int, state: dict) -> None:
        sad = self.eng.sad
        r = sad.rec[s]
        if state.get("seq_out") is not None:
            r["seq_out"] = state["seq_out"]
        if state.get("top") is not None:
            sad.top[s] = state["top"]
        base, words = int(r["bm_base"]), int(r["bm_words"])
        if state.get("bitmap") is not None and len(state["bitmap"]) == words:
            sad.bitmap[base:base + words] = state["bitmap"]
        elif state.get("all_seen"):
            mark_seen_through(sad.bitmap, base, words, int(sad.top[s]))

    def op_export(self, handles, remove: bool) -> list:
        sad = self.eng.sad
        out = []
        for s in handles:
            r = sad.rec[s]
            base, words = int(r["bm_base"]), int(r["bm_words"])
            out.append({"seq_out": int(r["seq_out"]), "top": int(sad.top[s]),
                        "bitmap": sad.bitmap[base:base + words].copy(),
                        "ctr": sad.ctr[s].copy()})
            if remove:
                sad.remove(s)
        return out

    def op_remove(self, handles) -> None:
        for s in handles:
            self.eng.sad.remove(s)

    # -- loop --------------------------------------------------------------------------
    def loop(self) -> None:
        conn, ctl, req = self.conn, self.ctl, self.req
        done = int(ctl[COMPLETED])
        while True:
            if observe(ctl, POSTED) > done:
                enc, k, start, m = req[done % QUEUE].tolist()
                t = time.perf_counter_ns()
                self.run(bool(enc), k, start, m)
                ctl[BUSY_NS] += time.perf_counter_ns() - t
                done += 1
                publish(ctl, COMPLETED, done)
                if ctl[DISPATCHER_ASLEEP]:
                    send(conn, ("wake",))
                continue
            msg = self._idle(done)
            if msg is None or msg[0] == "wake":
                continue
            if msg[0] == "stop":
                return
            try:
                result = getattr(self, "op_" + msg[0])(*msg[1:])
            except (ValueError, OverflowError, KeyError) as e:
                send(conn, ("err", f"{type(e).__name__}: {e}"))
            else:
                send(conn, ("ok", result))

    def _idle(self, done: int):
        """Wait for a posted run (returns None) or a pipe message (returns it)."""
        ctl, conn = self.ctl, self.conn
        end = time.perf_counter() + self.spin
        while time.perf_counter() < end:
            if ctl[POSTED] > done:
                return None
        publish(ctl, WORKER_ASLEEP, 1)
        nap = NAP
        try:
            while observe(ctl, POSTED) <= done:
                if conn.poll(nap):
                    return recv(conn)
                nap = min(nap * 2, IDLE_NAP)     # an idle SPU should not wake 1000 times/s
        finally:
            ctl[WORKER_ASLEEP] = 0
        return None


def main(conn, spec: dict) -> None:
    """Process entry point. Ends on ("stop",) or when the dispatcher goes away (EOF)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the dispatcher's to handle
    try:                                           # `ps` and `top` show which SPU it is
        with open("/proc/self/comm", "w") as f:
            f.write(f"pyspu-spu{spec['id']}")
    except OSError:
        pass
    worker: Optional[Worker] = None
    try:
        worker = Worker(conn, spec)
        send(conn, ("ready", os.getpid(), worker.eng.backend()))
        worker.loop()
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass
    except Exception as e:     # noqa: BLE001 - reported to the dispatcher, then exit non-zero
        try:
            send(conn, ("fail", f"{type(e).__name__}: {e}"))
        except OSError:
            pass
        raise SystemExit(1) from None
