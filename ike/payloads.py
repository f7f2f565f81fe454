"""IKEv2 payloads (RFC 7296 section 3): one dataclass per payload with its body codec.

Each class encodes and decodes the payload *body*, i.e. what follows the 4-byte generic
payload header (RFC 7296 3.2). The chain of generic headers, the Critical bit and unknown
payloads are the business of ike/messages.py. Decoders are strict about lengths, counts
and structure and raise only ParseError; RESERVED fields are sent as zero and ignored on
receipt, as 3.2 asks.
"""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from typing import ClassVar, Optional, Union

from .constants import (ATTR_FORMAT_TV, ATTR_KEY_LENGTH, MAX_NONCE, MIN_NONCE, IDType,
                        PayloadType, Protocol, TSType)
from .errors import ParseError

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


def _need(data: bytes, n: int, what: str) -> None:
    if len(data) < n:
        raise ParseError(f"{what}: {len(data)} bytes, need at least {n}")


# --- SA payload (3.3) ----------------------------------------------------------------------

@dataclass(frozen=True)
class Transform:
    """RFC 7296 3.3.2. `key_length` is the Key Length attribute (3.3.5) in bits, if any.
    `unknown_attrs` lists attribute types other than Key Length: 3.3.6 says a transform
    with an attribute we do not understand must not be selected."""
    type: int
    id: int
    key_length: Optional[int] = None
    unknown_attrs: tuple[int, ...] = ()

    def encode(self, last: bool) -> bytes:
        attrs = b""
        if self.key_length is not None:
            attrs = struct.pack("!HH", ATTR_FORMAT_TV | ATTR_KEY_LENGTH, self.key_length)
        return struct.pack("!BBHBBH", 0 if last else 3, 0, 8 + len(attrs), self.type, 0,
                           self.id) + attrs

    @classmethod
    def decode(cls, data: bytes) -> "Transform":
        _need(data, 8, "transform")
        ttype, tid = data[4], struct.unpack_from("!H", data, 6)[0]
        key_length: Optional[int] = None
        unknown: list[int] = []
        pos = 8
        while pos < len(data):
            _need(data[pos:], 4, "transform attribute")
            atype, value = struct.unpack_from("!HH", data, pos)
            if atype & ATTR_FORMAT_TV:
                atype &= 0x7FFF
                pos += 4
                if atype == ATTR_KEY_LENGTH:
                    if key_length is not None:
                        raise ParseError("Key Length attribute given twice")
                    key_length = value
                    continue
            else:
                if pos + 4 + value > len(data):
                    raise ParseError("transform attribute overruns its transform")
                pos += 4 + value
                if atype == ATTR_KEY_LENGTH:
                    raise ParseError("Key Length attribute must use the TV format")
            unknown.append(atype)
        return cls(ttype, tid, key_length, tuple(unknown))


@dataclass(frozen=True)
class Proposal:
    """RFC 7296 3.3.1. `spi` is empty for IKE in IKE_SA_INIT, 4 bytes for ESP/AH."""
    num: int
    protocol: int
    spi: bytes
    transforms: tuple[Transform, ...]

    def encode(self, last: bool) -> bytes:
        body = b"".join(t.encode(i == len(self.transforms) - 1)
                        for i, t in enumerate(self.transforms))
        head = struct.pack("!BBHBBBB", 0 if last else 2, 0, 8 + len(self.spi) + len(body),
                           self.num, self.protocol, len(self.spi), len(self.transforms))
        return head + self.spi + body

    @classmethod
    def decode(cls, data: bytes) -> "Proposal":
        _need(data, 8, "proposal")
        _, _, _, num, proto, spi_size, count = struct.unpack_from("!BBHBBBB", data)
        if proto not in (Protocol.IKE, Protocol.AH, Protocol.ESP):
            raise ParseError(f"proposal protocol {proto} unknown")
        if spi_size not in ((0, 8) if proto == Protocol.IKE else (4,)):
            raise ParseError(f"proposal SPI size {spi_size} invalid for protocol {proto}")
        if num == 0:
            raise ParseError("proposal number 0")
        _need(data, 8 + spi_size, "proposal SPI")
        spi = bytes(data[8:8 + spi_size])
        pos = 8 + spi_size
        transforms = []
        while pos < len(data):
            _need(data[pos:], 8, "transform")
            more, _, length = struct.unpack_from("!BBH", data, pos)
            if length < 8 or pos + length > len(data):
                raise ParseError("transform length invalid")
            if more not in (0, 3):
                raise ParseError(f"transform Last Substruc {more}")
            transforms.append(Transform.decode(data[pos:pos + length]))
            pos += length
            if (more == 0) != (pos == len(data)):
                raise ParseError("transform Last Substruc disagrees with the proposal length")
        if len(transforms) != count or count == 0:
            raise ParseError(f"proposal says {count} transforms, holds {len(transforms)}")
        return cls(num, proto, spi, tuple(transforms))


@dataclass(frozen=True)
class SAPayload:
    ptype: ClassVar[int] = PayloadType.SA
    proposals: tuple[Proposal, ...]

    def encode_body(self) -> bytes:
        return b"".join(p.encode(i == len(self.proposals) - 1)
                        for i, p in enumerate(self.proposals))

    @classmethod
    def decode_body(cls, data: bytes) -> "SAPayload":
        proposals = []
        pos = 0
        while pos < len(data):
            _need(data[pos:], 8, "proposal")
            more, _, length = struct.unpack_from("!BBH", data, pos)
            if length < 8 or pos + length > len(data):
                raise ParseError("proposal length invalid")
            if more not in (0, 2):
                raise ParseError(f"proposal Last Substruc {more}")
            proposals.append(Proposal.decode(data[pos:pos + length]))
            pos += length
            if (more == 0) != (pos == len(data)):
                raise ParseError("proposal Last Substruc disagrees with the SA length")
        if not proposals:
            raise ParseError("SA payload without proposals")
        # 3.3.1: the first proposal is number 1 and each next one is one more.
        if len(proposals) > 1 and [p.num for p in proposals] != list(
                range(1, len(proposals) + 1)):
            raise ParseError("proposal numbers must run 1, 2, 3, ...")
        return cls(tuple(proposals))


# --- KE, nonce, ID, AUTH, V (3.4-3.9, 3.12) ------------------------------------------------

@dataclass(frozen=True)
class KEPayload:
    ptype: ClassVar[int] = PayloadType.KE
    group: int
    data: bytes = field(repr=False)

    def encode_body(self) -> bytes:
        return struct.pack("!HH", self.group, 0) + self.data

    @classmethod
    def decode_body(cls, data: bytes) -> "KEPayload":
        _need(data, 4, "KE payload")
        (group,) = struct.unpack_from("!H", data)
        if len(data) == 4:
            raise ParseError("KE payload without key exchange data")
        return cls(group, bytes(data[4:]))


@dataclass(frozen=True)
class NoncePayload:
    ptype: ClassVar[int] = PayloadType.NONCE
    data: bytes = field(repr=False)

    def encode_body(self) -> bytes:
        return self.data

    @classmethod
    def decode_body(cls, data: bytes) -> "NoncePayload":
        if not MIN_NONCE <= len(data) <= MAX_NONCE:      # 3.9
            raise ParseError(f"nonce of {len(data)} bytes (16..256 allowed)")
        return cls(bytes(data))


@dataclass(frozen=True)
class IDPayload:
    """RFC 7296 3.5. `body()` is RestOfInitIDPayload / RestOfRespIDPayload of 2.15."""
    ptype: ClassVar[int] = PayloadType.IDi
    id_type: int
    data: bytes
    received: bytes = field(default=b"", compare=False, repr=False)   # body as received

    def encode_body(self) -> bytes:
        return struct.pack("!B3x", self.id_type) + self.data

    def auth_body(self) -> bytes:
        """The bytes AUTH covers (2.15): the body exactly as sent, RESERVED included."""
        return self.received or self.encode_body()

    @classmethod
    def decode_body(cls, data: bytes):
        _need(data, 5, "ID payload")
        id_type = data[0]
        value = bytes(data[4:])
        if id_type == IDType.IPV4_ADDR and len(value) != 4:
            raise ParseError("ID_IPV4_ADDR must be 4 bytes")
        if id_type == IDType.IPV6_ADDR and len(value) != 16:
            raise ParseError("ID_IPV6_ADDR must be 16 bytes")
        return cls(id_type, value, bytes(data))


@dataclass(frozen=True)
class IDiPayload(IDPayload):
    ptype: ClassVar[int] = PayloadType.IDi


@dataclass(frozen=True)
class IDrPayload(IDPayload):
    ptype: ClassVar[int] = PayloadType.IDr


@dataclass(frozen=True)
class AuthPayload:
    ptype: ClassVar[int] = PayloadType.AUTH
    method: int
    data: bytes = field(repr=False)

    def encode_body(self) -> bytes:
        return struct.pack("!B3x", self.method) + self.data

    @classmethod
    def decode_body(cls, data: bytes) -> "AuthPayload":
        _need(data, 5, "AUTH payload")
        return cls(data[0], bytes(data[4:]))


@dataclass(frozen=True)
class VendorPayload:
    ptype: ClassVar[int] = PayloadType.VENDOR
    data: bytes

    def encode_body(self) -> bytes:
        return self.data

    @classmethod
    def decode_body(cls, data: bytes) -> "VendorPayload":
        return cls(bytes(data))


# --- N and D (3.10, 3.11) ------------------------------------------------------------------

@dataclass(frozen=True)
class NotifyPayload:
    ptype: ClassVar[int] = PayloadType.NOTIFY
    notify_type: int
    data: bytes = b""
    protocol: int = Protocol.NONE
    spi: bytes = b""

    def encode_body(self) -> bytes:
        return struct.pack("!BBH", self.protocol, len(self.spi), self.notify_type) + \
            self.spi + self.data

    @classmethod
    def decode_body(cls, data: bytes) -> "NotifyPayload":
        _need(data, 4, "notify payload")
        proto, spi_size, ntype = struct.unpack_from("!BBH", data)
        _need(data, 4 + spi_size, "notify SPI")
        return cls(ntype, bytes(data[4 + spi_size:]), proto, bytes(data[4:4 + spi_size]))

    @property
    def is_error(self) -> bool:
        return self.notify_type < 16384


@dataclass(frozen=True)
class DeletePayload:
    """RFC 7296 3.11: IKE SA (no SPIs) or a list of ESP/AH SPIs (4 bytes each)."""
    ptype: ClassVar[int] = PayloadType.DELETE
    protocol: int
    spis: tuple[bytes, ...] = ()

    def encode_body(self) -> bytes:
        size = 0 if self.protocol == Protocol.IKE else 4
        return struct.pack("!BBH", self.protocol, size, len(self.spis)) + b"".join(self.spis)

    @classmethod
    def decode_body(cls, data: bytes) -> "DeletePayload":
        _need(data, 4, "delete payload")
        proto, size, count = struct.unpack_from("!BBH", data)
        if proto == Protocol.IKE:
            if size != 0 or count != 0 or len(data) != 4:
                raise ParseError("delete of an IKE SA carries no SPIs")
            return cls(proto)
        if proto not in (Protocol.AH, Protocol.ESP) or size != 4:
            raise ParseError(f"delete payload protocol {proto} / SPI size {size} invalid")
        if len(data) != 4 + 4 * count:
            raise ParseError("delete payload length disagrees with its SPI count")
        return cls(proto, tuple(bytes(data[4 + 4 * i:8 + 4 * i]) for i in range(count)))


# --- TS (3.13) -----------------------------------------------------------------------------

@dataclass(frozen=True)
class TrafficSelector:
    """RFC 7296 3.13.1: an address range, a port range and an IP protocol (0 = any)."""
    start_addr: IPAddress
    end_addr: IPAddress
    ip_proto: int = 0
    start_port: int = 0
    end_port: int = 65535

    @property
    def ts_type(self) -> int:
        return TSType.IPV4_ADDR_RANGE if self.start_addr.version == 4 else \
            TSType.IPV6_ADDR_RANGE

    def encode(self) -> bytes:
        addrs = self.start_addr.packed + self.end_addr.packed
        return struct.pack("!BBHHH", self.ts_type, self.ip_proto, 8 + len(addrs),
                           self.start_port, self.end_port) + addrs

    @classmethod
    def from_network(cls, net: str, ip_proto: int = 0, start_port: int = 0,
                     end_port: int = 65535) -> "TrafficSelector":
        n = ipaddress.ip_network(net, strict=False)
        return cls(n.network_address, n.broadcast_address, ip_proto, start_port, end_port)

    def __str__(self) -> str:
        text = f"{self.start_addr}-{self.end_addr}"
        nets = list(ipaddress.summarize_address_range(self.start_addr, self.end_addr)) \
            if self.start_addr <= self.end_addr else []
        if len(nets) == 1:
            text = str(nets[0])
        if self.ip_proto or (self.start_port, self.end_port) != (0, 65535):
            text += f"[{self.ip_proto}/{self.start_port}-{self.end_port}]"
        return text


_TS_LEN = {TSType.IPV4_ADDR_RANGE: (16, ipaddress.IPv4Address),
           TSType.IPV6_ADDR_RANGE: (40, ipaddress.IPv6Address)}


@dataclass(frozen=True)
class TSPayload:
    ptype: ClassVar[int] = PayloadType.TSi
    selectors: tuple[TrafficSelector, ...]

    def encode_body(self) -> bytes:
        return struct.pack("!B3x", len(self.selectors)) + \
            b"".join(ts.encode() for ts in self.selectors)

    @classmethod
    def decode_body(cls, data: bytes):
        _need(data, 4, "TS payload")
        count = data[0]
        if count == 0:
            raise ParseError("TS payload without traffic selectors")
        pos, selectors = 4, []
        for _ in range(count):
            _need(data[pos:], 8, "traffic selector")
            ts_type, proto, length, sport, eport = struct.unpack_from("!BBHHH", data, pos)
            if ts_type not in _TS_LEN:
                raise ParseError(f"traffic selector type {ts_type} unsupported")
            want, addr_cls = _TS_LEN[ts_type]
            if length != want or pos + length > len(data):
                raise ParseError("traffic selector length invalid")
            half = (want - 8) // 2
            start = addr_cls(bytes(data[pos + 8:pos + 8 + half]))
            end = addr_cls(bytes(data[pos + 8 + half:pos + want]))
            selectors.append(TrafficSelector(start, end, proto, sport, eport))
            pos += length
        if pos != len(data):
            raise ParseError("TS payload has bytes after its last selector")
        return cls(tuple(selectors))


@dataclass(frozen=True)
class TSiPayload(TSPayload):
    ptype: ClassVar[int] = PayloadType.TSi


@dataclass(frozen=True)
class TSrPayload(TSPayload):
    ptype: ClassVar[int] = PayloadType.TSr


# --- CP (3.15) and payloads carried opaquely -----------------------------------------------

@dataclass(frozen=True)
class CPPayload:
    ptype: ClassVar[int] = PayloadType.CP
    cfg_type: int
    attributes: tuple[tuple[int, bytes], ...] = ()

    def encode_body(self) -> bytes:
        out = struct.pack("!B3x", self.cfg_type)
        for atype, value in self.attributes:
            out += struct.pack("!HH", atype & 0x7FFF, len(value)) + value
        return out

    @classmethod
    def decode_body(cls, data: bytes) -> "CPPayload":
        _need(data, 4, "CP payload")
        pos, attrs = 4, []
        while pos < len(data):
            _need(data[pos:], 4, "configuration attribute")
            atype, length = struct.unpack_from("!HH", data, pos)
            if pos + 4 + length > len(data):
                raise ParseError("configuration attribute overruns the CP payload")
            attrs.append((atype & 0x7FFF, bytes(data[pos + 4:pos + 4 + length])))
            pos += 4 + length
        return cls(data[0], tuple(attrs))


@dataclass(frozen=True)
class CertPayload:
    """RFC 7296 3.6: one certificate. We send and use encoding 4 (X.509 Certificate -
    Signature, DER); others are carried and ignored."""
    ptype: ClassVar[int] = PayloadType.CERT
    encoding: int
    data: bytes = field(repr=False)

    def encode_body(self) -> bytes:
        return bytes([self.encoding]) + self.data

    @classmethod
    def decode_body(cls, data: bytes) -> "CertPayload":
        _need(data, 1, "CERT payload")
        return cls(data[0], bytes(data[1:]))


@dataclass(frozen=True)
class CertReqPayload:
    """RFC 7296 3.7: for encoding 4, `authorities` is a concatenation of 20-byte SHA-1
    hashes of trusted CAs' SubjectPublicKeyInfo."""
    ptype: ClassVar[int] = PayloadType.CERTREQ
    encoding: int
    authorities: bytes = b""

    def encode_body(self) -> bytes:
        return bytes([self.encoding]) + self.authorities

    @classmethod
    def decode_body(cls, data: bytes) -> "CertReqPayload":
        _need(data, 1, "CERTREQ payload")
        return cls(data[0], bytes(data[1:]))

    def hashes(self) -> list[bytes]:
        a = self.authorities
        return [a[i:i + 20] for i in range(0, len(a) - 19, 20)]


@dataclass(frozen=True)
class OpaquePayload:
    """A payload type we know but do not interpret here (EAP)."""
    ptype: int
    body: bytes

    def encode_body(self) -> bytes:
        return self.body


@dataclass(frozen=True)
class EncryptedPayload:
    """RFC 7296 3.14: the SK payload as received. `first_inner` is its Next Payload field
    (the type of the first payload inside); `offset` is where its generic header starts in
    the message (the AEAD associated data and the HMAC input end/start there)."""
    ptype: ClassVar[int] = PayloadType.SK
    first_inner: int
    body: bytes = field(repr=False)
    offset: int = 0
    header_len: ClassVar[int] = 4       # bytes between `offset` and the IV


@dataclass(frozen=True)
class EncryptedFragmentPayload(EncryptedPayload):
    """RFC 7383 2.5: the SKF payload, one fragment of an SK payload. Its Next Payload
    field is the first inner payload's type in fragment 1 and 0 in the others; the
    Fragment Number and Total Fragments fields are covered by the ICV / AEAD."""
    ptype: ClassVar[int] = PayloadType.SKF
    number: int = 1
    total: int = 1
    header_len: ClassVar[int] = 8


@dataclass(frozen=True)
class ReassembledPayload(EncryptedPayload):
    """The plaintext of a reassembled SKF set (RFC 7383 2.6): each fragment was
    authenticated on arrival, so ike/messages.py open_message only parses it."""
    plaintext: bytes = field(default=b"", repr=False)


Payload = Union[SAPayload, KEPayload, NoncePayload, IDPayload, AuthPayload, VendorPayload,
                NotifyPayload, DeletePayload, TSPayload, CPPayload, CertPayload,
                CertReqPayload, OpaquePayload, EncryptedPayload]

#: Decoders by payload type. SK is handled by ike/messages.py itself.
DECODERS = {
    PayloadType.SA: SAPayload.decode_body,
    PayloadType.KE: KEPayload.decode_body,
    PayloadType.IDi: IDiPayload.decode_body,
    PayloadType.IDr: IDrPayload.decode_body,
    PayloadType.AUTH: AuthPayload.decode_body,
    PayloadType.NONCE: NoncePayload.decode_body,
    PayloadType.NOTIFY: NotifyPayload.decode_body,
    PayloadType.DELETE: DeletePayload.decode_body,
    PayloadType.VENDOR: VendorPayload.decode_body,
    PayloadType.TSi: TSiPayload.decode_body,
    PayloadType.TSr: TSrPayload.decode_body,
    PayloadType.CP: CPPayload.decode_body,
    PayloadType.CERT: CertPayload.decode_body,
    PayloadType.CERTREQ: CertReqPayload.decode_body,
}
OPAQUE_TYPES = (PayloadType.EAP,)
