"""IKE_SA_INIT (RFC 7296 1.2): SA, KE, nonces, NAT detection; COOKIE and INVALID_KE retries.

    Initiator                         Responder
    HDR, [N(COOKIE),] SAi1, KEi, Ni,
         N(NAT_DETECTION_*_IP)  -->
                                 <--  HDR, SAr1, KEr, Nr, N(NAT_DETECTION_*_IP)
                                 or   HDR(SPIr=0), N(COOKIE | INVALID_KE_PAYLOAD
                                                     | NO_PROPOSAL_CHOSEN)

After it both sides hold SKEYSEED's keys (2.14). NAT detection (2.23): each side hashes
the addresses it actually sees against the peer's NAT_DETECTION notifies; a mismatch on
either means a NAT, and the initiator then moves to port 4500 for everything after.
"""
from __future__ import annotations

import ipaddress
import logging
import struct

from ..constants import Exchange, Notify, Protocol, notify_name
from ..crypto import derive_ike_keys, nat_detection_hash
from ..dh import new_dh
from ..errors import ParseError, ProtocolError
from ..events import IKESADeleted, NoProposalChosen
from ..ike_sa import IKESA, State
from ..messages import Message
from ..auth import decode_hashes, encode_hashes
from ..constants import CERT_X509_SIGNATURE
from ..payloads import CertReqPayload, KEPayload, NoncePayload, NotifyPayload, SAPayload
from ..proposals import accept_selected, dh_groups, ike_algorithms, numbered, select_proposal
from .base import Status, Task

log = logging.getLogger("ike.init")


def _packed(host: str) -> bytes:
    try:
        return ipaddress.ip_address(host).packed
    except ValueError:
        return b""


def nat_notifies(spi_i: bytes, spi_r: bytes, local, remote,
                 force_encap: bool = False) -> list[NotifyPayload]:
    """Our NAT_DETECTION_SOURCE_IP (local address) and _DESTINATION_IP (the peer's).
    force_encap hashes a source that is not ours, so the peer sees us "behind a NAT" and
    both ends use UDP encapsulation (2.23 leaves this to the sender; strongSwan's
    encap=yes does the same)."""
    source = _packed(local[0]) if not force_encap else bytes(len(_packed(local[0])))
    return [NotifyPayload(Notify.NAT_DETECTION_SOURCE_IP,
                          nat_detection_hash(spi_i, spi_r, source, local[1])),
            NotifyPayload(Notify.NAT_DETECTION_DESTINATION_IP,
                          nat_detection_hash(spi_i, spi_r, _packed(remote[0]), remote[1]))]


def detect_nat(sa: IKESA, msg: Message, spi_r: bytes) -> bool:
    """Compare the peer's NAT_DETECTION notifies with what we see (2.23). Returns False if
    the peer sent none (it does not do NAT-T); otherwise sets sa.nat_local/nat_remote."""
    sources = [n.data for n in msg.all(NotifyPayload)
               if n.notify_type == Notify.NAT_DETECTION_SOURCE_IP]
    dest = [n.data for n in msg.all(NotifyPayload)
            if n.notify_type == Notify.NAT_DETECTION_DESTINATION_IP]
    if not sources or not dest or msg.source is None:
        return False
    peer = msg.source
    seen_src = nat_detection_hash(msg.spi_i, spi_r, _packed(peer[0]), peer[1])
    seen_dst = nat_detection_hash(msg.spi_i, spi_r, _packed(sa.local_addr[0]), sa.local_port)
    sa.nat_remote = seen_src not in sources
    sa.nat_local = seen_dst not in dest or sa.config.force_encap
    return True


def capability_notifies(sa: IKESA, reply: bool) -> list:
    """IKEV2_FRAGMENTATION_SUPPORTED (RFC 7383 2.3) and SIGNATURE_HASH_ALGORITHMS
    (RFC 7427 4). A responder (reply=True) answers only what the initiator announced."""
    out = []
    if sa.config.fragmentation and (not reply or sa.peer_fragmentation):
        out.append(NotifyPayload(Notify.IKEV2_FRAGMENTATION_SUPPORTED))
    if sa.config.signature_hash_algorithms and (not reply or sa.peer_sig_hashes):
        out.append(NotifyPayload(Notify.SIGNATURE_HASH_ALGORITHMS, encode_hashes()))
    return out


def note_capabilities(sa: IKESA, msg: Message) -> None:
    """Remember what the peer announced; fragmentation is used only if both offer it."""
    sa.peer_fragmentation = sa.config.fragmentation and \
        msg.notify(Notify.IKEV2_FRAGMENTATION_SUPPORTED) is not None
    hashes = msg.notify(Notify.SIGNATURE_HASH_ALGORITHMS)
    sa.peer_sig_hashes = decode_hashes(hashes.data) \
        if hashes is not None and sa.config.signature_hash_algorithms else ()


def certreq(sa: IKESA) -> list:
    """CERTREQ naming every CA a candidate config trusts (RFC 7296 3.7), if any uses
    certificates; strongSwan sends its certificate only when asked."""
    hashes = b"".join(c.credentials.certreq() for c in sa.configs
                      if c.credentials is not None)
    unique = b"".join(dict.fromkeys(hashes[i:i + 20] for i in range(0, len(hashes), 20)))
    return [CertReqPayload(CERT_X509_SIGNATURE, unique)] if unique else []


def _derive(sa: IKESA, proposal, g_ir: bytes) -> None:
    alg = ike_algorithms(proposal)
    keys = derive_ike_keys(alg.prf, alg.encr, alg.integ, sa.nonce_i, sa.nonce_r, g_ir,
                           sa.spi_i, sa.spi_r)
    sa.proposal = proposal
    sa.set_keys(alg, keys)
    sa.state = State.INIT_DONE


def _required(msg: Message):
    sa_p, ke, nonce = msg.get(SAPayload), msg.get(KEPayload), msg.get(NoncePayload)
    if sa_p is None or ke is None or nonce is None:
        raise ParseError("IKE_SA_INIT without SA, KE or nonce")
    return sa_p, ke, nonce


class IkeInitInitiator(Task):
    exchange = Exchange.IKE_SA_INIT

    def __init__(self, sa: IKESA):
        super().__init__(sa)
        self.group = dh_groups(sa.config.proposals)[0]   # KE for our first proposal
        self.dh = new_dh(self.group)
        self.cookie = b""
        self.rounds = 0
        if sa.spi_i == bytes(8):
            sa.spi_i = sa.new_spi(8)
        sa.nonce_i = sa.random_bytes(sa.config.nonce_len)

    def build(self, msg: Message) -> Status:
        sa = self.sa
        msg.spi_r = sa.spi_r = bytes(8)
        if self.cookie:                        # 2.6: the cookie goes first
            msg.payloads.append(NotifyPayload(Notify.COOKIE, self.cookie))
        msg.payloads += [SAPayload(numbered(sa.config.proposals)),
                         KEPayload(self.group, self.dh.public_bytes()),
                         NoncePayload(sa.nonce_i)]
        msg.payloads += nat_notifies(sa.spi_i, bytes(8), (sa.local_addr[0], sa.local_port),
                                     sa.remote_addr, sa.config.force_encap)
        msg.payloads += capability_notifies(sa, False)
        return Status.SUCCESS

    def _retry(self) -> Status:
        self.rounds += 1
        if self.rounds > self.sa.config.max_init_retries:
            self.sa.terminate(IKESADeleted(self.sa.our_spi, "too many IKE_SA_INIT retries",
                                           False))
            return Status.FAILED
        return Status.NEED_MORE

    def process(self, msg: Message) -> Status:
        sa = self.sa
        cookie = msg.notify(Notify.COOKIE)
        if cookie is not None:
            if not 1 <= len(cookie.data) <= 64:
                raise ParseError("COOKIE of invalid length")
            self.cookie = cookie.data
            return self._retry()
        invalid_ke = msg.notify(Notify.INVALID_KE_PAYLOAD)
        if invalid_ke is not None:
            if len(invalid_ke.data) != 2:
                raise ParseError("INVALID_KE_PAYLOAD without a 2-byte group")
            (group,) = struct.unpack("!H", invalid_ke.data)
            if group == self.group or group not in dh_groups(sa.config.proposals):
                sa.terminate(NoProposalChosen(sa.our_spi, False, True))
                return Status.FAILED
            self.group, self.dh = group, new_dh(group)          # 1.2: retry with that group
            return self._retry()
        errors = msg.error_notifies()
        if errors:
            log.warning("IKE_SA_INIT to %s refused: %s", sa.remote_addr[0],
                        notify_name(errors[0].notify_type))
            if errors[0].notify_type == Notify.NO_PROPOSAL_CHOSEN:
                sa.terminate(NoProposalChosen(sa.our_spi, False, True))
            else:
                sa.terminate(IKESADeleted(
                    sa.our_spi, f"peer refused IKE_SA_INIT: {notify_name(errors[0].notify_type)}",
                    True))
            return Status.FAILED
        sa_p, ke, nonce = _required(msg)
        if msg.spi_r == bytes(8) or len(sa_p.proposals) != 1:
            raise ParseError("IKE_SA_INIT response needs SPIr and exactly one proposal")
        chosen = sa_p.proposals[0]
        if chosen.protocol != Protocol.IKE or not accept_selected(sa.config.proposals, chosen):
            sa.terminate(NoProposalChosen(sa.our_spi, False, False))
            return Status.FAILED
        if ke.group != self.group or ike_algorithms(chosen).dh != self.group:
            raise ParseError("IKE_SA_INIT response KE group differs from the proposal")
        g_ir = self.dh.shared_secret(ke.data)
        sa.spi_r, sa.nonce_r, sa.init_response = msg.spi_r, nonce.data, msg.raw
        note_capabilities(sa, msg)
        _derive(sa, chosen, g_ir)
        if detect_nat(sa, msg, msg.spi_r) and sa.nat:
            # 2.23: the initiator moves to the NAT-T port for IKE_AUTH and after.
            sa.floated = True
            sa.local_port = sa.config.nat_t_port
            sa.remote_addr = (sa.remote_addr[0], sa.config.nat_t_port)
        return Status.SUCCESS


class IkeInitResponder(Task):
    exchange = Exchange.IKE_SA_INIT
    fatal = True

    def __init__(self, sa: IKESA):
        super().__init__(sa)
        self.chosen = None
        self.dh = None
        self.nat_t = False

    def process(self, msg: Message) -> Status:
        sa = self.sa
        try:
            sa_p, ke, nonce = _required(msg)
        except ParseError as err:
            raise ProtocolError(Notify.INVALID_SYNTAX, str(err)) from None
        theirs = [p for p in sa_p.proposals if p.protocol == Protocol.IKE and not p.spi]
        # Every candidate config's proposals, in order; IKE_AUTH later keeps only the
        # configs that accept the one chosen here.
        ours = list(dict.fromkeys(p for cfg in sa.configs for p in cfg.proposals))
        chosen = select_proposal(ours, theirs, prefer_dh=ke.group)
        if chosen is None:
            log.warning("IKE_SA_INIT from %s: no IKE proposal acceptable (%d offered)",
                        msg.source[0] if msg.source else "?", len(theirs))
            sa.terminate(NoProposalChosen(sa.our_spi, False, False))
            raise ProtocolError(Notify.NO_PROPOSAL_CHOSEN)
        alg = ike_algorithms(chosen)
        if ke.group != alg.dh:
            # 1.2: tell the initiator which group to use; keep no state.
            raise ProtocolError(Notify.INVALID_KE_PAYLOAD, data=struct.pack("!H", alg.dh))
        self.dh = new_dh(alg.dh)
        g_ir = self.dh.shared_secret(ke.data)          # ProtocolError(INVALID_SYNTAX)
        sa.nonce_i, sa.init_request = nonce.data, msg.raw
        sa.nonce_r = sa.random_bytes(sa.config.nonce_len)
        sa.spi_r = sa.new_spi(8)
        self.chosen = chosen
        _derive(sa, chosen, g_ir)
        self.nat_t = detect_nat(sa, msg, bytes(8))
        note_capabilities(sa, msg)
        return Status.SUCCESS

    def build(self, msg: Message) -> Status:
        sa = self.sa
        msg.payloads += [SAPayload((self.chosen,)), KEPayload(self.dh.group,
                                                               self.dh.public_bytes()),
                         NoncePayload(sa.nonce_r)]
        if self.nat_t:
            msg.payloads += nat_notifies(sa.spi_i, sa.spi_r, (sa.local_addr[0], sa.local_port),
                                         sa.remote_addr, sa.config.force_encap)
        msg.payloads += capability_notifies(sa, True) + certreq(sa)
        return Status.SUCCESS

