"""The state of one IKE SA, shared by its tasks (strongSwan's ike_sa_t, reduced).

Tasks read and write this record; the task manager owns message IDs and retransmission;
ike/connection.py owns both and is the only public face. Nothing here does I/O or reads
a clock. Randomness comes from `random_bytes` (os.urandom unless a test passes another).
"""
from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable, Optional, Sequence

from engine.sa import SAConfig

from .config import ChildConfig, IKEConfig, Identity
from .crypto import IKEKeys, make_protector
from .events import ChildSADeleted
from .payloads import Proposal, TrafficSelector
from .proposals import IKEAlgorithms

Address = tuple   # (host, port) as the socket layer gives it


def _u32(spi: bytes) -> int:
    return int.from_bytes(spi, "big")


class State(Enum):
    CREATED = "created"            # nothing exchanged yet
    INIT_DONE = "init-done"        # IKE_SA_INIT done, keys derived, not authenticated
    ESTABLISHED = "established"    # IKE_AUTH done
    DELETING = "deleting"          # our Delete of the IKE SA is in flight
    CLOSED = "closed"


@dataclass
class ChildSA:
    name: str
    spi_in: bytes                  # ours: the SPI the peer puts on packets to us
    spi_out: bytes
    inbound: SAConfig
    outbound: SAConfig
    local_ts: TrafficSelector
    remote_ts: TrafficSelector
    proposal: str
    # -- lifetimes and rekeying (2.8; ike/lifetimes.py, ike/tasks/create_child.py) --
    config: Optional[ChildConfig] = field(default=None, repr=False)
    pfs_group: int = 0
    rekey_at: Optional[float] = None      # soft limit: start a rekey
    expire_at: Optional[float] = None     # hard limit: delete
    soft_bytes: int = 0                   # 0 = no byte limit
    hard_bytes: int = 0
    bytes_seen: int = 0                   # in + out, as the gateway last reported it
    rekeying: bool = False                # our CREATE_CHILD_SA for it is queued or in flight
    replaced: bool = False                # rekeyed: waiting for its Delete exchange
    deleting: bool = False                # our Delete of it is queued or in flight


@dataclass
class IKESA:
    configs: Sequence[IKEConfig]   # candidates; IKE_AUTH settles on one (the responder)
    initiator: bool
    local_addr: Address
    remote_addr: Optional[Address]
    random_bytes: Callable[[int], bytes] = os.urandom

    state: State = State.CREATED
    spi_i: bytes = bytes(8)
    spi_r: bytes = bytes(8)
    config_index: int = 0
    nonce_i: bytes = field(default=b"", repr=False)
    nonce_r: bytes = field(default=b"", repr=False)
    proposal: Optional[Proposal] = None
    alg: Optional[IKEAlgorithms] = None
    keys: Optional[IKEKeys] = field(default=None, repr=False)
    init_request: bytes = field(default=b"", repr=False)     # RealMessage1 (2.15)
    init_response: bytes = field(default=b"", repr=False)    # RealMessage2
    nat_local: bool = False
    nat_remote: bool = False
    local_port: int = 0            # the port we use now: the IKE port, or NAT-T's after 2.23
    floated: bool = False          # moved to the NAT-T port: requests carry the non-ESP marker
    remote_id: Optional[Identity] = None
    children: dict = field(default_factory=dict)             # spi_in -> ChildSA
    events: deque = field(default_factory=deque)
    pending: list = field(default_factory=list)   # tasks a task wants run next (manager drains)
    close_reason: str = ""
    # -- what the peer announced in IKE_SA_INIT (RFC 7383 2.3, RFC 7427 4) --
    peer_fragmentation: bool = False
    peer_sig_hashes: tuple = ()
    # -- time, lifetime and rekeying (2.8, 2.18) --
    now: float = 0.0               # the latest `now` the connection was given (tasks stamp
                                   # lifetimes with it; nothing here reads a clock)
    rekey_at: Optional[float] = None
    expire_at: Optional[float] = None
    rekeying: bool = False         # our IKE SA rekey is queued or in flight
    retired: bool = False          # replaced by a rekeyed IKE SA; being deleted quietly
    lifetime_set: bool = False     # rekey_at/expire_at stamped (ike/connection.py)
    replaced_by: Optional["IKESA"] = field(default=None, repr=False)
    spawned: list = field(default_factory=list, repr=False)  # new IKE SAs made by rekeys
    _protect_out: object = field(default=None, repr=False)
    _protect_in: object = field(default=None, repr=False)

    def __post_init__(self):
        if not self.local_port:
            self.local_port = self.local_addr[1]

    # -- identity of this SA -----------------------------------------------------------------
    @property
    def config(self) -> IKEConfig:
        return self.configs[self.config_index]

    @property
    def our_spi(self) -> bytes:
        return self.spi_i if self.initiator else self.spi_r

    @property
    def nat(self) -> bool:
        return self.nat_local or self.nat_remote

    def new_spi(self, size: int) -> bytes:
        """A random SPI; ESP SPIs 1..255 are reserved (RFC 4303 2.1), 0 means none."""
        while True:
            spi = self.random_bytes(size)
            if int.from_bytes(spi, "big") > 255:
                return spi

    def emit(self, event) -> None:
        self.events.append(event)

    def discard(self) -> None:
        """Close a responder's half-open SA without an event: it never existed for the
        consumer (stateless IKE_SA_INIT refusals, malformed requests, half-open timeout)."""
        self.children.clear()
        self.state = State.CLOSED

    def terminate(self, event) -> None:
        """End this IKE SA with one terminal event (IKESADeleted, AuthenticationFailed,
        NoProposalChosen, PeerDead); its Child SAs go with it, each with ChildSADeleted."""
        if self.state == State.CLOSED:
            return
        by_peer = getattr(event, "by_peer", False)
        for child in list(self.children.values()):
            self.emit(ChildSADeleted(self.our_spi, child.name, _u32(child.spi_in),
                                     _u32(child.spi_out), by_peer))
        self.children.clear()
        self.emit(event)
        self.state = State.CLOSED
        self.close_reason = getattr(event, "reason", type(event).__name__)

    def successor(self, initiator: bool, spi_i: bytes, spi_r: bytes, nonce_i: bytes,
                  nonce_r: bytes, proposal: Proposal, alg: IKEAlgorithms,
                  keys: IKEKeys) -> "IKESA":
        """The IKE SA that replaces this one after a rekey (2.18): same peer, addresses,
        NAT state and identities; new SPIs, nonces and keys; message IDs from 0 (a new
        task manager). The rekey's initiator is the new SA's original initiator (2.2).
        The events queue is shared, so the consumer sees one ordered stream."""
        new = IKESA(self.configs, initiator, self.local_addr, self.remote_addr,
                    self.random_bytes)
        new.state = State.ESTABLISHED
        new.config_index = self.config_index
        new.spi_i, new.spi_r, new.nonce_i, new.nonce_r = spi_i, spi_r, nonce_i, nonce_r
        new.proposal = proposal
        new.nat_local, new.nat_remote = self.nat_local, self.nat_remote
        new.local_port, new.floated = self.local_port, self.floated
        new.remote_id = self.remote_id
        new.events = self.events
        new.now = self.now
        new.set_keys(alg, keys)
        self.spawned.append(new)
        return new

    def retire(self, successor: "IKESA") -> None:
        """Hand the Child SAs to `successor`; from now on this SA only waits for its Delete
        and says nothing to the consumer (its events go to a private queue)."""
        successor.children.update(self.children)
        self.children = {}
        self.events = deque()
        self.retired = True
        self.rekeying = False
        self.replaced_by = successor

    # -- keys ----------------------------------------------------------------------------------
    def set_keys(self, alg: IKEAlgorithms, keys: IKEKeys) -> None:
        """Install SK_e/SK_a for both directions (2.14: SK_ei/SK_ai protect the initiator's
        messages, SK_er/SK_ar the responder's)."""
        self.alg, self.keys = alg, keys
        mine = (keys.sk_ei, keys.sk_ai) if self.initiator else (keys.sk_er, keys.sk_ar)
        theirs = (keys.sk_er, keys.sk_ar) if self.initiator else (keys.sk_ei, keys.sk_ai)
        self._protect_out = make_protector(alg.encr, alg.integ, *mine)
        self._protect_in = make_protector(alg.encr, alg.integ, *theirs)

    @property
    def protect_out(self):
        return self._protect_out

    @property
    def protect_in(self):
        return self._protect_in

    @property
    def sk_p_local(self) -> bytes:
        return self.keys.sk_pi if self.initiator else self.keys.sk_pr

    @property
    def sk_p_remote(self) -> bytes:
        return self.keys.sk_pr if self.initiator else self.keys.sk_pi

    @property
    def nonce_local(self) -> bytes:
        return self.nonce_i if self.initiator else self.nonce_r

    @property
    def nonce_remote(self) -> bytes:
        return self.nonce_r if self.initiator else self.nonce_i

    def forget_secrets(self) -> None:
        self.keys = None
        self._protect_out = self._protect_in = None
