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
from .dn import decode_name, dn_text, encode_dn
from .payloads import IDPayload, Proposal, TrafficSelector
from .proposals import parse_proposal

#: Junos accepts at most four proposals per IKE/IPsec policy (CONFIG.md).
MAX_PROPOSALS = 4

#: auth_method -> the key kind it signs with (ike/certs.py key_kind); None: a PSK.
AUTH_METHODS = {"psk": None, "rsa-signatures": "rsa", "ecdsa-signatures-256": "ecdsa-256",
                "ecdsa-signatures-384": "ecdsa-384"}


@dataclass(frozen=True)
class Identity:
    """An IKE identity (RFC 7296 3.5): inet / hostname / user-at-hostname / key-id /
    distinguished-name."""
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
    def distinguished_name(cls, text: str) -> "Identity":
        """ID_DER_ASN1_DN from 'C=CH, O=pyspu, CN=gw1' (RDNs in DER order, as strongSwan
        and Junos write them; ike/dn.py). ValueError names what does not parse."""
        return cls(IDType.DER_ASN1_DN, encode_dn(text))

    @classmethod
    def from_certificate(cls, certificate) -> "Identity":
        """ID_DER_ASN1_DN of a certificate's subject, byte for byte (Junos
        `local-identity distinguished-name`). Takes an x509.Certificate or Credentials."""
        cert = getattr(certificate, "certificate", certificate)
        return cls(IDType.DER_ASN1_DN, cert.subject.public_bytes())

    @classmethod
    def from_payload(cls, p: IDPayload) -> "Identity":
        return cls(p.id_type, p.data)

    def matches(self, other: "Identity") -> bool:
        """Equality, except that two DNs compare by content (string types ignored)."""
        if self == other:
            return True
        if self.id_type == other.id_type == IDType.DER_ASN1_DN:
            try:
                return decode_name(self.data) == decode_name(other.data)
            except ValueError:
                return False
        return False

    def __str__(self) -> str:
        if self.id_type in (IDType.IPV4_ADDR, IDType.IPV6_ADDR) and len(self.data) in (4, 16):
            return str(ipaddress.ip_address(self.data))
        if self.id_type in (IDType.FQDN, IDType.RFC822_ADDR):
            return self.data.decode("ascii", "replace")
        if self.id_type == IDType.DER_ASN1_DN:
            try:
                return dn_text(decode_name(self.data))
            except ValueError:
                pass
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
    if any(p.protocol != protocol for p in out):
        raise ValueError(f"proposals of another protocol than {Protocol(protocol).name}")
    if not 1 <= len(out) <= MAX_PROPOSALS:
        raise ValueError(f"between 1 and {MAX_PROPOSALS} proposals, not {len(out)}")
    return out


@dataclass(frozen=True)
class ChildConfig:
    """One Child SA (tunnel mode ESP, or AH with `protocol` Protocol.AH / "ah"): its
    proposals (ike/proposals.py names of that protocol) and traffic selectors."""
    name: str = "child"
    proposals: tuple = ("aes128gcm16", "aes128-sha256")
    local_ts: tuple = ("0.0.0.0/0",)
    remote_ts: tuple = ("0.0.0.0/0",)
    replay_window: int = 64
    # RFC 7296 2.8 leaves lifetimes local. Hard limits; the soft (rekey) point comes before
    # them (ike/tasks). 0 = no limit. Junos defaults: 3600 s, no kilobyte limit.
    lifetime_seconds: int = 3600
    lifetime_kilobytes: int = 0
    # RFC 4302 AH instead of ESP (integrity only; never through a NAT, RFC 3948 1)
    protocol: int = Protocol.ESP

    def __post_init__(self):
        if self.lifetime_seconds < 0 or self.lifetime_kilobytes < 0:
            raise ValueError("lifetimes cannot be negative")
        proto = {"esp": Protocol.ESP, "ah": Protocol.AH}.get(self.protocol, self.protocol) \
            if isinstance(self.protocol, str) else self.protocol
        if proto not in (Protocol.ESP, Protocol.AH):
            raise ValueError(f"a Child SA is ESP or AH, not {self.protocol!r}")
        object.__setattr__(self, "protocol", Protocol(proto))
        object.__setattr__(self, "proposals", _proposals(self.proposals, self.protocol))
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
    # UDP-encapsulate ESP even without a NAT (RFC 3948; strongSwan's encap=yes): the peer is
    # told we are behind one. On this kernel ESP in UDP costs about half of raw ESP per packet.
    force_encap: bool = False
    # Certificate authentication (ike/certs.py Credentials); None = pre-shared key.
    # auth_method: "psk", "rsa-signatures", "ecdsa-signatures-256", "ecdsa-signatures-384"
    # (the Junos names of CONFIG.md).
    credentials: Optional[object] = field(default=None, repr=False)
    auth_method: str = "psk"
    # RFC 7383: offer IKE fragmentation; fragments are at most `fragment_size` bytes as IP
    # datagrams (charon's fragment_size default, 1280); incomplete sets expire.
    fragmentation: bool = True
    fragment_size: int = 1280
    fragment_timeout: float = 30.0
    # RFC 7427: announce SIGNATURE_HASH_ALGORITHMS and sign with method 14; False keeps
    # the classic signature methods (1, 9-11) for peers that mishandle RFC 7427.
    signature_hash_algorithms: bool = True

    def __post_init__(self):
        if isinstance(self.psk, str):
            object.__setattr__(self, "psk", self.psk.encode())
        if self.auth_method == "psk" and not self.psk:
            raise ValueError("a pre-shared key is required")
        if self.auth_method not in AUTH_METHODS:
            raise ValueError(f"authentication method {self.auth_method!r} is not one of "
                             f"{', '.join(AUTH_METHODS)}")
        if self.auth_method != "psk":
            if self.credentials is None:
                raise ValueError(f"{self.auth_method} needs a certificate and private key")
            kind = self.credentials.kind
            if kind != AUTH_METHODS[self.auth_method]:
                raise ValueError(f"{self.auth_method} cannot use the {kind} key of "
                                 f"{self.credentials.certificate.subject.rfc4514_string()}")
        if not 576 <= self.fragment_size <= 65535:
            raise ValueError("fragment_size must be 576..65535 bytes")
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
