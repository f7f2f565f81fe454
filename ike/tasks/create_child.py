"""CREATE_CHILD_SA for Child SAs (RFC 7296 1.3.1, 1.3.3, 2.8, 2.17, 2.25.1), and the
responder that tells the three uses of the exchange apart.

    new Child SA     HDR, SK {SA, Ni, [KEi,] TSi, TSr}                  -->
    Child rekey      HDR, SK {N(REKEY_SA), SA, Ni, [KEi,] TSi, TSr}     -->
                                               <--  HDR, SK {SA, Nr, [KEr,] TSi, TSr}
    IKE rekey        HDR, SK {SA, Ni, KEi}  (IKE proposals; ike/tasks/rekey_ike.py)

- PFS: a KE payload is sent when the Child proposals carry a DH group (unlike IKE_AUTH,
  where the group is ignored); the responder answers INVALID_KE_PAYLOAD with the group it
  wants, and the initiator tries again in a new exchange.
- Keys: KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr) with this exchange's nonces (2.17).
- REKEY_SA names the old SA by the SPI its sender receives on (1.3.3); traffic selectors
  are sent again. Make-before-break: ChildSARekeyed carries the new SAConfigs and the old
  SPIs; the rekey initiator then deletes the old SA (ChildSADeleted for it follows).
- Collisions (2.8.1): when both ends rekey one Child SA, both exchanges complete and the
  new SA made with the lowest of the four nonces is redundant: its creator deletes it (and
  never announces it); the creator of the other deletes the old SA. A rekey of an SA we
  are deleting, or any Child SA request while we rekey the IKE SA, gets TEMPORARY_FAILURE;
  one naming an SA we do not have gets CHILD_SA_NOT_FOUND (2.25.1).
"""
from __future__ import annotations

import logging
import struct
from typing import Optional

from ..config import ChildConfig
from ..constants import Exchange, Notify, Protocol, TransformType, notify_name
from ..dh import new_dh
from ..errors import ProtocolError
from ..events import ChildSAFailed, NoProposalChosen
from ..ike_sa import IKESA, ChildSA, State
from ..lifetimes import retry_at
from ..messages import Message
from ..payloads import (KEPayload, NoncePayload, NotifyPayload, Proposal, SAPayload,
                        TSiPayload, TSrPayload)
from ..proposals import accept_selected, child_algorithms, dh_groups, numbered, transform
from ..ts import accept_narrowed, compatible
from .base import Status, Task
from .child_sa import (CHILD_ERRORS, ChildChoice, ChildRefused, ah_behind_nat, choose, establish,
                       find_by_outbound, ike_protocol)
from .informational import DeleteChild
from .rekey_ike import RekeyIKE, RekeyIKEResponder, lowest_nonce_in

log = logging.getLogger("ike")


def _u32(spi: bytes) -> int:
    return int.from_bytes(spi, "big")


def _dh_of(p: Proposal) -> int:
    t = transform(p, TransformType.DH)
    return t.id if t is not None else 0


def delete_child(sa: IKESA, child: ChildSA) -> None:
    """Queue our Delete of a Child SA (marked, so a rekey of it is refused meanwhile)."""
    child.deleting = True
    sa.pending.append(DeleteChild(sa, [child.spi_in], ike_protocol(child)))


class CreateChild(Task):
    """Initiator: a new Child SA for `config`, or a rekey of `rekey` (then `config` is
    the config it was made from)."""
    exchange = Exchange.CREATE_CHILD_SA

    def __init__(self, sa: IKESA, config: ChildConfig, rekey: Optional[ChildSA] = None,
                 group: Optional[int] = None):
        super().__init__(sa)
        self.config = config
        self.rekey = rekey
        self.group = group
        self.dh = None
        self.spi_in = b""
        self.nonce = b""
        #: the peer's rekey of the same SA, answered while ours was in flight:
        #: (the ChildSA it made, (Ni, Nr) of that exchange)
        self.collided: Optional[tuple] = None
        if rekey is not None:
            rekey.rekeying = True

    def obsolete(self) -> bool:
        """Dropped unsent when the IKE SA or the SA to rekey is gone or being replaced."""
        sa, old = self.sa, self.rekey
        if sa.state != State.ESTABLISHED or sa.retired:
            return True
        if old is None:
            return False
        gone = sa.children.get(old.spi_in) is not old or old.replaced or old.deleting
        if gone:
            old.rekeying = False
        return gone

    def build(self, msg: Message) -> Status:
        sa, cfg = self.sa, self.config
        if self.group is None:
            groups = dh_groups(cfg.proposals)
            self.group = groups[0] if groups else 0
        self.dh = new_dh(self.group) if self.group else None
        self.spi_in = sa.new_spi(4)
        self.nonce = sa.random_bytes(sa.config.nonce_len)
        if self.rekey is not None:
            # 1.3.3: the SPI we receive the old SA's traffic on
            msg.payloads.append(NotifyPayload(Notify.REKEY_SA, b"", ike_protocol(self.rekey),
                                              self.rekey.spi_in))
            tsi, tsr = (self.rekey.local_ts,), (self.rekey.remote_ts,)
        else:
            tsi, tsr = cfg.local_ts, cfg.remote_ts
        msg.payloads += [SAPayload(numbered(cfg.proposals, self.spi_in)),
                         NoncePayload(self.nonce)]
        if self.dh is not None:
            msg.payloads.append(KEPayload(self.group, self.dh.public_bytes()))
        msg.payloads += [TSiPayload(tuple(tsi)), TSrPayload(tuple(tsr))]
        if self.rekey is not None:
            log.info("rekeying Child SA %s %08x_i %08x_o: new SPI %08x, PFS group %s",
                     cfg.name, _u32(self.rekey.spi_in), _u32(self.rekey.spi_out),
                     _u32(self.spi_in), self.group or "none")
        else:
            log.info("creating Child SA %s: SPI %08x, PFS group %s", cfg.name,
                     _u32(self.spi_in), self.group or "none")
        return Status.SUCCESS

    # -- the response ----------------------------------------------------------------------
    def _failed(self, notify: int, by_peer: bool, why: str) -> Status:
        sa, old = self.sa, self.rekey
        log.warning("Child SA %s %s failed: %s", self.config.name,
                    "rekey" if old is not None else "creation", why)
        if old is not None:
            old.rekeying = False
            if self.collided is None and not old.replaced:
                old.rekey_at = retry_at(sa.now, sa.random_bytes)
            return Status.SUCCESS       # the old SA lives on (or the peer's rekey stands)
        if notify == Notify.NO_PROPOSAL_CHOSEN:
            sa.emit(NoProposalChosen(sa.our_spi, True, by_peer, self.config.name))
        else:
            sa.emit(ChildSAFailed(sa.our_spi, self.config.name, notify, by_peer))
        return Status.SUCCESS

    def _refuse_answer(self, notify: int, why: str) -> Status:
        """The peer made an SA we cannot use: delete it there (2.21.3)."""
        self.sa.pending.append(DeleteChild(self.sa, [self.spi_in], self.config.protocol))
        return self._failed(notify, False, why)

    def process(self, msg: Message) -> Status:
        sa, cfg = self.sa, self.config
        invalid_ke = msg.notify(Notify.INVALID_KE_PAYLOAD)
        if invalid_ke is not None:
            group = struct.unpack("!H", invalid_ke.data)[0] if len(invalid_ke.data) == 2 else 0
            if group and group != self.group and group in dh_groups(cfg.proposals):
                log.info("Child SA %s: peer asks for DH group %d", cfg.name, group)
                retry = CreateChild(sa, cfg, self.rekey, group)
                retry.collided = self.collided
                sa.pending.insert(0, retry)            # a new exchange, next message ID
                return Status.SUCCESS
            return self._failed(Notify.NO_PROPOSAL_CHOSEN, True,
                                "INVALID_KE_PAYLOAD for a group we do not offer")
        errors = [n for n in msg.error_notifies()
                  if n.notify_type in CHILD_ERRORS + (Notify.CHILD_SA_NOT_FOUND,)]
        if errors or msg.error_notifies():
            notify = (errors or msg.error_notifies())[0].notify_type
            return self._failed(notify, True, f"peer sent notify {notify}")
        sa_p, nonce = msg.get(SAPayload), msg.get(NoncePayload)
        tsi, tsr, ke = msg.get(TSiPayload), msg.get(TSrPayload), msg.get(KEPayload)
        if sa_p is None or nonce is None or tsi is None or tsr is None:
            return self._refuse_answer(Notify.INVALID_SYNTAX, "response lacks SA, Nr or TS")
        chosen = sa_p.proposals[0] if len(sa_p.proposals) == 1 else None
        if chosen is None or chosen.protocol != cfg.protocol or len(chosen.spi) != 4 \
                or not accept_selected(cfg.proposals, chosen):
            return self._refuse_answer(Notify.NO_PROPOSAL_CHOSEN, "unacceptable proposal")
        try:
            child_algorithms(chosen)
        except ValueError as err:
            return self._refuse_answer(Notify.NO_PROPOSAL_CHOSEN, str(err))
        if ah_behind_nat(sa, chosen.protocol, cfg.name):
            return self._refuse_answer(Notify.NO_PROPOSAL_CHOSEN, "AH behind a NAT")
        if _dh_of(chosen) != self.group or (self.group and (ke is None or ke.group != self.group)):
            return self._refuse_answer(Notify.INVALID_KE_PAYLOAD, "DH group mismatch")
        g_ir = b""
        if self.dh is not None:
            try:
                g_ir = self.dh.shared_secret(ke.data)
            except ProtocolError as err:
                return self._refuse_answer(Notify.INVALID_SYNTAX, str(err))
        local = accept_narrowed(cfg.local_ts if self.rekey is None else (self.rekey.local_ts,),
                                tsi.selectors)
        remote = accept_narrowed(cfg.remote_ts if self.rekey is None
                                 else (self.rekey.remote_ts,), tsr.selectors)
        if local is None or remote is None or not compatible(local, remote):
            return self._refuse_answer(Notify.TS_UNACCEPTABLE, "narrowed selectors refused")
        return self._install(chosen, nonce.data, g_ir, local, remote)

    def _install(self, chosen: Proposal, nonce_r: bytes, g_ir: bytes, local, remote) -> Status:
        sa, cfg, old = self.sa, self.config, self.rekey
        if old is None:
            establish(sa, cfg, chosen, self.spi_in, chosen.spi, local, remote, True,
                      self.nonce, nonce_r, g_ir, pfs_group=self.group)
            return Status.SUCCESS
        old.rekeying = False
        redundant = self.collided is not None and \
            lowest_nonce_in((self.nonce, nonce_r), self.collided[1])
        if redundant:
            # 2.8.1: ours is the redundant SA; the peer's stands and the peer deletes the
            # old one. Never announced to the consumer, deleted at once.
            log.info("Child SA %s rekey collision: ours (%08x) is redundant", cfg.name,
                     _u32(self.spi_in))
            record = establish(sa, cfg, chosen, self.spi_in, chosen.spi, local, remote, True,
                               self.nonce, nonce_r, g_ir, announce=False)
            sa.children.pop(record.spi_in, None)
            sa.pending.append(DeleteChild(sa, [self.spi_in], cfg.protocol))
            return Status.SUCCESS
        if self.collided is not None:
            log.info("Child SA %s rekey collision: ours (%08x) stands", cfg.name,
                     _u32(self.spi_in))
        new = establish(sa, cfg, chosen, self.spi_in, chosen.spi, local, remote, True,
                        self.nonce, nonce_r, g_ir, replaces=old, pfs_group=self.group)
        log.info("Child SA %s rekeyed: %08x_i %08x_o -> %08x_i %08x_o, PFS group %s", cfg.name,
                 _u32(old.spi_in), _u32(old.spi_out), _u32(new.spi_in), _u32(new.spi_out),
                 self.group or "none")
        old.replaced = True
        delete_child(sa, old)          # 2.8: the initiator of the surviving rekey deletes it
        return Status.SUCCESS


class CreateChildResponder(Task):
    """Answers CREATE_CHILD_SA: IKE rekey (IKE proposals), Child rekey (REKEY_SA) or a new
    Child SA. `active` is our own request in flight on this IKE SA, if any (collisions)."""
    exchange = Exchange.CREATE_CHILD_SA

    def __init__(self, sa: IKESA, active: Optional[Task] = None):
        super().__init__(sa)
        self.active = active
        self.ike: Optional[RekeyIKEResponder] = None
        self.old: Optional[ChildSA] = None
        self.choice: Optional[ChildChoice] = None
        self.peer_nonce = b""
        self.peer_ke: Optional[KEPayload] = None

    def process(self, msg: Message) -> Status:
        try:
            return self._process(msg)
        except ProtocolError as err:
            log.warning("IKE SA %s: CREATE_CHILD_SA refused with %s: %s", self.sa.our_spi.hex(),
                        notify_name(err.notify), err)
            raise

    def _process(self, msg: Message) -> Status:
        sa = self.sa
        sa_p = msg.get(SAPayload)
        if sa_p is not None and any(p.protocol == Protocol.IKE for p in sa_p.proposals):
            self.ike = RekeyIKEResponder(sa, self.active)
            self.ike.process(msg)
            return Status.SUCCESS
        if sa.retired or sa.state != State.ESTABLISHED or isinstance(self.active, RekeyIKE):
            raise ProtocolError(Notify.TEMPORARY_FAILURE, "the IKE SA is being rekeyed")
        nonce, ke = msg.get(NoncePayload), msg.get(KEPayload)
        if sa_p is None or nonce is None:
            raise ProtocolError(Notify.INVALID_SYNTAX, "CREATE_CHILD_SA without SA or nonce")
        rekey = msg.notify(Notify.REKEY_SA)
        if rekey is not None:
            self.old = find_by_outbound(sa, rekey.spi)
            if self.old is None or self.old.config is None \
                    or rekey.protocol != ike_protocol(self.old):
                raise ProtocolError(Notify.CHILD_SA_NOT_FOUND, "no such Child SA",
                                    b"") from None
            if self.old.deleting or (self.old.replaced and not self._colliding()):
                raise ProtocolError(Notify.TEMPORARY_FAILURE, "that Child SA is going away")
            configs = [self.old.config]
        else:
            configs = list(sa.config.children)
        try:
            self.choice = choose(configs, msg, drop_dh=False,
                                 prefer_dh=ke.group if ke is not None else None, sa=sa)
        except ChildRefused as refused:
            if rekey is None:
                sa.emit(ChildSAFailed(sa.our_spi, "", refused.notify, False)
                        if refused.notify != Notify.NO_PROPOSAL_CHOSEN
                        else NoProposalChosen(sa.our_spi, True, False, None))
            raise ProtocolError(refused.notify, "Child SA refused") from None
        try:
            child_algorithms(self.choice.proposal)
        except ValueError:
            raise ProtocolError(Notify.NO_PROPOSAL_CHOSEN, "unusable proposal") from None
        group = _dh_of(self.choice.proposal)
        if group and (ke is None or ke.group != group):
            raise ProtocolError(Notify.INVALID_KE_PAYLOAD, data=struct.pack("!H", group))
        self.peer_nonce, self.peer_ke = nonce.data, ke
        return Status.SUCCESS

    def _colliding(self) -> bool:
        a = self.active
        return isinstance(a, CreateChild) and a.rekey is self.old and bool(a.spi_in)

    def build(self, msg: Message) -> Status:
        try:
            return self._build(msg)
        except ProtocolError as err:        # the peer's KE value is unusable
            log.warning("IKE SA %s: CREATE_CHILD_SA refused with %s: %s", self.sa.our_spi.hex(),
                        notify_name(err.notify), err)
            raise

    def _build(self, msg: Message) -> Status:
        sa = self.sa
        if self.ike is not None:
            self.ike.build(msg)
            return Status.SUCCESS
        c = self.choice
        group = _dh_of(c.proposal)
        g_ir, dh = b"", None
        if group:
            dh = new_dh(group)
            g_ir = dh.shared_secret(self.peer_ke.data)     # ProtocolError(INVALID_SYNTAX)
        spi_in = sa.new_spi(4)
        nonce_r = sa.random_bytes(sa.config.nonce_len)
        answer = Proposal(c.proposal.num, c.proposal.protocol, spi_in, c.proposal.transforms)
        msg.payloads += [SAPayload((answer,)), NoncePayload(nonce_r)]
        if dh is not None:
            msg.payloads.append(KEPayload(group, dh.public_bytes()))
        msg.payloads += [TSiPayload((c.tsi,)), TSrPayload((c.tsr,))]
        old = self.old
        new = establish(sa, c.config, answer, spi_in, c.proposal.spi, c.tsr, c.tsi, False,
                        self.peer_nonce, nonce_r, g_ir, replaces=old, pfs_group=group)
        if old is None:
            log.info("peer created Child SA %s: %08x_i %08x_o, PFS group %s", c.config.name,
                     _u32(new.spi_in), _u32(new.spi_out), group or "none")
            return Status.SUCCESS
        log.info("peer rekeyed Child SA %s: %08x_i %08x_o -> %08x_i %08x_o, PFS group %s",
                 c.config.name, _u32(old.spi_in), _u32(old.spi_out), _u32(new.spi_in),
                 _u32(new.spi_out), group or "none")
        if self._colliding():
            self.active.collided = (new, (self.peer_nonce, nonce_r))
            log.info("Child SA %s rekey collision", c.config.name)
        old.replaced = True             # the rekey's initiator deletes it (2.8)
        return Status.SUCCESS
