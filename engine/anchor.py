"""SPU anchoring: IKE 4-tuple -> logical SPU -> physical SPU (a worker process).

Every SA is owned by one SPU, the anchor of its IKE SA (STYLE.md point 11). The anchor is
found in two steps:

    hash(IKE 4-tuple) mod N_LOGICAL  ->  logical SPU   (fixed for the life of the IKE SA)
    owner[logical]                   ->  physical SPU  (changes when SPUs come and go)

The indirection is what makes failures and scale-out cheap: losing a physical SPU moves
only the logical SPUs it owned, and adding one takes a minimal number of logical SPUs
from the others. Child SAs of one IKE SA share its 4-tuple, so they share the anchor.

The hash is symmetric in the two endpoints: the inbound and the outbound SA of a pair
(src and dst swapped, and the UDP ports with them) land on the same SPU, as the child SAs
of one IKE SA must. It is an unkeyed BLAKE2b of the canonical bytes, the same in every
process and Python version (Python's own hash() of bytes is salted per process).

SA files carry no IKE 4-tuple; `anchor_of(cfg)` stands in for it: (SA src, SA dst,
encap sport or 500, encap dport or 500), the IKE peers' addresses and ports.
"""
from __future__ import annotations

import hashlib
import ipaddress
import secrets
from typing import Iterable, Optional, Tuple, Union

import numpy as np

from .sa import SAConfig

#: Logical SPUs: a tuning constant, not a spec value. It bounds the number of physical
#: SPUs a deployment can spread over and sets the granularity of a move (1/256 of the
#: anchors per logical SPU). The top 8 bits of an SPI allocated by `allocate_spi` name it.
N_LOGICAL = 256
IKE_PORT = 500            # RFC 7296 2: IKE over UDP 500 (4500 after NAT detection)

Address = Union[str, ipaddress.IPv4Address, ipaddress.IPv6Address]
Anchor = Tuple[Address, Address, int, int]


def anchor_of(cfg: SAConfig) -> Anchor:
    """The stand-in IKE 4-tuple of an SA that came without one (SA files)."""
    return (cfg.src, cfg.dst, cfg.encap_sport or IKE_PORT, cfg.encap_dport or IKE_PORT)


def _endpoint(addr: Address, port: int) -> bytes:
    ip = ipaddress.ip_address(addr)
    if not 0 <= int(port) <= 0xFFFF:
        raise ValueError(f"bad UDP port {port}")
    return bytes([ip.version]) + ip.packed + int(port).to_bytes(2, "big")


def logical_of(anchor: Anchor, n_logical: int = N_LOGICAL) -> int:
    """The logical SPU of an IKE 4-tuple (src, dst, sport, dport); symmetric in the ends."""
    src, dst, sport, dport = anchor
    a, b = sorted((_endpoint(src, sport), _endpoint(dst, dport)))
    digest = hashlib.blake2b(a + b, digest_size=8, person=b"pyspu-anchor").digest()
    return int.from_bytes(digest, "big") % n_logical


def allocate_spi(logical: int, taken: Iterable[int] = (), rng=None) -> int:
    """A random inbound SPI whose top 8 bits name `logical` (N_LOGICAL == 256).

    The receiver chooses inbound SPIs (RFC 7296 3.3.1), so SAs negotiated by our IKE
    daemon can carry their anchor in the SPI itself; a dispatcher that cannot afford a
    table lookup reads it with `spi_logical`. SPIs 1-255 are reserved (RFC 4303 2.1).
    """
    if not 0 <= logical < N_LOGICAL:
        raise ValueError(f"logical SPU {logical} out of range")
    taken = set(taken)
    rng = rng or secrets.SystemRandom()
    for _ in range(1000):
        spi = (logical << 24) | rng.getrandbits(24)
        if spi > 255 and spi not in taken:
            return spi
    raise RuntimeError("no free SPI for this logical SPU")


def spi_logical(spi: int) -> int:
    """The logical SPU an SPI from `allocate_spi` encodes."""
    return (spi >> 24) & (N_LOGICAL - 1)


class AnchorMap:
    """owner[logical] = physical SPU id, with deterministic minimal-move changes.

    Each SPU has a weight (default 1): its share of the logical SPUs is proportional to it.
    A lighter SPU is one with other work to do: the dispatcher's own SPU
    (SpuCluster(host_spu=True)) also classifies and hands over every packet.

    Invariants (tested): every logical SPU has one live owner; every SPU's count is within
    one of its weighted share when every change went through add/remove; `remove` moves
    exactly the logical SPUs of the removed SPU; `add` moves exactly
    floor(n_logical * w / (total weight + w)) of them, all to the new SPU, the least any
    move to a balanced table can do.
    """

    def __init__(self, spus: Iterable[int], n_logical: int = N_LOGICAL,
                 weights: Optional[dict] = None):
        spus = sorted(spus)
        if not spus:
            raise ValueError("an anchor map needs at least one SPU")
        self.n_logical = n_logical
        self.weights = {s: float((weights or {}).get(s, 1.0)) for s in spus}
        if any(not w > 0 for w in self.weights.values()):
            raise ValueError("SPU weights must be positive")
        # weighted round robin: a new deployment's neighbours in logical space land on
        # different SPUs (with equal weights, logical k goes to spus[k % len(spus)])
        # (stride scheduling: the next slot goes to the SPU whose next one is due first)
        counts = dict.fromkeys(spus, 0)
        owner = []
        for _ in range(n_logical):
            to = min(counts, key=lambda s: ((counts[s] + 1) / self.weights[s], s))
            owner.append(to)
            counts[to] += 1
        self.owner = np.array(owner, np.int32)

    def _shares(self, spus) -> dict[int, float]:
        total = sum(self.weights[s] for s in spus)
        return {s: self.n_logical * self.weights[s] / total for s in spus}

    @staticmethod
    def _neediest(counts: dict, shares: dict) -> int:
        """The SPU furthest below its share (ties: lowest id). Handing slots out this way
        keeps every count within one of its share."""
        return max(counts, key=lambda s: (shares[s] - counts[s], -s))

    def spus(self) -> list[int]:
        return sorted(set(int(x) for x in self.owner))

    def slots(self, spu: int) -> list[int]:
        return [int(x) for x in np.flatnonzero(self.owner == spu)]

    def counts(self) -> dict[int, int]:
        return {s: len(self.slots(s)) for s in self.spus()}

    def shares(self) -> dict[int, float]:
        """Each live SPU's weighted share of the logical SPUs (what counts() aims at)."""
        return self._shares(self.spus())

    def remove(self, spu: int) -> list[int]:
        """SPU `spu` is gone: hand each of its logical SPUs, lowest first, to the survivor
        furthest below its new share (ties: lowest id). Returns the logical SPUs that
        moved."""
        moved = self.slots(spu)
        if not moved:
            self.weights.pop(spu, None)
            return []
        counts = {s: c for s, c in self.counts().items() if s != spu}
        if not counts:
            raise ValueError("cannot remove the last SPU")
        shares = self._shares(counts)
        for lg in moved:
            to = self._neediest(counts, shares)
            self.owner[lg] = to
            counts[to] += 1
        del self.weights[spu]
        return moved

    def add(self, spu: int, weight: float = 1.0) -> list[int]:
        """A new SPU takes floor(n_logical * weight / (total + weight)) logical SPUs, one at
        a time from the SPU furthest above its share (ties: lowest id), its
        highest-numbered one. Returns those moved."""
        counts = self.counts()
        if spu in counts:
            raise ValueError(f"SPU {spu} is already in the map")
        if not weight > 0:
            raise ValueError("SPU weights must be positive")
        total = sum(self.weights[s] for s in counts)
        want = int(self.n_logical * weight // (total + weight))
        self.weights[spu] = float(weight)
        shares = self._shares([*counts, spu])
        moved = []
        for _ in range(want):
            donor = max(counts, key=lambda s: (counts[s] - shares[s], -s))
            lg = self.slots(donor)[-1]
            self.owner[lg] = spu
            counts[donor] -= 1
            moved.append(lg)
        return sorted(moved)

    def move(self, logical: int, spu: int) -> None:
        """Give one logical SPU to a live SPU (load balancing: shares then follow the
        measured load, not the weights)."""
        if spu not in self.weights:
            raise ValueError(f"SPU {spu} is not in the map")
        self.owner[logical] = spu

    def of(self, logical: int) -> int:
        return int(self.owner[logical])

