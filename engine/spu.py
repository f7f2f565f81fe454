"""SPUs: the IPsec data path spread over worker processes, each owning a shard of the SAs.

    cl = SpuCluster(workers=2)                    # starts the worker processes
    h = cl.install(cfg, "in", anchor=(src, dst, sport, dport))   # the IKE 4-tuple
    for batch in cl.stream("decrypt", reader_fill):              # input order kept
        writer.write(batch)
    cl.stats(); cl.spu_stats(); cl.sa_stats(h); cl.add_worker(); cl.close()

Anchoring (engine/anchor.py): the IKE 4-tuple hashes to one of N_LOGICAL logical SPUs, an
AnchorMap gives each logical SPU a physical SPU (a worker process), and every SA is
installed on the anchor SPU of its IKE SA, so child SAs of one IKE SA (and, for SA files,
all SAs between the same two peers) share one owner. Each SA has exactly one owner: its
replay window and sequence counter never need a lock (STYLE.md point 11).

Data path per batch (no packet copied between processes or pickled; engine/ring.py):
1. the batch is read into a shared-memory ring batch, or (with an arrival area) only its
   descriptors are: the packets wait in the area, and step 2 reads their headers there;
2. a Numba kernel (engine/kernels_dispatch.py) maps each packet to its SA's owner:
   decrypt by (SPI, dst, proto) through this dispatcher's own lookup tables, encrypt by
   the first matching outbound selector (pinned in batch.sa). Packets that match no SA
   are dropped here with the reason the engine gives (no_sa, no_policy, malformed,
   keepalive). Packets waiting in the arrival area then get their slots, each SPU's side
   by side in a page-aligned region of their own;
3. each worker owner gets its packet indices in its request ring and one request in its
   shared run queue (spu_worker: no system call while both sides are busy); it copies
   in those of its packets waiting in the arrival area, runs the engine on them in place,
   writes their metadata beside its requests, and counts the request completed. With
   host_spu, the dispatcher runs its own SPU's packets first;
4. when every owner has completed its part (the dispatcher merges their metadata), the
   batch is complete, in input order, and counted.
Each worker handles its requests in order, and control messages only after the requests
posted before them, so each SA's packets stay in order.

Failure: a worker that dies (or makes no progress for `timeout`) is found through its
process sentinel or pipe EOF. Its packets still inside it (posted, not completed) are
marked LOST and counted as `lost`; nothing else is. Its logical SPUs, and only those, move
to the survivors (AnchorMap.remove), and its SAs are re-created there from the control
copy kept here: outbound SAs resume at the dead worker's sequence high-water mark plus
`capacity` (its records live in shared memory, so the mark is at most one batch behind
what it used: no sequence number is ever sent twice), inbound SAs resume with the window
edge it last reached and everything up to it marked seen (conservative: a replay of an
old packet cannot get in; a late, never-seen one is dropped as a replay).

Adding a worker (`add_worker`) moves n_logical // (live + 1) logical SPUs to it, the
minimum for a balanced table; their SAs move with their exact state (sequence number,
window bitmap), after the old owner finished what it had queued.

Counters: packets_in == packets_out + sum(dropped) + lost, globally and per SPU
(`spu_stats`); the dispatcher's own drops are reported as "dispatch".
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import multiprocessing as mp
import os
import select
import selectors
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import numpy as np

from . import ring as shm
from . import spu_worker
from .anchor import N_LOGICAL, Anchor, AnchorMap, anchor_of, logical_of
from .batch import HEADROOM, SLOT_ALIGN, TAILROOM, PacketBatch
from .drops import N_DROPS, drop_dict
from .engine import Engine
from .kernels_dispatch import (
    LOST,
    account,
    arrive_all,
    arrive_dropped,
    check_arrivals,
    hand_over,
    lay_out_by_owner,
    classify_decrypt,
    classify_encrypt,
    observe,
    publish,
    scatter,
    split,
)
from .sa import SAConfig
from .spu_balance import HOLD, choose_move
from .sad import CTR_BYTES, CTR_COLS, CTR_DROP0, CTR_PACKETS

MAX_SPUS = 64              # physical SPU ids ever started by one cluster (tuning bound)
#: Ring batches: one being filled while the SPUs work on the others. With 2 the
#: dispatcher cannot work ahead of a worker by more than one batch, and both sides wait in
#: turn: 2-SPU 1400-byte AES-GCM decrypt ran 172-178 ns per packet with 2 and 162-165 with
#: 3 or 4, encrypt the same with all three (engine.spu_bench --ring). (With an earlier
#: layout of this data path, 4 made both engines 10-20% slower than 2; with this one not.)
DEFAULT_RING = 3
DEFAULT_TIMEOUT = 60.0     # seconds a worker may take to answer one message
START_TIMEOUT = 300.0      # seconds to start a worker (a cold Numba cache compiles)
#: The hosted SPU's share of logical SPUs relative to a worker's (a tuning value). Here,
#: for 1400-byte AES-GCM, the dispatcher's own work (the batch's arrival copy,
#: classification, hand-over, accounting) is about half of what the engine spends on a
#: packet, so with 2 SPUs the dispatcher's engine should take about a quarter of the
#: packets: weight 1/3 (engine.spu_bench measures it; README "SPU workers").
HOST_WEIGHT = 1 / 3
#: ... and when each SPU copies its own packets in from the arrival area, the dispatcher
#: is left with less than a fifth of a packet's cost: with 8 tunnels, 2-SPU encrypt ran
#: 148-152 ns per 1400-byte packet at weight 0.6 (3 tunnels of 8 on the dispatcher),
#: 175-180 at 1 (4 of 8) and 175-200 at 1/3 (2 of 8).
HOST_WEIGHT_ARRIVAL = 0.6
#: Who copies a packet from the arrival area into its batch slot (SpuCluster arrival_copy)
ARRIVAL_COPIES = ("owner", "dispatcher")
REGION = shm.PAGE          # alignment of each SPU's region of an arrival batch


def host_weight_arg(text: str) -> float:
    """argparse type of --host-weight: a positive number."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"bad host weight {text!r} (a positive number)")
    return value
_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1


class SpuError(RuntimeError):
    """The SPU cluster cannot go on (every worker died, a worker reported a bug)."""


class _Died(Exception):
    def __init__(self, spu: int):
        super().__init__(f"SPU {spu} died")
        self.spu = spu


@dataclass
class _Spu:
    id: int
    process: Optional[mp.process.BaseProcess]    # None: hosted by the dispatcher
    conn: object
    seg: shm.Segment
    pid: int = 0
    alive: bool = True
    hosted: Optional[spu_worker.Worker] = None    # the dispatcher's own SPU
    replies: deque = field(default_factory=deque)
    outstanding: deque = field(default_factory=deque)   # (k, start, m) posted, not harvested
    posted: int = 0          # run requests posted to it (its ctl[POSTED])
    seen: int = 0            # of those, completions harvested

    @property
    def idx(self) -> np.ndarray:
        return self.seg.arrays["idx"]

    @functools.cached_property
    def rows(self) -> list[tuple]:
        """Per ring batch, its packets' metadata rows (ring.ROWS order)."""
        a = self.seg.arrays
        return [tuple(a["row_" + name][k] for name, _ in shm.ROWS)
                for k in range(a["idx"].shape[0])]


@dataclass
class _SA:
    """The control copy of one SA: enough to re-create it anywhere."""
    cfg: SAConfig
    direction: str
    anchor: Anchor
    logical: int
    spu: int                 # the SPU it is installed on (or being installed on)
    acked: bool = False      # that SPU confirmed: its shared record is this SA's
    floor: int = 0           # seq_out (out) / window top (in) it was last installed with
    base: np.ndarray = field(default_factory=lambda: np.zeros(CTR_COLS, np.uint64))


class _Resources:
    """Processes, pipes and segments to release even if the cluster is never closed."""

    def __init__(self):
        self.procs: list = []
        self.conns: list = []
        self.segments: list[shm.Segment] = []
        self.selector = selectors.DefaultSelector()
        self.deaths = select.epoll()       # the workers' sentinels alone: a cheap check

    def release(self, grace: float = 5.0) -> None:
        for c in self.conns:
            try:
                spu_worker.send(c, ("stop",))
            except (OSError, ValueError):
                pass
        end = time.monotonic() + grace
        for p in self.procs:
            p.join(max(0.0, end - time.monotonic()))
        for p in self.procs:
            if p.is_alive():
                p.kill()
                p.join(grace)
        for c in self.conns:
            c.close()
        for s in self.segments:
            s.unlink()
        self.procs.clear()
        self.conns.clear()
        self.segments.clear()
        self.selector.close()
        self.deaths.close()


def _context(name: Optional[str]):
    """forkserver where available (workers fork from a clean server that has imported the
    engine once: fast starts, no inherited threads or OpenSSL state), else spawn."""
    if name is None:
        name = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(name)
    if name == "forkserver":
        ctx.set_forkserver_preload(["engine.spu_worker"])
    return ctx


class SpuCluster:
    """N SPU worker processes behind one dispatcher (this object). Not thread-safe.

    Workers start with multiprocessing, so a script that creates a cluster needs the
    usual `if __name__ == "__main__":` guard. close() (or the `with` block, or garbage
    collection, or interpreter exit) stops them and unlinks every shared segment."""

    def __init__(self, workers: int = 2, *, capacity: int = 1024,
                 data_bytes: Optional[int] = None, ring: int = DEFAULT_RING,
                 max_sas: int = 1024, n_logical: int = N_LOGICAL,
                 context: Optional[str] = None, timeout: float = DEFAULT_TIMEOUT,
                 start_timeout: float = START_TIMEOUT, backend: str = "auto",
                 host_spu: bool = False, host_weight: Optional[float] = None,
                 balance: Optional[float] = None, arrival_bytes: int = 0,
                 arrival_copy: str = "owner"):
        """`workers` SPUs; ring batches of `capacity` packets / `data_bytes` bytes, `ring`
        of them in flight; `backend` is each SPU engine's crypto backend (Engine).
        `context`: a multiprocessing start method (default forkserver).

        host_spu=False: every SPU is a worker process and the dispatcher (this process)
        only dispatches. host_spu=True: the dispatcher is SPU 0 itself and starts
        workers - 1 processes (SPUs 1..): N SPUs on N cores, with no core spent on a
        dispatcher that mostly waits. SPU 0 cannot fail apart from the dispatcher; the
        others fail over as usual, to it among others. It takes `host_weight` times a
        worker's share of the logical SPUs, since it also dispatches every packet
        (default HOST_WEIGHT, or HOST_WEIGHT_ARRIVAL with an arrival area the SPUs copy
        from).

        balance: every `balance` seconds of streaming, move one logical SPU (and its SAs,
        with their exact state) from the busiest SPU to the least busy one if that narrows
        the gap (engine/spu_balance.py); None: shares stay as the weights set them.

        arrival_bytes > 0: an arrival area of that many bytes in shared memory
        (`self.arrival`, uint8), where packets can wait as a NIC's DMA or a recvmmsg left
        them. A fill may then give a ring batch, through arrive_many(), only where each
        packet waits and its length (batch.arrive_from, batch.length; every packet of the
        batch, or none) instead of copying the bytes in. The dispatcher classifies them
        where they wait, lays out their slots (each SPU's packets side by side, in a
        page-aligned region of their own), and the SPU that owns a packet copies it in
        just before its engine runs (arrival_copy "dispatcher": the dispatcher copies
        them all, laid out the same way). The bytes must stay put until the batch has been
        yielded. Why: a packet copied in by the dispatcher and encrypted by a worker
        crosses between the two cores twice, dirty both times, and interleaved slots let
        the prefetchers pull each other's lines; this VM's two vCPUs are, for seconds at
        a time, placed far apart (a cache line's round trip 330-370 ns instead of 75-90),
        and 2-SPU 1400-byte AES-GCM then ran 400-570 ns per packet instead of 150. Copied
        in by its owner, a packet's bytes stay on one core: 175-190 ns in those stretches,
        159-165 since workers get their metadata in rows of their own (README "SPU
        workers")."""
        if not 1 <= workers <= MAX_SPUS:
            raise ValueError(f"workers must be 1..{MAX_SPUS}")
        if ring < 1 or capacity < 1:
            raise ValueError("ring and capacity must be positive")
        if arrival_bytes < 0:
            raise ValueError("arrival_bytes must be >= 0")
        if arrival_copy not in ARRIVAL_COPIES:
            raise ValueError(f"arrival_copy must be one of {ARRIVAL_COPIES}")
        self.capacity = capacity
        self.data_bytes = data_bytes if data_bytes is not None else capacity * 2048
        # with an arrival area, each SPU's packets get a region of their own: room for
        # the regions' alignment on top of what the caller asked for
        self._ring_data = self.data_bytes + (MAX_SPUS * REGION if arrival_bytes else 0)
        self.arrival_copy = arrival_copy
        self.ring = ring
        self.max_sas = max_sas
        self.timeout = timeout
        self.start_timeout = start_timeout
        self.backend_choice = backend
        self.backend_label = ""
        processes = workers + (0 if host_spu else 1)      # the dispatcher is one of them
        self._spin = spu_worker.SPIN if processes <= (os.cpu_count() or 1) else 0.0
        #: Outbound resume margin after a failure: a worker is inside at most one
        #: request (<= capacity packets) past its last completed store of seq_out.
        self.margin = capacity
        self._closed = False
        self._res = _Resources()
        self._finalizer = weakref.finalize(self, self._res.release)
        self._ctx = _context(context)
        # the dispatcher's SA lookup tables (and the validation every install goes through)
        self._lookup = Engine(max_sas=max_sas, backend="openssl")
        self._sa_logical = np.zeros(max_sas, np.int32)
        self._sas: dict[int, _SA] = {}
        self._spus: dict[int, _Spu] = {}
        self._dead: deque[int] = deque()
        self._next_id = 0
        self.moves: list[tuple[str, int, list[int]]] = []   # ("add"/"fail", spu, logicals)
        self._spu_in = np.zeros(MAX_SPUS, np.uint64)
        self._spu_out = np.zeros(MAX_SPUS, np.uint64)
        self._spu_lost = np.zeros(MAX_SPUS, np.uint64)
        self._spu_drop = np.zeros((MAX_SPUS, N_DROPS), np.uint64)
        self._disp_drop = np.zeros(N_DROPS, np.uint64)
        self._counts = np.zeros(MAX_SPUS, np.int64)
        self._starts = np.zeros(MAX_SPUS, np.int64)
        self._order = np.zeros(capacity, np.int32)
        self._dest = np.full((ring, capacity), -1, np.int32)
        self._n = [0] * ring            # packets of ring batch k in flight (0 = idle)
        self._enc = [False] * ring
        self._pending = [0] * ring      # requests of ring batch k not answered yet
        self._fill = np.zeros((MAX_SPUS, ring), np.int64)   # idx entries used per SPU, batch
        # balancing: packets per logical SPU, seconds streaming and waiting, the window
        self.balance = balance
        self._load = np.zeros(n_logical, np.uint64)
        self._streamed = 0.0
        self._stream_t0: Optional[float] = None
        self._waited = 0.0
        self._window: Optional[tuple] = None
        self._held: dict[int, int] = {}      # logical SPU -> windows it must stay put
        try:
            self._ring_seg = shm.Segment.create(shm.ring_layout(ring, capacity, self._ring_data))
            self._res.segments.append(self._ring_seg)
            self.batches: list[PacketBatch] = shm.ring_batches(self._ring_seg, ring, capacity,
                                                               self._ring_data)
            for b in self.batches:
                b.sa[:] = -1
            self.arrival: Optional[np.ndarray] = None
            self._arrival_seg: Optional[shm.Segment] = None
            if arrival_bytes:
                self._arrival_seg = shm.Segment.create(shm.arrival_layout(arrival_bytes))
                self._res.segments.append(self._arrival_seg)
                self.arrival = self._arrival_seg.arrays["bytes"]
            started = [self._host()] if host_spu else []
            started += [self._spawn() for _ in range(workers - len(started))]
            for s in started:
                if s.hosted is None:
                    self._await_ready(s)
            if host_weight is None:
                host_weight = HOST_WEIGHT_ARRIVAL if arrival_bytes and \
                    arrival_copy == "owner" else HOST_WEIGHT
            weights = {started[0].id: host_weight} if host_spu else None
            self.anchors = AnchorMap([s.id for s in started], n_logical, weights)
        except BaseException:
            self.close()
            raise

    # -- lifetime ----------------------------------------------------------------------
    def close(self) -> None:
        """Stop the workers (killed if they do not stop) and unlink the shared memory."""
        self._closed = True
        self._finalizer()

    def __enter__(self) -> "SpuCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _new_spu(self) -> tuple[int, shm.Segment, dict]:
        sid = self._next_id
        if sid >= MAX_SPUS:
            raise SpuError(f"more than {MAX_SPUS} SPUs started")
        self._next_id += 1
        seg = shm.Segment.create(shm.worker_layout(self.ring, self.capacity, self.max_sas))
        self._res.segments.append(seg)
        spec = {"id": sid, "capacity": self.capacity, "data_bytes": self._ring_data,
                "ring": self.ring, "max_sas": self.max_sas, "ring_name": self._ring_seg.name,
                "seg_name": seg.name, "backend": self.backend_choice, "spin": self._spin}
        if self.arrival is not None and self.arrival_copy == "owner":
            spec["arrival_name"] = self._arrival_seg.name
            spec["arrival_bytes"] = self.arrival.size
        return sid, seg, spec

    def _host(self) -> _Spu:
        """The dispatcher's own SPU: the same Worker, called directly instead of piped."""
        sid, seg, spec = self._new_spu()
        worker = spu_worker.Worker(None, spec)
        spu = _Spu(sid, None, None, seg, pid=os.getpid(), hosted=worker)
        self._spus[sid] = spu
        self.backend_label = worker.eng.backend()
        return spu

    def _spawn(self) -> _Spu:
        sid, seg, spec = self._new_spu()
        parent, child = self._ctx.Pipe(duplex=True)
        p = self._ctx.Process(target=spu_worker.main, args=(child, spec), name=f"pyspu-spu{sid}",
                              daemon=True)
        p.start()
        child.close()
        self._res.procs.append(p)
        self._res.conns.append(parent)
        spu = _Spu(sid, p, parent, seg)
        self._spus[sid] = spu
        self._res.selector.register(parent, selectors.EVENT_READ, spu)
        self._res.selector.register(p.sentinel, selectors.EVENT_READ, spu)
        self._res.deaths.register(p.sentinel, select.EPOLLIN)
        return spu

    def _await_ready(self, spu: _Spu) -> None:
        try:
            msg = self._reply(spu, self.start_timeout)
        except _Died:
            self._dead.remove(spu.id)
            raise SpuError(f"SPU worker {spu.id} failed to start") from None
        if msg[0] != "ready":
            raise SpuError(f"SPU worker {spu.id}: unexpected {msg[0]!r} at start")
        spu.pid = msg[1]
        self.backend_label = msg[2]

    # -- messages ----------------------------------------------------------------------
    def _pump(self, timeout: float) -> None:
        """Read what the workers said (answers, results), notice deaths."""
        if not any(s.alive and s.hosted is None for s in self._spus.values()):
            return
        for key, _ in self._res.selector.select(max(timeout, 0.0)):
            spu = key.data
            if not spu.alive:
                continue
            if key.fileobj is spu.conn:
                self._drain(spu)
            else:
                self._mark_dead(spu)

    def _drain(self, spu: _Spu) -> None:
        """One message (the selector said the pipe is readable; it says so again while
        more are waiting: no Connection.poll, which builds a selector per call)."""
        try:
            msg = spu_worker.recv(spu.conn)
        except (EOFError, OSError):
            self._mark_dead(spu)
        else:
            self._on_message(spu, msg)

    def _on_message(self, spu: _Spu, msg) -> None:
        tag = msg[0]
        if tag == "wake":
            return
        if tag == "fail":
            raise SpuError(f"SPU worker {spu.id} failed: {msg[1]}")
        spu.replies.append(msg)

    def _harvest(self, spu: _Spu) -> bool:
        """Take the runs `spu` completed (its ctl[COMPLETED]): merge their results into
        their batches. True if there were any."""
        done = int(observe(spu.seg.arrays["ctl"], spu_worker.COMPLETED))
        if done == spu.seen:
            return False
        a = spu.seg.arrays
        while spu.seen < done:
            k, start, m = spu.outstanding.popleft()
            b, end = self.batches[k], start + m
            scatter(spu.idx[k, start:end], m, a["row_off"][k, start:end],
                    a["row_length"][k, start:end], a["row_drop"][k, start:end],
                    a["row_sa"][k, start:end], b.off, b.length, b.drop, b.sa)
            self._pending[k] -= 1
            spu.seen += 1
        return True

    def _busy(self) -> list[_Spu]:
        return [s for s in self._spus.values() if s.alive and s.outstanding]

    def _wait(self, done: Callable[[], bool], culprit: Callable[[_Spu], bool]) -> None:
        """Harvest completions until done(): poll for SPIN seconds, then sleep on the pipes
        NAP at a time. A worker that makes no progress for `timeout` while culprit(it) is
        killed (treated as failed)."""
        end = time.monotonic() + self.timeout
        spin_end = time.perf_counter() + self._spin
        while True:
            busy = self._busy()
            progressed = False
            for spu in busy:
                progressed |= self._harvest(spu)
            if done():
                return
            if not busy:
                raise SpuError("waiting for SPU workers with nothing in flight")
            if progressed:
                end = time.monotonic() + self.timeout
            if time.perf_counter() < spin_end:
                continue
            if time.monotonic() > end:
                for spu in busy:
                    if culprit(spu):
                        spu.process.kill()
                end = time.monotonic() + self.timeout
            self._nap(busy)

    def _nap(self, busy: list[_Spu]) -> None:
        """Sleep until a busy worker completes something (or NAP passes, or one dies)."""
        for spu in busy:
            publish(spu.seg.arrays["ctl"], spu_worker.DISPATCHER_ASLEEP, 1)
        try:
            if not any(self._harvest(spu) for spu in busy):
                self._pump(spu_worker.NAP)
        finally:
            for spu in busy:
                spu.seg.arrays["ctl"][spu_worker.DISPATCHER_ASLEEP] = 0

    def _post(self, spu: _Spu, enc: bool, k: int, start: int, m: int) -> bool:
        """Queue a run on a worker; False if it is known dead (submit looks for deaths
        just before)."""
        if spu.alive and spu.posted - spu.seen >= spu_worker.QUEUE:
            self._wait(lambda: not spu.alive or spu.posted - spu.seen < spu_worker.QUEUE,
                       lambda s: s is spu)
        if not spu.alive:
            return False
        ctl = spu.seg.arrays["ctl"]
        spu.seg.arrays["req"][spu.posted % spu_worker.QUEUE] = (int(enc), k, start, m)
        spu.outstanding.append((k, start, m))
        spu.posted += 1
        publish(ctl, spu_worker.POSTED, spu.posted)
        if ctl[spu_worker.WORKER_ASLEEP]:
            try:
                spu_worker.send(spu.conn, ("wake",))
            except OSError:
                pass        # it died: its sentinel says so, and the request is lost with it
        return True

    def _mark_dead(self, spu: _Spu) -> None:
        """Bookkeeping at the moment a death is seen; the SAs move in _settle."""
        if not spu.alive:
            return
        self._harvest(spu)         # runs it completed before dying are done
        spu.alive = False
        try:                       # what it said before dying still counts
            while spu.conn.poll():
                self._on_message(spu, spu_worker.recv(spu.conn))
        except (EOFError, OSError):
            pass
        self._res.selector.unregister(spu.conn)
        self._res.selector.unregister(spu.process.sentinel)
        self._res.deaths.unregister(spu.process.sentinel)
        if spu.process.is_alive():
            spu.process.kill()
        spu.process.join(5.0)
        for k, start, m in spu.outstanding:       # inside it when it died: lost
            self.batches[k].drop[spu.idx[k, start:start + m]] = LOST
            self._pending[k] -= 1
        spu.outstanding.clear()
        spu.conn.close()
        self._dead.append(spu.id)

    def _reply(self, spu: _Spu, timeout: float):
        end = time.monotonic() + timeout
        while not spu.replies:
            if not spu.alive:
                raise _Died(spu.id)
            left = end - time.monotonic()
            if left <= 0:
                spu.process.kill()        # hung: treated as failed
                left = 1.0
            self._pump(min(left, 1.0))
        return spu.replies.popleft()

    def _rpc(self, spu: _Spu, msg):
        if spu.hosted is not None:
            try:
                return getattr(spu.hosted, "op_" + msg[0])(*msg[1:])
            except (ValueError, OverflowError, KeyError) as e:
                raise SpuError(f"SPU {spu.id}: {type(e).__name__}: {e}") from None
        if spu.alive and spu.outstanding:      # control comes after the runs posted before it
            self._wait(lambda: not spu.alive or not spu.outstanding, lambda s: s is spu)
        if not spu.alive:
            raise _Died(spu.id)
        try:
            spu_worker.send(spu.conn, msg)
        except OSError:
            self._mark_dead(spu)
            raise _Died(spu.id) from None
        tag, value = self._reply(spu, self.timeout)
        if tag == "err":
            raise SpuError(f"SPU {spu.id}: {value}")
        return value

    # -- control -----------------------------------------------------------------------
    def install(self, cfg: SAConfig, direction: str, anchor: Optional[Anchor] = None) -> int:
        """Install an SA on the anchor SPU of `anchor` (the IKE 4-tuple: src, dst, sport,
        dport; default anchor_of(cfg)). Returns its handle (the same on every SPU)."""
        self._settle()
        g = self._lookup.install(cfg, direction)     # validates; raises like Engine does
        anchor = anchor if anchor is not None else anchor_of(cfg)
        try:
            lg = logical_of(anchor, self.anchors.n_logical)
        except ValueError:
            self._lookup.remove(g)
            raise
        self._sa_logical[g] = lg
        sa = _SA(cfg, direction, anchor, lg, self.anchors.of(lg),
                 floor=cfg.oseq if direction == "out" else cfg.seq)
        self._sas[g] = sa
        self._send_installs({sa.spu: [(g, cfg, direction, None)]})
        self._settle()
        return g

    def remove(self, handle: int) -> None:
        """Remove an SA (after its owner processed what it has queued)."""
        self._settle()
        sa = self._sas.pop(handle)
        self._lookup.remove(handle)
        spu = self._spus[sa.spu]
        if spu.alive and sa.acked:
            try:
                self._rpc(spu, ("remove", [handle]))
            except _Died:
                pass
        self._settle()

    def add_worker(self) -> int:
        """Start one more SPU; it takes a minimal set of logical SPUs (and their SAs, with
        their exact state). Returns its id."""
        self._settle()
        spu = self._spawn()
        self._await_ready(spu)
        moved = self.anchors.add(spu.id)
        self.moves.append(("add", spu.id, moved))
        self._move_sas(moved, spu.id)
        self._settle()
        return spu.id

    def _move_sas(self, logicals: list[int], to: int) -> None:
        """The SAs of these logical SPUs (already given to SPU `to` in the anchor map) move
        there with their exact state, each after its old owner finished its queue."""
        moving = set(logicals)
        by_old: dict[int, list[int]] = {}
        for g, sa in self._sas.items():
            if sa.logical in moving and sa.spu != to:
                by_old.setdefault(sa.spu, []).append(g)
        for old, handles in sorted(by_old.items()):
            try:
                states = self._rpc(self._spus[old], ("export", handles, True))
            except _Died:
                continue        # its failover re-creates them on their new owner
            items = []
            for g, st in zip(handles, states):
                sa = self._sas[g]
                sa.base += st.pop("ctr")
                sa.spu, sa.acked = to, False
                sa.floor = st["seq_out"] if sa.direction == "out" else st["top"]
                items.append((g, sa.cfg, sa.direction, st))
            self._send_installs({to: items})

    # -- balancing (engine/spu_balance.py) ------------------------------------------------
    def _balance_check(self) -> None:
        """At the end of a batch: if a window of `balance` seconds of streaming is over,
        measure it and maybe move one logical SPU."""
        now = time.perf_counter()
        streamed = self._streamed + (now - self._stream_t0 if self._stream_t0 else 0.0)
        busy_ns = {sid: int(s.seg.arrays["ctl"][spu_worker.BUSY_NS])
                   for sid, s in self._spus.items() if s.alive and s.hosted is None}
        mark = (streamed, self._waited, busy_ns, self._load.copy())
        if self._window is None:
            self._window = mark
            return
        s0, w0, b0, l0 = self._window
        span = streamed - s0
        if span < self.balance:
            return
        self._window = mark
        busy = {}
        hosted = None
        for sid, spu in self._spus.items():
            if not spu.alive:
                continue
            if spu.hosted is not None:
                hosted = sid
                busy[sid] = span - (self._waited - w0)
            elif sid in b0:
                busy[sid] = (busy_ns[sid] - b0[sid]) / 1e9
        self._held = {lg: n - 1 for lg, n in self._held.items() if n > 1}
        move = choose_move(busy, (self._load - l0).astype(np.float64), self.anchors.owner,
                           span, hosted, self._held)
        if move is not None:
            lg, old, new = move
            self.anchors.move(lg, new)
            self.moves.append(("balance", new, [lg]))
            self._held[lg] = HOLD
            self._move_sas([lg], new)
            self._window = None        # the next window starts after the move

    def _send_installs(self, groups: dict[int, list]) -> None:
        for sid, items in groups.items():
            try:
                self._rpc(self._spus[sid], ("install", items))
            except _Died:
                continue        # not acked: _settle moves them again
            for g, *_ in items:
                if g in self._sas and self._sas[g].spu == sid:
                    self._sas[g].acked = True

    def _settle(self, poll: bool = True) -> None:
        """Move the SAs of every worker found dead (until none is left to move). poll:
        look for deaths first (the data path has a cheaper look of its own)."""
        if poll:
            self._pump(0)
        while self._dead:
            self._failover(self._dead.popleft())

    def _failover(self, sid: int) -> None:
        if not any(s.alive for s in self._spus.values()):
            raise SpuError("every SPU worker has died")
        moved = self.anchors.remove(sid)
        self.moves.append(("fail", sid, moved))
        dead = self._spus[sid]
        groups: dict[int, list] = {}
        for g, sa in self._sas.items():
            if sa.spu != sid:
                continue
            cfg, state = self._resume(g, sa, dead)
            sa.spu, sa.acked = self.anchors.of(sa.logical), False
            groups.setdefault(sa.spu, []).append((g, cfg, sa.direction, state))
        self._send_installs(groups)

    def _resume(self, g: int, sa: _SA, dead: _Spu):
        """The config to re-create SA g with after its owner died (see the module doc)."""
        mark = 0
        if sa.acked:
            arrays = dead.seg.arrays
            sa.base += arrays["ctr"][g]
            mark = int(arrays["rec"][g]["seq_out"] if sa.direction == "out"
                       else arrays["top"][g])
        mark = max(mark, sa.floor)
        if sa.direction == "out":
            seq = min(mark + self.margin, _U64 if sa.cfg.esn else _U32)
            sa.floor = seq
            return dataclasses.replace(sa.cfg, oseq=seq), None
        sa.floor = mark
        return dataclasses.replace(sa.cfg, seq=mark), {"all_seen": True}

    # -- data --------------------------------------------------------------------------
    def submit(self, k: int, direction: str) -> None:
        """Send ring batch k (filled by the caller) to the owners of its packets."""
        if direction not in ("encrypt", "decrypt"):
            raise ValueError("direction must be 'encrypt' or 'decrypt'")
        if self._closed:
            raise SpuError("the SPU cluster is closed")
        if self._n[k] or self._pending[k]:
            raise SpuError(f"ring batch {k} is still in flight")
        if self._res.deaths.poll(0):       # a worker died: notice it before routing
            self._pump(0)
        self._settle(poll=False)
        b = self.batches[k]
        n = b.count
        enc = direction == "encrypt"
        dest = self._dest[k]
        lk = self._lookup.sad
        # packets waiting in the arrival area are classified there, laid out by owner,
        # and copied in by their owners (arrival_copy "owner") or by this dispatcher
        src, src_off = b.buf, b.off
        waiting = self.arrival is not None and check_arrivals(
            n, b.arrive_from, self.arrival.size, b.length, _arrival_budget(b),
            HEADROOM, TAILROOM, SLOT_ALIGN, b.drop)
        if waiting:
            src, src_off = self.arrival, b.arrive_from
        if enc:
            classify_encrypt(src, src_off, b.length, b.drop, b.sa, n, lk.rec, *lk.policy,
                             self._sa_logical, self.anchors.owner, dest)
        else:
            classify_decrypt(src, src_off, b.length, b.drop, b.sa, n, lk.rec, lk.addr,
                             lk.in_hash, lk.encap_ports, self._sa_logical, self.anchors.owner,
                             dest)
        split(dest, n, self._counts, self._starts, self._order)
        if waiting:
            b.used = lay_out_by_owner(n, dest, self._counts, self._starts, self._order,
                                      b.length, b.off, b.slot_start, b.slot_end, HEADROOM,
                                      TAILROOM, SLOT_ALIGN, REGION)
            if self.arrival_copy == "owner":
                arrive_dropped(n, dest, b.arrive_from, self.arrival, b.buf, b.off, b.length)
            else:
                arrive_all(n, b.arrive_from, self.arrival, b.buf, b.off, b.length)
        self._n[k] = n if n else -1
        self._enc[k] = enc
        self._fill[:, k] = 0
        failed = self._send(k, enc, n)
        while failed:        # an owner died before it got them: re-route, lose nothing
            self._settle()
            idx = np.sort(np.concatenate(failed))
            dest2 = np.full(n, -1, np.int32)
            dest2[idx] = self.anchors.owner[self._sa_logical[b.sa[idx]]]
            dest[idx] = dest2[idx]
            split(dest2, n, self._counts, self._starts, self._order)
            failed = self._send(k, enc, n)

    def _send(self, k: int, enc: bool, n: int) -> list[np.ndarray]:
        """Give every owner its packets of ring batch k (as split() grouped them); returns
        those of dead workers.

        The dispatcher's own SPU runs its packets first, and only then are the workers'
        posted: meanwhile a worker is still on the previous batch. Two cores working on
        interleaved packets of one batch at the same time slowed the one that did not
        write them from 200 to 270 ns per 1400-byte packet here (neighbouring slots'
        cache lines pulled back and forth), while packets of different batches, or
        contiguous ones, cost nothing extra."""
        failed = []
        for hosted_first in (True, False):
            for sid, spu in self._spus.items():
                m = int(self._counts[sid])
                if m == 0 or (spu.hosted is not None) != hosted_first:
                    continue
                st = int(self._starts[sid])
                idx = self._order[st:st + m]
                start = int(self._fill[sid, k])
                if spu.hosted is not None and m == n:     # it owns the whole batch
                    self._fill[sid, k] = m
                    spu.hosted.run_batch(enc, k, n)
                    continue
                if spu.hosted is not None:
                    spu.idx[k, start:start + m] = idx
                    self._fill[sid, k] = start + m
                    spu.hosted.run(enc, k, start, m, in_place=True)
                    continue
                if spu.alive:
                    spu.idx[k, start:start + m] = idx
                    b = self.batches[k]
                    hand_over(idx, m, b.off, b.length, b.slot_start, b.slot_end, b.drop, b.sa,
                              b.arrive_from, start, *spu.rows[k])
                    if self._post(spu, enc, k, start, m):
                        self._fill[sid, k] = start + m
                        self._pending[k] += 1
                        continue
                failed.append(idx.copy())
        return failed

    def collect(self, k: int) -> PacketBatch:
        """Wait until every owner completed its part of ring batch k; count it; return it.
        Hung workers (no progress for `timeout`) are treated as failed: killed, and their
        packets lost."""
        if self._pending[k] > 0:
            t = time.perf_counter()
            self._wait(lambda: self._pending[k] <= 0,
                       lambda s: any(g[0] == k for g in s.outstanding))
            self._waited += time.perf_counter() - t
        b = self.batches[k]
        n = max(self._n[k], 0)
        account(self._dest[k], b.drop, n, self._spu_in, self._spu_out, self._spu_drop,
                self._spu_lost, self._disp_drop, b.sa, self._sa_logical, self._load)
        self._n[k] = 0
        self._settle(poll=False)
        if self.balance is not None:
            self._balance_check()
        return b

    def stream(self, direction: str, fill: Callable[[PacketBatch], int]
               ) -> Iterator[PacketBatch]:
        """Process everything `fill` puts into ring batches (fill(batch) -> packets added, 0
        at the end); yield each batch when done, in input order. A yielded batch is reused
        once the loop asks for the next one."""
        if any(self._n) or any(self._pending):
            raise SpuError("the ring is busy")
        free = deque(range(self.ring))
        pending: deque[int] = deque()
        eof = False
        self._stream_t0 = time.perf_counter()
        try:
            while True:
                while free and not eof:
                    k = free[0]
                    b = self.batches[k]
                    self._clear(b)
                    if fill(b) == 0:
                        eof = True
                        break
                    free.popleft()
                    self.submit(k, direction)
                    pending.append(k)
                if not pending:
                    return
                k = pending.popleft()
                yield self.collect(k)
                free.append(k)
        finally:
            while pending and not self._closed:   # left early: let the workers finish
                self.collect(pending.popleft())
            self._streamed += time.perf_counter() - self._stream_t0
            self._stream_t0 = None

    def arrive_many(self, b: PacketBatch, starts: np.ndarray, lengths: np.ndarray) -> int:
        """For a fill: append packets that wait in the arrival area, at
        arrival[starts[j]:starts[j] + lengths[j]], to ring batch b, metadata only (the
        cluster lays out their slots and copies them in). Returns how many were added: a
        prefix, as many as the batch has packets and bytes for (as PacketBatch.add_many
        counts them), stopping before a range outside the area."""
        if self.arrival is None:
            raise SpuError("this cluster has no arrival area (arrival_bytes)")
        starts = np.asarray(starts, np.int64)
        lengths = np.asarray(lengths, np.int64)
        first = b.count
        room = min(starts.size, b.capacity - first)
        starts, lengths = starts[:room], lengths[:room]
        bad = np.flatnonzero((starts < 0) | (lengths < 0) | (starts + lengths > self.arrival.size))
        if bad.size:
            starts, lengths = starts[:bad[0]], lengths[:bad[0]]
        need = -(-(HEADROOM + lengths + TAILROOM) // SLOT_ALIGN) * SLOT_ALIGN
        ends = b.used + np.cumsum(need)
        m = int(np.searchsorted(ends, _arrival_budget(b), side="right"))
        last = first + m
        b.arrive_from[first:last] = starts[:m]
        b.length[first:last] = lengths[:m]
        b.drop[first:last] = 0
        b.sa[first:last] = -1
        b.l2_len[first:last] = 0
        b.count = last
        b.used = int(ends[m - 1]) if m else b.used
        return m

    def _clear(self, b: PacketBatch) -> None:
        b.clear()
        if self.arrival is not None:
            b.arrive_from[:] = -1      # bytes in the batch, unless the fill says otherwise

    def process(self, direction: str, batch: PacketBatch) -> None:
        """Encrypt or decrypt one PacketBatch in place (copied through the ring); lost
        packets come back with drop == LOST."""
        b = self.batches[0]
        self._clear(b)
        _copy_batch(batch, b)
        try:
            self.submit(0, direction)
        finally:
            self.collect(0)
        _copy_batch(b, batch)

    def encrypt(self, batch: PacketBatch) -> None:
        self.process("encrypt", batch)

    def decrypt(self, batch: PacketBatch) -> None:
        self.process("decrypt", batch)

    # -- counters and state --------------------------------------------------------------
    def stats(self, per_spu: bool = False) -> dict:
        """--stats-json counters over all SPUs, plus `lost`:
        packets_in == packets_out + sum(dropped) + lost."""
        dropped = self._disp_drop + self._spu_drop.sum(axis=0)
        out = {"packets_in": int(self._spu_in.sum() + self._disp_drop.sum()),
               "packets_out": int(self._spu_out.sum()), "dropped": drop_dict(dropped),
               "lost": int(self._spu_lost.sum())}
        if per_spu:
            out["spus"] = self.spu_stats()
            out["dispatch"] = {"packets_in": int(self._disp_drop.sum()),
                               "dropped": drop_dict(self._disp_drop)}
        return out

    def spu_stats(self) -> list[dict]:
        """Per physical SPU: packets given to it, written, dropped by reason, lost in it."""
        owner = self.anchors.owner
        rows = []
        for sid, spu in sorted(self._spus.items()):
            rows.append({"spu": sid, "pid": spu.pid, "alive": spu.alive,
                         "hosted": spu.hosted is not None,
                         "logical": int(np.count_nonzero(owner == sid)),
                         "sas": sum(1 for sa in self._sas.values() if sa.spu == sid),
                         "packets_in": int(self._spu_in[sid]),
                         "packets_out": int(self._spu_out[sid]),
                         "dropped": drop_dict(self._spu_drop[sid]),
                         "lost": int(self._spu_lost[sid])})
        return rows

    def sa_stats(self, handle: int) -> dict:
        """Engine.sa_stats for one SA, summed over the SPUs it lived on."""
        sa = self._sas[handle]
        spu = self._spus[sa.spu]
        c = sa.base.copy()
        seq_out = sa.floor if sa.direction == "out" else 0
        top = sa.floor if sa.direction == "in" else 0
        if sa.acked:
            arrays = spu.seg.arrays
            c += arrays["ctr"][handle]
            seq_out = int(arrays["rec"][handle]["seq_out"])
            top = int(arrays["top"][handle])
        return {"packets": int(c[CTR_PACKETS]), "bytes": int(c[CTR_BYTES]),
                "dropped": drop_dict(c[CTR_DROP0:]), "seq_out": int(seq_out),
                "replay_top": int(top), "spu": sa.spu, "logical": sa.logical}

    def handles(self) -> list[int]:
        return list(self._sas)

    def config(self, handle: int) -> SAConfig:
        return self._sas[handle].cfg

    def spu_of(self, handle: int) -> int:
        return self._sas[handle].spu

    def pids(self) -> dict[int, int]:
        """Live worker SPU ids -> their process ids (not the hosted SPU: it has none of
        its own)."""
        return {sid: s.pid for sid, s in self._spus.items() if s.alive and s.hosted is None}

    def live(self) -> list[int]:
        return [sid for sid, s in sorted(self._spus.items()) if s.alive]

    def backend(self) -> str:
        """The workers' crypto backends (as Engine.backend() describes them)."""
        return self.backend_label


def _arrival_budget(b: PacketBatch) -> int:
    """Bytes of slots the packets of an arrival batch may take: its buffer less the room
    kept for the alignment of the SPUs' regions (SpuCluster._ring_data)."""
    return b.buf.size - MAX_SPUS * REGION


def _copy_batch(src: PacketBatch, dst: PacketBatch) -> None:
    n, used = src.count, src.used
    if n > dst.capacity or used > dst.buf.size:
        raise ValueError(f"a batch of {n} packets / {used} bytes does not fit "
                         f"({dst.capacity} / {dst.buf.size})")
    for name, a in vars(src).items():
        # arrive_from belongs to ring batches only (ring.ring_batches), not to PacketBatch
        if isinstance(a, np.ndarray) and name != "arrive_from":
            d = getattr(dst, name)
            if name == "buf":
                d[:used] = a[:used]
            else:
                d[:n] = a[:n]
    dst.count, dst.used = n, used


def measure_scaling(*args, **kwargs) -> dict:
    """Throughput for 1, 2, ... workers beside the in-process engine (for `spu bench`):
    engine.spu_bench.measure_scaling, which documents its arguments and result."""
    from .spu_bench import measure_scaling as run
    return run(*args, **kwargs)
