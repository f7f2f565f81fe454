"""Typed events out of the IKE core (the only way control talks to data, STYLE.md 3).

Every event names the IKE SA by `ike_sa`, our own 8-byte IKE SPI. A consumer installs
`ChildSAEstablished.inbound` with Engine.install(cfg, "in") and `.outbound` with "out",
and removes them on ChildSADeleted / IKESADeleted / PeerDead.
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
