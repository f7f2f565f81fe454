"""IKE_AUTH (RFC 7296 1.2, 2.15) with pre-shared keys or certificates, and the first
Child SA.

    Initiator                                   Responder
    HDR, SK {IDi, [CERT+,] [CERTREQ,] [N(INITIAL_CONTACT),] [IDr,]
             AUTH, SAi2, TSi, TSr}        -->
                                          <--   HDR, SK {IDr, [CERT+,] AUTH, SAr2, TSi, TSr}
                                          or    HDR, SK {IDr, [CERT+,] AUTH, N(child error)}
                                          or    HDR, SK {N(AUTHENTICATION_FAILED)}

AUTH = prf(prf(PSK, "Key Pad for IKEv2"), RealMessage | Nonce | prf(SK_p, ID body)) (2.15),
or a signature over the same octets; ike/peer_auth.py builds and checks both.
A failed authentication on the responder is answered with AUTHENTICATION_FAILED; on the
initiator it is reported in a separate INFORMATIONAL (2.21.2). A refused Child SA leaves
the IKE SA up (2.21.3).
"""
from __future__ import annotations

import logging
from typing import Optional

from ..config import ChildConfig, Identity
from ..constants import Exchange, Notify, notify_name
from ..errors import ParseError, ProtocolError
from ..events import (AuthenticationFailed, ChildSAFailed, IKESADeleted, IKESAEstablished,
                      NoProposalChosen)
from ..ike_sa import IKESA, State
from ..messages import Message
from ..payloads import (AuthPayload, IDiPayload, IDrPayload, NotifyPayload, Proposal,
                        SAPayload, TSiPayload, TSrPayload)
from ..peer_auth import certreq, our_auth, peer_auth_error
from ..proposals import accept_selected, child_algorithms, describe
from ..ts import accept_narrowed, compatible
from .base import Status, Task
from .child_sa import (CHILD_ERRORS, ChildChoice, ChildRefused, ah_behind_nat, choose,
                       establish, request_payloads)
from .informational import DeleteChild, NotifyError


log = logging.getLogger("ike.auth")


def _log_failure(sa: IKESA, who, reason: str) -> str:
    """Log why; returns the reason the AuthenticationFailed event carries."""
    log.warning("IKE SA %s: authentication of %s from %s failed: %s", sa.our_spi.hex(),
                who, sa.remote_addr[0] if sa.remote_addr else "?", reason)
    return f"{reason} (peer {who})" if who is not None else reason


def _established(sa: IKESA) -> None:
    sa.state = State.ESTABLISHED
    sa.emit(IKESAEstablished(sa.our_spi, sa.spi_i, sa.spi_r, str(sa.config.local_id),
                             str(sa.remote_id), sa.remote_addr, describe(sa.proposal),
                             sa.nat_local, sa.nat_remote))


def _child_refused(sa: IKESA, name: str, notify: int, by_peer: bool) -> None:
    log.warning("IKE SA %s: Child SA %s %s: %s", sa.our_spi.hex(), name or "(first)",
                "refused by the peer" if by_peer else "refused", notify_name(notify))
    if notify == Notify.NO_PROPOSAL_CHOSEN:
        sa.emit(NoProposalChosen(sa.our_spi, True, by_peer, name))
    else:
        sa.emit(ChildSAFailed(sa.our_spi, name, notify, by_peer))


class IkeAuthInitiator(Task):
    exchange = Exchange.IKE_AUTH

    def __init__(self, sa: IKESA, child: Optional[ChildConfig]):
        super().__init__(sa)
        self.child = child
        self.spi_in = b""

    def build(self, msg: Message) -> Status:
        sa, cfg = self.sa, self.sa.config
        idi = IDiPayload(cfg.local_id.id_type, cfg.local_id.data)
        msg.payloads.append(idi)
        if cfg.initial_contact:
            msg.payloads.append(NotifyPayload(Notify.INITIAL_CONTACT))
        if cfg.remote_id is not None:
            msg.payloads.append(IDrPayload(cfg.remote_id.id_type, cfg.remote_id.data))
        auth = our_auth(sa, cfg, idi)          # [CERT...,] AUTH
        msg.payloads[1:1] = auth[:-1] + certreq(cfg)
        msg.payloads.append(auth[-1])
        if self.child is not None:
            self.spi_in = sa.new_spi(4)
            msg.payloads += request_payloads(self.child, self.spi_in)
        return Status.SUCCESS

    def _auth_failed(self, reason: str, who=None) -> Status:
        reason = _log_failure(self.sa, who or self.sa.config.remote_id, reason)
        self.sa.terminate(AuthenticationFailed(self.sa.our_spi, reason, False))
        self.followup = NotifyError(self.sa, Notify.AUTHENTICATION_FAILED)
        return Status.FAILED

    def process(self, msg: Message) -> Status:
        sa, cfg = self.sa, self.sa.config
        if msg.notify(Notify.AUTHENTICATION_FAILED) is not None:
            log.warning("IKE SA %s: the peer refused our authentication "
                        "(AUTHENTICATION_FAILED)", sa.our_spi.hex())
            sa.terminate(AuthenticationFailed(sa.our_spi, "peer sent AUTHENTICATION_FAILED",
                                              True))
            return Status.FAILED
        idr, auth = msg.get(IDrPayload), msg.get(AuthPayload)
        if idr is None or auth is None:
            errors = msg.error_notifies()
            if not errors:
                raise ParseError("IKE_AUTH response without IDr or AUTH")
            sa.terminate(IKESADeleted(
                sa.our_spi, f"peer refused IKE_AUTH: {notify_name(errors[0].notify_type)}",
                True))
            return Status.FAILED
        remote = Identity.from_payload(idr)
        if cfg.remote_id is not None and not cfg.remote_id.matches(remote):
            return self._auth_failed(f"identity-mismatch: peer identity {remote} is not "
                                     f"{cfg.remote_id}", remote)
        error = peer_auth_error(sa, cfg, idr, msg)
        if error is not None:
            return self._auth_failed(error, remote)
        sa.remote_id = remote
        _established(sa)
        if self.child is not None:
            self._child(msg)
        return Status.SUCCESS

    def _child(self, msg: Message) -> None:
        sa, child = self.sa, self.child
        errors = [n for n in msg.error_notifies() if n.notify_type in CHILD_ERRORS]
        if errors:
            _child_refused(sa, child.name, errors[0].notify_type, True)
            return
        sa_p, tsi, tsr = msg.get(SAPayload), msg.get(TSiPayload), msg.get(TSrPayload)
        if sa_p is None or tsi is None or tsr is None:
            if sa_p is None:       # no Child SA was created on the other side either
                _child_refused(sa, child.name, Notify.NO_PROPOSAL_CHOSEN, True)
                return
            _child_refused(sa, child.name, Notify.INVALID_SYNTAX, False)
        else:
            chosen = sa_p.proposals[0]
            ok = len(sa_p.proposals) == 1 and chosen.protocol == child.protocol \
                and len(chosen.spi) == 4 \
                and accept_selected(child.proposals, chosen, drop_dh=True)
            if ok:
                try:
                    child_algorithms(chosen)
                except ValueError:
                    ok = False
            if ok and ah_behind_nat(sa, chosen.protocol, child.name):
                ok = False
            if not ok:
                _child_refused(sa, child.name, Notify.NO_PROPOSAL_CHOSEN, False)
            else:
                local = accept_narrowed(child.local_ts, tsi.selectors)
                remote = accept_narrowed(child.remote_ts, tsr.selectors)
                if local is None or remote is None or not compatible(local, remote):
                    _child_refused(sa, child.name, Notify.TS_UNACCEPTABLE, False)
                else:
                    establish(sa, child, chosen, self.spi_in, chosen.spi, local, remote, True,
                              sa.nonce_i, sa.nonce_r)
                    return
        # The responder may hold a Child SA we refuse: delete it (2.21.3).
        sa.pending.append(DeleteChild(sa, [self.spi_in], child.protocol))


class IkeAuthResponder(Task):
    exchange = Exchange.IKE_AUTH
    fatal = True

    def __init__(self, sa: IKESA):
        super().__init__(sa)
        self.choice: Optional[ChildChoice] = None
        self.child_error = 0

    def _fail(self, reason: str, who=None):
        reason = _log_failure(self.sa, who, reason)
        self.sa.terminate(AuthenticationFailed(self.sa.our_spi, reason, False))
        return ProtocolError(Notify.AUTHENTICATION_FAILED, reason)

    def process(self, msg: Message) -> Status:
        sa = self.sa
        idi, auth = msg.get(IDiPayload), msg.get(AuthPayload)
        if idi is None or auth is None:
            raise ProtocolError(Notify.INVALID_SYNTAX, "IKE_AUTH without IDi or AUTH")
        remote = Identity.from_payload(idi)
        idr = msg.get(IDrPayload)
        wanted = Identity.from_payload(idr) if idr is not None else None
        candidates = [i for i, c in enumerate(sa.configs)
                      if (c.remote_id is None or c.remote_id.matches(remote))
                      and accept_selected(c.proposals, sa.proposal)]
        # An IDr naming one of our identities picks among them (3.5).
        if wanted is not None and any(sa.configs[i].local_id.matches(wanted)
                                      for i in candidates):
            candidates = [i for i in candidates if sa.configs[i].local_id.matches(wanted)]
        if not candidates:
            raise self._fail(f"identity-mismatch: no configuration for peer identity {remote}",
                             remote)
        errors = []
        for i in candidates:
            error = peer_auth_error(sa, sa.configs[i], idi, msg)
            if error is None:
                sa.config_index = i
                break
            errors.append(error)
        else:
            raise self._fail(errors[0], remote)
        sa.remote_id = remote
        _established(sa)
        if msg.get(SAPayload) is not None or msg.get(TSiPayload) is not None:
            try:
                self.choice = choose(sa.config.children, msg, sa=sa)
            except ChildRefused as refused:
                self.child_error = refused.notify
                _child_refused(sa, "", refused.notify, False)
        return Status.SUCCESS

    def build(self, msg: Message) -> Status:
        sa, cfg = self.sa, self.sa.config
        idr = IDrPayload(cfg.local_id.id_type, cfg.local_id.data)
        msg.payloads += [idr] + our_auth(sa, cfg, idr)
        if self.choice is not None:
            c = self.choice
            spi_in = sa.new_spi(4)
            answer = Proposal(c.proposal.num, c.proposal.protocol, spi_in,
                              c.proposal.transforms)
            msg.payloads += [SAPayload((answer,)), TSiPayload((c.tsi,)), TSrPayload((c.tsr,))]
            establish(sa, c.config, answer, spi_in, c.proposal.spi, c.tsr, c.tsi, False,
                      sa.nonce_i, sa.nonce_r)
        elif self.child_error:
            msg.payloads.append(NotifyPayload(self.child_error))
        return Status.SUCCESS
