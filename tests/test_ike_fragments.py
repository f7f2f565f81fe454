"""IKE fragmentation (RFC 7383): SKF encoding, authenticated reassembly and its limits.

The fragments are protected with the SK ciphers of ike/crypto.py (AES-CBC + HMAC and
AES-GCM); the reassembled payloads must equal what was fragmented. In-memory peers
(tests/ike_harness.py) show the negotiation (2.3), fragmented IKE_AUTH both ways, and a
lost fragment recovered by retransmitting the whole set (2.6.3). charon's fragmented
IKE_AUTH is in tests/test_ike_strongswan.py.
"""
from __future__ import annotations

import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ike.constants import Encr, Exchange, Flag, Integ, Notify, PayloadType
from ike.crypto import AeadProtector, CbcHmacProtector, ike_encr_spec
from ike.events import ChildSAEstablished, IKESAEstablished
from ike.fragments import (MAX_FRAGMENTS, Reassembler, defragment, encode_datagrams,
                           fragment_message)
from ike.messages import Message, decode_message, open_message
from ike.payloads import (EncryptedFragmentPayload, NotifyPayload, ReassembledPayload,
                          VendorPayload)

from ike_harness import Identity, Pair, configs, of

SPI_I, SPI_R = bytes.fromhex("0102030405060708"), bytes.fromhex("1112131415161718")


def _protectors():
    key, integ = os.urandom(16), os.urandom(20)
    cbc = (CbcHmacProtector(ike_encr_spec(Encr.AES_CBC, 128), key, Integ.HMAC_SHA1_96, integ),
           CbcHmacProtector(ike_encr_spec(Encr.AES_CBC, 128), key, Integ.HMAC_SHA1_96, integ))
    gcm_key = os.urandom(20)
    gcm = (AeadProtector(ike_encr_spec(Encr.AES_GCM_16, 128), gcm_key),
           AeadProtector(ike_encr_spec(Encr.AES_GCM_16, 128), gcm_key))
    return {"cbc": cbc, "gcm": gcm}


def _message(size: int = 3000) -> Message:
    payloads = [VendorPayload(os.urandom(700)) for _ in range(size // 700)] + \
        [NotifyPayload(Notify.INITIAL_CONTACT)]
    return Message(SPI_I, SPI_R, Exchange.IKE_AUTH, 1, Flag.INITIATOR, payloads)


def _reassemble(datagrams, protector, reassembler=None, now=0.0):
    reassembler = Reassembler() if reassembler is None else reassembler
    out = None
    for d in datagrams:
        got = defragment(reassembler, protector, decode_message(d), now)
        if got is not None:
            assert out is None, "completed twice"
            out = got
    return out


@pytest.mark.parametrize("kind", ["cbc", "gcm"])
def test_round_trip(kind):
    seal, opener = _protectors()[kind]
    msg = _message()
    frags = encode_datagrams(msg, seal, fragment=True, fragment_size=1280,
                             remote_host="192.0.2.2", natt=True)
    assert len(frags) == 3
    for n, d in enumerate(frags, 1):
        assert len(d) + 20 + 8 + 4 <= 1280                  # IPv4 + UDP + non-ESP marker
        m = decode_message(d)
        skf = m.sk
        assert isinstance(skf, EncryptedFragmentPayload) and (skf.number, skf.total) == (n, 3)
        assert m.first_payload == PayloadType.SKF and m.message_id == 1
        # RFC 7383 2.5: Next Payload names the first inner payload in fragment 1 only
        assert skf.first_inner == (PayloadType.VENDOR if n == 1 else PayloadType.NONE)
    whole = _reassemble(frags, opener)
    assert isinstance(whole.sk, ReassembledPayload)
    assert open_message(whole, opener).payloads == msg.payloads


def test_small_messages_and_unnegotiated_are_not_fragmented():
    seal, _ = _protectors()["cbc"]
    assert len(encode_datagrams(_message(700), seal, fragment=True)) == 1
    big = encode_datagrams(_message(3000), seal, fragment=False)
    assert len(big) == 1 and decode_message(big[0]).first_payload == PayloadType.SK
    # IPv6 leaves less room per fragment than IPv4
    v4 = encode_datagrams(_message(2700), seal, fragment=True, remote_host="192.0.2.2")
    v6 = encode_datagrams(_message(2700), seal, fragment=True, remote_host="2001:db8::2")
    assert max(map(len, v6)) <= 1280 - 48 < max(map(len, v4))


@pytest.mark.parametrize("kind", ["cbc", "gcm"])
def test_reordered_duplicated_missing_and_tampered(kind):
    seal, opener = _protectors()[kind]
    msg = _message(5000)
    frags = fragment_message(msg, seal, 600)
    assert len(frags) >= 8
    # reversed order, every fragment twice: one result, the same payloads
    whole = _reassemble(list(reversed(frags)) + frags, opener)
    assert open_message(whole, opener).payloads == msg.payloads
    # one missing: nothing; it arrives later: complete
    r = Reassembler()
    assert _reassemble(frags[:3] + frags[4:], opener, r) is None and len(r) == 1
    assert open_message(_reassemble([frags[3]], opener, r), opener).payloads == msg.payloads
    # a forged fragment is not kept (it would otherwise block the genuine one as a
    # "duplicate"); the genuine one completes the set
    forged = bytearray(frags[2])
    forged[-1] ^= 1
    r = Reassembler()
    assert _reassemble(frags[:2] + [bytes(forged)] + frags[3:], opener, r) is None
    assert _reassemble([frags[2]], opener, r) is not None


def test_incomplete_sets_expire():
    seal, opener = _protectors()["gcm"]
    frags = fragment_message(_message(), seal, 600)
    r = Reassembler(timeout=30.0)
    assert _reassemble(frags[:-1], opener, r, now=100.0) is None and len(r) == 1
    r.expire(129.0)
    assert len(r) == 1
    r.expire(131.0)
    assert len(r) == 0
    assert _reassemble(frags[-1:], opener, r, now=131.0) is None     # the set is gone


def test_limits():
    r = Reassembler(max_fragments=4, max_size=100, max_sets=2)
    assert r.add(1, 1, 5, 43, b"x", 0.0) is None and len(r) == 0    # too many fragments
    assert r.add(1, 1, 3, 43, b"x" * 60, 0.0) is None
    assert r.add(1, 2, 3, 0, b"x" * 60, 0.0) is None and len(r) == 0  # over 100 bytes
    assert r.add((1, False), 1, 2, 43, b"a", 0.0) is None
    assert r.add((2, False), 1, 2, 43, b"a", 0.0) is None
    assert r.add((3, False), 1, 2, 43, b"a", 0.0) is None and len(r) == 2   # max_sets
    assert r.dropped == 3
    # RFC 7383 2.6.2: a smaller Total Fragments is ignored, a larger one restarts the set
    assert r.add((1, False), 2, 1, 0, b"zz", 0.0) is None
    assert r.add((1, False), 1, 3, 43, b"A", 0.0) is None
    assert r.add((1, False), 2, 3, 0, b"B", 0.0) is None
    assert r.add((1, False), 3, 3, 0, b"C", 0.0) == (43, b"ABC")


def test_parser_rejects_bad_fragment_numbers():
    seal, _ = _protectors()["cbc"]
    frag = bytearray(fragment_message(_message(), seal, 600)[0])
    from ike.errors import ParseError
    for number, total in ((0, 3), (4, 3), (0, 0)):
        struct.pack_into("!HH", frag, 28 + 4, number, total)
        with pytest.raises(ParseError):
            decode_message(bytes(frag))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 10), st.integers(0, 10),
                          st.binary(max_size=40)), max_size=60))
def test_reassembler_fuzz(events):
    """Whatever arrives: no exception, bounded state, and a completed set is exactly the
    first-kept piece of each number of the final Total Fragments, in order."""
    r = Reassembler(max_fragments=8, max_size=200, max_sets=2, timeout=5.0)
    kept: dict = {}
    for t, (key, number, total, data) in enumerate(events):
        result = r.add(key, number, total, 40 + number, data, float(t))
        assert len(r) <= 2
        s = r._sets.get(key)
        assert s is None or (s.size <= 200 and len(s.parts) < s.total <= 8)
        if result is not None:
            first, plain = result
            assert 1 <= total <= 8 and first == 41
            assert len(plain) <= 200
            kept.setdefault(key, []).append(plain)
            assert key not in r._sets


# identities long enough that IKE_AUTH needs fragments at 576 bytes (PSK alone is small)
LONG_I = Identity.hostname("west-" + "x" * 400 + ".example")
LONG_R = Identity.hostname("east-" + "y" * 400 + ".example")


def _run_fragmented_pair(size: int, drop=None):
    ci, cr = configs(fragment_size=size, id_i=LONG_I, id_r=LONG_R)
    pair = Pair(ci, cr)
    if drop is not None:
        pair.drop = drop
    pair.start()
    pair.run()
    return pair


def _skf(datagrams):
    return [d for d in datagrams if (d[4:] if d[:4] == bytes(4) else d)[16] == PayloadType.SKF]


def test_pair_negotiates_and_fragments_ike_auth():
    pair = _run_fragmented_pair(576)
    assert pair.i.established and pair.r.established
    assert of(pair.events_i, ChildSAEstablished) and of(pair.events_r, ChildSAEstablished)
    init = decode_message(pair.sent_i[0])
    assert init.notify(Notify.IKEV2_FRAGMENTATION_SUPPORTED) is not None
    assert decode_message(pair.sent_r[0]).notify(Notify.IKEV2_FRAGMENTATION_SUPPORTED)
    assert len(_skf(pair.sent_i)) >= 2 and len(_skf(pair.sent_r)) >= 2
    assert all(len(d) + 28 <= 576 for d in pair.sent_i + pair.sent_r)


def test_no_fragments_unless_both_offer():
    ci, _ = configs(fragment_size=576, id_i=LONG_I, id_r=LONG_R)
    _, cr = configs(fragment_size=576, fragmentation=False, id_i=LONG_I, id_r=LONG_R)
    pair = Pair(ci, cr)
    pair.start()
    pair.run()
    assert pair.i.established and not _skf(pair.sent_i) and not _skf(pair.sent_r)
    assert max(len(d) for d in pair.sent_i) + 28 > 576        # sent whole, unfragmented
    assert decode_message(pair.sent_r[0]).notify(Notify.IKEV2_FRAGMENTATION_SUPPORTED) is None


def test_lost_fragment_is_recovered_by_retransmitting_the_set():
    lost = []

    def drop(direction, data):
        if direction == "i->r" and _skf([data]) and not lost:
            lost.append(data)
            return True
        return False

    pair = _run_fragmented_pair(576, drop)
    assert lost and not pair.i.established
    sent_before = len(pair.sent_i)
    pair.advance(4.0)                       # first retransmission (RFC 7296 2.1)
    assert pair.i.established and pair.r.established
    resent = pair.sent_i[sent_before:]
    assert lost[0] in resent and len(_skf(resent)) == len(_skf(pair.sent_i[:sent_before]))
    (up,) = of(pair.events_r, IKESAEstablished)
    assert up.remote_id


def test_max_fragments_is_enforced_on_send():
    seal, _ = _protectors()["cbc"]
    with pytest.raises(ValueError, match="fragments"):
        fragment_message(_message(70000 // 2), seal, 100)
    assert MAX_FRAGMENTS == 64


def test_retransmitted_fragmented_request_gets_the_cached_response_once():
    """RFC 7383 2.6.2: only fragment 1 of a retransmitted request triggers the cached
    (fragmented) response again, not every fragment of it."""
    dropped = []

    def drop(direction, data):
        if direction == "r->i" and _skf([data]) and len(dropped) < 64:
            dropped.append(data)
            return True
        return False

    pair = _run_fragmented_pair(576, drop)
    response = list(dropped)
    assert len(response) >= 2 and pair.r.established and not pair.i.established
    before = len(pair.sent_r)
    pair.drop = lambda direction, data: False
    pair.advance(4.0)
    assert pair.i.established
    resent = pair.sent_r[before:]
    assert sorted(resent) == sorted(response)       # the same bytes, each once
