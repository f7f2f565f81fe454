"""Hostile input to the IKE core: random datagrams and mutations of real ones never raise,
and never disturb an IKE SA they cannot authenticate (RFC 7296 2.21: drop what fails
integrity; answer only what may be answered).

Targets: a fresh responder, an initiator waiting for its IKE_SA_INIT answer, an
established pair (both sides), and a responder endpoint. Mutations start from the real
datagrams of a negotiation, with or without the RFC 3948 non-ESP marker.
"""
from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ike.connection import IKEConnection
from ike.constants import Exchange, Flag, Notify, Protocol
from ike.endpoint import IKEEndpoint
from ike.events import IKESAEstablished
from ike.ike_sa import State
from ike.messages import Message, encode_message
from ike.payloads import (AuthPayload, DeletePayload, IDiPayload, IDrPayload, KEPayload,
                          NoncePayload, NotifyPayload, SAPayload, TrafficSelector, TSiPayload,
                          TSrPayload)
from ike.proposals import numbered, parse_proposals

from ike_harness import I_IP, PSK, R_IP, Pair, configs, of

FAST = ("aes128-sha256-x25519",)
CFG_I, CFG_R = configs(FAST, ("aes128gcm16",))
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _transcript() -> Pair:
    pair = Pair(CFG_I, CFG_R, nat=True)
    pair.start()
    pair.run()
    pair.i.check_liveness(pair.now)
    pair.run()
    pair.r.delete_child(pair.r.children[0].inbound.spi, pair.now)
    pair.run()
    return pair


REAL = _transcript()
SAMPLES = REAL.sent_i + REAL.sent_r


@st.composite
def datagrams(draw):
    if draw(st.booleans()):
        return draw(st.binary(max_size=400))
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["flip", "set", "cut", "insert", "marker", "fixlen"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[pos:pos + draw(st.integers(1, 64))]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "marker":
            data = bytearray(data[4:] if data[:4] == b"\0\0\0\0" else b"\0\0\0\0" + data)
        elif kind == "fixlen":
            off = 4 if data[:4] == b"\0\0\0\0" else 0
            if len(data) >= off + 28:
                data[off + 24:off + 28] = struct.pack("!I", len(data) - off)
    return bytes(data)


ADDRS = st.sampled_from([(I_IP, 500), (I_IP, 4500), ("198.51.100.7", 40500),
                         (R_IP, 500), (R_IP, 4500), ("203.0.113.9", 1234)])


def _poke(conn, inputs, now=1.0):
    for data, addr in inputs:
        conn.receive_datagram(data, addr, now)
        conn.datagrams_to_send(now)
        while conn.next_event() is not None:
            pass
        timer = conn.get_timer()
        if timer is not None:
            conn.handle_timer(timer)


@FUZZ
@given(st.lists(st.tuples(datagrams(), ADDRS), max_size=6))
def test_fresh_responder(inputs):
    conn = IKEConnection(CFG_R, initiator=False, local_addr=(R_IP, 500))
    _poke(conn, inputs)


@FUZZ
@given(st.lists(st.tuples(datagrams(), ADDRS), max_size=6))
def test_initiator_waiting_for_ike_sa_init(inputs):
    conn = IKEConnection(CFG_I, initiator=True, local_addr=(I_IP, 500),
                         remote_addr=(R_IP, 500))
    conn.initiate(0.0)
    conn.datagrams_to_send(0.0)
    _poke(conn, inputs)


@FUZZ
@given(st.lists(st.tuples(datagrams(), ADDRS), max_size=5), st.booleans())
def test_established_pair_survives_garbage(inputs, at_initiator):
    pair = Pair(CFG_I, CFG_R)
    pair.start()
    pair.run()
    target = pair.i if at_initiator else pair.r
    for data, addr in inputs:
        target.receive_datagram(data, addr, pair.now)
        target.datagrams_to_send(pair.now)      # answers to retransmissions, if any
    pair._collect()
    # nothing it could not authenticate changed anything: a liveness check still works
    assert pair.i.established and pair.r.established
    pair.i.check_liveness(pair.now)
    pair.run()
    assert pair.i.established and pair.r.established
    assert len(of(pair.events_i, IKESAEstablished)) == 1


@FUZZ
@given(st.lists(st.tuples(datagrams(), ADDRS), max_size=8))
def test_endpoint(inputs):
    endpoint = IKEEndpoint([CFG_R], (R_IP, 500), cookie_threshold=2)
    for data, addr in inputs:
        endpoint.receive_datagram(data, addr, 1.0)
        endpoint.datagrams_to_send(1.0)
        while endpoint.next_event() is not None:
            pass
    timer = endpoint.get_timer()
    if timer is not None:
        endpoint.handle_timer(timer + 100)
    endpoint.datagrams_to_send(200.0)


# --- authenticated nonsense: well-protected messages with arbitrary payloads ---------------------

_SA_CHOICES = [SAPayload(numbered(parse_proposals([n], Protocol.ESP), b"\x12\x34\x56\x78"))
               for n in ("aes128gcm16", "aes128-sha1", "aes256-sha512-esn")] + \
    [SAPayload(numbered(parse_proposals(["aes128-sha256-x25519"], Protocol.IKE)))]
_TS = st.sampled_from(["10.1.0.0/16", "10.2.0.0/16", "0.0.0.0/0", "10.1.2.3/32",
                       "2001:db8::/32"]).map(TrafficSelector.from_network)

payload = st.one_of(
    st.sampled_from(_SA_CHOICES),
    st.builds(NotifyPayload, st.sampled_from(list(Notify) + [999, 40000]),
              st.binary(max_size=24)),
    st.builds(DeletePayload, st.just(Protocol.IKE)),
    st.builds(DeletePayload, st.just(Protocol.ESP),
              st.lists(st.binary(min_size=4, max_size=4), max_size=3).map(tuple)),
    st.builds(IDiPayload, st.sampled_from([1, 2, 3, 11]), st.binary(min_size=4, max_size=4)),
    st.just(IDiPayload(1, bytes([192, 0, 2, 1]))),
    st.builds(IDrPayload, st.sampled_from([1, 2]), st.binary(min_size=4, max_size=8)),
    st.builds(AuthPayload, st.sampled_from([1, 2, 14]), st.binary(min_size=1, max_size=48)),
    st.builds(TSiPayload, st.lists(_TS, min_size=1, max_size=2).map(tuple)),
    st.builds(TSrPayload, st.lists(_TS, min_size=1, max_size=2).map(tuple)),
    st.builds(KEPayload, st.sampled_from([14, 19, 31]), st.binary(min_size=1, max_size=64)),
    st.builds(NoncePayload, st.binary(min_size=16, max_size=40)),
)
EXCHANGES = st.sampled_from([Exchange.IKE_AUTH, Exchange.INFORMATIONAL,
                             Exchange.CREATE_CHILD_SA, 99])


def _protected(pair: Pair, sender, exchange, payloads, msgid, response=False) -> bytes:
    sa = sender._sa
    flags = (Flag.INITIATOR if sa.initiator else 0) | (Flag.RESPONSE if response else 0)
    msg = Message(sa.spi_i, sa.spi_r, exchange, msgid, flags, list(payloads))
    return encode_message(msg, sa.protect_out)


@FUZZ
@given(st.lists(payload, max_size=7), EXCHANGES, st.booleans())
def test_authenticated_nonsense_requests(payloads, exchange, before_auth):
    pair = Pair(CFG_I, CFG_R)
    if before_auth:                # stop after IKE_SA_INIT: the responder awaits IKE_AUTH
        pair.drop = lambda d, data: d == "i->r" and len(pair.sent_i) > 1
    pair.start()
    pair.run()
    data = _protected(pair, pair.i, exchange, payloads, pair.r._tasks._msgid_in)
    pair.r.receive_datagram(data, (I_IP, 500), pair.now)
    out = pair.r.datagrams_to_send(pair.now)
    pair._collect()
    if exchange != 99 and not (before_auth and exchange != Exchange.IKE_AUTH):
        assert len(out) == 1                # every acceptable request gets one answer
    assert pair.r.state in (State.INIT_DONE, State.ESTABLISHED, State.CLOSED)


@FUZZ
@given(st.lists(payload, max_size=7), st.sampled_from(["auth", "info"]))
def test_authenticated_nonsense_responses(payloads, stage):
    pair = Pair(CFG_I, CFG_R)
    if stage == "auth":
        pair.drop = lambda d, data: d == "r->i" and len(pair.sent_r) > 1
        pair.start()
        pair.run()
        exchange, msgid = Exchange.IKE_AUTH, 1
    else:
        pair.start()
        pair.run()
        pair.drop = lambda d, data: d == "r->i"
        pair.i.check_liveness(pair.now)
        pair.run()
        exchange, msgid = Exchange.INFORMATIONAL, 2
    data = _protected(pair, pair.r, exchange, payloads, msgid, response=True)
    pair.i.receive_datagram(data, (R_IP, 500), pair.now)
    pair.i.datagrams_to_send(pair.now)
    pair._collect()
    assert pair.i.state in (State.INIT_DONE, State.ESTABLISHED, State.CLOSED)


def test_psk_constant_is_not_in_any_datagram():
    """Keys and the PSK never go on the wire or into events' reprs."""
    blob = b"".join(SAMPLES)
    assert PSK not in blob
    assert PSK.decode() not in repr(REAL.events_i + REAL.events_r)
