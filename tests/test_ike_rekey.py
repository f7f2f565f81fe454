"""CREATE_CHILD_SA between two in-memory pyspu peers (tests/ike_harness.py): Child SA and
IKE SA rekeying, extra Child SAs, collisions and lifetimes (RFC 7296 1.3, 2.8, 2.8.1,
2.17, 2.18, 2.25).

What could fail here: the REKEY_SA / KE / nonce payloads (checked on the wire, decrypted
with the peer's keys), the key derivations (checked against HKDF-Expand, HMAC and X25519
from the `cryptography` package), the make-before-break order (ESP between two
engine.Engine instances, one packet each way between every IKE datagram, none lost),
the nonce rule of collisions (both peers end with the same single SA pair), and timers.
"""
from __future__ import annotations

import logging

import pytest
from cryptography.hazmat.primitives import hashes, hmac as c_hmac
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

import ike.tasks.create_child as create_child_mod
import ike.tasks.rekey_ike as rekey_ike_mod
from engine.engine import Engine
from ike.config import ChildConfig, IKEConfig
from ike.constants import Exchange, Notify
from ike.endpoint import IKEEndpoint
from ike.events import (ChildSADeleted, ChildSAEstablished, ChildSAFailed, ChildSARekeyed,
                        IKESADeleted, IKESARekeyed, NoProposalChosen)
from ike.messages import decode_message, open_message, split_marker
from ike.payloads import KEPayload, NoncePayload, NotifyPayload, SAPayload, TSiPayload

from ike_harness import I_IP, PSK, R_IP, Pair, configs, of
from ike_packets import icmp_echo, run


def up(*args, **kw) -> Pair:
    pair = Pair(*configs(*args, **kw))
    pair.start()
    pair.run()
    assert pair.i.established and pair.r.established
    return pair


def u32(spi: bytes) -> int:
    return int.from_bytes(spi, "big")


def pairs_of(conn) -> set:
    return {(u32(c.spi_in), u32(c.spi_out)) for c in conn.children}


def consistent(pair: Pair, r=None) -> None:
    """Both ends hold the same Child SAs, each one's inbound the other's outbound."""
    assert {(o, i) for i, o in pairs_of(pair.i)} == pairs_of(r or pair.r)


def opened(pair: Pair, sent: list, reader) -> list:
    """Our own CREATE_CHILD_SA messages among `sent`, decrypted with the reader's keys."""
    out = []
    for data in sent:
        ike, _ = split_marker(data)
        if len(ike) < 28:
            continue
        msg = decode_message(ike)
        if msg.exchange != Exchange.CREATE_CHILD_SA:
            continue
        out.append(open_message(msg, reader))
    return out


# -- Child SA rekey ----------------------------------------------------------------------------

@pytest.mark.parametrize("esp,group", [("aes128-sha1", 0), ("aes128-sha256-modp2048", 14),
                                       ("aes256gcm16-x25519", 31), ("aes128gcm16-ecp256", 19)])
@pytest.mark.parametrize("who", ["initiator", "responder"])
def test_child_rekey(esp, group, who):
    pair = up(esp=(esp,))
    (old_i,), (old_r,) = of(pair.events_i, ChildSAEstablished), of(pair.events_r,
                                                                   ChildSAEstablished)
    by, peer = (pair.i, pair.r) if who == "initiator" else (pair.r, pair.i)
    ev_by, ev_peer = (pair.events_i, pair.events_r) if who == "initiator" else \
        (pair.events_r, pair.events_i)
    reader = (pair.r if who == "initiator" else pair.i)._sa.protect_in
    assert by.rekey_child("net", pair.now)
    assert not by.rekey_child("net", pair.now)         # already under way
    pair.run()
    (new_by,), (new_peer,) = of(ev_by, ChildSARekeyed), of(ev_peer, ChildSARekeyed)
    old_by = old_i if who == "initiator" else old_r
    # make-before-break: the event names the SA it replaces; the deletion follows
    assert (new_by.old_spi_in, new_by.old_spi_out) == (old_by.spi_in, old_by.spi_out)
    assert (new_by.spi_in, new_by.spi_out) == (new_peer.spi_out, new_peer.spi_in)
    assert new_by.outbound_ready and not new_peer.outbound_ready
    assert new_by.pfs_group == new_peer.pfs_group == group
    assert ev_by.index(new_by) < ev_by.index(of(ev_by, ChildSADeleted)[0])
    for events, old in ((pair.events_i, old_i), (pair.events_r, old_r)):
        (gone,) = of(events, ChildSADeleted)
        assert (gone.spi_in, gone.spi_out) == (old.spi_in, old.spi_out)
    # new keys, new SPIs, sequence numbers from the start, selectors re-sent
    for old, new in ((old_i, new_by if who == "initiator" else new_peer),):
        for a, b in ((old.inbound, new.inbound), (old.outbound, new.outbound)):
            assert a.spi != b.spi
            assert (a.enc_key or a.aead_key) != (b.enc_key or b.aead_key)
            assert b.seq == 0 and b.oseq == 0
        assert str(new.local_ts) == "10.1.0.0/16" and str(new.remote_ts) == "10.2.0.0/16"
    consistent(pair)
    assert len(pair.i.children) == 1
    # on the wire: REKEY_SA with the old inbound SPI of the requester, KE iff PFS
    request = opened(pair, pair.sent_i if who == "initiator" else pair.sent_r, reader)[0]
    (rekey,) = [n for n in request.all(NotifyPayload) if n.notify_type == Notify.REKEY_SA]
    assert u32(rekey.spi) == old_by.spi_in and rekey.protocol == 3
    ke = request.get(KEPayload)
    assert (ke.group if ke else 0) == group
    assert request.get(TSiPayload) is not None and request.get(NoncePayload) is not None


def test_child_rekey_invalid_ke_retry():
    """The initiator's KE is for its first group; the responder wants the other one and
    says so with INVALID_KE_PAYLOAD; the rekey is retried with that group (1.3, 1.2)."""
    pair = up(esp=("aes128-sha256-modp2048", "aes128-sha256-x25519"),
              esp_r=("aes128-sha256-x25519",))
    pair.i.rekey_child("net", pair.now)
    pair.run()
    (new_i,), (new_r,) = of(pair.events_i, ChildSARekeyed), of(pair.events_r, ChildSARekeyed)
    assert new_i.pfs_group == new_r.pfs_group == 31
    assert "CURVE25519" in new_i.proposal
    reader = pair.r._sa.protect_in
    groups = [m.get(KEPayload).group for m in opened(pair, pair.sent_i, reader)]
    assert groups == [14, 31]
    answers = opened(pair, pair.sent_r, pair.i._sa.protect_in)
    assert answers[0].notify(Notify.INVALID_KE_PAYLOAD).data == (31).to_bytes(2, "big")
    consistent(pair)


def test_child_rekey_pfs_mismatch_keeps_old_sa(caplog):
    """A peer that will not do PFS refuses the rekey; the old Child SA stays, and another
    try is scheduled (ike/lifetimes.py retry)."""
    pair = up(esp=("aes128-sha256-x25519",), esp_r=("aes128-sha256",))
    before = pairs_of(pair.i)
    with caplog.at_level(logging.INFO, logger="ike"):
        pair.i.rekey_child("net", pair.now)
        pair.run()
    assert pairs_of(pair.i) == before and not of(pair.events_i, ChildSARekeyed)
    assert "rekey failed" in caplog.text
    (child,) = pair.i.children
    assert not child.rekeying and 10 <= child.rekey_at - pair.now <= 20


def test_rekey_keys_match_independent_computation(monkeypatch):
    """RFC 7296 2.17 (with PFS) and 2.18 recomputed with the cryptography package: HMAC,
    HKDF-Expand (= prf+) and X25519 from the DH private keys the tasks drew, nonces and
    KE values read off the wire."""
    made = []

    def recording(group, private=None):
        dh = original(group, private)
        made.append(dh)
        return dh
    original = create_child_mod.new_dh
    monkeypatch.setattr(create_child_mod, "new_dh", recording)
    monkeypatch.setattr(rekey_ike_mod, "new_dh", recording)
    pair = up(ike=("aes128-sha256-x25519",), esp=("aes128-sha256-x25519",))
    sk_d = pair.i._sa.keys.sk_d
    assert sk_d == pair.r._sa.keys.sk_d
    read_r, read_i = pair.r._sa.protect_in, pair.i._sa.protect_in

    def g_ir() -> bytes:
        dh_i, dh_r = made[-2:]
        return dh_i._key.exchange(X25519PublicKey.from_public_bytes(dh_r.public_bytes()))

    # -- Child SA (2.17): KEYMAT = prf+(SK_d, g^ir (new) | Ni | Nr)
    pair.i.rekey_child("net", pair.now)
    pair.run()
    req = opened(pair, pair.sent_i, read_r)[-1]
    resp = opened(pair, pair.sent_r, read_i)[-1]
    ni, nr = req.get(NoncePayload).data, resp.get(NoncePayload).data
    assert req.get(KEPayload).data == made[-2].public_bytes()
    keymat = HKDFExpand(hashes.SHA256(), 2 * (16 + 32), g_ir() + ni + nr).derive(sk_d)
    (new,) = of(pair.events_i, ChildSARekeyed)
    assert new.outbound.enc_key == keymat[:16] and new.outbound.auth_key == keymat[16:48]
    assert new.inbound.enc_key == keymat[48:64] and new.inbound.auth_key == keymat[64:]

    # -- IKE SA (2.18): SKEYSEED = prf(SK_d(old), g^ir | Ni | Nr) (old PRF), then prf+
    pair.i.rekey_ike(pair.now)
    pair.run()
    req = opened(pair, pair.sent_i, read_r)[-1]
    resp = opened(pair, pair.sent_r, read_i)[-1]
    ni, nr = req.get(NoncePayload).data, resp.get(NoncePayload).data
    spi_i, spi_r = req.get(SAPayload).proposals[0].spi, resp.get(SAPayload).proposals[0].spi
    assert pair.i.spis == pair.r.spis == (spi_i, spi_r)
    mac = c_hmac.HMAC(sk_d, hashes.SHA256())
    mac.update(g_ir() + ni + nr)
    skeyseed = mac.finalize()
    km = HKDFExpand(hashes.SHA256(), 3 * 32 + 2 * 32 + 2 * 16,
                    ni + nr + spi_i + spi_r).derive(skeyseed)
    keys = pair.i._sa.keys
    assert (keys.sk_d, keys.sk_ai, keys.sk_ar, keys.sk_ei, keys.sk_er, keys.sk_pi,
            keys.sk_pr) == (km[:32], km[32:64], km[64:96], km[96:112], km[112:128],
                            km[128:160], km[160:192])
    assert pair.r._sa.keys == keys and keys.sk_d != sk_d


# -- make-before-break with real ESP ------------------------------------------------------------

class Dataplane:
    """Two engines following the events as a gateway would: a new inbound SA at once, the
    outbound switch when allowed (outbound_ready, else at the old SA's ChildSADeleted),
    the old inbound SA removed at its ChildSADeleted."""

    def __init__(self, pair: Pair):
        self.pair = pair
        self.eng = {"i": Engine(), "r": Engine()}
        self.h_in = {"i": {}, "r": {}}          # spi_in -> handle
        self.h_out = {"i": None, "r": None}
        self.waiting = {"i": {}, "r": {}}        # old spi_in -> new outbound SAConfig
        self.seen = {"i": 0, "r": 0}
        self.sent = self.received = 0
        self.spis_used = set()

    def follow(self) -> None:
        for side, events in (("i", self.pair.events_i), ("r", self.pair.events_r)):
            eng = self.eng[side]
            for ev in events[self.seen[side]:]:
                if isinstance(ev, ChildSAEstablished):
                    self.h_in[side][ev.spi_in] = eng.install(ev.inbound, "in")
                    self.h_out[side] = eng.install(ev.outbound, "out")
                elif isinstance(ev, ChildSARekeyed):
                    self.h_in[side][ev.spi_in] = eng.install(ev.inbound, "in")
                    if ev.outbound_ready:
                        # also supersedes a waiting switch for the same old SA (the
                        # peer's redundant SA of a collision, 2.8.1)
                        self.waiting[side].pop(ev.old_spi_in, None)
                        self._switch(side, ev.outbound)
                    else:
                        self.waiting[side][ev.old_spi_in] = ev.outbound
                elif isinstance(ev, ChildSADeleted):
                    if ev.spi_in in self.waiting[side]:
                        self._switch(side, self.waiting[side].pop(ev.spi_in))
                    eng.remove(self.h_in[side].pop(ev.spi_in))
            self.seen[side] = len(events)

    def _switch(self, side: str, cfg) -> None:
        eng = self.eng[side]
        new = eng.install(cfg, "out")
        eng.remove(self.h_out[side])
        self.h_out[side] = new

    def tick(self) -> None:
        """One packet each way, delivered at once: every packet must decrypt."""
        self.follow()
        for src, dst, a, b in (("i", "r", "10.1.0.5", "10.2.0.9"),
                               ("r", "i", "10.2.0.9", "10.1.0.5")):
            self.sent += 1
            inner = icmp_echo(a, b, self.sent & 0xFFFF)
            (outer,), (drop,) = run(self.eng[src], [inner], True)
            assert drop == 0
            self.spis_used.add((src, outer[20:24].hex()))
            (back,), (drop,) = run(self.eng[dst], [outer], False)
            assert drop == 0, f"packet {self.sent} {src}->{dst} dropped: {drop}"
            assert back == inner
            self.received += 1


def run_ticking(pair: Pair, dp: Dataplane) -> None:
    """Deliver IKE datagrams one at a time, with ESP both ways between any two."""
    for _ in range(100):
        moved = False
        for src, dst, src_addr in ((pair.i, pair.r, (I_IP, 500)), (pair.r, pair.i, (R_IP, 500))):
            for data, _ in src.datagrams_to_send(pair.now):
                dp.tick()
                dst.receive_datagram(data, src_addr, pair.now)
                pair._collect()
                dp.tick()
                moved = True
        if not moved:
            return
    raise AssertionError("never quiet")


@pytest.mark.parametrize("who", ["initiator", "responder"])
@pytest.mark.parametrize("esp", ["aes128-sha256", "aes128gcm16-x25519"])
def test_esp_flows_across_rekeys_without_loss(who, esp):
    pair = up(esp=(esp,))
    dp = Dataplane(pair)
    dp.tick()
    start = set(dp.spis_used)
    by = pair.i if who == "initiator" else pair.r
    for _ in range(2):                                  # two Child rekeys in a row
        by.rekey_child("net", pair.now)
        run_ticking(pair, dp)
        dp.tick()
    by.rekey_ike(pair.now)                              # and an IKE rekey: ESP unaffected
    run_ticking(pair, dp)
    dp.tick()
    assert dp.received == dp.sent > 20
    assert len(dp.spis_used - start) == 4               # two new SAs each way were used
    # only the latest SAs are left in each engine
    assert all(len(dp.h_in[s]) == 1 and len(dp.eng[s].handles()) == 2 for s in "ir")
    consistent(pair)


# -- IKE SA rekey ------------------------------------------------------------------------------

@pytest.mark.parametrize("who", ["initiator", "responder"])
def test_ike_rekey(who):
    pair = up(ike=("aes128-sha256-modp2048", "aes256gcm16-prfsha384-ecp384"))
    by, peer = (pair.i, pair.r) if who == "initiator" else (pair.r, pair.i)
    old_spis, children = pair.i.spis, pairs_of(pair.i)
    old_by, old_peer = by.spi, peer.spi
    assert by.rekey_ike(pair.now) and not by.rekey_ike(pair.now)
    pair.run()
    assert pair.i.spis == pair.r.spis != old_spis
    assert by.initiator and not peer.initiator     # the rekey's initiator is the new SA's
    (ev_by,) = of(pair.events_i if by is pair.i else pair.events_r, IKESARekeyed)
    (ev_peer,) = of(pair.events_r if by is pair.i else pair.events_i, IKESARekeyed)
    assert (ev_by.ike_sa, ev_by.new_spi) == (old_by, by.spi) and not ev_by.by_peer
    assert (ev_peer.ike_sa, ev_peer.new_spi) == (old_peer, peer.spi) and ev_peer.by_peer
    # the old IKE SA is gone quietly; the Child SAs moved unchanged
    assert not of(pair.events_i + pair.events_r, IKESADeleted)
    assert not of(pair.events_i + pair.events_r, ChildSADeleted)
    assert len(pair.i._all) == len(pair.r._all) == 1
    assert pairs_of(pair.i) == children
    for side in (pair.i, pair.r):          # nothing overdue: a daemon would not spin
        assert side.get_timer() > pair.now + 1000
    # the new SA works: a Child rekey, liveness, then a delete, all with the new SPIs
    peer.rekey_child("net", pair.now)
    pair.run()
    assert of(pair.events_i, ChildSARekeyed)[0].ike_sa == pair.i.spi
    pair.i.check_liveness(pair.now)
    pair.run()
    pair.i.delete(pair.now)
    pair.run()
    (gone,) = of(pair.events_r, IKESADeleted)
    assert gone.ike_sa == pair.r.spi and pair.r.closed and pair.i.closed


def test_ike_rekey_invalid_ke_and_new_proposal():
    """The responder only takes ECP-384 now: INVALID_KE_PAYLOAD, retry, and the new IKE SA
    runs another proposal (another PRF: 2.18 uses the old PRF for SKEYSEED)."""
    pair = up(ike=("aes128-sha256-modp2048", "aes256gcm16-prfsha384-ecp384"))
    pair.r._sa.configs = [IKEConfig(**{**pair.r._sa.config.__dict__,
                                       "proposals": ("aes256gcm16-prfsha384-ecp384",)})]
    pair.i.rekey_ike(pair.now)
    pair.run()
    (ev,) = of(pair.events_i, IKESARekeyed)
    assert "ECP_384" in ev.proposal and "PRF_HMAC_SHA2_384" in ev.proposal
    pair.i.rekey_child("net", pair.now)         # the new keys protect the next exchange
    pair.run()
    assert of(pair.events_r, ChildSARekeyed)
    consistent(pair)


def test_ike_rekey_through_endpoint_follows_spis():
    ci, cr = configs()
    endpoint = IKEEndpoint([cr], (R_IP, 500))
    pair = Pair(ci, cr, endpoint=endpoint)
    pair.start()
    pair.run()
    (conn,) = endpoint.connections
    old = conn.spi
    pair.i.rekey_ike(pair.now)
    pair.run()
    assert conn.spi != old and endpoint._by_spi == {conn.spi: conn}
    conn.rekey_ike(pair.now)                     # the responder's turn, through the endpoint
    pair.run()
    assert len(of(pair.events_r, IKESARekeyed)) == 2
    assert endpoint._by_spi == {conn.spi: conn} and pair.i.spis == conn.spis
    pair.i.rekey_child("net", pair.now)
    pair.run()
    assert of(pair.events_r, ChildSARekeyed)
    consistent(pair, conn)


def test_lost_delete_of_old_ike_sa_is_forgotten():
    """The rekey responder never hears the Delete of the old SA: it closes it quietly
    after the retransmission span (no event), the new SA stays up."""
    pair = up()
    pair.drop = lambda d, data: d == "i->r" and decode_message(split_marker(data)[0]) \
        .exchange == Exchange.INFORMATIONAL
    pair.i.rekey_ike(pair.now)
    pair.run()
    assert len(pair.r._all) == 2
    for _ in range(12):
        pair.advance(30)
    assert len(pair.r._all) == 1 and pair.r.established
    assert not of(pair.events_r, IKESADeleted)


# -- extra Child SAs -----------------------------------------------------------------------------

def extra_configs():
    net2_i = ChildConfig("net2", ("aes128gcm16-x25519",), ("10.3.0.0/16",), ("10.4.0.0/16",))
    net2_r = ChildConfig("net2", ("aes128gcm16-x25519",), ("10.4.0.0/16",), ("10.3.0.0/0",))
    ci, cr = configs()
    ci = IKEConfig(**{**ci.__dict__, "children": ci.children + (net2_i,)})
    cr = IKEConfig(**{**cr.__dict__, "children": cr.children + (net2_r,)})
    return ci, cr, net2_i, net2_r


@pytest.mark.parametrize("who", ["initiator", "responder"])
def test_extra_child_sa(who):
    ci, cr, net2_i, net2_r = extra_configs()
    pair = Pair(ci, cr)
    pair.start()
    pair.run()
    by, cfg = (pair.i, net2_i) if who == "initiator" else (pair.r, net2_r)
    by.create_child(cfg, pair.now)
    pair.run()
    mine = of(pair.events_i, ChildSAEstablished)
    theirs = of(pair.events_r, ChildSAEstablished)
    assert [e.name for e in mine] == [e.name for e in theirs] == ["net", "net2"]
    # the responder picked its net2 config by the selectors and narrowed to them (2.9)
    assert (str(mine[1].local_ts), str(mine[1].remote_ts)) == ("10.3.0.0/16", "10.4.0.0/16")
    assert str(theirs[1].remote_ts) == "10.3.0.0/16" and "AES_GCM_16" in mine[1].proposal
    consistent(pair)
    assert len(pair.i.children) == 2
    # each one rekeys on its own
    by.rekey_child("net2", pair.now)
    pair.run()
    (rk,) = of(pair.events_i, ChildSARekeyed)
    assert rk.name == "net2" and rk.pfs_group == 31
    consistent(pair)


def test_extra_child_refused_leaves_ike_sa():
    pair = up()
    pair.i.create_child(ChildConfig("nope", ("aes128-sha1",), ("10.9.0.0/16",),
                                    ("10.8.0.0/16",)), pair.now)
    pair.run()
    (failed,) = of(pair.events_i, ChildSAFailed)
    assert failed.name == "nope" and failed.notify == Notify.TS_UNACCEPTABLE and failed.by_peer
    assert pair.i.established and len(pair.i.children) == 1
    pair.i.create_child(ChildConfig("nope2", ("3des-md5",)), pair.now)
    pair.run()
    assert of(pair.events_i, NoProposalChosen)[-1].name == "nope2"


# -- collisions (2.8.1, 2.25) ----------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_simultaneous_child_rekeys(seed):
    """Both ends rekey the same Child SA at once; each answers the other. The nonce rule
    picks one new SA; both ends end up with it alone, and ESP works on it."""
    pair = up(esp=("aes128-sha256",))
    dp = Dataplane(pair)
    dp.tick()
    # different nonces per seed: which side wins varies
    for side in (pair.i, pair.r):
        side._sa.random_bytes = _seeded(seed, side is pair.i)
    pair.i.rekey_child("net", pair.now)
    pair.r.rekey_child("net", pair.now)
    run_ticking(pair, dp)
    dp.tick()
    assert len(pair.i.children) == 1
    consistent(pair)
    (final,) = pair.i.children
    # each side announced the winner; the redundant SA never reached the loser's consumer
    assert of(pair.events_i, ChildSARekeyed)[-1].spi_in == u32(final.spi_in)
    assert of(pair.events_r, ChildSARekeyed)[-1].spi_out == u32(final.spi_in)
    assert dp.received == dp.sent


@pytest.mark.parametrize("seed", range(6))
def test_simultaneous_ike_rekeys(seed):
    pair = up()
    children = pairs_of(pair.i)
    for side in (pair.i, pair.r):
        side._sa.random_bytes = _seeded(seed, side is pair.i)
    pair.i.rekey_ike(pair.now)
    pair.r.rekey_ike(pair.now)
    pair.run()
    pair.advance(1)
    assert pair.i.spis == pair.r.spis
    assert pair.i.initiator != pair.r.initiator
    assert len(pair.i._all) == len(pair.r._all) == 1
    assert pairs_of(pair.i) == children
    assert of(pair.events_i, IKESARekeyed)[-1].new_spi == pair.i.spi
    assert of(pair.events_r, IKESARekeyed)[-1].new_spi == pair.r.spi
    assert not of(pair.events_i + pair.events_r, IKESADeleted)
    pair.r.rekey_child("net", pair.now)          # the survivor carries on
    pair.run()
    consistent(pair)


@pytest.mark.parametrize("kind", ["child", "ike"])
def test_crossing_rekeys_where_one_answer_overtakes(kind):
    """Both ends rekey at once, but the answer to the initiator's request reaches it before
    the peer's request: that rekey is done (old SA being deleted) and the peer's request
    gets TEMPORARY_FAILURE (2.25); the peer keeps the SA it answered. One SA pair left."""
    pair = up()
    if kind == "child":
        pair.i.rekey_child("net", pair.now)
        pair.r.rekey_child("net", pair.now)
    else:
        pair.i.rekey_ike(pair.now)
        pair.r.rekey_ike(pair.now)
    (a_req, _), = pair.i.datagrams_to_send(pair.now)
    (b_req, _), = pair.r.datagrams_to_send(pair.now)
    pair.r.receive_datagram(a_req, (I_IP, 500), pair.now)     # r answers A (a collision)
    (a_resp, _), = pair.r.datagrams_to_send(pair.now)
    pair.i.receive_datagram(a_resp, (R_IP, 500), pair.now)    # A done on i first
    pair.i.receive_datagram(b_req, (R_IP, 500), pair.now)         # then B arrives
    refusal = [d for d, _ in pair.i.datagrams_to_send(pair.now)]
    answers = [open_message(decode_message(d), pair.r._sa.protect_in) for d in refusal
               if decode_message(d).is_response]
    assert answers and answers[0].notify(Notify.TEMPORARY_FAILURE) is not None
    for d in refusal:
        pair.r.receive_datagram(d, (I_IP, 500), pair.now)
    pair.run()
    pair._collect()
    consistent(pair)
    assert len(pair.i.children) == 1 and pair.i.spis == pair.r.spis
    assert len(pair.i._all) == len(pair.r._all) == 1
    if kind == "child":
        assert of(pair.events_i, ChildSARekeyed)[-1].spi_in == u32(pair.i.children[0].spi_in)
        assert of(pair.events_r, ChildSARekeyed)[-1].spi_in == u32(pair.r.children[0].spi_in)
    else:
        assert of(pair.events_r, IKESARekeyed)[-1].new_spi == pair.r.spi


def _seeded(seed: int, first: bool):
    import random
    rng = random.Random(seed * 2 + first)
    return lambda n: bytes(rng.getrandbits(8) for _ in range(n))


def test_rekey_of_child_being_deleted_gets_temporary_failure(caplog):
    pair = up()
    (child,) = pair.r.children
    with caplog.at_level(logging.INFO, logger="ike"):
        pair.i.delete_child(u32(pair.i.children[0].spi_in), pair.now)
        pair.r.rekey_child(u32(child.spi_in), pair.now)
        pair.run()
    answers = opened(pair, pair.sent_i, pair.r._sa.protect_in) if pair.r._sa.keys else []
    assert any(m.notify(Notify.TEMPORARY_FAILURE) for m in answers)
    assert not pair.i.children and not pair.r.children
    assert not of(pair.events_i + pair.events_r, ChildSARekeyed)
    assert "rekey failed" in caplog.text


def test_child_sa_during_ike_rekey_gets_temporary_failure():
    """A Child SA request while the IKE SA is being rekeyed is refused with
    TEMPORARY_FAILURE (2.25.2), and the IKE rekey against our own Child exchange too;
    both are tried again later and succeed."""
    ci, cr, net2_i, net2_r = extra_configs()
    pair = Pair(ci, cr)
    pair.start()
    pair.run()
    old = pair.i.spi
    pair.i.rekey_ike(pair.now)
    pair.r.create_child(net2_r, pair.now)
    pair.run()
    (failed,) = of(pair.events_r, ChildSAFailed)
    assert failed.notify == Notify.TEMPORARY_FAILURE and failed.by_peer
    assert pair.i.spi == old and not of(pair.events_i, IKESARekeyed)
    for _ in range(3):
        pair.advance(10)
    assert of(pair.events_i, IKESARekeyed) and pair.i.spi != old
    pair.r.create_child(net2_r, pair.now)
    pair.run()
    assert [e.name for e in of(pair.events_i, ChildSAEstablished)] == ["net", "net2"]


def test_unknown_child_rekey_gets_child_sa_not_found():
    pair = up()
    (child,) = pair.i.children
    pair.r._sa.children.clear()                 # the responder lost it
    pair.i.rekey_child("net", pair.now)
    pair.run()
    answers = opened(pair, pair.sent_r, pair.i._sa.protect_in)
    assert answers[-1].notify(Notify.CHILD_SA_NOT_FOUND) is not None
    assert pair.i.established and pair.i.children == [child]


# -- lifetimes (2.8) ----------------------------------------------------------------------------

def lifetimes(child_s=0, child_kb=0, ike_s=0, **kw):
    ci, cr = configs(**kw)
    out = []
    for cfg in (ci, cr):
        (ch,) = cfg.children
        ch = ChildConfig(**{**ch.__dict__, "lifetime_seconds": child_s,
                            "lifetime_kilobytes": child_kb})
        out.append(IKEConfig(**{**cfg.__dict__, "children": (ch,), "lifetime_seconds": ike_s}))
    return out


def test_child_expiry_by_time():
    pair = Pair(*lifetimes(child_s=100))
    pair.start()
    pair.run()
    (child_i,), (child_r,) = pair.i.children, pair.r.children
    for c in (child_i, child_r):              # soft between 80% and 90%, hard at 100%
        assert 80 <= c.rekey_at <= 90 and c.expire_at == 100
    first = min(child_i.rekey_at, child_r.rekey_at)
    assert min(pair.i.get_timer(), pair.r.get_timer()) == pytest.approx(first)
    pair.advance(first - 0.01)
    assert not of(pair.events_i, ChildSARekeyed)
    pair.advance(0.02)
    assert len(of(pair.events_i, ChildSARekeyed)) == 1
    consistent(pair)
    (new,) = pair.i.children
    assert new.rekey_at - pair.now >= 80 - 0.02     # the new SA has its own lifetime
    for _ in range(40):                             # and rekeys again, twice
        pair.advance(5)
    assert len(of(pair.events_i, ChildSARekeyed)) >= 2
    assert len(pair.i.children) == 1 and pair.i.established


def test_child_hard_expiry_deletes_when_rekey_keeps_failing():
    """PFS on one side only: every rekey is refused; at the hard limit the SA goes."""
    ci, cr = lifetimes(child_s=100, esp=("aes128-sha256-x25519",), esp_r=("aes128-sha256",))
    cr = IKEConfig(**{**cr.__dict__, "children": (ChildConfig(
        **{**cr.children[0].__dict__, "lifetime_seconds": 0}),)})
    pair = Pair(ci, cr)
    pair.start()
    pair.run()
    for _ in range(25):
        pair.advance(5)
    (gone,) = of(pair.events_i, ChildSADeleted)
    assert not pair.i.children and not pair.r.children and pair.i.established
    assert of(pair.events_r, ChildSADeleted)[0].by_peer


def test_child_expiry_by_bytes():
    pair = Pair(*lifetimes(child_kb=1000))      # 1 024 000 bytes hard
    pair.start()
    pair.run()
    (child,) = pair.i.children
    assert 0.8 * 1024000 <= child.soft_bytes <= 0.9 * 1024000 and child.hard_bytes == 1024000
    assert pair.i.get_timer() is None or pair.i.get_timer() > 1e6     # no time limit
    pair.i.child_bytes("net", child.soft_bytes - 1, pair.now)
    pair.run()
    assert not of(pair.events_i, ChildSARekeyed)
    pair.i.child_bytes(u32(child.spi_in), child.soft_bytes, pair.now)
    pair.run()
    (rk,) = of(pair.events_i, ChildSARekeyed)
    (new,) = pair.i.children
    assert new.bytes_seen == 0                        # counted anew for the new SA
    pair.i.child_bytes(rk.spi_in, 1024000, pair.now)  # hard limit at once: deleted
    pair.run()
    assert not pair.i.children and not pair.r.children
    assert of(pair.events_r, ChildSADeleted)[-1].spi_out == rk.spi_in


def test_ike_expiry_by_time():
    pair = Pair(*lifetimes(ike_s=1000))
    pair.start()
    pair.run()
    soft = min(pair.i._sa.rekey_at, pair.r._sa.rekey_at)
    assert 800 <= soft <= 900 and pair.i._sa.expire_at == 1000
    pair.advance(soft + 0.01)
    assert len(of(pair.events_i, IKESARekeyed)) == 1
    assert 800 + soft <= min(pair.i._sa.rekey_at, pair.r._sa.rekey_at)
    for _ in range(40):
        pair.advance(50)
    assert len(of(pair.events_i, IKESARekeyed)) >= 3 and pair.i.established
    consistent(pair)


def test_ike_hard_expiry_deletes():
    """The peer refuses every IKE rekey (no common proposal any more): the IKE SA goes at
    its hard limit, deleted with the peer (no reauthentication yet)."""
    ci, cr = lifetimes(ike_s=1000, ike=("aes128-sha256-modp2048",))
    cr = IKEConfig(**{**cr.__dict__, "lifetime_seconds": 0})
    pair = Pair(ci, cr)
    pair.start()
    pair.run()
    pair.r._sa.configs = [IKEConfig(**{**cr.__dict__, "proposals": ("aes256-sha512-ecp384",)})]
    while not pair.i.closed and pair.now < 1100:
        pair.advance(5)
    assert 1000 <= pair.now < 1010
    assert not of(pair.events_i, IKESARekeyed)
    (gone_i,), (gone_r,) = of(pair.events_i, IKESADeleted), of(pair.events_r, IKESADeleted)
    assert gone_i.reason == "deleted" and gone_r.by_peer and pair.r.closed


def test_rekey_logs_spis_never_keys(caplog):
    pair = up(esp=("aes128-sha256-x25519",))
    with caplog.at_level(logging.DEBUG, logger="ike"):
        pair.i.rekey_child("net", pair.now)
        pair.run()
        pair.r.rekey_ike(pair.now)
        pair.run()
    (rk,) = of(pair.events_i, ChildSARekeyed)
    text = caplog.text
    assert f"{rk.spi_in:08x}" in text and f"{rk.old_spi_in:08x}" in text
    assert "PFS group 31" in text and pair.i.spi.hex() in text
    secrets = [rk.inbound.enc_key, rk.inbound.auth_key, rk.outbound.enc_key,
               pair.i._sa.keys.sk_d, pair.i._sa.keys.sk_ei, PSK]
    for s in secrets:
        assert s.hex() not in text and repr(s) not in text
    for shown in (repr(rk), repr(pair.i.children[0]), repr(pair.i._sa)):
        assert rk.inbound.enc_key.hex() not in shown and repr(rk.inbound.enc_key) not in shown


# -- hostile CREATE_CHILD_SA requests (authentic, so answered; never a traceback) --------------

def _hostile_cases():
    from ike.config import _proposals
    from ike.constants import Protocol as P
    from ike.payloads import TrafficSelector, TSrPayload
    from ike.proposals import numbered
    esp = numbered(_proposals(("aes128-sha1",), P.ESP), b"\x12\x34\x56\x78")
    esp_dh = numbered(_proposals(("aes128-sha1-x25519",), P.ESP), b"\x12\x34\x56\x78")
    ike = numbered(_proposals(("aes128-sha1-modp2048",), P.IKE), b"\x01" * 8)
    ts = (TrafficSelector.from_network("10.1.0.0/16"),)
    tsr = (TrafficSelector.from_network("10.2.0.0/16"),)
    n = NoncePayload(b"n" * 32)
    base = [SAPayload(esp), n, TSiPayload(ts), TSrPayload(tsr)]
    return {
        "empty": ([], Notify.INVALID_SYNTAX),
        "no nonce": ([SAPayload(esp), TSiPayload(ts), TSrPayload(tsr)], Notify.INVALID_SYNTAX),
        "no TS": ([SAPayload(esp), n], Notify.INVALID_SYNTAX),
        "REKEY_SA unknown SPI": ([NotifyPayload(Notify.REKEY_SA, b"", 3, b"\0\0\0\x09")] + base,
                                 Notify.CHILD_SA_NOT_FOUND),
        "REKEY_SA short SPI": ([NotifyPayload(Notify.REKEY_SA, b"", 3, b"\x01")] + base,
                               Notify.CHILD_SA_NOT_FOUND),
        "a DH group we do not do": ([SAPayload(esp_dh), n, TSiPayload(ts), TSrPayload(tsr)],
                           Notify.NO_PROPOSAL_CHOSEN),
        "IKE rekey without KE": ([SAPayload(ike), n], Notify.INVALID_SYNTAX),
        "IKE rekey, KE of another group": ([SAPayload(ike), n, KEPayload(31, b"k" * 32)],
                                           Notify.INVALID_KE_PAYLOAD),
        "IKE rekey, KE too short": ([SAPayload(ike), n, KEPayload(14, b"k" * 5)],
                                    Notify.INVALID_SYNTAX),
        "TS outside policy": ([SAPayload(esp), n, TSiPayload(
            (TrafficSelector.from_network("172.16.0.0/12"),)), TSrPayload(tsr)],
            Notify.TS_UNACCEPTABLE),
    }


@pytest.mark.parametrize("case", list(_hostile_cases()))
def test_hostile_create_child_requests(case, caplog):
    from ike.tasks.base import Status, Task
    payloads, expected = _hostile_cases()[case]

    class Raw(Task):
        exchange = Exchange.CREATE_CHILD_SA

        def build(self, msg):
            msg.payloads += payloads
            return Status.SUCCESS

        def process(self, msg):
            self.answer = msg
            return Status.SUCCESS

    pair = up()
    children = pairs_of(pair.r)
    task = Raw(pair.i._sa)
    with caplog.at_level(logging.INFO, logger="ike"):
        pair.i._tasks.queue_task(task, pair.now)
        pair.run()
    assert [n.notify_type for n in task.answer.payloads] == [expected]
    assert pair.r.established and pairs_of(pair.r) == children and len(pair.r._all) == 1
    assert "refused with" in caplog.text and "Traceback" not in caplog.text
    pair.i.rekey_child("net", pair.now)          # and the IKE SA still works
    pair.run()
    assert of(pair.events_r, ChildSARekeyed)


def test_requests_queued_behind_ike_rekey_move_to_new_sa():
    """A Child rekey and a new Child SA queued while the IKE SA is rekeyed go out on the new
    IKE SA (message IDs from 0 there), not on the old one being deleted."""
    ci, cr, net2_i, _ = extra_configs()
    pair = Pair(ci, cr)
    pair.start()
    pair.run()
    pair.i.rekey_ike(pair.now)
    pair.i.rekey_child("net", pair.now)
    pair.i.create_child(net2_i, pair.now)
    pair.run()
    (rk,) = of(pair.events_r, ChildSARekeyed)
    assert rk.ike_sa == pair.r.spi
    assert [e.name for e in of(pair.events_r, ChildSAEstablished)] == ["net", "net2"]
    new_sa = [decode_message(split_marker(d)[0]) for d in pair.sent_i]
    on_new = [m for m in new_sa if m.spi_i == pair.i.spis[0]]
    assert [(m.exchange, m.message_id) for m in on_new] == [
        (Exchange.CREATE_CHILD_SA, 0), (Exchange.CREATE_CHILD_SA, 1),
        (Exchange.INFORMATIONAL, 2)]                # the old Child SA's Delete
    consistent(pair)
