"""SA configuration records (the cold side) and the parser for `ip xfrm state` lines.

An `SAConfig` is what IKE, a manual-key configuration or an SA file says about one
unidirectional SA. The engine turns it into a fixed-layout runtime record (engine/sad.py)
once, at install time. Nothing here is touched per packet.

Key material is kept in `bytes` fields whose repr is suppressed: keys never reach a log.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Optional, Union

from .algorithms import AUTHS, CIPHERS, MAX_ICV, Auth, Cipher, CipherSpec

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

PROTO_ESP = 50
PROTO_AH = 51
MODE_TRANSPORT = 0
MODE_TUNNEL = 1


class SAParseError(ValueError):
    """A bad SA line. str(err) is the one-line message, starting with 'line N: '."""

    def __init__(self, line: int, message: str):
        super().__init__(f"line {line}: {message}")
        self.line = line


@dataclass(frozen=True)
class Selector:
    """`sel src PREFIX dst PREFIX [proto P] [sport N] [dport N]` (proto 0 = any)."""
    src: IPNetwork
    dst: IPNetwork
    proto: int = 0
    sport: Optional[int] = None
    dport: Optional[int] = None


@dataclass(frozen=True)
class SAConfig:
    """One unidirectional SA, as `ip xfrm state` describes it.

    Exactly one of (enc + auth) or aead is set for ESP; AH has only auth.
    `enc`, `auth`, `aead` hold Linux algorithm names (keys of algorithms.CIPHERS/AUTHS).
    """
    src: IPAddress
    dst: IPAddress
    proto: int                      # PROTO_ESP or PROTO_AH
    spi: int
    mode: int = MODE_TUNNEL         # MODE_TUNNEL or MODE_TRANSPORT
    replay_window: int = 64         # packets; 0 disables anti-replay
    esn: bool = False
    oseq: int = 0                   # last outbound sequence number used (next is oseq+1)
    seq: int = 0                    # highest inbound sequence number already seen
    enc: Optional[str] = None
    enc_key: bytes = field(default=b"", repr=False)
    auth: Optional[str] = None
    auth_key: bytes = field(default=b"", repr=False)
    icv_bits: int = 0               # ICV length for auth or aead
    aead: Optional[str] = None
    aead_key: bytes = field(default=b"", repr=False)
    encap_sport: Optional[int] = None   # RFC 3948 espinudp, None when not encapsulated
    encap_dport: Optional[int] = None
    sel: Optional[Selector] = None
    line: int = 0                   # first physical line in the SA file (0 if not from a file)

    # --- derived views used when the engine builds its runtime record -----------------
    @property
    def cipher_id(self) -> Cipher:
        if self.aead is not None:
            return CIPHERS[self.aead].id
        if self.enc is not None:
            return CIPHERS[self.enc].id
        return Cipher.NULL

    @property
    def auth_id(self) -> Auth:
        return AUTHS[self.auth].id if self.auth is not None else Auth.NONE

    @property
    def has_integrity(self) -> bool:
        """RFC 4303 3.4.3: anti-replay only makes sense with an integrity service."""
        return self.aead is not None or self.auth_id != Auth.NONE

    @property
    def family(self) -> int:
        return self.dst.version


# --- SA file parser -----------------------------------------------------------------------
# One SA per logical line, in the argument syntax of iproute2's `ip xfrm state add` (see the
# `spu` contract): `src A dst B proto esp|ah spi N` and then keywords in any order.

#: Tuning bound, not a spec limit: the RFC 6479 bitmap is W/64 + 1 words, so 2^20 packets
#: costs at most 128 KiB per SA, and a typo cannot ask for gigabytes.
MAX_REPLAY_WINDOW = 1 << 20

_U32 = 0xFFFFFFFF
_U64 = (1 << 64) - 1

#: IANA protocol numbers accepted by name in `sel proto` (/etc/protocols spelling).
_SEL_PROTOS = {"icmp": 1, "tcp": 6, "udp": 17, "gre": 47, "esp": 50, "ah": 51,
               "ipv6-icmp": 58, "sctp": 132}
_PORT_PROTOS = (6, 17)

#: iproute2 `flag` names: the ones we honour, the ones that change nothing for this engine,
#: and the ones whose behaviour we do not implement (refused rather than silently ignored).
_FLAGS_NOOP = ("af-unspec", "nopmtudisc")     # selector family freedom / no PMTU here anyway
_FLAGS_UNSUPPORTED = ("noecn", "decap-dscp", "wildrecv", "icmp", "align4")

# A token is a run of unquoted characters and quoted strings, as a shell would glue them
# ('cbc(aes)', "", x'y'z). A lone quote character left over means an unterminated string.
_TOKEN_RE = re.compile(r"""(?P<tok>(?:'[^']*'|"[^"]*"|[^\s'"])+)|(?P<bad>['"])""")
_QUOTED_RE = re.compile("'([^']*)'|\"([^\"]*)\"")
_NUMBER_RE = re.compile(r"0[xX][0-9a-fA-F]+|[0-9]+")
_HEX_RE = re.compile(r"[0-9a-fA-F]*")


class _Token(NamedTuple):
    text: str
    quoted: bool     # keys: only a quoted string may be ASCII (a bare 0011.. missing its 0x
                     # would otherwise silently become a 32-byte ASCII key)


def _show(text: str) -> str:
    """A token for an error message. A long hex value is probably a misplaced key: not shown."""
    if text[:2].lower() == "0x" and len(text) > 10:
        return f"<{len(text) - 2}-digit hex value>"
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _alts(values) -> str:
    *head, last = [str(v) for v in values]
    return f"{', '.join(head)} or {last}" if head else last


class _Entry:
    """The tokens of one SA entry and a read position. Errors name the entry's first line."""

    def __init__(self, line: int, tokens: list[_Token]):
        self.line, self.tokens, self.pos = line, tokens, 0

    def error(self, message: str) -> SAParseError:
        return SAParseError(self.line, message)

    def more(self) -> bool:
        return self.pos < len(self.tokens)

    def peek(self) -> str:
        return self.tokens[self.pos].text

    def take(self, what: str) -> _Token:
        if not self.more():
            raise self.error(f"missing {what}")
        self.pos += 1
        return self.tokens[self.pos - 1]

    def number(self, what: str, lo: int, hi: int) -> int:
        text = self.take(what).text
        if not _NUMBER_RE.fullmatch(text):
            raise self.error(f"bad {what} {_show(text)} (expected a decimal or 0x-hex number)")
        value = int(text, 0) if text[:2].lower() == "0x" else int(text, 10)
        if not lo <= value <= hi:
            raise self.error(f"{what} {value} out of range {lo}..{hi}")
        return value

    def address(self, what: str) -> IPAddress:
        text = self.take(what).text
        try:
            return ipaddress.ip_address(text)
        except ValueError:
            raise self.error(f"bad {what} {_show(text)} (expected an IPv4 or IPv6 address)") \
                from None

    def prefix(self, what: str) -> IPNetwork:
        text = self.take(what).text
        try:
            # Host bits are masked off, as the kernel does with selector prefixes.
            return ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise self.error(f"bad {what} {_show(text)} (expected an address or prefix)") \
                from None

    def key(self, what: str, sizes: Optional[tuple[int, ...]] = None, salt: int = 0) -> bytes:
        tok = self.take(what)
        if tok.text[:2].lower() == "0x":
            digits = tok.text[2:]
            if len(digits) % 2 or not _HEX_RE.fullmatch(digits):
                raise self.error(f"{what} is not valid hex (an even number of hex digits)")
            key = bytes.fromhex(digits)
        elif tok.quoted and tok.text.isascii():
            key = tok.text.encode("ascii")
        else:
            raise self.error(f"{what} must be 0x-hex or a quoted ASCII string")
        if sizes is None and not key:
            raise self.error(f"{what} is empty")
        if sizes is not None and len(key) not in sizes:
            with_salt = f" including the {salt}-byte salt/nonce" if salt else ""
            raise self.error(f"{what} must be {_alts(sizes)} bytes{with_salt}, got {len(key)}")
        return key


def _cipher(e: _Entry, kw: str, aead: bool) -> tuple[str, CipherSpec]:
    name = e.take(f"{kw} algorithm").text
    spec = CIPHERS.get(name)
    if spec is None:
        known = _alts(repr(n) for n, s in CIPHERS.items() if s.aead == aead)
        raise e.error(f"unknown {kw} algorithm {_show(name)} (known: {known})")
    if spec.aead != aead:
        use = "'aead ALG KEY ICVBITS'" if spec.aead else "'enc ALG KEY'"
        raise e.error(f"{name!r} is {'an' if spec.aead else 'not an'} AEAD algorithm: use {use}")
    return name, spec


# Keyword handlers: each consumes its arguments and records them in `f` (SAConfig fields,
# plus a few private `_` entries resolved in _finish).

def _kw_proto(e: _Entry, f: dict) -> None:
    text = e.take("proto").text
    protos = {"esp": PROTO_ESP, "ah": PROTO_AH}
    if text not in protos:
        raise e.error(f"proto must be esp or ah, got {_show(text)}")
    f["proto"] = protos[text]


def _kw_mode(e: _Entry, f: dict) -> None:
    text = e.take("mode").text
    modes = {"tunnel": MODE_TUNNEL, "transport": MODE_TRANSPORT}
    if text not in modes:
        raise e.error(f"mode must be tunnel or transport, got {_show(text)}")
    f["mode"] = modes[text]


def _kw_flag(e: _Entry, f: dict) -> None:
    # iproute2: `flag FLAG...` takes names until the next keyword.
    names = []
    while e.more() and e.peek() not in _KEYWORDS:
        names.append(e.take("flag").text)
    if not names:
        raise e.error("missing flag name after 'flag'")
    for name in names:
        if name in _FLAGS_UNSUPPORTED:
            raise e.error(f"flag {name!r} is not supported")
        if name != "esn" and name not in _FLAGS_NOOP:
            raise e.error(f"unknown flag {_show(name)}")
    f["esn"] = "esn" in names


def _kw_enc(e: _Entry, f: dict) -> None:
    name, spec = _cipher(e, "enc", aead=False)
    f["enc"], f["enc_key"] = name, e.key("enc key", spec.key_sizes, spec.salt_len)


def _kw_aead(e: _Entry, f: dict) -> None:
    name, spec = _cipher(e, "aead", aead=True)
    f["aead"], f["aead_key"] = name, e.key("aead key", spec.key_sizes, spec.salt_len)
    bits = e.number("aead ICV bits", 0, _U32)
    if bits not in spec.icv_bits:
        raise e.error(f"aead {name!r} ICV must be {_alts(spec.icv_bits)} bits, got {bits}")
    f["icv_bits"] = bits


def _auth(e: _Entry, f: dict, kw: str) -> None:
    name = e.take(f"{kw} algorithm").text
    spec = AUTHS.get(name)
    if spec is None:
        raise e.error(f"unknown {kw} algorithm {_show(name)} (known: {_alts(map(repr, AUTHS))})")
    null = spec.id == Auth.NONE
    f["auth"], f["auth_key"] = name, e.key(f"{kw} key", (0,) if null else None)
    f["icv_bits"] = spec.default_bits
    if kw == "auth-trunc":
        bits = f["icv_bits"] = e.number("auth-trunc bits", 0, _U32)
        # The data path reserves MAX_ICV bytes of tailroom: full-length SHA-512 (512 bits)
        # is not supported (RFC 4868 specifies 256).
        full = min(spec.digest_len, MAX_ICV) * 8
        if null and bits != 0:
            raise e.error("auth-trunc 'digest_null' bits must be 0")
        # Whole bytes, at most the digest, and at least 32 bits: anything shorter is no
        # integrity to speak of (RFC 2104 section 5 recommends no less than 80).
        if not null and (bits % 8 or not 32 <= bits <= full):
            raise e.error(f"auth-trunc {name!r} bits must be a multiple of 8 in 32..{full}, "
                          f"got {bits}")


def _kw_encap(e: _Entry, f: dict) -> None:
    kind = e.take("encap type").text
    if kind != "espinudp":
        raise e.error(f"unsupported encap type {_show(kind)} (only espinudp)")
    f["encap_sport"] = e.number("encap source port", 1, 65535)
    f["encap_dport"] = e.number("encap destination port", 1, 65535)
    e.address("encap original address")   # RFC 3948 NAT-OA: checked, then ignored


def _kw_sel(e: _Entry, f: dict) -> None:
    # Sub-keywords in any order; the selector ends at the first other (or repeated) word.
    seen: set[str] = set()
    while e.more() and e.peek() in ("src", "dst", "proto", "sport", "dport") \
            and e.peek() not in seen:
        word = e.take("sel").text
        seen.add(word)
        if word in ("src", "dst"):
            f[f"_sel_{word}"] = e.prefix(f"sel {word} prefix")
        elif word == "proto":
            f["_sel_proto"] = _sel_proto(e)
        else:
            f[f"_sel_{word}"] = e.number(f"sel {word}", 0, 65535)
    src, dst = f.pop("_sel_src", None), f.pop("_sel_dst", None)
    if src is None or dst is None:
        raise e.error("sel needs both src and dst")
    if src.version != dst.version:
        raise e.error("sel src and dst are of different address families")
    proto = f.pop("_sel_proto", 0)
    sport, dport = f.pop("_sel_sport", None), f.pop("_sel_dport", None)
    if (sport is not None or dport is not None) and proto not in _PORT_PROTOS:
        raise e.error("sel sport/dport need proto tcp or udp")
    # iproute2: port 0 leaves the port unmasked, i.e. any port.
    f["sel"] = Selector(src, dst, proto, sport or None, dport or None)


def _sel_proto(e: _Entry) -> int:
    text = e.peek() if e.more() else ""
    if text.lower() in _SEL_PROTOS:
        e.take("sel proto")
        return _SEL_PROTOS[text.lower()]
    return e.number("sel proto", 0, 255)


def _kw_reqid(e: _Entry, f: dict) -> None:
    # Binds states to policies in Linux; this engine matches by `sel`, so it is checked and
    # otherwise ignored (it appears in most pasted `ip xfrm state` lines).
    e.number("reqid", 0, _U32)


_Handler = Callable[[_Entry, dict], None]


def _value(name: str, read: Callable[[_Entry], object]) -> _Handler:
    """A handler for a keyword with one argument stored in field `name`."""
    def handler(e: _Entry, f: dict) -> None:
        f[name] = read(e)
    return handler


#: keyword -> (slot, handler). A slot may be filled once: auth and auth-trunc share one.
_KEYWORDS: dict[str, tuple[str, _Handler]] = {
    "src": ("src", _value("src", lambda e: e.address("src address"))),
    "dst": ("dst", _value("dst", lambda e: e.address("dst address"))),
    "proto": ("proto", _kw_proto),
    "spi": ("spi", _value("spi", lambda e: e.number("spi", 1, _U32))),
    "mode": ("mode", _kw_mode),
    "replay-window": ("replay-window", _value(
        "replay_window", lambda e: e.number("replay-window", 0, MAX_REPLAY_WINDOW))),
    "flag": ("flag", _kw_flag),
    "replay-oseq": ("replay-oseq", _value("oseq", lambda e: e.number("replay-oseq", 0, _U64))),
    "replay-seq": ("replay-seq", _value("seq", lambda e: e.number("replay-seq", 0, _U64))),
    "replay-oseq-hi": ("replay-oseq-hi", _value(
        "_oseq_hi", lambda e: e.number("replay-oseq-hi", 0, _U32))),
    "replay-seq-hi": ("replay-seq-hi", _value(
        "_seq_hi", lambda e: e.number("replay-seq-hi", 0, _U32))),
    "enc": ("enc", _kw_enc),
    "auth": ("auth", lambda e, f: _auth(e, f, "auth")),
    "auth-trunc": ("auth", lambda e, f: _auth(e, f, "auth-trunc")),
    "aead": ("aead", _kw_aead),
    "encap": ("encap", _kw_encap),
    "sel": ("sel", _kw_sel),
    "reqid": ("reqid", _kw_reqid),
}


def _finish(e: _Entry, f: dict) -> SAConfig:
    """Cross-keyword rules; then the record."""
    for required in ("src", "dst", "proto", "spi"):
        if required not in f:
            raise e.error(f"missing {required}")
    if f["src"].version != f["dst"].version:
        raise e.error("src and dst are of different address families")
    enc, auth, aead = f.get("enc"), f.get("auth"), f.get("aead")
    if f["proto"] == PROTO_ESP:
        if aead and (enc or auth):
            raise e.error("aead cannot be combined with enc or auth")
        if not aead and not enc:
            raise e.error("ESP needs enc (use 'ecb(cipher_null)' \"\" for none)" if auth
                          else "ESP needs a transform: enc [auth|auth-trunc] or aead")
    else:
        if enc or aead:
            raise e.error("AH takes only auth or auth-trunc, not enc or aead")
        if not auth:
            raise e.error("AH needs auth or auth-trunc")
        if auth == "digest_null":
            raise e.error("AH needs a real integrity algorithm, not 'digest_null'")
        if "encap_sport" in f:
            raise e.error("encap espinudp needs proto esp")
    if auth == "digest_null":
        f["auth"] = None        # no integrity service: has_integrity is False
    for name in ("oseq", "seq"):
        kw, hi = f"replay-{name}", f.pop(f"_{name}_hi", None)
        value = f.get(name, 0)
        if hi is not None:
            if value > _U32:
                raise e.error(f"{kw} above 2^32-1 cannot be combined with {kw}-hi")
            value |= hi << 32
        if value > _U32 and not f.get("esn"):
            raise e.error(f"{kw} value {value:#x} is above 2^32-1: needs 'flag esn'")
        f[name] = value
    sel = f.get("sel")
    if sel and f.get("mode", MODE_TUNNEL) == MODE_TRANSPORT \
            and sel.src.version != f["dst"].version:
        # Only a tunnel can carry another address family (as the kernel insists too).
        raise e.error("transport mode: sel family must match the SA's src/dst")
    return SAConfig(**f, line=e.line)


def _parse_entry(line: int, text: str) -> SAConfig:
    tokens = []
    for m in _TOKEN_RE.finditer(text):
        if m.group("bad"):
            raise SAParseError(line, "unterminated quote")
        raw = m.group("tok")
        unquoted = _QUOTED_RE.sub(lambda q: q.group(1) or q.group(2) or "", raw)
        tokens.append(_Token(unquoted, quoted="'" in raw or '"' in raw))
    e, f, filled = _Entry(line, tokens), {}, {}
    while e.more():
        word = e.take("keyword").text
        if word not in _KEYWORDS:
            raise e.error(f"unknown keyword {_show(word)}")
        slot, handler = _KEYWORDS[word]
        if slot in filled:
            raise e.error(f"{word} given twice" if filled[slot] == word
                          else f"{word} conflicts with {filled[slot]}")
        filled[slot] = word
        handler(e, f)
    return _finish(e, f)


def _entries(text: str):
    """(first physical line, joined text) per entry. A trailing backslash joins the next
    line; a blank or comment line ends an entry, as in a shell or `ip -batch`."""
    parts: list[str] = []
    first = 0
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            if parts:
                yield first, " ".join(parts)
                parts = []
            continue
        if not parts:
            first = number
        continued = line.endswith("\\")
        parts.append(line[:-1] if continued else line)
        if not continued:
            yield first, " ".join(parts)
            parts = []
    if parts:
        yield first, " ".join(parts)


def parse_sa_text(text: str) -> list[SAConfig]:
    """All SAs in an SA file's text, in file order. Raises SAParseError ('line N: ...')."""
    sas: list[SAConfig] = []
    seen: dict[tuple, int] = {}
    for line, entry in _entries(text):
        sa = _parse_entry(line, entry)
        ident = (sa.spi, sa.dst, sa.proto)      # RFC 4301 4.1: how inbound SAs are found
        if ident in seen:
            raise SAParseError(line, f"duplicate SA (spi {sa.spi:#010x}, dst {sa.dst}, proto "
                               f"{'esp' if sa.proto == PROTO_ESP else 'ah'}) first defined "
                               f"on line {seen[ident]}")
        seen[ident] = line
        sas.append(sa)
    return sas


def parse_sa_file(path: str) -> list[SAConfig]:
    """parse_sa_text on a file. OSError (missing, unreadable) propagates for the caller."""
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SAParseError(data[:err.start].count(b"\n") + 1, "not UTF-8 text") from None
    return parse_sa_text(text)
