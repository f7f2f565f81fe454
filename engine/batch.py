"""PacketBatch: a batch of IP packets in one preallocated numpy buffer.

Layout: every packet owns a slot `[slot_start, slot_end)` in `buf`:

    slot_start        off                 off+length                 slot_end
        | headroom >= HEADROOM | packet bytes | tailroom >= TAILROOM |

so that the engine writes outer headers, ESP/AH headers and IVs in front of a packet and
padding, trailer and ICV behind it, in place, without copying. Decryption moves `off`
forward and shrinks `length`. Slots are 64-byte aligned and packed back to back, so a
batch holds packets of any size up to its byte budget.

Per-packet metadata lives in parallel arrays (structure of arrays, C-contiguous, ready
for Numba and Cython): `off`, `length`, `drop` (engine.drops.Drop), `sa` (SA handle or
-1), `ts_ns` (capture time) and the link-layer header the packet arrived with (`l2`,
`l2_len`), which pcap/TUN I/O uses to write the packet back out.

Nothing here is on the per-packet hot path except `add_many`, which is one Numba call.
"""
from __future__ import annotations

import numpy as np

from .kernels_batch import place_packets

HEADROOM = 128   # outer IPv6 (40) + UDP (8) + ESP (8) + IV (16), or AH with options
TAILROOM = 64    # ESP padding (< 16) + trailer (2) + ICV (<= 32)
SLOT_ALIGN = 64
L2_MAX = 32      # Ethernet + up to 4 VLAN tags + EtherType


class PacketBatch:
    """A reusable batch. Fill with `add`/`add_many`, run the engine, read back, `clear()`."""

    def __init__(self, capacity: int = 256, data_bytes: int | None = None):
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        if data_bytes is None:
            data_bytes = capacity * 2048
        self.capacity = capacity
        self.buf = np.zeros(data_bytes + capacity * (HEADROOM + TAILROOM + SLOT_ALIGN), np.uint8)
        self.off = np.zeros(capacity, np.int64)
        self.length = np.zeros(capacity, np.int64)
        self.slot_start = np.zeros(capacity, np.int64)
        self.slot_end = np.zeros(capacity, np.int64)
        self.drop = np.zeros(capacity, np.uint8)
        self.sa = np.full(capacity, -1, np.int32)
        self.ts_ns = np.zeros(capacity, np.int64)
        self.l2 = np.zeros((capacity, L2_MAX), np.uint8)
        self.l2_len = np.zeros(capacity, np.uint8)
        self.count = 0
        self.used = 0    # bytes of buf consumed by slots

    # -- filling -------------------------------------------------------------------------
    def clear(self) -> None:
        self.count = 0
        self.used = 0

    def slot_bytes(self, length: int) -> int:
        return -(-(HEADROOM + length + TAILROOM) // SLOT_ALIGN) * SLOT_ALIGN

    def has_room(self, length: int) -> bool:
        return self.count < self.capacity and self.used + self.slot_bytes(length) <= self.buf.size

    def add(self, data: bytes, sa: int = -1, ts_ns: int = 0) -> int:
        """Append one packet (convenience for tests and control traffic). Returns its index."""
        n = len(data)
        if not self.has_room(n):
            raise OverflowError("PacketBatch is full")
        i = self.count
        start = self.used
        self.slot_start[i] = start
        self.off[i] = start + HEADROOM
        self.length[i] = n
        self.slot_end[i] = start + self.slot_bytes(n)
        self.buf[start + HEADROOM:start + HEADROOM + n] = np.frombuffer(data, np.uint8)
        self.drop[i] = 0
        self.sa[i] = sa
        self.ts_ns[i] = ts_ns
        self.l2_len[i] = 0
        self.used = int(self.slot_end[i])
        self.count = i + 1
        return i

    def add_many(self, src: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> int:
        """Append packets src[starts[k]:starts[k]+lengths[k]] for k = 0.. as many as fit.

        Returns how many were added (a prefix of the input). One Numba call, no Python loop.
        """
        first = self.count
        added, used = place_packets(
            src, starts.astype(np.int64, copy=False), lengths.astype(np.int64, copy=False),
            self.buf, self.off, self.length, self.slot_start, self.slot_end,
            first, self.capacity, self.used, HEADROOM, TAILROOM, SLOT_ALIGN)
        self.drop[first:first + added] = 0
        self.sa[first:first + added] = -1
        self.l2_len[first:first + added] = 0
        self.count = first + added
        self.used = used
        return added

    # -- reading -------------------------------------------------------------------------
    def packet(self, i: int) -> bytes:
        o = int(self.off[i])
        return self.buf[o:o + int(self.length[i])].tobytes()

    def packets(self) -> list[bytes]:
        """All packets (dropped ones included) as bytes: for tests and tools, not hot paths."""
        return [self.packet(i) for i in range(self.count)]

    def passed(self) -> list[bytes]:
        """The packets that were not dropped, in order."""
        return [self.packet(i) for i in range(self.count) if self.drop[i] == 0]

    def __len__(self) -> int:
        return self.count

    @classmethod
    def from_packets(cls, packets, capacity: int | None = None) -> "PacketBatch":
        packets = list(packets)
        cap = max(1, capacity or len(packets))
        total = sum(len(p) for p in packets)
        b = cls(cap, data_bytes=max(total, 1))
        for p in packets:
            b.add(p)
        return b
