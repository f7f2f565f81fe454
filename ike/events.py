"""Typed events out of the IKE core (the only way control talks to data, STYLE.md 3).

Every event names the IKE SA by `ike_sa`, our own 8-byte IKE SPI. A consumer installs
`ChildSAEstablished.inbound` with Engine.install(cfg, "in") and `.outbound` with "out",
and removes them on ChildSADeleted / IKESADeleted / PeerDead.

Rekeying is make-before-break (RFC 7296 2.8): `ChildSARekeyed` brings the new pair of
SAConfigs and names the old pair. The consumer installs the new inbound SA at once, moves
the Child SA's outbound traffic to the new outbound SA (install new "out", remove old
"out") at once if `outbound_ready`, else when ChildSADeleted names the old SPIs (or when
traffic arrives on the new inbound SA), and removes the old inbound SA on that
ChildSADeleted (it follows once the old SA's Delete exchange is done).
`IKESARekeyed` says that the IKE SA now goes by another SPI (2.18): later events carry
`new_spi` in `ike_sa`; the Child SAs moved to it unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from engine.sa import SAConfig

from .payloads import TrafficSelector


@dataclass(frozen=True)
class IKEEvent:
    ike_sa: bytes


@dataclass(frozen=True)
class IKESAEstablished(IKEEvent):
    spi_i: bytes
    spi_r: bytes
    local_id: str
    remote_id: str
    remote_addr: tuple
    proposal: str
    nat_local: bool          # we are behind a NAT (RFC 7296 2.23)
    nat_remote: bool         # the peer is


@dataclass(frozen=True)
class ChildSAEstablished(IKEEvent):
    name: str
    spi_in: int
    spi_out: int
    inbound: SAConfig
    outbound: SAConfig
    local_ts: TrafficSelector
    remote_ts: TrafficSelector
    proposal: str


@dataclass(frozen=True)
class ChildSARekeyed(IKEEvent):
    """A Child SA was rekeyed (RFC 7296 1.3.3, 2.8): the new SA's fields as in
    ChildSAEstablished, plus the SPIs of the SA it replaces (still installed until its
    ChildSADeleted). `pfs_group` is the DH group of the exchange, 0 without PFS.

    `outbound_ready` is True where we initiated the rekey: the peer installed its inbound
    SA before answering. Where the peer initiated it, False: 2.8 lets the responder send on
    the new SA only once traffic arrived on it or the peer deletes the old SA, so keep the
    old outbound SA until the ChildSADeleted for old_spi_in. When both ends rekeyed at
    once (2.8.1), a later ChildSARekeyed naming the same old SA supersedes an earlier one:
    switch to the later one's outbound SA (the earlier one's is deleted soon)."""
    name: str
    spi_in: int
    spi_out: int
    inbound: SAConfig
    outbound: SAConfig
    local_ts: TrafficSelector
    remote_ts: TrafficSelector
    proposal: str
    old_spi_in: int
    old_spi_out: int
    pfs_group: int = 0
    outbound_ready: bool = True


@dataclass(frozen=True)
class IKESARekeyed(IKEEvent):
    """The IKE SA `ike_sa` (old SPI) was replaced by `new_spi` (2.18); IKEConnection.spi is
    new_spi from now on. The old IKE SA is being deleted quietly: no IKESADeleted for it."""
    new_spi: bytes
    spi_i: bytes
    spi_r: bytes
    proposal: str
    by_peer: bool


@dataclass(frozen=True)
class ChildSADeleted(IKEEvent):
    name: str
    spi_in: int
    spi_out: int
    by_peer: bool


@dataclass(frozen=True)
class ChildSAFailed(IKEEvent):
    """The Child SA was refused (for example TS_UNACCEPTABLE); the IKE SA stays up."""
    name: str
    notify: int
    by_peer: bool


@dataclass(frozen=True)
class IKESADeleted(IKEEvent):
    reason: str
    by_peer: bool


@dataclass(frozen=True)
class AuthenticationFailed(IKEEvent):
    reason: str
    by_peer: bool            # True: the peer sent AUTHENTICATION_FAILED


@dataclass(frozen=True)
class NoProposalChosen(IKEEvent):
    child: bool              # False: the IKE SA proposals, True: the Child SA proposals
    by_peer: bool
    name: Optional[str] = None


@dataclass(frozen=True)
class PeerDead(IKEEvent):
    """A request went unanswered through every retransmission (RFC 7296 2.4)."""
    exchange: int
