"""Rekeying the IKE SA with CREATE_CHILD_SA (RFC 7296 1.3.2, 2.18, 2.25.2).

    Initiator                              Responder
    HDR, SK {SA, Ni, KEi}          -->
                                   <--     HDR, SK {SA, Nr, KEr}

The SA payload carries IKE proposals whose SPI is the sender's new 8-byte IKE SPI. Both
sides then derive the new SA's keys from the old SK_d (2.18):

    SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr)       (old PRF)
    {SK_d | SK_ai | ... | SK_pr} = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr)   (new PRF)

The initiator of the rekey is the original initiator of the new SA. Child SAs move to
the new SA; the initiator deletes the old one (its last request on it). Nothing here
touches task managers: a new SA is announced through IKESA.spawned, the hand-over through
IKESA.retire() (ike/connection.py follows both).

Collisions (2.8.2): if both ends rekey at once, both exchanges complete; the new SA made
with the lowest of the four nonces is redundant and its creator deletes it, and the
creator of the surviving one deletes the old SA. A request to create or rekey a Child SA
while we rekey the IKE SA, or to rekey the IKE SA while a Child SA exchange of ours is in
flight or the SA is going away, gets TEMPORARY_FAILURE (2.25).
"""
from __future__ import annotations

import logging
import struct
from typing import Optional

from ..constants import Exchange, Notify, Protocol, notify_name
from ..crypto import derive_rekeyed_ike_keys
from ..dh import new_dh
from ..errors import ProtocolError
from ..events import IKESARekeyed
from ..ike_sa import IKESA, State
from ..lifetimes import retry_at
from ..messages import Message
from ..payloads import KEPayload, NoncePayload, Proposal, SAPayload
from ..proposals import (accept_selected, describe, dh_groups, ike_algorithms, numbered,
                         select_proposal)
from .base import Status, Task
from .informational import DeleteIKE, InformationalResponder

log = logging.getLogger("ike")


def promote(old: IKESA, new: IKESA, by_peer: bool) -> None:
    """`new` replaces `old` for the consumer: Child SAs move, IKESARekeyed is emitted."""
    events = old.events
    old.retire(new)
    new.events = events
    new.emit(IKESARekeyed(old.our_spi, new.our_spi, new.spi_i, new.spi_r,
                          describe(new.proposal), by_peer))
    log.info("IKE SA %s rekeyed to %s_i %s_r (%s, %s, %d Child SAs moved)", old.our_spi.hex(),
             new.spi_i.hex(), new.spi_r.hex(), describe(new.proposal),
             "by peer" if by_peer else "by us", len(new.children))


def lowest_nonce_in(mine: tuple, theirs: tuple) -> bool:
    """2.8.1/2.8.2: is the lowest of the four nonces one of `mine` (the two nonces of the
    exchange we initiated)? Nonces compare as unsigned big-endian strings (memcmp)."""
    return min(mine + theirs) in mine


def _group_for(sa: IKESA) -> int:
    """KE for the current SA's group when we still propose it (the responder will most
    likely pick it again), else for the first group of our proposals."""
    groups = dh_groups(sa.config.proposals)
    return sa.alg.dh if sa.alg is not None and sa.alg.dh in groups else groups[0]


class RekeyIKE(Task):
    exchange = Exchange.CREATE_CHILD_SA

    def __init__(self, sa: IKESA, group: Optional[int] = None):
        super().__init__(sa)
        self.group = group
        self.dh = None
        self.spi = b""
        self.nonce = b""
        #: the peer's simultaneous rekey we answered: (its new IKESA, (Ni, Nr) of it)
        self.collided: Optional[tuple] = None

    def obsolete(self) -> bool:
        return self.sa.state != State.ESTABLISHED or self.sa.retired

    def build(self, msg: Message) -> Status:
        sa = self.sa
        sa.rekeying = True
        if self.group is None:
            self.group = _group_for(sa)
        self.dh = new_dh(self.group)
        self.spi = sa.new_spi(8)
        self.nonce = sa.random_bytes(sa.config.nonce_len)
        msg.payloads += [SAPayload(numbered(sa.config.proposals, self.spi)),
                         NoncePayload(self.nonce), KEPayload(self.group, self.dh.public_bytes())]
        log.info("rekeying IKE SA %s: new SPI %s, DH group %d", sa.our_spi.hex(),
                 self.spi.hex(), self.group)
        return Status.SUCCESS

    def _gave_up(self, why: str) -> Status:
        sa = self.sa
        sa.rekeying = False
        if self.collided is not None:
            # the peer's rekey, which we answered, is the one that stands (2.25.2)
            new, _ = self.collided
            promote(sa, new, True)
            return Status.SUCCESS
        sa.rekey_at = retry_at(sa.now, sa.random_bytes)
        log.warning("IKE SA %s rekey failed (%s); retrying later", sa.our_spi.hex(), why)
        return Status.SUCCESS

    def process(self, msg: Message) -> Status:
        sa = self.sa
        invalid_ke = msg.notify(Notify.INVALID_KE_PAYLOAD)
        if invalid_ke is not None and self.collided is None:
            if len(invalid_ke.data) == 2:
                (group,) = struct.unpack("!H", invalid_ke.data)
                if group != self.group and group in dh_groups(sa.config.proposals):
                    log.info("IKE SA %s rekey: peer asks for DH group %d", sa.our_spi.hex(),
                             group)
                    sa.pending.insert(0, RekeyIKE(sa, group))   # a new exchange (1.3)
                    return Status.SUCCESS
            return self._gave_up("INVALID_KE_PAYLOAD for a group we do not offer")
        errors = msg.error_notifies()
        if errors:
            return self._gave_up(f"peer sent {notify_name(errors[0].notify_type)}")
        sa_p, ke, nonce = msg.get(SAPayload), msg.get(KEPayload), msg.get(NoncePayload)
        if sa_p is None or ke is None or nonce is None or len(sa_p.proposals) != 1:
            return self._gave_up("response without one proposal, KE and nonce")
        chosen = sa_p.proposals[0]
        if chosen.protocol != Protocol.IKE or len(chosen.spi) != 8 \
                or not accept_selected(sa.config.proposals, chosen):
            return self._gave_up("response with a proposal we did not offer")
        alg = ike_algorithms(chosen)
        if alg.dh != self.group or ke.group != self.group:
            return self._gave_up("response KE group differs from ours")
        try:
            g_ir = self.dh.shared_secret(ke.data)
        except ProtocolError as err:
            return self._gave_up(str(err))
        keys = derive_rekeyed_ike_keys(sa.alg.prf, sa.keys.sk_d, alg.prf, alg.encr, alg.integ,
                                       self.nonce, nonce.data, g_ir, self.spi, chosen.spi)
        ours = sa.successor(True, self.spi, chosen.spi, self.nonce, nonce.data, chosen, alg,
                            keys)
        if self.collided is None:
            promote(sa, ours, False)
            sa.pending.append(DeleteIKE(sa))          # 2.18: the rekey initiator deletes it
            return Status.SUCCESS
        theirs, their_nonces = self.collided
        if lowest_nonce_in((self.nonce, nonce.data), their_nonces):
            # ours is redundant: the peer's stands and the peer deletes the old SA
            log.info("IKE rekey collision: ours (%s) is redundant", self.spi.hex())
            promote(sa, theirs, True)
            ours.retire(theirs)
            ours.pending.append(DeleteIKE(ours))
        else:
            log.info("IKE rekey collision: ours (%s) stands", self.spi.hex())
            promote(sa, ours, False)
            theirs.retire(ours)                       # the peer deletes its redundant SA
            sa.pending.append(DeleteIKE(sa))
        return Status.SUCCESS


class RekeyIKEResponder:
    """The IKE part of the CREATE_CHILD_SA responder (ike/tasks/create_child.py)."""

    def __init__(self, sa: IKESA, active: Optional[Task]):
        self.sa = sa
        self.active = active
        self.chosen: Optional[Proposal] = None
        self.peer_ke: Optional[KEPayload] = None
        self.peer_nonce = b""

    def process(self, msg: Message) -> None:
        sa = self.sa
        if sa.retired or sa.state != State.ESTABLISHED:
            raise ProtocolError(Notify.TEMPORARY_FAILURE, "IKE SA is going away")
        if self.active is not None and not isinstance(self.active, (RekeyIKE, DeleteIKE)) \
                and self.active.exchange == Exchange.CREATE_CHILD_SA:
            raise ProtocolError(Notify.TEMPORARY_FAILURE, "a Child SA exchange is in flight")
        sa_p, ke, nonce = msg.get(SAPayload), msg.get(KEPayload), msg.get(NoncePayload)
        if sa_p is None or ke is None or nonce is None:
            raise ProtocolError(Notify.INVALID_SYNTAX, "IKE rekey without SA, KE or nonce")
        theirs = [p for p in sa_p.proposals if p.protocol == Protocol.IKE and len(p.spi) == 8]
        chosen = select_proposal(sa.config.proposals, theirs, prefer_dh=ke.group)
        if chosen is None:
            raise ProtocolError(Notify.NO_PROPOSAL_CHOSEN, "no acceptable IKE proposal")
        alg = ike_algorithms(chosen)
        if ke.group != alg.dh:
            raise ProtocolError(Notify.INVALID_KE_PAYLOAD, data=struct.pack("!H", alg.dh))
        self.chosen, self.peer_ke, self.peer_nonce = chosen, ke, nonce.data

    def build(self, msg: Message) -> None:
        sa, chosen = self.sa, self.chosen
        alg = ike_algorithms(chosen)
        dh = new_dh(alg.dh)
        g_ir = dh.shared_secret(self.peer_ke.data)       # ProtocolError(INVALID_SYNTAX)
        spi_r = sa.new_spi(8)
        nonce_r = sa.random_bytes(sa.config.nonce_len)
        keys = derive_rekeyed_ike_keys(sa.alg.prf, sa.keys.sk_d, alg.prf, alg.encr, alg.integ,
                                       self.peer_nonce, nonce_r, g_ir, chosen.spi, spi_r)
        answer = Proposal(chosen.num, Protocol.IKE, spi_r, chosen.transforms)
        msg.payloads += [SAPayload((answer,)), NoncePayload(nonce_r),
                         KEPayload(alg.dh, dh.public_bytes())]
        new = sa.successor(False, chosen.spi, spi_r, self.peer_nonce, nonce_r, answer, alg,
                           keys)
        log.info("peer rekeys IKE SA %s: new SPIs %s_i %s_r, DH group %d", sa.our_spi.hex(),
                 chosen.spi.hex(), spi_r.hex(), alg.dh)
        if isinstance(self.active, RekeyIKE) and self.active.spi:
            # 2.8.2: both ends rekey; decided when our own exchange completes
            self.active.collided = (new, (self.peer_nonce, nonce_r))
            log.info("IKE rekey collision on %s", sa.our_spi.hex())
        else:
            promote(sa, new, True)      # the peer deletes the old SA


class InformationalDuringRekey(InformationalResponder):
    """INFORMATIONAL responder that knows about our IKE rekey in flight: when the peer
    deletes the old IKE SA after a collision we answered, the peer's rekey stood (its
    answer to ours may still be on the way, or be TEMPORARY_FAILURE): the Child SAs move
    to the peer's new SA before the old one goes (2.25.2: reply as usual and forget our
    own rekey)."""

    def __init__(self, sa: IKESA, active: Optional[Task]):
        super().__init__(sa)
        self.active = active

    def build(self, msg: Message) -> Status:
        a = self.active
        if self.delete_ike and isinstance(a, RekeyIKE) and a.collided is not None \
                and not self.sa.retired:
            new, _ = a.collided
            a.collided = None
            log.info("IKE rekey collision: peer deletes %s, its rekey stands",
                     self.sa.our_spi.hex())
            promote(self.sa, new, True)
        return super().build(msg)
