"""Shared-memory segments for the SPU dispatcher and its workers: numpy views, no pickling.

Three kinds of segment (engine/spu.py creates them, workers attach by name):

- the batch ring: `ring` PacketBatches whose arrays (buffer, offsets, lengths, drop
  reasons, SA handles, timestamps, L2 headers) all live in one segment. Packets are read
  into a ring batch once and never copied again: the dispatcher gives each worker the
  metadata of its packets, the workers run the engine on the shared buffer in place
  (packet slots are disjoint and 64-byte aligned), and the batch is written out in
  input order when every worker has reported.
- the arrival area (optional): bytes where packets wait, as a NIC or recvmmsg left them,
  until the SPU that owns each one copies it into its ring batch slot
  (batch.arrive_from[i] says where): packet bytes are then written and worked on by one
  core only (SpuCluster's arrival_bytes says why that matters).
- one segment per worker: its request ring (`idx[ring, capacity]`, packet indices per
  ring batch), its packets' metadata (`row_*`, in request order: offsets, lengths, slots,
  drop reasons, SA slots, arrival offsets; written in by the dispatcher, results
  written back by the worker) and its engine's hot SA state (`rec`, `top`, `ctr`:
  engine/sad.py layouts).
  The worker's engine runs on these arrays directly, so its sequence numbers, replay
  window edges and counters are readable by the dispatcher at any moment, including
  after the worker was killed: the sequence high-water marks it resumes from.

Numpy views are made on a private mmap of each segment rather than on
SharedMemory.buf, so closing never fails while a view is still referenced (the mapping
goes away with its last view). Segment names start with `pyspu_` (tests check that none
is left in /dev/shm). Only the creator tracks and unlinks a segment: attaching workers
opt out of multiprocessing's resource tracker, which would otherwise unlink it twice.
"""
from __future__ import annotations

import mmap
import os
import secrets
from dataclasses import dataclass
from multiprocessing import resource_tracker
from multiprocessing.shared_memory import SharedMemory
from typing import Optional

import numpy as np

from .batch import PacketBatch
from .sad import CTR_COLS, SA_DTYPE

PREFIX = "pyspu_"
ALIGN = 64
CTL_WORDS = 48            # a worker's run-queue words: 6, a cache line apart
PAGE = 4096
#: a worker's metadata rows (worker_layout): PacketBatch fields, and where each packet
#: waits in the arrival area (-1: in the batch already)
ROWS = (("off", np.int64), ("length", np.int64), ("slot_start", np.int64),
        ("slot_end", np.int64), ("drop", np.uint8), ("sa", np.int32), ("from", np.int64))
QUEUE = 64                # run requests a worker can have posted and not completed


@dataclass(frozen=True)
class Field:
    name: str
    shape: tuple
    dtype: np.dtype
    offset: int


class Layout:
    """Named arrays packed into one buffer, each 64-byte aligned (or more)."""

    def __init__(self):
        self.fields: list[Field] = []
        self.size = 0

    def add(self, name: str, shape, dtype, align: int = ALIGN) -> None:
        dtype = np.dtype(dtype)
        shape = tuple(int(x) for x in np.atleast_1d(shape))
        off = -(-self.size // align) * align
        self.fields.append(Field(name, shape, dtype, off))
        self.size = off + int(np.prod(shape)) * dtype.itemsize

    def views(self, buf) -> dict[str, np.ndarray]:
        return {f.name: np.ndarray(f.shape, f.dtype, buffer=buf, offset=f.offset)
                for f in self.fields}


class Segment:
    """One shared-memory segment mapped as the arrays of a Layout."""

    def __init__(self, shm: SharedMemory, layout: Layout, owner: bool):
        self.name = shm.name
        self.layout = layout
        self._shm: Optional[SharedMemory] = shm if owner else None
        self._mm = mmap.mmap(shm._fd, layout.size)   # our own mapping (see module doc)
        shm.close()
        self.arrays = layout.views(self._mm)

    @classmethod
    def create(cls, layout: Layout) -> "Segment":
        name = f"{PREFIX}{os.getpid()}_{secrets.token_hex(6)}"
        shm = SharedMemory(name=name, create=True, size=max(layout.size, 1))
        seg = cls(shm, layout, owner=True)
        for a in seg.arrays.values():
            a[...] = 0
        return seg

    @classmethod
    def attach(cls, name: str, layout: Layout) -> "Segment":
        register = resource_tracker.register
        resource_tracker.register = lambda *args, **kw: None   # the creator tracks it
        try:
            shm = SharedMemory(name=name)
        finally:
            resource_tracker.register = register
        return cls(shm, layout, owner=False)

    def unlink(self) -> None:
        """Remove the name (creator only); memory goes when the last mapping does."""
        if self._shm is not None:
            try:
                self._shm.unlink()
            except FileNotFoundError:
                pass
            self._shm = None


# -- the batch ring -------------------------------------------------------------------------
def _template(capacity: int, data_bytes: int) -> PacketBatch:
    return PacketBatch(capacity, data_bytes=data_bytes)


def ring_layout(ring: int, capacity: int, data_bytes: int) -> Layout:
    """Every numpy array of a PacketBatch(capacity, data_bytes), `ring` times over."""
    t = _template(capacity, data_bytes)
    lay = Layout()
    for k in range(ring):
        for name, arr in sorted(vars(t).items()):
            if isinstance(arr, np.ndarray):
                # packet bytes page-aligned: SPU regions of a batch (engine/spu.py REGION)
                # then start on pages of their own
                lay.add(f"{k}.{name}", arr.shape, arr.dtype, PAGE if name == "buf" else ALIGN)
        lay.add(f"{k}.arrive_from", (capacity,), np.int64)
    return lay


def ring_batches(seg: Segment, ring: int, capacity: int, data_bytes: int) -> list[PacketBatch]:
    """The ring's PacketBatches, their arrays views of the segment. Each also has
    `arrive_from` (int64[capacity]): where packet i's bytes wait in the arrival area, or
    -1 when they are in the batch already (SpuCluster documents the arrival area)."""
    t = _template(capacity, data_bytes)
    out = []
    for k in range(ring):
        b = PacketBatch.__new__(PacketBatch)
        b.__dict__.update(vars(t))
        for name, arr in vars(t).items():
            if isinstance(arr, np.ndarray):
                setattr(b, name, seg.arrays[f"{k}.{name}"])
        b.arrive_from = seg.arrays[f"{k}.arrive_from"]
        b.arrive_from[:] = -1
        b.clear()
        out.append(b)
    return out


def arrival_layout(nbytes: int) -> Layout:
    """The arrival area: bytes where packets wait until their owner SPU copies them in."""
    lay = Layout()
    lay.add("bytes", (nbytes,), np.uint8)
    return lay


# -- per-worker segment ---------------------------------------------------------------------
def worker_layout(ring: int, capacity: int, max_sas: int) -> Layout:
    lay = Layout()
    lay.add("idx", (ring, capacity), np.int32)
    lay.add("ctl", (CTL_WORDS,), np.int64)   # the run queue's words (spu_worker.POSTED, ...)
    lay.add("req", (QUEUE, 4), np.int64)     # run requests: encrypt, k, start, m
    # the metadata of a worker's packets (PacketBatch dtypes), in request order: the
    # dispatcher writes it in, the worker's engine runs on it and leaves its results in
    # it, the dispatcher copies those into the batch. The worker never reads the batch's
    # metadata arrays, whose cache lines hold every SPU's packets
    for name, dtype in ROWS:
        lay.add("row_" + name, (ring, capacity), dtype)
    lay.add("rec", (max_sas,), SA_DTYPE)
    lay.add("top", (max_sas,), np.uint64)
    lay.add("ctr", (max_sas, CTR_COLS), np.uint64)
    return lay


def leaked(pid: Optional[int] = None) -> list[str]:
    """Segment names of ours (of process `pid`, or any) still in /dev/shm (for tests)."""
    try:
        names = os.listdir("/dev/shm")
    except FileNotFoundError:
        return []
    head = PREFIX if pid is None else f"{PREFIX}{pid}_"
    return sorted(n for n in names if n.startswith(head))
