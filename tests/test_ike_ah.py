"""AH Child SAs (RFC 4302) negotiated by IKEv2: two in-memory pyspu peers (ike_harness.py).

What could go wrong and what catches it:
- the SA payloads: protocol AH (2) with 4-byte SPIs and only INTEG (+ DH, ESN) transforms
  (RFC 7296 3.3.1, 3.3.3), read from the decrypted IKE_AUTH / CREATE_CHILD_SA messages;
- the keys: KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr) holds only integrity keys for AH,
  initiator->responder first (2.17). Checked against prf+ written out here with
  `cryptography`'s HMAC, the nonces and KE values read off the wire, and g^ir of a PFS
  rekey computed with `cryptography`'s X25519 / ECDH from a private value the test chose;
- the data plane: the SAConfigs go into two engine.Engine instances that carry packets
  both ways, and scapy's AH (scapy.layers.ipsec.SecurityAssociation(AH, ...), with the keys
  of our own KEYMAT computation, not the SAConfig's) verifies the engine's packets and
  builds packets the engine must accept;
- rekeying (1.3.3, REKEY_SA with protocol AH), Delete (D with protocol AH, 3.11),
  a mismatch of ESP and AH proposals, and AH behind a NAT (refused: RFC 3948 carries
  only ESP in UDP, and the ICV covers the addresses a NAT rewrites).

strongSwan cannot be the second opinion here: its userland IPsec stack (libipsec, what
tests/test_ike_strongswan.py runs) implements ESP only, so there is no charon test for AH.
"""
from __future__ import annotations

import logging
import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.hmac import HMAC
from scapy.layers.inet import IP
from scapy.layers.ipsec import AH, IPSecIntegrityError, SecurityAssociation

import ike.tasks.create_child as create_child_mod
from engine.drops import Drop
from engine.engine import Engine
from engine.sa import MODE_TUNNEL, PROTO_AH
from ike.config import ChildConfig, IKEConfig, Identity
from ike.constants import ESN, Encr, Exchange, Integ, Notify, Protocol, TransformType
from ike.dh import new_dh
from ike.events import (ChildSADeleted, ChildSAEstablished, ChildSARekeyed, IKESAEstablished,
                        NoProposalChosen)
from ike.messages import decode_message, open_message, split_marker
from ike.payloads import (DeletePayload, KEPayload, NoncePayload, Proposal,
                          SAPayload, Transform)
from ike.proposals import ah_algorithms, child_algorithms, parse_proposal, select_proposal
from ike.tasks.informational import DeleteChild

from ike_harness import I_IP, PSK, R_IP, Pair, of
from ike_packets import icmp_echo, run

T = TransformType

# AH keyword -> (engine name, ICV bits, scapy name, integrity key bytes (RFC 2403/2404/4868))
AH_ALGS = {"md5": ("hmac(md5)", 96, "HMAC-MD5-96", 16),
           "sha1": ("hmac(sha1)", 96, "HMAC-SHA1-96", 20),
           "sha256": ("hmac(sha256)", 128, "SHA2-256-128", 32),
           "sha384": ("hmac(sha384)", 192, "SHA2-384-192", 48),
           "sha512": ("hmac(sha512)", 256, "SHA2-512-256", 64)}
# IKE proposal -> the hash of its PRF (RFC 7296 2.13)
IKE_PRF = {"aes128-sha256-modp2048": hashes.SHA256, "aes256gcm16-prfsha384-ecp384": hashes.SHA384,
           "aes128-sha1-modp2048": hashes.SHA1, "aes128-sha512-x25519": hashes.SHA512}
TS_I = (("10.1.0.0/16",), ("10.2.0.0/16",))
TS_R = (("10.2.0.0/16",), ("10.1.0.0/16",))


# -- independent references ---------------------------------------------------------------

def prf_plus(hash_cls, key: bytes, seed: bytes, length: int) -> bytes:
    """RFC 7296 2.13: T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n), with
    `cryptography`'s HMAC."""
    out, t, n = b"", b"", 1
    while len(out) < length:
        h = HMAC(key, hash_cls())
        h.update(t + seed + bytes([n]))
        t = h.finalize()
        out += t
        n += 1
    return out[:length]


def ah_keymat(pair: Pair, ike: str, alg: str, ni: bytes, nr: bytes, g_ir: bytes = b""):
    """(integ_i, integ_r): KEYMAT's integrity keys in 2.17's order for AH."""
    n = AH_ALGS[alg][3]
    sk_d = pair.i._sa.keys.sk_d
    assert sk_d == pair.r._sa.keys.sk_d
    km = prf_plus(IKE_PRF[ike], sk_d, g_ir + ni + nr, 2 * n)
    return km[:n], km[n:]


def scapy_sa(alg: str, spi: int, key: bytes, src: str, dst: str, seq: int = 1):
    return SecurityAssociation(AH, spi=spi, seq_num=seq, auth_algo=AH_ALGS[alg][2],
                               auth_key=key, tunnel_header=IP(src=src, dst=dst))


# -- the peers ------------------------------------------------------------------------------

def ah_configs(ike: str, ah: tuple, ah_r: tuple | None = None, *, r_children=None,
               protocol_r: str = "ah"):
    id_i, id_r = Identity.inet(I_IP), Identity.inet(R_IP)
    ci = IKEConfig(local_id=id_i, remote_id=id_r, psk=PSK, proposals=(ike,),
                   children=(ChildConfig("net", ah, *TS_I, protocol="ah"),))
    children = r_children or (ChildConfig("net", ah_r or ah, *TS_R, protocol=protocol_r),)
    cr = IKEConfig(local_id=id_r, remote_id=id_i, psk=PSK, proposals=(ike,), children=children)
    return ci, cr


def up(ike: str, ah: tuple, **kw) -> Pair:
    pair = Pair(*ah_configs(ike, ah, **kw))
    pair.start()
    pair.run()
    return pair


def opened(sent: list, reader, exchange: int) -> list:
    """The messages of one exchange type among `sent`, decrypted with the reader's keys."""
    out = []
    for data in sent:
        raw, _ = split_marker(data)
        if len(raw) < 28:
            continue
        msg = decode_message(raw)
        if msg.exchange == exchange:
            out.append(open_message(msg, reader))
    return out


def assert_ah_proposals(sa_p: SAPayload, alg: str, spi: int | None = None) -> None:
    for p in sa_p.proposals:
        assert p.protocol == Protocol.AH and len(p.spi) == 4
        assert {t.type for t in p.transforms} <= {T.INTEG, T.DH, T.ESN}
        assert any(t.type == T.INTEG for t in p.transforms)
        if spi is not None:
            assert int.from_bytes(p.spi, "big") == spi


def assert_ah_sas(ev, alg: str, esn: bool = False) -> None:
    name, bits, _, klen = AH_ALGS[alg]
    for cfg in (ev.inbound, ev.outbound):
        assert cfg.proto == PROTO_AH and cfg.mode == MODE_TUNNEL
        assert cfg.auth == name and cfg.icv_bits == bits and len(cfg.auth_key) == klen
        assert cfg.enc is None and cfg.aead is None and cfg.enc_key == b""
        assert cfg.encap_sport is None and cfg.encap_dport is None and cfg.esn == esn
    assert ev.inbound.spi == ev.spi_in and ev.outbound.spi == ev.spi_out


def carry(alg: str, ev_i, ev_r, integ_i: bytes, integ_r: bytes) -> None:
    """Install both sides' SAs in two engines. Each way: the engine's AH packet is verified
    and decapsulated by scapy (with our KEYMAT's key) and by the peer engine; a packet
    scapy builds with the same key is accepted by the peer engine; a flipped ICV bit is
    refused by both."""
    eng = {"i": Engine(), "r": Engine()}
    for side, ev in (("i", ev_i), ("r", ev_r)):
        eng[side].install(ev.inbound, "in")
        eng[side].install(ev.outbound, "out")
    esn = ev_i.outbound.esn
    for src, dst, a, b, out_ev, key in (("i", "r", "10.1.0.5", "10.2.0.9", ev_i, integ_i),
                                        ("r", "i", "10.2.0.9", "10.1.0.5", ev_r, integ_r)):
        inner = [icmp_echo(a, b, k) for k in range(1, 4)]
        outer, drops = run(eng[src], inner, True)
        assert drops == [0, 0, 0]
        sa = scapy_sa(alg, out_ev.outbound.spi, key, str(out_ev.outbound.src),
                      str(out_ev.outbound.dst))
        if esn:
            sa = SecurityAssociation(AH, spi=out_ev.outbound.spi, auth_algo=AH_ALGS[alg][2],
                                     auth_key=key, esn_en=True, esn=0,
                                     tunnel_header=IP(src=str(out_ev.outbound.src),
                                                      dst=str(out_ev.outbound.dst)))
        for k, (p, c) in enumerate(zip(inner, outer), 1):
            assert c[9] == 51 and int.from_bytes(c[24:28], "big") == out_ev.outbound.spi
            assert int.from_bytes(c[28:32], "big") == k                  # AH sequence number
            assert bytes(sa.decrypt(IP(c))) == p                         # scapy's verdict
        bad = bytearray(outer[0])
        bad[-1 - len(inner[0])] ^= 1                                     # last ICV byte
        with pytest.raises(IPSecIntegrityError):
            sa.decrypt(IP(bytes(bad)))
        back, drops = run(eng[dst], outer + [bytes(bad)], False)
        assert drops[:3] == [0, 0, 0] and back[:3] == inner
        assert drops[3] == Drop.AUTH_FAILED
        # scapy -> engine: sequence numbers after the engine's own
        more = [icmp_echo(a, b, k) for k in range(10, 13)]
        sa.seq_num = 4
        wire = [bytes(sa.encrypt(IP(p))) for p in more]
        back, drops = run(eng[dst], wire, False)
        assert drops == [0, 0, 0] and back == more


# -- proposals ------------------------------------------------------------------------------

def test_ah_proposal_names_and_refusals():
    p = parse_proposal("sha256-sha1-modp2048-esn", Protocol.AH)
    assert p.protocol == Protocol.AH
    assert [(t.type, t.id) for t in p.transforms] == [
        (T.INTEG, Integ.HMAC_SHA2_256_128), (T.INTEG, Integ.HMAC_SHA1_96), (T.DH, 14),
        (T.ESN, ESN.YES)]
    assert [(t.type, t.id) for t in parse_proposal("md5", Protocol.AH).transforms] == [
        (T.INTEG, Integ.HMAC_MD5_96), (T.ESN, ESN.NO)]
    for text, why in (("aes128-sha256", "no encryption"), ("null-sha256", "no encryption"),
                      ("prfsha256-sha256", "PRF"), ("modp2048", "integrity"),
                      ("sha256-bogus", "unknown keyword")):
        with pytest.raises(ValueError, match=why):
            parse_proposal(text, Protocol.AH)
    alg = ah_algorithms(parse_proposal("sha384-esn", Protocol.AH))
    assert (alg.enc, alg.aead, alg.enc_key_len, alg.auth, alg.auth_key_len, alg.icv_bits,
            alg.esn) == (None, None, 0, "hmac(sha384)", 48, 192, True)
    # an AH answer smuggling an ENCR transform is unusable (3.3.3)
    hostile = Proposal(1, Protocol.AH, b"\0\0\0\1", (Transform(T.ENCR, Encr.AES_CBC, 128),
                                                    Transform(T.INTEG, Integ.HMAC_SHA1_96)))
    with pytest.raises(ValueError, match="ENCR"):
        child_algorithms(hostile)
    assert select_proposal([parse_proposal("sha1", Protocol.AH)], [hostile]) is None
    # protocols never match across ESP and AH, whatever the transforms
    esp = parse_proposal("null-sha1", Protocol.ESP)
    assert select_proposal([parse_proposal("sha1", Protocol.AH)],
                           [Proposal(1, Protocol.ESP, b"\0\0\0\1", esp.transforms)]) is None


def test_child_config_protocol():
    c = ChildConfig("a", ("sha256", "sha1-modp2048"), protocol="ah")
    assert c.protocol == Protocol.AH and all(p.protocol == Protocol.AH for p in c.proposals)
    assert ChildConfig("e").protocol == Protocol.ESP
    assert ChildConfig("a2", ("sha1",), protocol=Protocol.AH).protocol == Protocol.AH
    with pytest.raises(ValueError, match="no encryption"):
        ChildConfig("a", ("aes128-sha256",), protocol="ah")
    with pytest.raises(ValueError, match="ESP or AH"):
        ChildConfig("g", ("sha1",), protocol="gre")
    with pytest.raises(ValueError, match="another protocol"):
        ChildConfig("m", (parse_proposal("aes128-sha1", Protocol.ESP),), protocol="ah")


# -- IKE_AUTH's Child SA --------------------------------------------------------------------

CASES = [("md5", "aes128-sha1-modp2048"), ("sha1", "aes128-sha256-modp2048"),
         ("sha256", "aes256gcm16-prfsha384-ecp384"), ("sha384", "aes128-sha512-x25519"),
         ("sha512", "aes128-sha256-modp2048")]


@pytest.mark.parametrize("alg,ike", CASES, ids=[a for a, _ in CASES])
@pytest.mark.parametrize("esn", [False, True], ids=["noesn", "esn"])
def test_ah_child_in_ike_auth(alg, ike, esn):
    text = f"{alg}-esn" if esn else alg
    pair = up(ike, (text, "sha1-md5"))
    (ci,), (cr,) = of(pair.events_i, ChildSAEstablished), of(pair.events_r, ChildSAEstablished)
    assert (ci.spi_in, ci.spi_out) == (cr.spi_out, cr.spi_in)
    assert_ah_sas(ci, alg, esn)
    assert_ah_sas(cr, alg, esn)
    # on the wire: SAi2 / SAr2 are AH proposals with 4-byte SPIs
    (req,) = opened(pair.sent_i, pair.r._sa.protect_in, Exchange.IKE_AUTH)
    (resp,) = opened(pair.sent_r, pair.i._sa.protect_in, Exchange.IKE_AUTH)
    assert len(req.get(SAPayload).proposals) == 2
    assert_ah_proposals(req.get(SAPayload), alg, ci.spi_in)
    (chosen,) = resp.get(SAPayload).proposals
    assert_ah_proposals(resp.get(SAPayload), alg, cr.spi_in)
    assert [(t.type, t.id) for t in chosen.transforms] == [
        (T.INTEG, parse_proposal(alg, Protocol.AH).transforms[0].id),
        (T.ESN, ESN.YES if esn else ESN.NO)]
    # the keys: 2.17 with the IKE_SA_INIT nonces, integrity keys only
    ni = decode_message(pair.sent_i[0]).get(NoncePayload).data
    nr = decode_message(pair.sent_r[0]).get(NoncePayload).data
    integ_i, integ_r = ah_keymat(pair, ike, alg, ni, nr)
    assert ci.outbound.auth_key == cr.inbound.auth_key == integ_i
    assert ci.inbound.auth_key == cr.outbound.auth_key == integ_r
    carry(alg, ci, cr, integ_i, integ_r)


# -- CREATE_CHILD_SA: rekey and a second Child SA, with and without PFS ----------------------

class RecordingDH:
    """ike.tasks.create_child's new_dh with a private value this test knows."""

    def __init__(self):
        self.made = []          # (group, private)

    def __call__(self, group: int, private=None):
        if group == 31:
            private = os.urandom(32)
        elif group == 19:
            private = ec.generate_private_key(ec.SECP256R1()).private_numbers().private_value
        else:
            raise AssertionError(f"no independent g^ir for group {group} here")
        self.made.append((group, private))
        return new_dh(group, private)

    def g_ir(self, peer_ke: bytes) -> bytes:
        """g^ir from the first DH made (the exchange initiator's) and the responder's KE,
        with `cryptography` (RFC 8031 X25519; RFC 5903: ECDH's x coordinate)."""
        group, private = self.made[0]
        if group == 31:
            return x25519.X25519PrivateKey.from_private_bytes(private).exchange(
                x25519.X25519PublicKey.from_public_bytes(peer_ke))
        key = ec.derive_private_key(private, ec.SECP256R1())
        return key.exchange(ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(
            ec.SECP256R1(), b"\x04" + peer_ke))


REKEYS = [("sha256", 0, "initiator"), ("sha1-curve25519", 31, "initiator"),
          ("md5-ecp256", 19, "responder"), ("sha512-curve25519", 31, "responder"),
          ("sha384", 0, "responder")]


@pytest.mark.parametrize("text,group,who", REKEYS, ids=[f"{t}-{w}" for t, _, w in REKEYS])
def test_ah_child_rekey(monkeypatch, text, group, who):
    alg = text.split("-")[0]
    ike = "aes128-sha256-modp2048"
    recorder = RecordingDH()
    monkeypatch.setattr(create_child_mod, "new_dh", recorder)
    pair = up(ike, (text,))
    (old_i,), (old_r,) = of(pair.events_i, ChildSAEstablished), of(pair.events_r,
                                                                   ChildSAEstablished)
    by, peer = (pair.i, pair.r) if who == "initiator" else (pair.r, pair.i)
    sent_by, sent_peer = (pair.sent_i, pair.sent_r) if who == "initiator" else \
        (pair.sent_r, pair.sent_i)
    old_by = old_i if who == "initiator" else old_r
    n_by, n_peer = len(sent_by), len(sent_peer)
    assert by.rekey_child("net", pair.now)
    pair.run()
    (new_i,), (new_r,) = of(pair.events_i, ChildSARekeyed), of(pair.events_r, ChildSARekeyed)
    assert new_i.pfs_group == new_r.pfs_group == group
    assert_ah_sas(new_i, alg)
    assert_ah_sas(new_r, alg)
    assert (new_i.old_spi_in, new_r.old_spi_in) == (old_i.spi_in, old_r.spi_in)
    # the request: REKEY_SA names the old SA as AH, SAi carries AH proposals (+ KEi)
    (req,) = opened(sent_by[n_by:], peer._sa.protect_in, Exchange.CREATE_CHILD_SA)
    (resp,) = opened(sent_peer[n_peer:], by._sa.protect_in, Exchange.CREATE_CHILD_SA)
    rekey = req.notify(Notify.REKEY_SA)
    assert rekey.protocol == Protocol.AH and int.from_bytes(rekey.spi, "big") == old_by.spi_in
    new_by = new_i if who == "initiator" else new_r
    new_peer = new_r if who == "initiator" else new_i
    assert_ah_proposals(req.get(SAPayload), alg, new_by.spi_in)
    assert_ah_proposals(resp.get(SAPayload), alg, new_peer.spi_in)
    g_ir = b""
    if group:
        assert req.get(KEPayload).group == resp.get(KEPayload).group == group
        g_ir = recorder.g_ir(resp.get(KEPayload).data)
    else:
        assert req.get(KEPayload) is None and resp.get(KEPayload) is None
    # the keys: this exchange's nonces; its initiator's outbound key first (2.17)
    k_first, k_second = ah_keymat(pair, ike, alg, req.get(NoncePayload).data,
                                  resp.get(NoncePayload).data, g_ir)
    assert new_by.outbound.auth_key == new_peer.inbound.auth_key == k_first
    assert new_by.inbound.auth_key == new_peer.outbound.auth_key == k_second
    assert k_first not in (old_i.outbound.auth_key, old_i.inbound.auth_key)
    # the rekey initiator deleted the old SA: D(AH, its old inbound SPI), answered in kind
    (dreq,) = opened(sent_by[n_by:], peer._sa.protect_in, Exchange.INFORMATIONAL)
    (dresp,) = opened(sent_peer[n_peer:], by._sa.protect_in, Exchange.INFORMATIONAL)
    old_peer = old_r if who == "initiator" else old_i
    assert dreq.all(DeletePayload) == [DeletePayload(Protocol.AH,
                                                     (old_by.spi_in.to_bytes(4, "big"),))]
    assert dresp.all(DeletePayload) == [DeletePayload(Protocol.AH,
                                                      (old_peer.spi_in.to_bytes(4, "big"),))]
    assert {e.spi_in for e in of(pair.events_i, ChildSADeleted)} == {old_i.spi_in}
    assert {e.spi_in for e in of(pair.events_r, ChildSADeleted)} == {old_r.spi_in}
    k_i, k_r = (k_first, k_second) if who == "initiator" else (k_second, k_first)
    carry(alg, new_i, new_r, k_i, k_r)


def test_second_ah_child_with_pfs(monkeypatch):
    """A new AH Child SA on an established IKE SA (1.3.1) with PFS (Curve25519)."""
    recorder = RecordingDH()
    monkeypatch.setattr(create_child_mod, "new_dh", recorder)
    ike = "aes128-sha256-modp2048"
    pair = up(ike, ("sha256-curve25519",))
    n_i, n_r = len(pair.sent_i), len(pair.sent_r)
    extra = ChildConfig("net", ("sha256-curve25519",), ("10.1.0.0/16",), ("10.2.0.0/16",),
                        protocol="ah")
    pair.i.create_child(extra, pair.now)
    pair.run()
    evs_i, evs_r = of(pair.events_i, ChildSAEstablished), of(pair.events_r, ChildSAEstablished)
    assert len(evs_i) == len(evs_r) == 2
    ci, cr = evs_i[1], evs_r[1]
    assert_ah_sas(ci, "sha256")
    assert_ah_sas(cr, "sha256")
    (req,) = opened(pair.sent_i[n_i:], pair.r._sa.protect_in, Exchange.CREATE_CHILD_SA)
    (resp,) = opened(pair.sent_r[n_r:], pair.i._sa.protect_in, Exchange.CREATE_CHILD_SA)
    assert req.notify(Notify.REKEY_SA) is None
    assert req.get(KEPayload).group == 31
    g_ir = recorder.g_ir(resp.get(KEPayload).data)
    integ_i, integ_r = ah_keymat(pair, ike, "sha256", req.get(NoncePayload).data,
                                 resp.get(NoncePayload).data, g_ir)
    assert ci.outbound.auth_key == integ_i and ci.inbound.auth_key == integ_r
    carry("sha256", ci, cr, integ_i, integ_r)


def test_delete_ah_child_names_protocol_ah():
    pair = up("aes128-sha256-modp2048", ("sha1",))
    (ci,), (cr,) = of(pair.events_i, ChildSAEstablished), of(pair.events_r, ChildSAEstablished)
    n_i, n_r = len(pair.sent_i), len(pair.sent_r)
    pair.i.delete_child(ci.spi_in, pair.now)
    pair.run()
    (req,) = opened(pair.sent_i[n_i:], pair.r._sa.protect_in, Exchange.INFORMATIONAL)
    (resp,) = opened(pair.sent_r[n_r:], pair.i._sa.protect_in, Exchange.INFORMATIONAL)
    assert req.all(DeletePayload) == [DeletePayload(Protocol.AH, (ci.spi_in.to_bytes(4, "big"),))]
    assert resp.all(DeletePayload) == [DeletePayload(Protocol.AH,
                                                     (cr.spi_in.to_bytes(4, "big"),))]
    (di,), (dr,) = of(pair.events_i, ChildSADeleted), of(pair.events_r, ChildSADeleted)
    assert (di.spi_in, dr.spi_in, dr.by_peer) == (ci.spi_in, cr.spi_in, True)
    assert not pair.i.children and not pair.r.children
    assert pair.i.established and pair.r.established


# -- refusals -------------------------------------------------------------------------------

def test_esp_and_ah_do_not_mix():
    # AH offered, only ESP configured with the same integrity: NO_PROPOSAL_CHOSEN
    pair = up("aes128-sha256-modp2048", ("sha256",), ah_r=("null-sha256",), protocol_r="esp")
    assert pair.i.established and pair.r.established
    assert not of(pair.events_i, ChildSAEstablished) and not of(pair.events_r,
                                                                ChildSAEstablished)
    (npc,) = of(pair.events_i, NoProposalChosen)
    assert npc.child and npc.by_peer
    # a responder with an ESP and an AH config picks the AH one for an AH request
    both = (ChildConfig("esp", ("aes128-sha256",), *TS_R),
            ChildConfig("ah", ("sha256",), *TS_R, protocol="ah"))
    pair = up("aes128-sha256-modp2048", ("sha256",), r_children=both)
    (cr,) = of(pair.events_r, ChildSAEstablished)
    assert cr.name == "ah" and cr.inbound.proto == PROTO_AH


def test_ah_behind_nat_is_refused(caplog):
    caplog.set_level(logging.WARNING)
    ci, cr = ah_configs("aes128-sha256-modp2048", ("sha256",))
    pair = Pair(ci, cr, nat=True)
    pair.start()
    pair.run()
    (up_i,) = of(pair.events_i, IKESAEstablished)
    assert up_i.nat_local and pair.i.established and pair.r.established
    assert not of(pair.events_i, ChildSAEstablished) and not of(pair.events_r,
                                                                ChildSAEstablished)
    (npc_i,), (npc_r,) = of(pair.events_i, NoProposalChosen), of(pair.events_r,
                                                                 NoProposalChosen)
    assert npc_i.child and npc_i.by_peer and npc_r.child and not npc_r.by_peer
    (resp,) = opened(pair.sent_r, pair.i._sa.protect_in, Exchange.IKE_AUTH)
    assert resp.notify(Notify.NO_PROPOSAL_CHOSEN) is not None and resp.get(SAPayload) is None
    assert "AH cannot cross the NAT" in caplog.text


def test_ah_child_requested_behind_nat_after_esp(caplog):
    """ESP Child SA up behind a NAT; a second, AH, Child SA is refused; ESP stays."""
    caplog.set_level(logging.WARNING)
    id_i, id_r = Identity.inet("192.0.2.1"), Identity.inet(R_IP)
    esp_i = ChildConfig("esp", ("aes128-sha256",), *TS_I)
    ah_i = ChildConfig("ah", ("sha256",), *TS_I, protocol="ah")
    ci = IKEConfig(local_id=id_i, remote_id=id_r, psk=PSK, children=(esp_i,))
    cr = IKEConfig(local_id=id_r, remote_id=id_i, psk=PSK, children=(
        ChildConfig("esp", ("aes128-sha256",), *TS_R),
        ChildConfig("ah", ("sha256",), *TS_R, protocol="ah")))
    pair = Pair(ci, cr, nat=True)
    pair.start()
    pair.run()
    (esp_ev,) = of(pair.events_i, ChildSAEstablished)
    assert esp_ev.outbound.encap_dport == 4500
    pair.i.create_child(ah_i, pair.now)
    pair.run()
    assert len(of(pair.events_i, ChildSAEstablished)) == 1
    (npc,) = of(pair.events_i, NoProposalChosen)
    assert npc.child and npc.by_peer and npc.name == "ah"
    assert len(pair.i.children) == len(pair.r.children) == 1
    assert "AH cannot cross the NAT" in caplog.text


def test_esp_and_ah_children_on_one_ike_sa():
    """An ESP Child SA from IKE_AUTH and an AH one from CREATE_CHILD_SA side by side (a
    gateway with an ESP and an AH vpn to one peer); each Delete names its own protocol."""
    id_i, id_r = Identity.inet(I_IP), Identity.inet(R_IP)
    esp_i = ChildConfig("esp", ("aes128-sha256",), *TS_I)
    ah_i = ChildConfig("ah", ("sha512",), ("10.1.0.0/16",), ("10.3.0.0/16",), protocol="ah")
    ci = IKEConfig(local_id=id_i, remote_id=id_r, psk=PSK, children=(esp_i,))
    cr = IKEConfig(local_id=id_r, remote_id=id_i, psk=PSK, children=(
        ChildConfig("esp", ("aes128-sha256",), *TS_R),
        ChildConfig("ah", ("sha512",), ("10.3.0.0/16",), ("10.1.0.0/16",), protocol="ah")))
    pair = Pair(ci, cr)
    pair.start()
    pair.run()
    pair.i.create_child(ah_i, pair.now)
    pair.run()
    (esp_ev, ah_ev) = of(pair.events_i, ChildSAEstablished)
    (esp_r, ah_r) = of(pair.events_r, ChildSAEstablished)
    assert esp_ev.inbound.proto == 50 and ah_ev.inbound.proto == PROTO_AH
    assert ah_r.name == "ah" and str(ah_ev.remote_ts) == "10.3.0.0/16"
    eng = Engine()
    for ev in (esp_ev, ah_ev):
        eng.install(ev.inbound, "in")
        eng.install(ev.outbound, "out")
    (o1, o2), drops = run(eng, [icmp_echo("10.1.0.5", "10.2.0.9"),
                                icmp_echo("10.1.0.5", "10.3.0.9")], True)
    assert drops == [0, 0] and (o1[9], o2[9]) == (50, 51)      # the selectors pick the SA
    n_i, n_r = len(pair.sent_i), len(pair.sent_r)
    pair.i.delete_child(esp_ev.spi_in, pair.now)
    pair.run()
    pair.i.delete_child(ah_ev.spi_in, pair.now)
    pair.run()
    reqs = opened(pair.sent_i[n_i:], pair.r._sa.protect_in, Exchange.INFORMATIONAL)
    resps = opened(pair.sent_r[n_r:], pair.i._sa.protect_in, Exchange.INFORMATIONAL)
    assert [m.all(DeletePayload) for m in reqs] == [
        [DeletePayload(Protocol.ESP, (esp_ev.spi_in.to_bytes(4, "big"),))],
        [DeletePayload(Protocol.AH, (ah_ev.spi_in.to_bytes(4, "big"),))]]
    assert [m.all(DeletePayload) for m in resps] == [
        [DeletePayload(Protocol.ESP, (esp_r.spi_in.to_bytes(4, "big"),))],
        [DeletePayload(Protocol.AH, (ah_r.spi_in.to_bytes(4, "big"),))]]
    assert not pair.i.children and not pair.r.children


def test_delete_naming_the_wrong_protocol_deletes_nothing():
    """D(ESP, spi) for an AH Child SA's SPI does not delete it (3.11: SPIs per protocol)."""
    pair = up("aes128-sha256-modp2048", ("sha256",))
    (ci,) = of(pair.events_i, ChildSAEstablished)
    spi = ci.spi_in.to_bytes(4, "big")
    pair.i._sa.children.pop(spi)            # unrecorded: DeleteChild uses `protocol`
    pair.i._tasks.queue_task(DeleteChild(pair.i._sa, [spi], Protocol.ESP), pair.now)
    pair.run()
    assert not of(pair.events_r, ChildSADeleted) and len(pair.r.children) == 1
