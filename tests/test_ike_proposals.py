"""Proposal names and selection (RFC 7296 2.7, 3.3.6) and traffic selector narrowing (2.9)."""
from __future__ import annotations

import ipaddress

import pytest

from ike.constants import ESN, DHGroup, Encr, Integ, Prf, Protocol, TransformType as T
from ike.payloads import Proposal, TrafficSelector, Transform
from ike.proposals import (accept_selected, describe, esp_algorithms, ike_algorithms,
                           numbered, parse_proposal, parse_proposals, select_proposal)
from ike.ts import accept_narrowed, intersect, narrow, narrow_pair, to_selector

IKE, ESP = Protocol.IKE, Protocol.ESP


def ts(net, proto=0, lo=0, hi=65535):
    return TrafficSelector.from_network(net, proto, lo, hi)


@pytest.mark.parametrize("name,transforms", [
    ("aes128-sha1-modp2048", [(T.ENCR, Encr.AES_CBC, 128), (T.PRF, Prf.HMAC_SHA1, None),
                              (T.INTEG, Integ.HMAC_SHA1_96, None), (T.DH, 14, None)]),
    ("aes256-sha256-ecp256", [(T.ENCR, Encr.AES_CBC, 256), (T.PRF, Prf.HMAC_SHA2_256, None),
                              (T.INTEG, Integ.HMAC_SHA2_256_128, None), (T.DH, 19, None)]),
    ("aes256gcm16-prfsha384-x25519", [(T.ENCR, Encr.AES_GCM_16, 256),
                                      (T.PRF, Prf.HMAC_SHA2_384, None), (T.DH, 31, None)]),
    ("aes128gcm16-sha256-ecp384", [(T.ENCR, Encr.AES_GCM_16, 128),
                                   (T.PRF, Prf.HMAC_SHA2_256, None), (T.DH, 20, None)]),
])
def test_ike_proposal_names(name, transforms):
    p = parse_proposal(name, IKE)
    assert [(t.type, t.id, t.key_length) for t in p.transforms] == transforms
    ike_algorithms(p)


@pytest.mark.parametrize("name,engine", [
    ("aes128-sha1", ("cbc(aes)", 16, "hmac(sha1)", 20, None, 96, False)),
    ("aes256gcm16", (None, 36, None, 0, "rfc4106(gcm(aes))", 128, False)),
    ("aes128gcm8", (None, 20, None, 0, "rfc4106(gcm(aes))", 64, False)),
    ("aes128-sha256", ("cbc(aes)", 16, "hmac(sha256)", 32, None, 128, False)),
    ("aes192ctr-sha512-esn", ("rfc3686(ctr(aes))", 28, "hmac(sha512)", 64, None, 256, True)),
    ("3des-md5", ("cbc(des3_ede)", 24, "hmac(md5)", 16, None, 96, False)),
    ("chacha20poly1305", (None, 36, None, 0, "rfc7539esp(chacha20,poly1305)", 128, False)),
    ("aes256gmac", (None, 36, None, 0, "rfc4543(gcm(aes))", 128, False)),
    ("null-sha384", ("ecb(cipher_null)", 0, "hmac(sha384)", 48, None, 192, False)),
])
def test_esp_proposal_names_map_to_engine(name, engine):
    a = esp_algorithms(parse_proposal(name, ESP))
    assert (a.enc, a.enc_key_len, a.auth, a.auth_key_len, a.aead, a.icv_bits, a.esn) == engine


@pytest.mark.parametrize("name,protocol", [
    ("aes128-sha1", IKE),                   # no DH group
    ("aes128-modp2048", IKE),               # no integrity / PRF
    ("aes128-sha1-modp9999", IKE),          # unknown keyword
    ("aes128gcm16-sha1", ESP),              # AEAD with integrity
    ("aes128", ESP),                        # no integrity
    ("aes128-sha1-esn-modp2048", IKE),      # ESN in IKE
    ("aes128-aes128gcm16-sha1", ESP),       # AEAD mixed with CBC
    ("aes128ctr-sha1-modp2048", IKE),       # AES-CTR is not an SK cipher here
])
def test_bad_proposal_names(name, protocol):
    with pytest.raises(ValueError):
        parse_proposal(name, protocol)


def test_selection_prefers_our_order_and_mirrors_numbers():
    ours = parse_proposals(["aes256-sha256-ecp256", "aes128-sha1-modp2048"], IKE)
    theirs = numbered(parse_proposals(["aes128-sha1-modp2048", "aes256-sha256-ecp256"], IKE))
    chosen = select_proposal(ours, theirs)
    assert chosen.num == 2 and "ECP_256" in describe(chosen)
    assert accept_selected(ours, chosen)


def test_selection_picks_one_transform_per_type_from_alternatives():
    ours = parse_proposals(["aes128-aes256-sha256-sha1-modp2048-ecp256"], IKE)
    theirs = numbered(parse_proposals(["aes256-sha1-ecp256"], IKE))
    chosen = select_proposal(ours, theirs)
    kinds = [t.type for t in chosen.transforms]
    assert sorted(kinds) == sorted(set(kinds))
    assert describe(chosen) == "AES_CBC_256/PRF_HMAC_SHA1/HMAC_SHA1_96/ECP_256"


def test_selection_prefers_the_ke_group():
    ours = parse_proposals(["aes128-sha256-modp2048-ecp256"], IKE)
    theirs = numbered(parse_proposals(["aes128-sha256-ecp256-modp2048"], IKE))
    assert "MODP_2048" in describe(select_proposal(ours, theirs))
    assert "ECP_256" in describe(select_proposal(ours, theirs, prefer_dh=19))


def test_selection_respects_key_length_and_unknown_attributes():
    ours = parse_proposals(["aes256-sha256-modp2048"], IKE)
    assert select_proposal(ours, numbered(parse_proposals(["aes128-sha256-modp2048"],
                                                          IKE))) is None
    p = numbered(ours)[0]
    odd = Proposal(1, IKE, b"", (Transform(T.ENCR, Encr.AES_CBC, 256, (99,)),)
                   + p.transforms[1:])
    assert select_proposal(ours, [odd]) is None     # 3.3.6: unknown attribute, not selectable


def test_esp_selection_ignores_dh_and_defaults_esn():
    ours = parse_proposals(["aes128-sha1"], ESP)
    theirs = [Proposal(1, ESP, b"\1\2\3\4", (Transform(T.ENCR, Encr.AES_CBC, 128),
                                             Transform(T.INTEG, Integ.HMAC_SHA1_96),
                                             Transform(T.DH, 14)))]
    chosen = select_proposal(ours, theirs, drop_dh=True)
    assert chosen is not None and chosen.spi == b"\1\2\3\4"
    assert all(t.type != T.ESN for t in chosen.transforms)   # none offered, none answered
    assert not esp_algorithms(chosen).esn
    esn_only = parse_proposals(["aes128-sha1-esn"], ESP)
    assert select_proposal(esn_only, theirs, drop_dh=True) is None


def test_accept_selected_rejects_what_we_did_not_offer():
    ours = parse_proposals(["aes128-sha1-modp2048"], IKE)
    other = numbered(parse_proposals(["aes256-sha1-modp2048"], IKE))[0]
    assert not accept_selected(ours, other)
    two_encr = Proposal(1, IKE, b"", numbered(ours)[0].transforms
                        + (Transform(T.ENCR, Encr.AES_CBC, 256),))
    assert not accept_selected(ours, two_encr)              # more than one per type


def test_esn_transform_values():
    p = parse_proposal("aes128-sha1-esn-noesn", ESP)
    assert [t.id for t in p.transforms if t.type == T.ESN] == [ESN.YES, ESN.NO]
    assert DHGroup.CURVE25519 == 31


# --- traffic selectors ------------------------------------------------------------------------

def test_intersection():
    a, b = ts("10.0.0.0/8"), ts("10.1.0.0/16", 6, 80, 80)
    assert intersect(a, b) == b
    assert intersect(ts("10.0.0.0/8", 17), ts("10.0.0.0/8", 6)) is None
    assert intersect(ts("10.0.0.0/8"), ts("2001:db8::/32")) is None
    assert intersect(ts("10.0.0.0/24", 6, 1, 100), ts("10.0.0.0/8", 6, 50, 200)) == \
        ts("10.0.0.0/24", 6, 50, 100)


def test_narrowing_to_what_the_engine_can_express():
    # an address range that is not one prefix narrows to its first CIDR block
    odd = TrafficSelector(ipaddress.ip_address("10.0.0.0"), ipaddress.ip_address("10.0.2.255"))
    assert narrow([odd], [ts("0.0.0.0/0")]) == ts("10.0.0.0/23")
    # a TCP port range narrows to its first port; "any protocol" with ports cannot be used
    assert narrow([ts("10.0.0.0/8", 6, 1000, 2000)], [ts("0.0.0.0/0")]) == \
        ts("10.0.0.0/8", 6, 1000, 1000)
    assert narrow([ts("10.0.0.0/8", 0, 1000, 2000)], [ts("0.0.0.0/0")]) is None


def test_narrow_pair_and_initiator_check():
    pair = narrow_pair([ts("10.0.0.0/8")], [ts("0.0.0.0/0")], [ts("10.1.0.0/16")],
                       [ts("10.2.0.0/16")])
    assert pair == (ts("10.1.0.0/16"), ts("10.2.0.0/16"))
    assert accept_narrowed([ts("10.0.0.0/8")], [ts("10.1.0.0/16")]) == ts("10.1.0.0/16")
    assert accept_narrowed([ts("10.1.0.0/16")], [ts("10.0.0.0/8")]) is None   # wider: no
    assert accept_narrowed([ts("10.0.0.0/8")], [ts("10.1.0.0/16"), ts("10.2.0.0/16")]) is None
    assert narrow_pair([ts("10.0.0.0/8", 6)], [ts("10.0.0.0/8", 17)], [ts("0.0.0.0/0")],
                       [ts("0.0.0.0/0")]) is None               # TCP one way, UDP the other


def test_to_selector():
    sel = to_selector(ts("10.1.0.0/16", 6, 0, 65535), ts("10.2.0.0/24", 6, 443, 443))
    assert (str(sel.src), str(sel.dst), sel.proto, sel.sport, sel.dport) == \
        ("10.1.0.0/16", "10.2.0.0/24", 6, None, 443)
    assert str(ts("10.1.0.0/16", 6, 443, 443)) == "10.1.0.0/16[6/443-443]"
