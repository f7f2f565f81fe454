"""The sans-I/O IKE SA end to end: two in-memory pyspu peers (tests/ike_harness.py).

Covers RFC 7296 IKE_SA_INIT + IKE_AUTH with PSK for many proposal pairs, the Child SA's
SAConfigs carrying real ESP through two engine.Engine instances in both directions (also
behind a NAT: RFC 7296 2.23 floating and RFC 3948 encapsulation), authentication and
proposal failures with their notifies, traffic selector narrowing (2.9), INVALID_KE_PAYLOAD
(1.2) and COOKIE (2.6) retries, retransmission with back-off and cached responses (2.1),
INFORMATIONAL delete and liveness (1.4, 2.4), and malformed input.
"""
from __future__ import annotations

import dataclasses

import pytest

from engine.engine import Engine
from ike.config import IKEConfig, Identity, Retransmit
from ike.constants import Exchange, Notify, PayloadType
from ike.endpoint import IKEEndpoint
from ike.events import (AuthenticationFailed, ChildSADeleted, ChildSAEstablished, ChildSAFailed,
                        IKESADeleted, IKESAEstablished, NoProposalChosen, PeerDead)
from ike.ike_sa import State
from ike.constants import Flag
from ike.messages import Message, decode_message, encode_message, open_message, split_marker
from ike.payloads import NoncePayload, NotifyPayload, TrafficSelector

from ike_harness import R_IP, Pair, configs, of
from ike_packets import icmp_echo, run

PAIRS = [
    # the three pairs of the issue
    ("aes128-sha1-modp2048", "aes128-sha1"),
    ("aes256-sha256-ecp256", "aes256gcm16"),
    ("aes128-sha256-x25519", "aes128-sha256"),
    # every DH group, SK cipher and PRF at least once
    ("aes256gcm16-prfsha384-ecp384", "chacha20poly1305"),
    ("aes128gcm8-prfsha1-ecp521", "aes128gcm12"),
    ("aes192gcm12-prfsha512-modp1536", "aes192-sha512"),
    ("chacha20poly1305-prfsha256-curve25519", "aes128ctr-sha384"),
    ("aes192-sha384-modp3072", "aes256gcm8"),
    ("aes256-sha512-modp4096", "aes256-sha256-esn"),
    ("3des-md5-modp1024", "3des-md5"),
    ("aes128-md5-modp768", "aes128gmac"),
]


def establish(ci, cr, **kw) -> Pair:
    pair = Pair(ci, cr, **kw)
    pair.start()
    pair.run()
    return pair


def carry_esp(pair: Pair, child_i: ChildSAEstablished, child_r: ChildSAEstablished) -> None:
    """Install both sides' SAConfigs into two engines and carry ICMP both ways."""
    ei, er = Engine(), Engine()
    for eng, ev in ((ei, child_i), (er, child_r)):
        eng.install(ev.inbound, "in")
        eng.install(ev.outbound, "out")
    for src_eng, dst_eng, src, dst, outward in ((ei, er, "10.1.0.5", "10.2.0.9", True),
                                                (er, ei, "10.2.0.9", "10.1.0.5", False)):
        inner = icmp_echo(src, dst, 7)
        (outer,), (drop,) = run(src_eng, [inner], True)
        assert drop == 0
        next_header = outer[9] if outer[0] >> 4 == 4 else outer[6]
        encap = pair.nat or child_i.outbound.encap_dport is not None
        assert next_header == (17 if encap else 50)     # UDP-encapsulated behind a NAT
        if pair.nat:
            outer = pair.nat_out(outer) if outward else pair.nat_in(outer)
        (back,), (drop,) = run(dst_eng, [outer], False)
        assert drop == 0, drop
        assert back == inner


@pytest.mark.parametrize("ike,esp", PAIRS, ids=[f"{i}/{e}" for i, e in PAIRS])
def test_establish_and_carry_esp(ike, esp):
    pair = establish(*configs((ike,), (esp,)))
    assert pair.i.established and pair.r.established
    (up_i,), (up_r,) = of(pair.events_i, IKESAEstablished), of(pair.events_r, IKESAEstablished)
    assert (up_i.spi_i, up_i.spi_r) == (up_r.spi_i, up_r.spi_r)
    assert up_i.proposal == up_r.proposal
    assert (up_i.remote_id, up_r.remote_id) == (R_IP, "192.0.2.1")
    (ci,), (cr,) = of(pair.events_i, ChildSAEstablished), of(pair.events_r, ChildSAEstablished)
    assert (ci.spi_in, ci.spi_out) == (cr.spi_out, cr.spi_in)
    assert ci.outbound.encap_dport is None and not up_i.nat_local and not up_i.nat_remote
    assert str(ci.local_ts) == "10.1.0.0/16" and str(ci.remote_ts) == "10.2.0.0/16"
    carry_esp(pair, ci, cr)
    # four messages in all: IKE_SA_INIT and IKE_AUTH, nothing retransmitted
    assert len(pair.sent_i) == 2 and len(pair.sent_r) == 2


def test_ipv6_outer_addresses():
    """IKE over IPv6 (NAT detection hashes 16-byte addresses), IPv4 inside the tunnel."""
    ci, cr = configs(i_ip="2001:db8::1", id_r=Identity.inet("2001:db8::2"))
    pair = establish(ci, cr, ips=("2001:db8::1", "2001:db8::2"))
    (up_i,) = of(pair.events_i, IKESAEstablished)
    assert not up_i.nat_local and not up_i.nat_remote
    (ci_ev,), (cr_ev,) = of(pair.events_i, ChildSAEstablished), of(pair.events_r,
                                                                   ChildSAEstablished)
    assert str(ci_ev.outbound.dst) == "2001:db8::2" and str(cr_ev.outbound.dst) == "2001:db8::1"
    carry_esp(pair, ci_ev, cr_ev)


def test_behind_nat_floats_to_4500_and_encapsulates():
    pair = establish(*configs(), nat=True)
    (up_i,), (up_r,) = of(pair.events_i, IKESAEstablished), of(pair.events_r, IKESAEstablished)
    assert up_i.nat_local and not up_i.nat_remote       # RFC 7296 2.23, both points of view
    assert up_r.nat_remote and not up_r.nat_local
    # IKE_SA_INIT on 500 without marker; IKE_AUTH on 4500 with the non-ESP marker
    assert pair.sent_i[0][:4] != b"\0\0\0\0" and pair.sent_i[1][:4] == b"\0\0\0\0"
    assert pair.sent_r[1][:4] == b"\0\0\0\0"
    (ci,), (cr,) = of(pair.events_i, ChildSAEstablished), of(pair.events_r, ChildSAEstablished)
    assert (ci.outbound.encap_sport, ci.outbound.encap_dport) == (4500, 4500)
    assert (cr.outbound.encap_sport, cr.outbound.encap_dport) == (4500, 44500)
    assert (cr.inbound.encap_sport, cr.inbound.encap_dport) == (44500, 4500)
    assert str(cr.outbound.dst) == "198.51.100.7"
    carry_esp(pair, ci, cr)
    # RFC 3948 4: the side behind the NAT keeps its mapping alive every 20 s
    # the responder has only lifetimes due: the Child SA's rekey at 80-90% of 3600 s
    assert pair.i.get_timer() == pytest.approx(20.0) and 2880 <= pair.r.get_timer() <= 3240
    pair.advance(20.0)
    assert pair.sent_i[-1] == b"\xff" and pair.i.get_timer() == pytest.approx(40.0)
    assert pair.i.established and pair.r.established


@pytest.mark.parametrize("side", ["initiator", "responder"])
def test_force_encap_without_a_nat(side):
    """force_encap (strongSwan's encap=yes) on either end: no NAT on the path, yet both see
    one (2.23) and UDP-encapsulate on 4500, and ESP still flows."""
    ci, cr = configs()
    if side == "initiator":
        ci = dataclasses.replace(ci, force_encap=True)
    else:
        cr = dataclasses.replace(cr, force_encap=True)
    pair = establish(ci, cr)
    (up_i,), (up_r,) = of(pair.events_i, IKESAEstablished), of(pair.events_r, IKESAEstablished)
    forced, other = (up_i, up_r) if side == "initiator" else (up_r, up_i)
    assert forced.nat_local and other.nat_remote and not other.nat_local
    (ev_i,), (ev_r,) = of(pair.events_i, ChildSAEstablished), of(pair.events_r,
                                                                 ChildSAEstablished)
    for ev in (ev_i, ev_r):
        assert (ev.outbound.encap_sport, ev.outbound.encap_dport) == (4500, 4500)
    carry_esp(pair, ev_i, ev_r)


def test_wrong_psk_fails_on_both_sides():
    pair = establish(*configs(psk_r=b"another secret entirely"))
    (fail_r,) = of(pair.events_r, AuthenticationFailed)
    (fail_i,) = of(pair.events_i, AuthenticationFailed)
    assert not fail_r.by_peer and fail_i.by_peer
    assert pair.i.closed and pair.r.closed
    assert not of(pair.events_i + pair.events_r, IKESAEstablished)
    # the responder's answer is an encrypted AUTHENTICATION_FAILED (checked on the wire
    # by the initiator having decrypted it); no Child SA anywhere
    assert not of(pair.events_i + pair.events_r, ChildSAEstablished)


def test_wrong_responder_identity_reported_by_initiator():
    """2.21.2: the initiator rejects the responder's identity and says so in a separate
    INFORMATIONAL; the responder, already established, closes."""
    ci, cr = configs(expect_r=Identity.hostname("vpn.example.net"))
    pair = establish(ci, cr)
    (fail_i,) = of(pair.events_i, AuthenticationFailed)
    assert not fail_i.by_peer and "vpn.example.net" in fail_i.reason
    (fail_r,) = of(pair.events_r, AuthenticationFailed)
    assert fail_r.by_peer
    assert pair.r.closed and pair.i.closed
    # the responder's Child SA went with it
    assert len(of(pair.events_r, ChildSADeleted)) == 1


@pytest.mark.parametrize("id_i", [Identity.hostname("gw1.example.org"),
                                  Identity.user_at_hostname("ops@example.org"),
                                  Identity.inet("2001:db8::1")])
def test_identity_types(id_i):
    pair = establish(*configs(id_i=id_i, id_r=Identity.hostname("hub.example.org")))
    (up_r,) = of(pair.events_r, IKESAEstablished)
    assert up_r.remote_id == str(id_i) and pair.i.established


def test_ike_proposal_mismatch_no_proposal_chosen():
    pair = establish(*configs(("aes128-sha1-modp2048",), ike_r=("aes256-sha512-ecp384",)))
    (np_i,), (np_r,) = of(pair.events_i, NoProposalChosen), of(pair.events_r, NoProposalChosen)
    assert np_i.by_peer and not np_i.child and not np_r.by_peer
    answer = decode_message(pair.sent_r[0])
    assert [p.notify_type for p in answer.payloads] == [Notify.NO_PROPOSAL_CHOSEN]
    assert answer.spi_r == bytes(8)
    assert pair.i.closed and pair.r.closed


def test_child_proposal_mismatch_keeps_ike_sa():
    pair = establish(*configs(esp=("aes128-sha1",), esp_r=("aes256gcm16",)))
    assert pair.i.established and pair.r.established
    (np_i,), (np_r,) = of(pair.events_i, NoProposalChosen), of(pair.events_r, NoProposalChosen)
    assert np_i.child and np_i.by_peer and np_r.child and not np_r.by_peer
    assert not of(pair.events_i + pair.events_r, ChildSAEstablished)


def test_traffic_selectors_unacceptable():
    pair = establish(*configs(ts_r=(("10.9.0.0/16",), ("10.8.0.0/16",))))
    assert pair.i.established
    (f_i,) = of(pair.events_i, ChildSAFailed)
    assert f_i.notify == Notify.TS_UNACCEPTABLE and f_i.by_peer


def test_traffic_selector_narrowing():
    """2.9: the initiator asks for more than the responder allows; the responder answers
    with the intersection, and both sides' SAConfigs carry it."""
    pair = establish(*configs(ts_i=(("10.0.0.0/8",), ("0.0.0.0/0",)),
                              ts_r=(("10.2.0.0/16",), ("10.1.0.0/16",))))
    (ci,), (cr,) = of(pair.events_i, ChildSAEstablished), of(pair.events_r, ChildSAEstablished)
    assert str(ci.local_ts) == "10.1.0.0/16" and str(ci.remote_ts) == "10.2.0.0/16"
    assert str(ci.outbound.sel.src) == "10.1.0.0/16" and str(ci.outbound.sel.dst) == "10.2.0.0/16"
    assert str(cr.outbound.sel.src) == "10.2.0.0/16" and str(cr.inbound.sel.src) == "10.1.0.0/16"
    carry_esp(pair, ci, cr)


def test_narrowing_to_ports():
    tcp_443 = TrafficSelector.from_network("10.2.0.0/24", 6, 443, 443)
    pair = establish(*configs(ts_i=(("10.1.0.0/16",), ("10.2.0.0/16",)),
                              ts_r=((tcp_443,), ("10.1.0.0/16",))))
    (ci,) = of(pair.events_i, ChildSAEstablished)
    sel = ci.outbound.sel
    assert (sel.proto, sel.sport, sel.dport) == (6, None, 443)


def test_invalid_ke_payload_retry():
    """1.2: the initiator guesses ECP-256; the responder wants MODP-2048 and says so. The
    refusal is stateless, so the retry reaches a new responder SA (ike/endpoint.py)."""
    ci, cr = configs(("aes128-sha256-ecp256", "aes128-sha256-modp2048"),
                     ike_r=("aes128-sha256-modp2048",))
    pair = establish(ci, None, endpoint=IKEEndpoint([cr], (R_IP, 500)))
    assert pair.i.established and of(pair.events_r, IKESAEstablished)
    first = decode_message(pair.sent_r[0])
    (n,) = first.payloads
    assert n.notify_type == Notify.INVALID_KE_PAYLOAD and n.data == b"\x00\x0e"
    retry = decode_message(pair.sent_i[1])
    assert retry.exchange == Exchange.IKE_SA_INIT and retry.message_id == 0
    assert [p.group for p in retry.payloads if p.ptype == PayloadType.KE] == [14]
    assert "MODP_2048" in of(pair.events_i, IKESAEstablished)[0].proposal


def test_responder_uses_the_initiators_ke_group_when_acceptable():
    pair = establish(*configs(("aes128-sha256-ecp256", "aes128-sha256-modp2048"),
                              ike_r=("aes128-sha256-modp2048", "aes128-sha256-ecp256")))
    assert len(pair.sent_i) == 2          # no INVALID_KE round trip
    assert "ECP_256" in of(pair.events_r, IKESAEstablished)[0].proposal


def test_cookie_under_load():
    """2.6: an endpoint over its half-open threshold answers with a COOKIE; the initiator
    repeats IKE_SA_INIT with the cookie first and gets through."""
    ci, cr = configs()
    endpoint = IKEEndpoint([cr], (R_IP, 500), cookie_threshold=0)
    pair = establish(ci, None, endpoint=endpoint)
    assert pair.i.established
    challenge = decode_message(pair.sent_r[0])
    (cookie,) = challenge.payloads
    assert cookie.notify_type == Notify.COOKIE and challenge.spi_r == bytes(8)
    retry = decode_message(pair.sent_i[1])
    assert isinstance(retry.payloads[0], NotifyPayload) and retry.payloads[0].data == cookie.data
    assert of(pair.events_r, ChildSAEstablished)


def test_cookie_rejected_if_forged():
    ci, cr = configs()
    endpoint = IKEEndpoint([cr], (R_IP, 500), cookie_threshold=0)
    pair = Pair(ci, None, endpoint=endpoint)
    pair.drop = lambda d, data: d == "i->r" and len(pair.sent_i) > 1     # hold the retry
    pair.start()
    pair.run()
    retry = decode_message(pair.sent_i[1])
    retry.payloads[0] = NotifyPayload(Notify.COOKIE, bytes(36))
    endpoint.receive_datagram(encode_message(retry), pair.i_source(500), 0.0)
    (answer, _), = endpoint.datagrams_to_send(0.0)
    assert decode_message(answer).payloads[0].notify_type == Notify.COOKIE
    assert not endpoint.connections                      # no state for a forged cookie
    endpoint.receive_datagram(pair.sent_i[1], pair.i_source(500), 0.0)
    assert len(endpoint.connections) == 1                # the genuine one gets through


def test_retransmission_answered_from_cache():
    """2.1: the IKE_AUTH response is lost; the initiator retransmits the same bytes after
    the timeout and the responder resends its cached response without reprocessing."""
    pair = Pair(*configs())
    lost = []
    pair.drop = lambda d, data: d == "r->i" and len(pair.sent_r) == 2 and not lost \
        and not lost.append(data)
    pair.start()
    pair.run()
    assert pair.r.established and not pair.i.established
    assert pair.i.get_timer() == pytest.approx(4.0)          # charon's default timeout
    pair.advance(4.0)
    assert pair.i.established
    assert pair.sent_i[2] == pair.sent_i[1]                   # the very same request
    assert pair.sent_r[2] == lost[0]                          # the very same response
    assert len(of(pair.events_r, ChildSAEstablished)) == 1    # processed once


def test_duplicate_request_gets_identical_response():
    pair = establish(*configs())
    request, response = pair.sent_i[1], pair.sent_r[1]
    pair.r.receive_datagram(request, ("192.0.2.1", 500), pair.now)
    (again,) = pair.r.datagrams_to_send(pair.now)
    assert again[0] == response
    assert pair.r.next_event() is None


def test_retransmission_backoff_then_peer_dead():
    ci, cr = configs(retransmit=Retransmit(timeout=2.0, base=2.0, tries=3))
    pair = Pair(ci, cr)
    pair.drop = lambda d, data: True                  # the peer never answers
    pair.start()
    pair.step()
    times = []
    while not pair.i.closed:
        timer = pair.i.get_timer()
        times.append(timer)
        pair.now = timer
        pair.i.handle_timer(pair.now)
        pair.step()
    assert times == [2.0, 6.0, 14.0, 30.0]             # 2, then 2*2, 2*4, 2*8 later
    assert len(pair.sent_i) == 4 and len(set(pair.sent_i)) == 1
    (dead,) = of(pair.events_i, PeerDead)
    assert dead.exchange == Exchange.IKE_SA_INIT


def test_liveness_and_dead_peer():
    ci, cr = configs(dpd_interval=30.0, retransmit=Retransmit(1.0, 2.0, 2))
    pair = establish(ci, cr)
    assert pair.i.get_timer() == pytest.approx(30.0)
    pair.advance(30.0)             # both sides check liveness (both have DPD configured)
    dpd = decode_message(pair.sent_i[2])
    assert dpd.exchange == Exchange.INFORMATIONAL and not dpd.is_response
    assert pair.i.established and pair.r.established
    assert pair.i.get_timer() == pytest.approx(60.0)
    pair.drop = lambda d, data: True                       # now the responder vanishes
    for _ in range(10):
        if pair.i.closed:
            break
        pair.advance(pair.i.get_timer() - pair.now)
    assert of(pair.events_i, PeerDead) and pair.i.closed
    assert of(pair.events_i, ChildSADeleted)


def test_delete_child_then_ike_sa():
    pair = establish(*configs())
    (ci,) = of(pair.events_i, ChildSAEstablished)
    pair.i.delete_child(ci.spi_in, pair.now)
    pair.run()
    (di,), (dr,) = of(pair.events_i, ChildSADeleted), of(pair.events_r, ChildSADeleted)
    assert (di.spi_in, di.by_peer) == (ci.spi_in, False) and dr.spi_out == ci.spi_in and dr.by_peer
    assert not pair.i.children and not pair.r.children
    pair.r.delete(pair.now)                                 # the responder may delete too
    pair.run()
    (gone_i,), (gone_r,) = of(pair.events_i, IKESADeleted), of(pair.events_r, IKESADeleted)
    assert gone_i.by_peer and not gone_r.by_peer
    assert pair.i.closed and pair.r.closed
    assert pair.i.state == State.CLOSED


def test_delete_ike_sa_takes_children_along():
    pair = establish(*configs())
    pair.i.delete(pair.now)
    pair.run()
    assert of(pair.events_i, ChildSADeleted) and of(pair.events_r, ChildSADeleted)
    assert of(pair.events_i, IKESADeleted) and of(pair.events_r, IKESADeleted)


def test_malformed_ike_sa_init_gets_invalid_syntax():
    pair = Pair(*configs())
    pair.start()
    (request, _), = pair.i.datagrams_to_send(0.0)
    broken = bytearray(request)
    broken[28 + 2:28 + 4] = b"\x00\x03"      # first payload (SA) length 3 < 4
    pair.r.receive_datagram(bytes(broken), ("192.0.2.1", 500), 0.0)
    (answer, _), = pair.r.datagrams_to_send(0.0)
    msg = decode_message(answer)
    assert msg.is_response and [p.notify_type for p in msg.payloads] == [Notify.INVALID_SYNTAX]


def test_authentic_but_malformed_request_gets_invalid_syntax():
    """3.10.1: INVALID_SYNTAX, encrypted, for a request whose ICV is valid but whose
    contents are not; an INFORMATIONAL error does not end the IKE SA."""
    pair = establish(*configs())
    sa_i = pair.i._sa
    bad = Message(sa_i.spi_i, sa_i.spi_r, Exchange.INFORMATIONAL, pair.r._tasks._msgid_in,
                  Flag.INITIATOR, [NoncePayload(b"short")])          # nonce < 16 bytes
    pair.r.receive_datagram(encode_message(bad, sa_i.protect_out), ("192.0.2.1", 500),
                            pair.now)
    (answer, _), = pair.r.datagrams_to_send(pair.now)
    reply = open_message(decode_message(answer), sa_i.protect_in)
    assert [n.notify_type for n in reply.payloads] == [Notify.INVALID_SYNTAX]
    assert pair.r.established
    # a forged one (wrong ICV) is not answered at all (2.21)
    bad.message_id += 1
    forged = bytearray(encode_message(bad, sa_i.protect_out))
    forged[-1] ^= 1
    pair.r.receive_datagram(bytes(forged), ("192.0.2.1", 500), pair.now)
    assert pair.r.datagrams_to_send(pair.now) == []


def test_unknown_critical_payload_refused():
    pair = Pair(*configs())
    pair.start()
    (request, _), = pair.i.datagrams_to_send(0.0)
    data = bytearray(request)
    # prepend an unknown payload type 200 with the critical bit set
    first = data[16]
    data[16] = 200
    data[28:28] = bytes([first, 0x80, 0, 4])
    data[24:28] = len(data).to_bytes(4, "big")
    pair.r.receive_datagram(bytes(data), ("192.0.2.1", 500), 0.0)
    (answer, _), = pair.r.datagrams_to_send(0.0)
    (n,) = decode_message(answer).payloads
    assert n.notify_type == Notify.UNSUPPORTED_CRITICAL_PAYLOAD and n.data == bytes([200])


def test_malformed_create_child_sa_refused_politely():
    """A CREATE_CHILD_SA without SA and nonce is answered INVALID_SYNTAX; the IKE SA stays
    (RFC 7296 2.21.3). The real exchange is tested in tests/test_ike_rekey.py."""
    from ike.tasks.base import Status, Task

    class CreateChild(Task):
        exchange = Exchange.CREATE_CHILD_SA

        def build(self, msg):
            return Status.SUCCESS

        def process(self, msg):
            self.answer = msg
            return Status.SUCCESS

    pair = establish(*configs())
    task = CreateChild(pair.i._sa)
    pair.i._tasks.queue_task(task, pair.now)
    pair.run()
    assert [n.notify_type for n in task.answer.payloads] == [Notify.INVALID_SYNTAX]
    assert pair.i.established and pair.r.established


def test_half_open_responder_times_out():
    pair = Pair(*configs())
    pair.drop = lambda d, data: d == "i->r" and len(pair.sent_i) > 1
    pair.start()
    pair.run()
    assert pair.r.state == State.INIT_DONE
    assert pair.r.get_timer() == pytest.approx(30.0)
    pair.now = 30.0
    pair.r.handle_timer(pair.now)
    assert pair.r.closed


def test_split_marker():
    assert split_marker(b"\0\0\0\0abc") == (b"abc", True)
    assert split_marker(b"abcd") == (b"abcd", False)


def test_config_limits():
    with pytest.raises(ValueError):
        IKEConfig(local_id=Identity.inet("192.0.2.1"), psk=b"x",
                  proposals=("aes128-sha1-modp2048",) * 5)
    with pytest.raises(ValueError):
        IKEConfig(local_id=Identity.inet("192.0.2.1"), psk=b"")
    assert "in-memory" not in repr(configs()[0])          # the PSK never reaches a repr
