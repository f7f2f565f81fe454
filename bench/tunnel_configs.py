"""Configurations for the gateway tests and bench/tunnel_bench.py: Junos for pyspu's side,
swanctl.conf for strongSwan's, built for the two-namespace rig (bench/rig.py).

The three proposal pairs the interop requirement names, as each side spells them:
    aes128-sha1-modp2048 / esp aes128-sha1
    aes256-sha256-ecp256 / esp aes256gcm16
    aes128-sha256-x25519 / esp aes128-sha256 with PFS (Curve25519)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .rig import INNER_HOST, INNER_NET, OUTER, other

PSK = "pyspu-gateway-interop-0123456789"


@dataclass(frozen=True)
class Pair:
    name: str
    ike_enc: str          # Junos words
    ike_auth: str
    dh: str
    esp_enc: str
    esp_auth: Optional[str]
    pfs: Optional[str]
    swan_ike: str         # strongSwan words
    swan_esp: str


PAIRS = [
    Pair("aes128-sha1-modp2048", "aes-128-cbc", "sha1", "group14", "aes-128-cbc",
         "hmac-sha1-96", None, "aes128-sha1-modp2048", "aes128-sha1"),
    Pair("aes256-sha256-ecp256", "aes-256-cbc", "sha-256", "group19", "aes-256-gcm", None,
         None, "aes256-sha256-ecp256", "aes256gcm16"),
    Pair("aes128-sha256-x25519-pfs", "aes-128-cbc", "sha-256", "group31", "aes-128-cbc",
         "hmac-sha-256-128", "group31", "aes128-sha256-x25519", "aes128-sha256-x25519"),
]


def junos(side: str, pair: Pair, *, psk: str = PSK, establish: str = "immediately",
          dpd: tuple = (2, 3), auth: str = "psk", cert_files: Optional[dict] = None,
          local_id: Optional[str] = None, remote_id: Optional[str] = None,
          ike_lifetime: int = 28800, esp_lifetime: int = 3600, esp_kb: int = 0,
          nat_traversal: bool = True) -> str:
    """pyspu's configuration on `side`, peer on the other side, one route-based vpn "vpn1"."""
    peer = other(side)
    esp_auth = f"authentication-algorithm {pair.esp_auth};" if pair.esp_auth else ""
    pfs = f"perfect-forward-secrecy {{ keys {pair.pfs}; }}" if pair.pfs else ""
    if auth == "psk":
        method, creds = "pre-shared-keys", f'pre-shared-key ascii-text "{psk}";'
    else:
        method = auth
        creds = (f"certificate {{ local-certificate {cert_files['cert']}; "
                 f"private-key {cert_files['key']}; trusted-ca {cert_files['ca']}; }}")
    lid = local_id or f"inet {OUTER[side]}"
    rid = remote_id or f"inet {OUTER[peer]}"
    kb = f"lifetime-kilobytes {esp_kb};" if esp_kb else ""
    natt = "" if nat_traversal else "no-nat-traversal;"
    return f"""
security {{
    ike {{
        proposal ike-{pair.name} {{
            authentication-method {method};
            dh-group {pair.dh};
            authentication-algorithm {pair.ike_auth};
            encryption-algorithm {pair.ike_enc};
            lifetime-seconds {ike_lifetime};
        }}
        policy ike-pol {{
            proposals [ ike-{pair.name} ];
            {creds}
        }}
        gateway gw-peer {{
            ike-policy ike-pol;
            address {OUTER[peer]};
            local-address {OUTER[side]};
            local-identity {lid};
            remote-identity {rid};
            dead-peer-detection {{ interval {dpd[0]}; threshold {dpd[1]}; }}
            {natt}
            version v2-only;
        }}
    }}
    ipsec {{
        proposal esp-{pair.name} {{
            protocol esp;
            {esp_auth}
            encryption-algorithm {pair.esp_enc};
            lifetime-seconds {esp_lifetime};
            {kb}
        }}
        policy ipsec-pol {{
            {pfs}
            proposals [ esp-{pair.name} ];
        }}
        vpn vpn1 {{
            bind-interface st0.0;
            ike {{ gateway gw-peer; ipsec-policy ipsec-pol; }}
            traffic-selector ts1 {{
                local-ip {INNER_NET[side]};
                remote-ip {INNER_NET[peer]};
            }}
            establish-tunnels {establish};
        }}
    }}
}}
interfaces {{ st0 {{ unit 0 {{ family inet {{ address {INNER_HOST[side]}/24; }} }} }} }}
routing-options {{ static {{ route {INNER_NET[peer]} next-hop st0.0; }} }}
"""


def swanctl(side: str, pair: Pair, *, psk: str = PSK, start: str = "none", dpd: int = 2,
            auth: str = "psk", local_id: Optional[str] = None,
            remote_id: Optional[str] = None, cert: Optional[str] = None) -> str:
    """strongSwan's configuration on `side` (connection "gw", child "net")."""
    peer = other(side)
    lid = local_id or OUTER[side]
    rid = remote_id or OUTER[peer]
    if auth == "psk":
        local = f"auth = psk\n            id = {lid}"
        remote = f"auth = psk\n            id = {rid}"
        secrets = f"""
secrets {{
    ike-peer {{
        id-a = {lid}
        id-b = {rid}
        secret = "{psk}"
    }}
}}"""
    else:
        local = f"auth = pubkey\n            id = \"{lid}\"\n            certs = {cert}"
        remote = f"auth = pubkey\n            id = \"{rid}\""
        secrets = ""
    return f"""
connections {{
    gw {{
        version = 2
        local_addrs = {OUTER[side]}
        remote_addrs = {OUTER[peer]}
        proposals = {pair.swan_ike}
        dpd_delay = {dpd}s
        local {{
            {local}
        }}
        remote {{
            {remote}
        }}
        children {{
            net {{
                local_ts = {INNER_NET[side]}
                remote_ts = {INNER_NET[peer]}
                esp_proposals = {pair.swan_esp}
                mode = tunnel
                start_action = {start}
                dpd_action = clear
            }}
        }}
    }}
}}
{secrets}
"""
