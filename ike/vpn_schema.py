"""The statements of CONFIG.md as a table, and the walk that checks a Junos tree against it.

Each statement is a `Leaf` (a value parser: enum, integer with range, address, ...) or a
`Block` (a container, with how many names it takes). The table is also the `Shape` that
ike/junos.py needs to split `set` lines. `check(tree)` returns `Section`s: per container
instance, its parsed leaf values (each with its line) and its named sub-containers.

Unknown statements inside security ike/ipsec, interfaces st0, routing-options static and
pyspu are errors naming the line and the path; other hierarchies are collected in
`ignored` (the caller warns once). Secrets are parsed here and never echoed in errors.
"""
from __future__ import annotations

import difflib
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Optional, Union

from . import junos_secret
from .junos import ConfigError, Node
from .junos_algorithms import (DH_GROUPS, ESP_ENCRYPTION, IKE_AUTH_METHODS,
                               IKE_AUTHENTICATION, IKE_ENCRYPTION, IPSEC_AUTHENTICATION)


class Item(NamedTuple):
    value: Any
    line: int


@dataclass
class Section:
    """One checked container instance: `security ike proposal P1` and what it holds."""
    path: str
    name: Optional[str]
    line: int
    leaves: dict[str, Item] = field(default_factory=dict)
    subs: dict[str, dict[str, "Section"]] = field(default_factory=dict)

    def get(self, keyword: str, default: Any = None) -> Any:
        item = self.leaves.get(keyword)
        return default if item is None else item.value

    def line_of(self, keyword: str) -> int:
        item = self.leaves.get(keyword)
        return self.line if item is None else item.line

    def sections(self, keyword: str) -> dict[str, "Section"]:
        return self.subs.get(keyword, {})

    def section(self, keyword: str) -> Optional["Section"]:
        found = self.subs.get(keyword)
        return next(iter(found.values())) if found else None


class Ctx(NamedTuple):
    filename: str

    def error(self, line: int, message: str) -> ConfigError:
        return ConfigError(self.filename, line, message)


# Value parsers: (ctx, node, path) -> value. Errors name the statement, never a secret.
Parse = Callable[[Ctx, Node, str], Any]


def _show(word: str) -> str:
    return repr(word if len(word) <= 40 else word[:37] + "...")


def _one(ctx: Ctx, node: Node, what: str) -> str:
    if len(node.values) != 1:
        raise ctx.error(node.line, f"{node.keyword}: expected {what}")
    return node.values[0]


def enum(*choices: str) -> Parse:
    def parse(ctx: Ctx, node: Node, path: str) -> str:
        value = _one(ctx, node, "one of " + " | ".join(choices))
        if value not in choices:
            hint = difflib.get_close_matches(value, choices, 1)
            more = f" (did you mean {hint[0]}?)" if hint else ""
            raise ctx.error(node.line, f"{node.keyword}: {_show(value)} is not one of "
                            f"{' | '.join(choices)}{more}")
        return value
    return parse


def integer(lo: int, hi: int) -> Parse:
    def parse(ctx: Ctx, node: Node, path: str) -> int:
        text = _one(ctx, node, f"a number {lo}..{hi}")
        if not re.fullmatch(r"[0-9]{1,12}", text):
            raise ctx.error(node.line, f"{node.keyword}: {_show(text)} is not a number")
        value = int(text)
        if not lo <= value <= hi:
            raise ctx.error(node.line, f"{node.keyword}: {value} is out of range {lo}..{hi}")
        return value
    return parse


def word(ctx: Ctx, node: Node, path: str) -> str:
    return _one(ctx, node, "one value")


def words(ctx: Ctx, node: Node, path: str) -> tuple[str, ...]:
    if not node.values:
        raise ctx.error(node.line, f"{node.keyword}: expected one or more values")
    return node.values


def flag(ctx: Ctx, node: Node, path: str) -> bool:
    if node.values:
        raise ctx.error(node.line, f"{node.keyword} takes no value")
    return True


def to_address(ctx: Ctx, line: int, what: str, text: str):
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ctx.error(line, f"{what}: {_show(text)} is not an IP address") from None


def to_prefix(ctx: Ctx, line: int, what: str, text: str):
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ctx.error(line, f"{what}: {_show(text)} is not an IP prefix") from None


def address(ctx: Ctx, node: Node, path: str):
    return to_address(ctx, node.line, node.keyword, _one(ctx, node, "an IP address"))


def addresses(ctx: Ctx, node: Node, path: str) -> tuple:
    return tuple(to_address(ctx, node.line, node.keyword, v) for v in words(ctx, node, path))


def prefix(ctx: Ctx, node: Node, path: str):
    return to_prefix(ctx, node.line, node.keyword, _one(ctx, node, "an IP prefix"))


def tunnel_unit(ctx: Ctx, line: int, what: str, text: str) -> int:
    m = re.fullmatch(r"st0\.([0-9]{1,5})", text)
    if not m:
        raise ctx.error(line, f"{what}: {_show(text)} is not a tunnel interface st0.N")
    return int(m.group(1))


def st0(ctx: Ctx, node: Node, path: str) -> int:
    return tunnel_unit(ctx, node.line, node.keyword, _one(ctx, node, "st0.N"))


def secret(ctx: Ctx, node: Node, path: str) -> bytes:
    """`ascii-text "..."` or `hexadecimal "..."`. The value is never shown."""
    usage = f"{node.keyword}: expected ascii-text or hexadecimal and one value"
    if len(node.values) != 2 or node.values[0] not in ("ascii-text", "hexadecimal"):
        raise ctx.error(node.line, usage)
    kind, text = node.values
    if not text:
        raise ctx.error(node.line, f"{node.keyword}: the {kind} value is empty")
    if junos_secret.is_encoded(text):        # as `show configuration` prints keys
        try:
            raw = junos_secret.decode(text)
        except ValueError as err:
            raise ctx.error(node.line, f"{node.keyword} {kind}: {err}") from None
        if kind == "ascii-text":
            return raw
        text = raw.decode("latin-1")
    elif kind == "ascii-text":
        if not text.isascii() or not text.isprintable():
            raise ctx.error(node.line, f"{node.keyword}: ascii-text must be printable ASCII")
        return text.encode("ascii")
    digits = text[2:] if text[:2].lower() == "0x" else text
    if not re.fullmatch(r"(?:[0-9a-fA-F]{2})+", digits):
        raise ctx.error(node.line, f"{node.keyword}: hexadecimal must be an even number of "
                        "hex digits")
    return bytes.fromhex(digits)


def identity(ctx: Ctx, node: Node, path: str) -> tuple[str, Optional[str]]:
    """(kind, value): inet ADDR | hostname NAME | user-at-hostname U@H | distinguished-name
    [DN]. Built into ike.config.Identity by the caller (the DN may need the certificate)."""
    kinds = ("inet", "hostname", "user-at-hostname", "distinguished-name")
    if not node.values or node.values[0] not in kinds:
        raise ctx.error(node.line, f"{node.keyword}: expected {' | '.join(kinds)}")
    kind, rest = node.values[0], node.values[1:]
    if len(rest) > 1 or (kind != "distinguished-name" and not rest):
        raise ctx.error(node.line, f"{node.keyword} {kind}: expected one value")
    value = rest[0] if rest else None
    if kind == "inet":
        to_address(ctx, node.line, f"{node.keyword} inet", value)
    return kind, value


def interface_address(ctx: Ctx, line: int, what: str, text: str):
    try:
        return ipaddress.ip_interface(text)
    except ValueError:
        raise ctx.error(line, f"{what}: {_show(text)} is not an address/prefix") from None


# --- the table -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Leaf:
    parse: Parse
    repeat: bool = False        # may appear again; the values then accumulate (lists)


@dataclass(frozen=True)
class Block:
    """A container. `strict`: an unknown child is an error; otherwise it is ignored (and
    named in `ignored` unless `quiet`). `other`: the shape of any unknown child keyword
    (interfaces ge-0/0/0 ...)."""
    names: int = 0
    children: dict = field(default_factory=dict)
    strict: bool = True
    quiet: bool = False
    other: Optional["Block"] = None
    name_check: Optional[Callable[[Ctx, int, str, str], Any]] = None

    def child(self, keyword: str) -> Optional["Block"]:
        spec = self.children.get(keyword)
        if isinstance(spec, Block):
            return spec
        return self.other if spec is None else None


Spec = Union[Leaf, Block]


def _unit_number(ctx: Ctx, line: int, what: str, text: str) -> int:
    return integer(0, 16385)(ctx, Node(what, (text,), line), what)


def _family(ctx: Ctx, line: int, what: str, text: str) -> str:
    return enum("inet", "inet6")(ctx, Node(what, (text,), line), what)


_DESCRIPTION = Leaf(word)
_LIFETIME = Leaf(integer(180, 86400))

IKE_PROPOSAL = Block(1, {
    "authentication-method": Leaf(enum(*IKE_AUTH_METHODS)),
    "dh-group": Leaf(enum(*DH_GROUPS)),
    "authentication-algorithm": Leaf(enum(*IKE_AUTHENTICATION)),
    "encryption-algorithm": Leaf(enum(*IKE_ENCRYPTION)),
    "lifetime-seconds": _LIFETIME,
    "description": _DESCRIPTION,
})
IKE_POLICY = Block(1, {
    "mode": Leaf(enum("main", "aggressive")),
    "proposals": Leaf(words, repeat=True),
    "pre-shared-key": Leaf(secret),
    "certificate": Block(0, {"local-certificate": Leaf(word), "private-key": Leaf(word),
                             "trusted-ca": Leaf(word)}),
    "description": _DESCRIPTION,
})
IKE_GATEWAY = Block(1, {
    "ike-policy": Leaf(word),
    "address": Leaf(addresses),
    "local-address": Leaf(address),
    "external-interface": Leaf(word),
    "local-identity": Leaf(identity),
    "remote-identity": Leaf(identity),
    # Junos DPD modes are accepted; the IKEv2 core sends liveness checks at `interval`.
    "dead-peer-detection": Block(0, {"interval": Leaf(integer(2, 60)),
                                     "threshold": Leaf(integer(1, 5)),
                                     "always-send": Leaf(flag), "optimized": Leaf(flag),
                                     "probe-idle-tunnel": Leaf(flag)}),
    "nat-keepalive": Leaf(integer(1, 300)),
    "no-nat-traversal": Leaf(flag),
    "version": Leaf(enum("v1-only", "v2-only")),
    "description": _DESCRIPTION,
})
IPSEC_PROPOSAL = Block(1, {
    "protocol": Leaf(enum("esp", "ah")),
    "authentication-algorithm": Leaf(enum(*IPSEC_AUTHENTICATION)),
    "encryption-algorithm": Leaf(enum(*ESP_ENCRYPTION)),
    "lifetime-seconds": _LIFETIME,
    "lifetime-kilobytes": Leaf(integer(64, 4294967294)),
    "description": _DESCRIPTION,
})
IPSEC_POLICY = Block(1, {
    "perfect-forward-secrecy": Block(0, {"keys": Leaf(enum(*DH_GROUPS))}),
    "proposals": Leaf(words, repeat=True),
    "description": _DESCRIPTION,
})
_MANUAL_KEY = Block(0, {"algorithm": Leaf(word), "key": Leaf(secret)})
IPSEC_VPN = Block(1, {
    "bind-interface": Leaf(st0),
    "ike": Block(0, {"gateway": Leaf(word), "ipsec-policy": Leaf(word)}),
    "traffic-selector": Block(1, {"local-ip": Leaf(prefix), "remote-ip": Leaf(prefix)}),
    "establish-tunnels": Leaf(enum("immediately", "on-traffic")),
    "anti-replay-window-size": Leaf(integer(64, 65536)),
    "manual": Block(0, {"gateway": Leaf(address), "external-interface": Leaf(word),
                        "protocol": Leaf(enum("esp", "ah")),
                        "spi": Leaf(integer(256, 0xFFFFFFFF)),
                        "authentication": _MANUAL_KEY, "encryption": _MANUAL_KEY}),
    "description": _DESCRIPTION,
})

_ST0_UNIT = Block(1, {
    "family": Block(1, {"address": Block(1, {}, name_check=interface_address)},
                    name_check=_family),
    "description": _DESCRIPTION,
}, name_check=_unit_number)

# Any other interface: only its unit addresses are read (an external-interface's address
# is the local address, as on an SRX); everything else in it passes silently.
_LENIENT_ADDRESS = Block(1, {}, strict=False, quiet=True)
_OTHER_INTERFACE = Block(0, {
    "unit": Block(1, {"family": Block(1, {"address": _LENIENT_ADDRESS}, strict=False,
                                       quiet=True)}, strict=False, quiet=True),
}, strict=False, quiet=True)

TABLE = Block(0, {
    "security": Block(0, {
        "ike": Block(0, {"proposal": IKE_PROPOSAL, "policy": IKE_POLICY,
                         "gateway": IKE_GATEWAY}),
        "ipsec": Block(0, {"proposal": IPSEC_PROPOSAL, "policy": IPSEC_POLICY,
                           "vpn": IPSEC_VPN}),
    }, strict=False),
    "interfaces": Block(0, {"st0": Block(0, {"unit": _ST0_UNIT})}, strict=False,
                        quiet=True, other=_OTHER_INTERFACE),
    "routing-options": Block(0, {
        "static": Block(0, {"route": Block(1, {
            "next-hop": Leaf(words, repeat=True), "discard": Leaf(flag),
            "reject": Leaf(flag), "preference": Leaf(integer(0, 4294967295)),
        }, name_check=to_prefix)}),
    }, strict=False),
    "pyspu": Block(0, {
        "tun-name": Leaf(word), "control-socket": Leaf(word),
        "listen-address": Leaf(address), "workers": Leaf(integer(1, 64)),
        "force-udp-encapsulation": Leaf(flag),
    }),
    # `show configuration` starts with the Junos version: nothing to say about it.
    "version": Leaf(word),
}, strict=False)


def check(tree: Node, filename: str) -> tuple[Section, list[str]]:
    """The checked root section and the statements ignored (for the one warning)."""
    ctx, ignored = Ctx(filename), []
    root = Section("", None, 0)
    _walk(ctx, tree, TABLE, root, ignored)
    return root, ignored


def _walk(ctx: Ctx, node: Node, block: Block, out: Section, ignored: list[str]) -> None:
    where = out.path or "the top level"
    for child in node.children:
        spec: Optional[Spec] = block.children.get(child.keyword)
        if spec is None and block.other is not None:
            spec = block.other
        if spec is None:
            if block.strict:
                hint = difflib.get_close_matches(child.keyword, list(block.children), 1)
                more = f" (did you mean '{hint[0]}'?)" if hint else ""
                raise ctx.error(child.line, f"unknown statement {_show(child.keyword)} "
                                f"in {where}{more}")
            if not block.quiet:
                name = f"{out.path} {child.keyword}".strip()
                if name not in ignored:
                    ignored.append(name)
            continue
        if isinstance(spec, Leaf):
            if child.container:
                raise ctx.error(child.line, f"'{child.keyword}' in {where} takes no "
                                "'{ }' block")
            value = spec.parse(ctx, child, out.path)
            old = out.leaves.get(child.keyword)
            if old is not None and not spec.repeat:
                raise ctx.error(child.line, f"'{child.keyword}' given twice in {where} "
                                f"(first on line {old.line})")
            if old is not None:
                value = old.value + value
            out.leaves[child.keyword] = Item(value, old.line if old else child.line)
            continue
        if not child.container:     # a known container written as a leaf (junos.py's shape
            raise ctx.error(child.line, f"'{child.keyword}' in {where} is a block")
        if len(child.values) != spec.names:
            raise ctx.error(child.line, f"'{child.keyword}' in {where} takes "
                            f"{spec.names or 'no'} name{'s' if spec.names != 1 else ''}")
        name = child.values[0] if spec.names else None
        if name is not None and spec.name_check is not None:
            spec.name_check(ctx, child.line, child.keyword, name)
        path = " ".join(filter(None, (out.path, child.keyword, name)))
        group = out.subs.setdefault(child.keyword, {})
        key = name if name is not None else ""
        sub = group.get(key)
        if sub is None:
            sub = group[key] = Section(path, name, child.line)
        _walk(ctx, child, spec, sub, ignored)
