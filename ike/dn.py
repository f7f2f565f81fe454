"""Distinguished names for ID_DER_ASN1_DN identities (RFC 7296 3.5, RFC 5280 4.1.2.4).

    encode_dn("C=CH, O=pyspu, CN=gw1") -> DER Name     (strongSwan's order: DER order)
    decode_name(der)                  -> x509.Name      (for comparison with a subject)
    dn_text(name)                     -> "C=CH, O=pyspu, CN=gw1"

strongSwan writes a DN as its RDNs in DER order (most significant first), unlike
RFC 4514's reversed order; Junos `distinguished-name` strings and swanctl `id =` lines
use that same order, so we read and print it so. Values are encoded as PrintableString
when they fit that alphabet, UTF8String otherwise (as strongSwan does); comparisons use
x509.Name equality, which ignores the string type.
The `cryptography` package builds and prints Names but cannot load one from DER alone,
so decode_name() walks the small RDNSequence structure itself, strictly.
"""
from __future__ import annotations

import re

from cryptography import x509
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID, ObjectIdentifier

_SHORT = {NameOID.COUNTRY_NAME: "C", NameOID.STATE_OR_PROVINCE_NAME: "ST",
          NameOID.LOCALITY_NAME: "L", NameOID.ORGANIZATION_NAME: "O",
          NameOID.ORGANIZATIONAL_UNIT_NAME: "OU", NameOID.COMMON_NAME: "CN",
          NameOID.EMAIL_ADDRESS: "E", NameOID.SERIAL_NUMBER: "serialNumber",
          NameOID.DOMAIN_COMPONENT: "DC", NameOID.USER_ID: "UID",
          NameOID.SURNAME: "SN", NameOID.GIVEN_NAME: "G", NameOID.TITLE: "T",
          NameOID.STREET_ADDRESS: "street", NameOID.POSTAL_CODE: "postalCode"}
_LONG = {v.lower(): k for k, v in _SHORT.items()}
_LONG.update({"emailaddress": NameOID.EMAIL_ADDRESS, "s": NameOID.STATE_OR_PROVINCE_NAME,
              "sn": NameOID.SURNAME, "serialnumber": NameOID.SERIAL_NUMBER})
_PRINTABLE = re.compile(r"[A-Za-z0-9 '()+,\-./:=?]*")

# DER tags of the string types a Name attribute value may use (X.520)
_STRING_TAGS = {0x0C: _ASN1Type.UTF8String, 0x13: _ASN1Type.PrintableString,
                0x14: _ASN1Type.T61String, 0x16: _ASN1Type.IA5String,
                0x1C: _ASN1Type.UniversalString, 0x1E: _ASN1Type.BMPString}
_CODECS = {0x1C: "utf-32-be", 0x1E: "utf-16-be", 0x14: "latin-1"}


def dn_text(name: x509.Name) -> str:
    parts = []
    for rdn in name.rdns:
        for attr in rdn:
            parts.append(f"{_SHORT.get(attr.oid, attr.oid.dotted_string)}={attr.value}")
    return ", ".join(parts)


def _split(text: str) -> list[str]:
    """Split on ',' (or ';' / '/'-free strongSwan style) not escaped with a backslash."""
    parts, cur, escaped = [], "", False
    for ch in text:
        if escaped:
            cur += ch
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in ",;":
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def parse_dn(text: str) -> x509.Name:
    """A Name from 'C=CH, O=pyspu, CN=gw1' (DER order). ValueError on anything else."""
    rdns = []
    for part in _split(text):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ValueError(f"distinguished name {text!r}: {part!r} is not KEY=value")
        if key.lower() in _LONG:
            oid = _LONG[key.lower()]
        elif re.fullmatch(r"\d+(\.\d+)+", key):
            oid = ObjectIdentifier(key)
        else:
            raise ValueError(f"distinguished name {text!r}: unknown attribute {key!r}")
        string_type = _ASN1Type.PrintableString if _PRINTABLE.fullmatch(value) \
            and oid != NameOID.EMAIL_ADDRESS else _ASN1Type.UTF8String
        if oid == NameOID.EMAIL_ADDRESS:
            string_type = _ASN1Type.IA5String
        try:
            attr = x509.NameAttribute(oid, value, _type=string_type)
        except ValueError as err:
            raise ValueError(f"distinguished name {text!r}: {err}") from None
        rdns.append(x509.RelativeDistinguishedName([attr]))
    if not rdns:
        raise ValueError("empty distinguished name")
    return x509.Name(rdns)


def encode_dn(text: str) -> bytes:
    return parse_dn(text).public_bytes()


# --- a strict DER reader for Name ----------------------------------------------------------

def _tlv(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """(tag, value, next position) of the DER element at pos; ValueError if malformed."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 3 or pos + n > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos:pos + n], "big")
        if length < 0x80 or (n > 1 and data[pos] == 0):
            raise ValueError("non-minimal DER length")
        pos += n
    if pos + length > len(data):
        raise ValueError("DER value overruns its container")
    return tag, data[pos:pos + length], pos + length


def _oid(value: bytes) -> str:
    if not value or value[-1] & 0x80:
        raise ValueError("bad OID")
    arcs, n = [], 0
    for b in value:
        n = (n << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(n)
            n = 0
    first = arcs[0]
    head = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    return ".".join(str(a) for a in head + arcs[1:])


def decode_name(der: bytes) -> x509.Name:
    """x509.Name from a DER RDNSequence; ValueError if it is not exactly one."""
    tag, body, end = _tlv(der, 0)
    if tag != 0x30 or end != len(der):
        raise ValueError("a DN is one DER SEQUENCE")
    rdns, pos = [], 0
    while pos < len(body):
        tag, rdn_body, pos = _tlv(body, pos)
        if tag != 0x31:
            raise ValueError("an RDN is a DER SET")
        attrs, apos = [], 0
        while apos < len(rdn_body):
            tag, atv, apos = _tlv(rdn_body, apos)
            if tag != 0x30:
                raise ValueError("an attribute is a DER SEQUENCE")
            otag, oid, vpos = _tlv(atv, 0)
            vtag, value, vend = _tlv(atv, vpos)
            if otag != 0x06 or vend != len(atv) or vtag not in _STRING_TAGS:
                raise ValueError("attribute is not OID + string")
            try:
                text = value.decode(_CODECS.get(vtag, "utf-8"))
            except UnicodeDecodeError:
                raise ValueError("attribute value is not text") from None
            attrs.append(x509.NameAttribute(ObjectIdentifier(_oid(oid)), text,
                                            _type=_STRING_TAGS[vtag]))
        if not attrs:
            raise ValueError("empty RDN")
        rdns.append(x509.RelativeDistinguishedName(attrs))
    return x509.Name(rdns)
