"""The IKEv2 message codec (RFC 7296 3): round trips, strictness, the SK envelope, fuzzing.

Property: whatever the bytes, decode_message() returns a Message or raises ParseError;
open_message() additionally only raises IntegrityError. Mutations start from real
messages (every payload type, built here) so the fuzzer reaches deep into the parser.
"""
from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ike.constants import (AuthMethod, Encr, Exchange, Flag, IDType, Integ, Notify,
                           PayloadType, Protocol, TransformType)
from ike.crypto import AeadProtector, CbcHmacProtector, ike_encr_spec
from ike.errors import IntegrityError, ParseError
from ike.messages import Message, decode_chain, decode_message, encode_message, open_message
from ike.payloads import (AuthPayload, CertPayload, CertReqPayload, CPPayload, DeletePayload,
                          IDiPayload, IDrPayload,
                          KEPayload, NoncePayload, NotifyPayload, OpaquePayload, Proposal,
                          SAPayload, TrafficSelector, Transform, TSiPayload, TSrPayload,
                          VendorPayload)

SPI_I, SPI_R = bytes.fromhex("0102030405060708"), bytes.fromhex("1112131415161718")
TS4 = TrafficSelector(ipaddress.ip_address("10.0.0.0"), ipaddress.ip_address("10.0.255.255"),
                      6, 80, 443)
TS6 = TrafficSelector.from_network("2001:db8::/32")


def every_payload() -> list:
    proposal = Proposal(1, Protocol.IKE, b"", (
        Transform(TransformType.ENCR, Encr.AES_CBC, 256), Transform(TransformType.PRF, 5),
        Transform(TransformType.INTEG, Integ.HMAC_SHA2_256_128), Transform(TransformType.DH, 14)))
    esp = Proposal(2, Protocol.ESP, b"\xca\xfe\xba\xbe", (
        Transform(TransformType.ENCR, Encr.AES_GCM_16, 128), Transform(TransformType.ESN, 0)))
    return [SAPayload((proposal, esp)), KEPayload(14, bytes(range(256))),
            NoncePayload(b"n" * 32), IDiPayload(IDType.FQDN, b"gw.example.org"),
            IDrPayload(IDType.IPV4_ADDR, b"\xc0\x00\x02\x02"),
            AuthPayload(AuthMethod.SHARED_KEY_MIC, b"a" * 32),
            NotifyPayload(Notify.NAT_DETECTION_SOURCE_IP, b"h" * 20),
            NotifyPayload(Notify.REKEY_SA, b"", Protocol.ESP, b"\x01\x02\x03\x04"),
            DeletePayload(Protocol.ESP, (b"\x01\x02\x03\x04", b"\x05\x06\x07\x08")),
            DeletePayload(Protocol.IKE), VendorPayload(b"pyspu"),
            TSiPayload((TS4, TS6)), TSrPayload((TS6,)),
            CPPayload(1, ((1, b""), (3, b"\x08\x08\x08\x08"))),
            CertReqPayload(4, bytes(20)), CertPayload(4, b"0\x82der"),
            OpaquePayload(PayloadType.EAP, b"\x01\x02\x00\x04")]


def sample(payloads=None, exchange=Exchange.IKE_SA_INIT, flags=Flag.INITIATOR) -> Message:
    return Message(SPI_I, SPI_R, exchange, 7, flags, every_payload() if payloads is None
                   else payloads)


def test_round_trip_every_payload():
    data = encode_message(sample())
    msg = decode_message(data)
    assert (msg.spi_i, msg.spi_r, msg.exchange, msg.message_id, msg.flags) == \
        (SPI_I, SPI_R, Exchange.IKE_SA_INIT, 7, Flag.INITIATOR)
    assert msg.payloads == every_payload()
    assert encode_message(msg) == data


def test_header_layout():
    """RFC 7296 3.1: SPIs, Next Payload, version 2.0, exchange, flags, ID, length."""
    data = encode_message(sample([NoncePayload(b"x" * 16)]))
    assert data[:16] == SPI_I + SPI_R
    assert data[16] == PayloadType.NONCE and data[17] == 0x20 and data[18] == 34
    assert data[19] == Flag.INITIATOR and data[20:24] == b"\0\0\0\x07"
    assert struct.unpack("!I", data[24:28])[0] == len(data) == 28 + 4 + 16
    assert data[28:32] == b"\x00\x00\x00\x14"     # generic header: last payload, length 20


def test_sa_payload_wire_format():
    """3.3: proposal and transform substructures with Last/More 0/2 and 0/3, Key Length
    as a TV attribute (type 14 | 0x8000)."""
    body = SAPayload((Proposal(1, Protocol.IKE, b"", (
        Transform(TransformType.ENCR, Encr.AES_CBC, 128),
        Transform(TransformType.DH, 19))),)).encode_body()
    assert body == bytes.fromhex(
        "0000001c" "01010002"
        "0300000c" "0100000c" "800e0080"
        "00000008" "04000013")


@pytest.mark.parametrize("mutate,why", [
    (lambda d: d[:27], "shorter than the header"),
    (lambda d: d[:17] + b"\x10" + d[18:], "IKEv1 major version"),
    (lambda d: d[:24] + struct.pack("!I", len(d) + 1) + d[28:], "length field too large"),
    (lambda d: bytes(8) + d[8:], "zero SPIi"),
    (lambda d: d + b"\0", "trailing byte"),
    (lambda d: d[:30] + b"\x00\x03" + d[32:], "payload length below 4"),
    (lambda d: d[:30] + b"\xff\xff" + d[32:], "payload length beyond the message"),
])
def test_malformed_rejected(mutate, why):
    data = encode_message(sample([NoncePayload(b"x" * 16), VendorPayload(b"v")]))
    with pytest.raises(ParseError):
        decode_message(mutate(data))


def test_version_error_carries_its_notify():
    data = bytearray(encode_message(sample([NoncePayload(b"x" * 16)])))
    data[17] = 0x30
    with pytest.raises(ParseError) as err:
        decode_message(bytes(data))
    assert err.value.notify == Notify.INVALID_MAJOR_VERSION


@pytest.mark.parametrize("body,payload_cls", [
    (b"\x00\x0e\x00\x00", KEPayload),                     # KE without data
    (b"n" * 15, NoncePayload),                            # nonce too short (3.9)
    (b"n" * 257, NoncePayload),                           # nonce too long
    (b"\x01\x00\x00\x00\x01\x02\x03", IDiPayload),        # IPv4 ID of 3 bytes
    (b"\x03\x04\x00\x02" + bytes(4), DeletePayload),      # ESP delete: 2 SPIs said, 1 sent
    (b"\x03\x08\x00\x01" + bytes(8), DeletePayload),      # ESP SPIs are 4 bytes
    (b"\x01\x00\x00\x01", DeletePayload),                 # IKE delete with a count
    (b"\x00\x00\x00\x00", TSiPayload),                    # no selectors
    (b"\x01\x00\x00\x00\x07\x00\x00\x10" + bytes(11), TSiPayload),   # truncated selector
    (b"\x01\x00\x00\x00\x09\x00\x00\x10" + bytes(12), TSiPayload),   # unknown TS type 9
    (b"\x01\x00\x00\x00\x07\x00\x00\x28" + bytes(32), TSiPayload),   # IPv4 TS of 40 bytes
    (b"\x01\x00\x00\x00\x07\x00\x00\x10" + bytes(20), TSiPayload),   # bytes after the last
    (b"\x01\x00\x00", CPPayload),                          # CP header truncated
    (b"\x01\x00\x00\x00\x00\x01\x00\x05\x00", CPPayload),  # attribute overruns
])
def test_payload_strictness(body, payload_cls):
    with pytest.raises(ParseError):
        payload_cls.decode_body(body)


def _esp_sa_body(num: int = 1) -> bytes:
    return SAPayload((Proposal(num, Protocol.ESP, b"\1\2\3\4", (
        Transform(TransformType.ENCR, Encr.AES_CBC, 128),
        Transform(TransformType.INTEG, 2))),)).encode_body()


def test_sa_payload_structure_checks():
    good = _esp_sa_body()
    assert SAPayload.decode_body(good).proposals[0].spi == b"\1\2\3\4"
    assert SAPayload.decode_body(_esp_sa_body(7)).proposals[0].num == 7   # an answer
    for broken in (good[:-1],                                      # truncated
                   good[:7] + b"\x05" + good[8:],                  # says 5 transforms
                   good[:6] + b"\x08" + good[7:],                  # ESP SPI size 8
                   b"\x02" + good[1:],                             # "more" but nothing more
                   good[:4] + b"\x00" + good[5:],                  # proposal number 0
                   good[:5] + b"\x09" + good[6:]):                 # protocol 9
        with pytest.raises(ParseError):
            SAPayload.decode_body(broken)
    two = SAPayload((Proposal(1, Protocol.IKE, b"", (Transform(1, 12, 128),)),
                     Proposal(3, Protocol.IKE, b"", (Transform(1, 12, 256),)))).encode_body()
    with pytest.raises(ParseError):
        SAPayload.decode_body(two)                     # numbering must run 1, 2 (3.3.1)


def test_unknown_transform_attribute_is_kept_visible():
    raw = struct.pack("!BBHBBH", 0, 0, 16, 1, 0, 12) + struct.pack("!HH", 0x800E, 128) + \
        struct.pack("!HH", 0x8010, 1)
    t = Transform.decode(raw)
    assert t.key_length == 128 and t.unknown_attrs == (0x10,)


def test_unknown_payloads():
    """2.5: unknown non-critical payloads are skipped; critical ones refuse the message."""
    data = bytearray(encode_message(sample([NoncePayload(b"x" * 16)])))
    data[16] = 200
    data[28:28] = bytes([PayloadType.NONCE, 0, 0, 6, 0xAA, 0xBB])
    data[24:28] = struct.pack("!I", len(data))
    assert decode_message(bytes(data)).payloads == [NoncePayload(b"x" * 16)]
    data[29] = 0x80
    with pytest.raises(ParseError) as err:
        decode_message(bytes(data))
    assert err.value.notify == Notify.UNSUPPORTED_CRITICAL_PAYLOAD and err.value.data == b"\xc8"


def _protectors():
    cbc = ike_encr_spec(Encr.AES_CBC, 256)
    gcm = ike_encr_spec(Encr.AES_GCM_16, 128)
    return [CbcHmacProtector(cbc, b"k" * 32, Integ.HMAC_SHA2_256_128, b"a" * 32),
            AeadProtector(gcm, b"k" * 20)]


@pytest.mark.parametrize("protector", _protectors(), ids=["cbc-hmac", "gcm"])
def test_sk_envelope(protector):
    msg = sample([IDiPayload(IDType.FQDN, b"a.example"), AuthPayload(2, b"x" * 20)],
                 Exchange.IKE_AUTH)
    data = encode_message(msg, protector)
    outer = decode_message(data)
    assert [type(p).__name__ for p in outer.payloads] == ["EncryptedPayload"]
    assert outer.sk.first_inner == PayloadType.IDi and outer.first_payload == PayloadType.SK
    inner = open_message(outer, protector)
    assert inner.payloads == msg.payloads
    # any change to header, SK header, IV, ciphertext or ICV is caught
    for pos in (3, 19, 28, 29, 33, len(data) // 2, len(data) - 1):
        bad = bytearray(data)
        bad[pos] ^= 0x01
        try:
            tampered = decode_message(bytes(bad))
        except ParseError:
            continue
        with pytest.raises((IntegrityError, ParseError)):
            open_message(tampered, protector)


def test_sk_must_be_last():
    msg = decode_message(encode_message(sample([NoncePayload(b"x" * 16)], Exchange.IKE_AUTH),
                                        _protectors()[0]))
    data = bytearray(msg.raw)
    # chain the SK payload's header to a following vendor payload
    data[28] = PayloadType.VENDOR       # SK's next field is its first inner type: fine
    data = bytes(data) + b"\x00\x00\x00\x04"
    with pytest.raises(ParseError):
        decode_message(data[:24] + struct.pack("!I", len(data)) + data[28:])


def test_decode_chain_bounds():
    with pytest.raises(ParseError):
        decode_chain(PayloadType.NONCE, b"\x00\x00")
    assert decode_chain(PayloadType.NONE, b"") == []


# --- fuzzing ---------------------------------------------------------------------------------

VALID = [encode_message(sample()),
         encode_message(sample([KEPayload(19, bytes(64)), NoncePayload(bytes(32))])),
         encode_message(sample([DeletePayload(Protocol.IKE)], Exchange.INFORMATIONAL,
                               Flag.RESPONSE)),
         encode_message(sample([TSiPayload((TS4,)), TSrPayload((TS6,))], Exchange.IKE_AUTH),
                        _protectors()[0])]


def _decode_only_parse_error(data: bytes) -> None:
    try:
        msg = decode_message(data)
    except ParseError:
        return
    if msg.sk is not None:
        for protector in _protectors():
            try:
                open_message(msg, protector)
            except (ParseError, IntegrityError):
                pass


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_fuzz_random_bytes(data):
    _decode_only_parse_error(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_fuzz_random_bytes_with_valid_header(tail):
    base = VALID[0]
    data = base[:24] + struct.pack("!I", 28 + len(tail)) + tail
    _decode_only_parse_error(data)


@st.composite
def mutated(draw):
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "set", "cut", "insert", "fixlen"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[pos:pos + draw(st.integers(1, 40))]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "fixlen" and len(data) >= 28:
            data[24:28] = struct.pack("!I", len(data))
    return bytes(data)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_fuzz_mutations_of_valid_messages(data):
    _decode_only_parse_error(data)
