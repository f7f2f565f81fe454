"""The SPU worker process: one Engine over its shard of the SAs (engine/spu.py dispatches).

Messages arrive over a multiprocessing Pipe, one per batch or control operation, and are
handled strictly in order, which is what keeps every SA's packets in order across
installs, moves and removals:

    ("run", encrypt, k, start, m)  -> ("done", k, start)
        process packets idx[k, start:start+m] of ring batch k in place
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
import struct
from typing import Optional

import numpy as np

from . import ring
from .batch import PacketBatch
from .engine import Engine
from .kernels_dispatch import gather, scatter

_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)

# -- messages: the per-batch ones packed by hand, control ones pickled ------------------------
_RUN = struct.Struct("<cBIII")      # b"R", encrypt, k, start, m
_DONE = struct.Struct("<cII")       # b"D", k, start


def send(conn, msg: tuple) -> None:
    if msg[0] == "run":
        conn.send_bytes(_RUN.pack(b"R", msg[1], msg[2], msg[3], msg[4]))
    elif msg[0] == "done":
        conn.send_bytes(_DONE.pack(b"D", msg[1], msg[2]))
    else:
        conn.send_bytes(b"P" + pickle.dumps(msg, pickle.HIGHEST_PROTOCOL))


def recv(conn) -> tuple:
    data = conn.recv_bytes()
    tag = data[:1]
    if tag == b"R":
        _, enc, k, start, m = _RUN.unpack(data)
        return ("run", bool(enc), k, start, m)
    if tag == b"D":
        _, k, start = _DONE.unpack(data)
        return ("done", k, start)
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
        self.eng = Engine(max_sas=max_sas, backend=spec.get("backend", "auto"))
        sad = self.eng.sad
        for name in ("rec", "top", "ctr"):       # the hot state lives in shared memory
            shared = self.seg.arrays[name]
            shared[...] = getattr(sad, name)
            setattr(sad, name, shared)
        self.view = PacketBatch(cap, data_bytes=1)   # metadata of this worker's packets
        self.view.buf = self.batches[0].buf
        self.eng.encrypt(self.view)              # load every kernel now, not in batch 1
        self.eng.decrypt(self.view)

    # -- data --------------------------------------------------------------------------
    def run(self, encrypt: bool, k: int, start: int, m: int) -> None:
        b = self.batches[k]
        v = self.view
        idx = self.idx[k, start:start + m]
        gather(idx, m, b.off, b.length, b.slot_start, b.slot_end, b.drop, b.sa,
               v.off, v.length, v.slot_start, v.slot_end, v.drop, v.sa)
        v.buf = b.buf
        v.count = m
        if encrypt:
            self.eng.encrypt(v)
        else:
            self.eng.decrypt(v)
        scatter(idx, m, v.off, v.length, v.drop, v.sa, b.off, b.length, b.drop, b.sa)

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
        conn = self.conn
        while True:
            msg = recv(conn)
            op = msg[0]
            if op == "run":
                self.run(msg[1], msg[2], msg[3], msg[4])
                send(conn, ("done", msg[2], msg[3]))
            elif op == "stop":
                return
            else:
                try:
                    result = getattr(self, "op_" + op)(*msg[1:])
                except (ValueError, OverflowError, KeyError) as e:
                    send(conn, ("err", f"{type(e).__name__}: {e}"))
                else:
                    send(conn, ("ok", result))


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
