"""Child SA negotiation pieces shared by the exchanges that create one (IKE_AUTH and
CREATE_CHILD_SA): the SA/TS payloads, the responder's choice, the keys (RFC 7296
2.17) and the two engine SAConfigs.

Direction of the keys: KEYMAT's first half (encr_i, integ_i) protects traffic from the
initiator of the exchange to its responder, so it keys the initiator's outbound SA and
the responder's inbound SA; the second half the reverse.

ESP or AH (RFC 4302), as the ChildConfig says: an AH Child SA's proposals carry protocol
AH with 4-byte SPIs and only INTEG (+ DH, ESN) transforms (3.3.3); its KEYMAT holds only
integrity keys, integ_i then integ_r (2.17). AH cannot cross a NAT (RFC 3948 encapsulates
ESP only, and the ICV covers the addresses a NAT rewrites): with a NAT detected on the IKE
SA an AH Child SA is refused with NO_PROPOSAL_CHOSEN (responder) or not installed and
deleted (initiator), and the reason is logged.
"""
from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Optional

from engine.sa import MODE_TUNNEL, PROTO_AH, PROTO_ESP, SAConfig

from ..config import ChildConfig
from ..constants import Notify, Protocol
from ..crypto import ChildKeys, derive_child_keys
from ..events import ChildSAEstablished, ChildSARekeyed
from ..lifetimes import byte_limits, times
from ..ike_sa import IKESA, ChildSA
from ..messages import Message
from ..payloads import Proposal, SAPayload, TrafficSelector, TSiPayload, TSrPayload
from ..proposals import ESPAlgorithms, child_algorithms, describe, numbered, select_proposal
from ..ts import narrow_pair, to_selector

#: error notifies that concern only the Child SA; the IKE SA survives them (2.21.3)
CHILD_ERRORS = (Notify.NO_PROPOSAL_CHOSEN, Notify.TS_UNACCEPTABLE, Notify.SINGLE_PAIR_REQUIRED,
                Notify.INTERNAL_ADDRESS_FAILURE, Notify.FAILED_CP_REQUIRED,
                Notify.NO_ADDITIONAL_SAS, Notify.INVALID_SELECTORS, Notify.TEMPORARY_FAILURE)

log = logging.getLogger("ike")


def ike_protocol(child: ChildSA) -> Protocol:
    """The RFC 7296 Protocol ID (N, D payloads) of an established Child SA."""
    return Protocol.AH if child.inbound.proto == PROTO_AH else Protocol.ESP


def ah_behind_nat(sa: IKESA, protocol: int, name: str) -> bool:
    """True (and a log line) if `protocol` is AH while a NAT sits between the peers."""
    if protocol != Protocol.AH or not sa.nat:
        return False
    log.warning("IKE SA %s: Child SA %s refused: AH cannot cross the NAT detected between "
                "the peers (RFC 3948 carries only ESP in UDP); use ESP", sa.our_spi.hex(),
                name or "(requested)")
    return True


def request_payloads(child: ChildConfig, spi: bytes) -> list:
    """SAi2, TSi, TSr of an initiator's request."""
    return [SAPayload(numbered(child.proposals, spi)), TSiPayload(child.local_ts),
            TSrPayload(child.remote_ts)]


@dataclass
class ChildChoice:
    """The responder's decision on a Child SA request."""
    config: ChildConfig
    proposal: Proposal          # as chosen, still with the initiator's SPI
    tsi: TrafficSelector
    tsr: TrafficSelector


class ChildRefused(Exception):
    def __init__(self, notify: int):
        super().__init__(notify)
        self.notify = notify


def choose(children, msg: Message, drop_dh: bool = True,
           prefer_dh: Optional[int] = None, sa: Optional[IKESA] = None) -> ChildChoice:
    """Responder: the first Child SA config whose proposals and selectors fit the request
    (2.9 narrowing; DH transforms ignored in IKE_AUTH, 1.2, and matched in
    CREATE_CHILD_SA with drop_dh=False). With `sa`, AH configs are passed over when a NAT
    was detected. Raises ChildRefused."""
    sa_p, tsi, tsr = msg.get(SAPayload), msg.get(TSiPayload), msg.get(TSrPayload)
    if sa_p is None or tsi is None or tsr is None:
        raise ChildRefused(Notify.INVALID_SYNTAX)
    theirs = [p for p in sa_p.proposals
              if p.protocol in (Protocol.ESP, Protocol.AH) and len(p.spi) == 4]
    refusal = Notify.NO_PROPOSAL_CHOSEN
    for child in children:
        chosen = select_proposal(child.proposals, theirs, drop_dh=drop_dh,
                                 prefer_dh=prefer_dh)
        if chosen is None:
            continue
        try:
            child_algorithms(chosen)
        except ValueError:
            continue
        if sa is not None and ah_behind_nat(sa, chosen.protocol, child.name):
            continue
        pair = narrow_pair(tsi.selectors, tsr.selectors, child.remote_ts, child.local_ts)
        if pair is None:
            refusal = Notify.TS_UNACCEPTABLE
            continue
        return ChildChoice(child, chosen, *pair)
    raise ChildRefused(refusal)


def _sa_configs(sa: IKESA, alg: ESPAlgorithms, keys: ChildKeys, exchange_initiator: bool,
                spi_in: bytes, spi_out: bytes, local_ts: TrafficSelector,
                remote_ts: TrafficSelector, replay_window: int,
                ah: bool = False) -> tuple[SAConfig, SAConfig]:
    local = ipaddress.ip_address(sa.local_addr[0])
    remote = ipaddress.ip_address(sa.remote_addr[0])
    out_keys = (keys.encr_i, keys.integ_i) if exchange_initiator else (keys.encr_r, keys.integ_r)
    in_keys = (keys.encr_r, keys.integ_r) if exchange_initiator else (keys.encr_i, keys.integ_i)
    # RFC 3948 / 7296 2.23: ESP in UDP on the IKE SA's NAT-T ports once a NAT was seen.
    # AH is never encapsulated: the exchanges refuse it behind a NAT first (ah_behind_nat).
    if ah and sa.nat:
        raise ValueError("an AH Child SA behind a NAT")
    encap = sa.nat
    lport, rport = sa.local_port, sa.remote_addr[1]

    def cfg(src, dst, spi, ekey, akey, sel, sport, dport) -> SAConfig:
        common = dict(src=src, dst=dst, proto=PROTO_AH if ah else PROTO_ESP,
                      spi=int.from_bytes(spi, "big"),
                      mode=MODE_TUNNEL, replay_window=replay_window, esn=alg.esn,
                      icv_bits=alg.icv_bits, sel=sel,
                      encap_sport=sport if encap else None, encap_dport=dport if encap else None)
        if alg.aead:
            return SAConfig(aead=alg.aead, aead_key=ekey, **common)
        if ah:
            return SAConfig(auth=alg.auth, auth_key=akey, **common)
        return SAConfig(enc=alg.enc, enc_key=ekey, auth=alg.auth, auth_key=akey, **common)

    outbound = cfg(local, remote, spi_out, *out_keys, to_selector(local_ts, remote_ts),
                   lport, rport)
    inbound = cfg(remote, local, spi_in, *in_keys, to_selector(remote_ts, local_ts),
                  rport, lport)
    return inbound, outbound


def establish(sa: IKESA, child: ChildConfig, proposal: Proposal, spi_in: bytes, spi_out: bytes,
              local_ts: TrafficSelector, remote_ts: TrafficSelector, exchange_initiator: bool,
              nonce_i: bytes, nonce_r: bytes, g_ir_new: bytes = b"", *,
              replaces: Optional[ChildSA] = None, pfs_group: int = 0,
              announce: bool = True) -> ChildSA:
    """Derive the keys (2.17), build the engine SAConfigs, record the Child SA with its
    lifetimes (2.8) and emit ChildSAEstablished, or ChildSARekeyed when it `replaces` an
    old one (CREATE_CHILD_SA). announce=False records it without an event (the redundant
    SA of a rekey collision, 2.8.1, deleted at once)."""
    alg = child_algorithms(proposal)
    keys = derive_child_keys(sa.alg.prf, sa.keys.sk_d, nonce_i, nonce_r, alg.enc_key_len,
                             alg.auth_key_len, g_ir_new)
    inbound, outbound = _sa_configs(sa, alg, keys, exchange_initiator, spi_in, spi_out,
                                    local_ts, remote_ts, child.replay_window,
                                    ah=proposal.protocol == Protocol.AH)
    record = ChildSA(child.name, spi_in, spi_out, inbound, outbound, local_ts, remote_ts,
                     describe(proposal), child, pfs_group)
    record.rekey_at, record.expire_at = times(sa.now, child.lifetime_seconds, sa.random_bytes)
    record.soft_bytes, record.hard_bytes = byte_limits(child.lifetime_kilobytes,
                                                       sa.random_bytes)
    sa.children[spi_in] = record
    if not announce:
        return record
    if replaces is None:
        sa.emit(ChildSAEstablished(sa.our_spi, child.name, inbound.spi, outbound.spi, inbound,
                                   outbound, local_ts, remote_ts, record.proposal))
    else:
        sa.emit(ChildSARekeyed(sa.our_spi, child.name, inbound.spi, outbound.spi, inbound,
                               outbound, local_ts, remote_ts, record.proposal,
                               int.from_bytes(replaces.spi_in, "big"),
                               int.from_bytes(replaces.spi_out, "big"), pfs_group,
                               outbound_ready=exchange_initiator))
    return record


def find_by_outbound(sa: IKESA, spi_out: bytes) -> Optional[ChildSA]:
    for child in sa.children.values():
        if child.spi_out == spi_out:
            return child
    return None
