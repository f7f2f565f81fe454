"""IKEv2 messages (RFC 7296 3.1-3.2, 3.14): the header, the payload chain, the SK envelope.

    decode_message(data)            -> Message (an SK payload stays sealed as EncryptedPayload)
    open_message(msg, protector)    -> Message with the SK contents as its payloads
    encode_message(msg)             -> bytes, unprotected (IKE_SA_INIT, stateless errors)
    encode_message(msg, protector)  -> bytes with every payload inside one SK payload

The decoders raise only ParseError (open_message also IntegrityError); they never trust a
length field. Bytes on the wire carry no RFC 3948 non-ESP marker: that is framing, see
split_marker().
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Optional, Protocol as TypingProtocol, TypeVar

from .constants import (GENERIC_HEADER_LEN, HEADER_LEN, IKEV2_VERSION, NON_ESP_MARKER, Flag,
                        Notify, PayloadType)
from .errors import ParseError
from .payloads import (DECODERS, OPAQUE_TYPES, EncryptedFragmentPayload, EncryptedPayload,
                       NotifyPayload, OpaquePayload, ReassembledPayload)

T = TypeVar("T")
_HEADER = struct.Struct("!8s8sBBBBII")
_MAX_MESSAGE = 0xFFFF   # a UDP datagram bounds any message we build or accept


class SKProtector(TypingProtocol):
    """One direction's SK payload keys (ike/crypto.py implements it). `prefix` is every
    byte of the message before the IV: header, any payloads before SK, SK's header."""

    def sealed_len(self, plain_len: int) -> int: ...
    def seal(self, prefix: bytes, plaintext: bytes) -> bytes: ...
    def open(self, prefix: bytes, body: bytes) -> bytes: ...


@dataclass
class Message:
    spi_i: bytes
    spi_r: bytes
    exchange: int
    message_id: int
    flags: int
    payloads: list = field(default_factory=list)
    raw: bytes = field(default=b"", repr=False)   # exactly the bytes sent or received
    first_payload: int = PayloadType.NONE          # as received (the SK rule needs it)
    source: Optional[tuple] = None                 # (host, port) it came from, if received

    @property
    def is_response(self) -> bool:
        return bool(self.flags & Flag.RESPONSE)

    @property
    def from_initiator(self) -> bool:
        """The I flag: sent by the original initiator of the IKE SA (3.1)."""
        return bool(self.flags & Flag.INITIATOR)

    def get(self, cls: type[T]) -> Optional[T]:
        for p in self.payloads:
            if isinstance(p, cls):
                return p
        return None

    def all(self, cls: type[T]) -> list[T]:
        return [p for p in self.payloads if isinstance(p, cls)]

    def notify(self, ntype: int) -> Optional[NotifyPayload]:
        for p in self.payloads:
            if isinstance(p, NotifyPayload) and p.notify_type == ntype:
                return p
        return None

    def error_notifies(self) -> list[NotifyPayload]:
        return [p for p in self.payloads if isinstance(p, NotifyPayload) and p.is_error]

    @property
    def sk(self) -> Optional[EncryptedPayload]:
        last = self.payloads[-1] if self.payloads else None
        return last if isinstance(last, EncryptedPayload) else None


# --- framing -------------------------------------------------------------------------------

def split_marker(data: bytes) -> tuple[bytes, bool]:
    """RFC 3948 2.2: (IKE bytes, True) for a datagram with the non-ESP marker (port 4500),
    (data, False) otherwise. An IKE header never starts with four zero bytes (SPIi != 0)."""
    if data[:4] == NON_ESP_MARKER:
        return data[4:], True
    return data, False


# --- decoding ------------------------------------------------------------------------------

def decode_header(data: bytes) -> tuple[bytes, bytes, int, int, int, int, int]:
    """(spi_i, spi_r, next_payload, exchange, flags, message_id, length) of 3.1."""
    if len(data) < HEADER_LEN:
        raise ParseError(f"message of {len(data)} bytes is shorter than the IKE header")
    spi_i, spi_r, nxt, version, exchange, flags, msgid, length = _HEADER.unpack_from(data)
    if version >> 4 != 2:
        raise ParseError(f"IKE major version {version >> 4}", Notify.INVALID_MAJOR_VERSION)
    if length != len(data):
        raise ParseError(f"header length {length} but datagram holds {len(data)} bytes")
    if spi_i == bytes(8):
        raise ParseError("initiator SPI is zero")
    return spi_i, spi_r, nxt, exchange, flags, msgid, length


def decode_chain(first: int, data: bytes, base: int = 0,
                 allow_sk: bool = True) -> list:
    """The generic payload chain of 3.2 starting with type `first`. `base` is the offset of
    `data` inside the message (recorded for the SK payload's associated data)."""
    payloads: list = []
    nxt, pos = first, 0
    while nxt != PayloadType.NONE:
        if len(data) - pos < GENERIC_HEADER_LEN:
            raise ParseError(f"payload type {nxt} truncated")
        following, cflags, length = struct.unpack_from("!BBH", data, pos)
        if length < GENERIC_HEADER_LEN or pos + length > len(data):
            raise ParseError(f"payload type {nxt}: length {length} invalid")
        body = bytes(data[pos + GENERIC_HEADER_LEN:pos + length])
        if nxt in (PayloadType.SK, PayloadType.SKF):
            # 3.14: the Encrypted payload is the last one; its Next Payload field names the
            # first payload inside it. RFC 7383 2.5: so is an Encrypted Fragment payload.
            if not allow_sk:
                raise ParseError("SK payload inside an SK payload")
            if pos + length != len(data):
                raise ParseError("SK payload is not the last payload")
            if nxt == PayloadType.SK:
                payloads.append(EncryptedPayload(following, body, base + pos))
            else:
                payloads.append(_fragment(following, body, base + pos))
            return payloads
        decoder = DECODERS.get(nxt)
        if decoder is not None:
            payloads.append(decoder(body))
        elif nxt in OPAQUE_TYPES:
            payloads.append(OpaquePayload(nxt, body))
        elif cflags & 0x80:
            # 2.5: an unknown payload with the Critical bit set rejects the whole message.
            raise ParseError(f"unsupported critical payload {nxt}",
                             Notify.UNSUPPORTED_CRITICAL_PAYLOAD, bytes([nxt & 0xFF]))
        nxt = following
        pos += length
    if pos != len(data):
        raise ParseError(f"{len(data) - pos} bytes after the last payload")
    return payloads


def _fragment(following: int, body: bytes, offset: int) -> EncryptedFragmentPayload:
    """RFC 7383 2.5: Fragment Number (1..Total) | Total Fragments | IV | ... | ICV."""
    if len(body) < 4:
        raise ParseError("SKF payload shorter than its fragment fields")
    number, total = struct.unpack_from("!HH", body)
    if not 1 <= number <= total:
        raise ParseError(f"SKF fragment {number} of {total}")
    return EncryptedFragmentPayload(following, body[4:], offset, number, total)


def decode_message(data: bytes) -> Message:
    """Parse one IKEv2 message (without non-ESP marker). Raises only ParseError."""
    data = bytes(data)
    spi_i, spi_r, nxt, exchange, flags, msgid, _ = decode_header(data)
    payloads = decode_chain(nxt, data[HEADER_LEN:], HEADER_LEN)
    return Message(spi_i, spi_r, exchange, msgid, flags, payloads, data, nxt)


def open_message(msg: Message, protector: SKProtector) -> Message:
    """Decrypt and verify the SK payload (3.14) and parse its contents. Payloads before SK
    are not authenticated and are discarded. Raises IntegrityError or ParseError."""
    sk = msg.sk
    if sk is None:
        raise ParseError("message has no SK payload")
    if isinstance(sk, ReassembledPayload):
        plain = sk.plaintext          # authenticated fragment by fragment (RFC 7383 2.6)
    elif isinstance(sk, EncryptedFragmentPayload):
        raise ParseError("a single SKF fragment is opened by ike/fragments.py")
    else:
        plain = protector.open(msg.raw[:sk.offset + sk.header_len], sk.body)
    inner = decode_chain(sk.first_inner, plain, allow_sk=False)
    return Message(msg.spi_i, msg.spi_r, msg.exchange, msg.message_id, msg.flags, inner,
                   msg.raw, msg.first_payload, msg.source)


# --- encoding ------------------------------------------------------------------------------

def encode_chain(payloads: list) -> tuple[int, bytes]:
    """(type of the first payload, bytes of the chain)."""
    out = []
    for i, p in enumerate(payloads):
        body = p.encode_body()
        nxt = payloads[i + 1].ptype if i + 1 < len(payloads) else PayloadType.NONE
        out.append(struct.pack("!BBH", nxt, 0, GENERIC_HEADER_LEN + len(body)) + body)
    return (payloads[0].ptype if payloads else PayloadType.NONE), b"".join(out)


def _header(msg: Message, nxt: int, length: int) -> bytes:
    return _HEADER.pack(msg.spi_i, msg.spi_r, nxt, IKEV2_VERSION, msg.exchange, msg.flags,
                        msg.message_id, length)


def encode_message(msg: Message, protector: Optional[SKProtector] = None) -> bytes:
    """The wire form of msg; with a protector every payload goes inside one SK payload."""
    first, chain = encode_chain(list(msg.payloads))
    if protector is None:
        data = _header(msg, first, HEADER_LEN + len(chain)) + chain
    else:
        sealed_len = protector.sealed_len(len(chain))
        total = HEADER_LEN + GENERIC_HEADER_LEN + sealed_len
        prefix = _header(msg, PayloadType.SK, total) + \
            struct.pack("!BBH", first, 0, GENERIC_HEADER_LEN + sealed_len)
        data = prefix + protector.seal(prefix, chain)
    if len(data) > _MAX_MESSAGE:
        raise ValueError(f"IKE message of {len(data)} bytes does not fit a datagram")
    msg.raw = data
    return data
