"""Configuration records of the IKE core: who we are, whom we accept, what we propose.

These are the cold records a gateway builds (from the Junos configuration of CONFIG.md,
later) and hands to ike/connection.py or ike/endpoint.py. Strings are accepted where a
record is expected (proposal names, traffic selector prefixes) and converted once, here.
Tuning defaults (retransmission, DPD) follow strongSwan's charon defaults.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Optional, Union

from .constants import IDType, Protocol
from .payloads import IDPayload, Proposal, TrafficSelector
from .proposals import parse_proposal

#: Junos accepts at most four proposals per IKE/IPsec policy (CONFIG.md).
MAX_PROPOSALS = 4


@dataclass(frozen=True)
class Identity:
    """An IKE identity (RFC 7296 3.5): inet / hostname / user-at-hostname / key-id."""
    id_type: int
    data: bytes

    @classmethod
    def inet(cls, addr: str) -> "Identity":
        ip = ipaddress.ip_address(addr)
        return cls(IDType.IPV4_ADDR if ip.version == 4 else IDType.IPV6_ADDR, ip.packed)

    @classmethod
    def hostname(cls, name: str) -> "Identity":
        return cls(IDType.FQDN, name.encode("ascii"))

    @classmethod
    def user_at_hostname(cls, name: str) -> "Identity":
        return cls(IDType.RFC822_ADDR, name.encode("ascii"))

    @classmethod
    def key_id(cls, value: bytes) -> "Identity":
        return cls(IDType.KEY_ID, value)

    @classmethod
    def from_payload(cls, p: IDPayload) -> "Identity":
        return cls(p.id_type, p.data)

    def __str__(self) -> str:
        if self.id_type in (IDType.IPV4_ADDR, IDType.IPV6_ADDR) and len(self.data) in (4, 16):
            return str(ipaddress.ip_address(self.data))
        if self.id_type in (IDType.FQDN, IDType.RFC822_ADDR):
            return self.data.decode("ascii", "replace")
        return f"{self.id_type}:{self.data.hex()}"


@dataclass(frozen=True)
class Retransmit:
    """RFC 7296 2.1 leaves the schedule to us: timeout * base**n, `tries` retransmissions
    (charon's retransmit_timeout 4.0, retransmit_base 1.8, retransmit_tries 5)."""
    timeout: float = 4.0
    base: float = 1.8
    tries: int = 5

    def delay(self, n: int) -> float:
        return self.timeout * self.base ** n


def _ts(value) -> TrafficSelector:
    return value if isinstance(value, TrafficSelector) else TrafficSelector.from_network(value)


def _proposals(values, protocol: int) -> tuple[Proposal, ...]:
    out = tuple(v if isinstance(v, Proposal) else parse_proposal(v, protocol) for v in values)
    if not 1 <= len(out) <= MAX_PROPOSALS:
        raise ValueError(f"between 1 and {MAX_PROPOSALS} proposals, not {len(out)}")
    return out


@dataclass(frozen=True)
class ChildConfig:
    """One Child SA (tunnel mode ESP): its proposals and traffic selectors."""
    name: str = "child"
    proposals: tuple = ("aes128gcm16", "aes128-sha256")
    local_ts: tuple = ("0.0.0.0/0",)
    remote_ts: tuple = ("0.0.0.0/0",)
    replay_window: int = 64
    # RFC 7296 2.8 leaves lifetimes local. Hard limits; the soft (rekey) point comes before
    # them (ike/tasks). 0 = no limit. Junos defaults: 3600 s, no kilobyte limit.
    lifetime_seconds: int = 3600
    lifetime_kilobytes: int = 0

    def __post_init__(self):
        if self.lifetime_seconds < 0 or self.lifetime_kilobytes < 0:
            raise ValueError("lifetimes cannot be negative")
        object.__setattr__(self, "proposals", _proposals(self.proposals, Protocol.ESP))
        object.__setattr__(self, "local_ts", tuple(_ts(t) for t in self.local_ts))
        object.__setattr__(self, "remote_ts", tuple(_ts(t) for t in self.remote_ts))
        if not self.local_ts or not self.remote_ts:
            raise ValueError("a Child SA needs local and remote traffic selectors")


IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


@dataclass(frozen=True)
class IKEConfig:
    """One IKE peer: identities, PSK, up to four IKE proposals, its Child SAs.

    `remote_id` None accepts any identity that proves the PSK. `remote_addrs` (prefixes)
    lets a responder endpoint pick this config for an incoming IKE_SA_INIT; empty = any.
    `dpd_interval` 0 disables liveness checks (RFC 7296 2.4); `nat_keepalive` is the
    RFC 3948 4 keepalive period when we are behind a NAT (Junos `nat-keepalive`; 0: off)."""
    local_id: Identity
    psk: bytes = field(default=b"", repr=False)
    remote_id: Optional[Identity] = None
    proposals: tuple = ("aes128-sha256-modp2048",)
    children: tuple = (ChildConfig(),)
    remote_addrs: tuple = ()
    nat_t_port: int = 4500
    retransmit: Retransmit = Retransmit()
    dpd_interval: float = 0.0
    nat_keepalive: float = 20.0
    half_open_timeout: float = 30.0
    initial_contact: bool = True
    max_init_retries: int = 3          # COOKIE / INVALID_KE_PAYLOAD rounds (2.6, 1.2)
    nonce_len: int = 32
    lifetime_seconds: int = 28800      # IKE SA (Junos default); 0 = no limit
    # Certificate authentication (ike/certs.py Credentials); None = pre-shared key.
    # auth_method: "psk", "rsa-signatures", "ecdsa-signatures-256", "ecdsa-signatures-384"
    # (the Junos names of CONFIG.md).
    credentials: Optional[object] = field(default=None, repr=False)
    auth_method: str = "psk"

    def __post_init__(self):
        if isinstance(self.psk, str):
            object.__setattr__(self, "psk", self.psk.encode())
        if self.auth_method == "psk" and not self.psk:
            raise ValueError("a pre-shared key is required")
        if self.auth_method != "psk" and self.credentials is None:
            raise ValueError(f"{self.auth_method} needs a certificate and private key")
        if self.lifetime_seconds < 0:
            raise ValueError("lifetimes cannot be negative")
        object.__setattr__(self, "proposals", _proposals(self.proposals, Protocol.IKE))
        object.__setattr__(self, "children", tuple(self.children))
        object.__setattr__(self, "remote_addrs", tuple(
            ipaddress.ip_network(a, strict=False) for a in self.remote_addrs))
        if not 16 <= self.nonce_len <= 256:
            raise ValueError("nonce length must be 16..256 bytes (RFC 7296 3.9)")

    def matches_address(self, ip: str) -> bool:
        if not self.remote_addrs:
            return True
        addr = ipaddress.ip_address(ip)
        return any(addr in net for net in self.remote_addrs)
