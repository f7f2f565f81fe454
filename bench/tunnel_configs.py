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
          nat_traversal: bool = True, selectors: Optional[list] = None,
          ipsec_protocol: str = "esp", force_udp_encapsulation: bool = False) -> str:
    """pyspu's configuration on `side`, peer on the other side, one route-based vpn "vpn1".
    `selectors`: [(local prefix, remote prefix), ...] for one traffic-selector block each
    (ts1, ts2, ...); st0 then holds host .1 of every local prefix and routes every remote
    one. Default: the rig's one inner network per side. `ipsec_protocol` "ah": an AH
    proposal (`protocol ah;`, the pair's esp_auth, no encryption-algorithm; RFC 4302)."""
    peer = other(side)
    selectors = selectors or [(INNER_NET[side], INNER_NET[peer])]
    ts_blocks = "\n".join(
        f"            traffic-selector ts{i} {{ local-ip {lo}; remote-ip {re_}; }}"
        for i, (lo, re_) in enumerate(selectors, 1))
    st0_addrs = " ".join(f"address {_host1(lo)}/{lo.split('/')[1]};" for lo, _ in
                         dict.fromkeys(selectors))
    routes = " ".join(f"route {re_} next-hop st0.0;" for re_ in
                      dict.fromkeys(r for _, r in selectors))
    esp_auth = f"authentication-algorithm {pair.esp_auth};" if pair.esp_auth else ""
    esp_enc = "" if ipsec_protocol == "ah" else f"encryption-algorithm {pair.esp_enc};"
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
            protocol {ipsec_protocol};
            {esp_auth}
            {esp_enc}
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
{ts_blocks}
            establish-tunnels {establish};
        }}
    }}
}}
interfaces {{ st0 {{ unit 0 {{ family inet {{ {st0_addrs} }} }} }} }}
routing-options {{ static {{ {routes} }} }}
{"pyspu { force-udp-encapsulation; }" if force_udp_encapsulation else ""}
"""


def _host1(prefix: str) -> str:
    """Host .1 of an inner prefix (the rig's convention)."""
    import ipaddress
    return str(next(ipaddress.ip_network(prefix).hosts()))


def swanctl(side: str, pair: Pair, *, psk: str = PSK, start: str = "none", dpd: int = 2,
            auth: str = "psk", local_id: Optional[str] = None,
            remote_id: Optional[str] = None, cert: Optional[str] = None,
            selectors: Optional[list] = None) -> str:
    """strongSwan's configuration on `side` (connection "gw", child "net"; with
    `selectors` [(local, remote), ...] one child per pair: "net", "net2", ...)."""
    peer = other(side)
    selectors = selectors or [(INNER_NET[side], INNER_NET[peer])]
    children = "\n".join(f"""
            net{i if i > 1 else ""} {{
                local_ts = {lo}
                remote_ts = {re_}
                esp_proposals = {pair.swan_esp}
                mode = tunnel
                start_action = {start}
                dpd_action = clear
            }}""" for i, (lo, re_) in enumerate(selectors, 1))
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
        children {{{children}
        }}
    }}
}}
{secrets}
"""


def junos_manual(side: str, *, spi: int = 4096, enc: str = "aes-128-cbc",
                 enc_key: str = "202122232425262728292a2b2c2d2e2f",
                 auth: Optional[str] = "hmac-sha-256-128",
                 auth_key: str = "000102030405060708090a0b0c0d0e0f"
                                 "101112131415161718191a1b1c1d1e1f") -> str:
    """pyspu's manual-key vpn "man1" on `side` (same SPI and keys both ways, CONFIG.md);
    the local address comes from `external-interface ge-0/0/0.0`. Test keys only."""
    peer = other(side)
    auth_block = (f'authentication {{ algorithm {auth}; key hexadecimal "{auth_key}"; }}'
                  if auth else "")
    return f"""
interfaces {{
    ge-0/0/0 {{ unit 0 {{ family inet {{ address {OUTER[side]}/24; }} }} }}
    st0 {{ unit 0 {{ family inet {{ address {INNER_HOST[side]}/24; }} }} }}
}}
security {{
    ipsec {{
        vpn man1 {{
            bind-interface st0.0;
            manual {{
                gateway {OUTER[peer]};
                external-interface ge-0/0/0.0;
                protocol esp;
                spi {spi};
                {auth_block}
                encryption {{ algorithm {enc}; key hexadecimal "{enc_key}"; }}
            }}
        }}
    }}
}}
routing-options {{ static {{ route {INNER_NET[peer]} next-hop st0.0; }} }}
"""
