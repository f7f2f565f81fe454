"""The Junos configuration reader of `spu gateway` (ike/junos.py, ike/vpn_schema.py,
ike/vpn_config.py, ike/vpn_manual.py, ike/junos_algorithms.py) against CONFIG.md.

The algorithm names below are copied from CONFIG.md's statement list; every one must map to
a proposal ike/proposals.parse_proposal accepts, or to engine/algorithms.py names with the
right key lengths (manual keys).
"""
from __future__ import annotations

import ipaddress
import logging
import shutil
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.algorithms import AUTHS, CIPHERS
from engine.sa import MODE_TUNNEL, PROTO_AH, PROTO_ESP
from ike import junos_algorithms as ja
from ike.config import ChildConfig, Identity
from ike.constants import ESN, Integ, Protocol, TransformType
from ike.junos import ConfigError, Node, parse
from ike.proposals import esp_algorithms, parse_proposal
from ike.vpn_config import load_gateway_config, parse_gateway_config
from ike.vpn_schema import TABLE

EXAMPLES = Path(__file__).resolve().parent.parent / "ike" / "examples"

# --- CONFIG.md's algorithm names ------------------------------------------------------------
IKE_ENC = "des-cbc 3des-cbc aes-128-cbc aes-192-cbc aes-256-cbc aes-128-gcm aes-256-gcm".split()
IKE_AUTH = "md5 sha1 sha-256 sha-384 sha-512".split()
DH = "group1 group2 group5 group14 group15 group16 group19 group20 group21 group31".split()
IKE_METHODS = "pre-shared-keys rsa-signatures ecdsa-signatures-256 ecdsa-signatures-384".split()
ESP_ENC = ("des-cbc 3des-cbc aes-128-cbc aes-192-cbc aes-256-cbc aes-128-gcm aes-192-gcm "
           "aes-256-gcm chacha20-poly1305").split()
ESP_AUTH = "hmac-md5-96 hmac-sha1-96 hmac-sha-256-128 hmac-sha-384-192 hmac-sha-512-256".split()

PSK_ASCII = "branch1 shared secret"
PSK_HEX = "6272616e636832206b6579"          # b"branch2 key"
MANUAL_AUTH_KEY = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
MANUAL_ENC_KEY = "202122232425262728292a2b2c2d2e2f"


def load(text: str, name: str = "gw.conf"):
    return parse_gateway_config(text, name)


def error_of(text: str, name: str = "gw.conf") -> str:
    with pytest.raises(ConfigError) as info:
        load(text, name)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


# =============================================================================================
# Both syntaxes, one configuration
# =============================================================================================

def test_curly_and_set_examples_give_equal_configs(caplog):
    with caplog.at_level(logging.WARNING, logger="pyspu.config"):
        curly = load_gateway_config(str(EXAMPLES / "gateway-psk.conf"))
        flat = load_gateway_config(str(EXAMPLES / "gateway-psk.set"))
    assert curly == flat
    # exactly one warning per file, naming what was ignored
    warnings = [r for r in caplog.records if r.name == "pyspu.config"]
    assert len(warnings) == 2
    assert "system" in warnings[0].getMessage()
    assert "security zones" in warnings[0].getMessage()


def test_psk_example_content():
    cfg = load_gateway_config(str(EXAMPLES / "gateway-psk.conf"))
    assert set(cfg.ike_gateways) == {"GW-BRANCH1", "GW-BRANCH2"}
    gw1 = cfg.ike_gateways["GW-BRANCH1"]
    assert gw1.address == ipaddress.ip_address("198.51.100.2")
    # no local-address: the external-interface's address, as on an SRX
    assert gw1.local_address == ipaddress.ip_address("203.0.113.1")
    assert gw1.proposals == ("aes256gcm16-prfsha384-ecp384", "aes128-sha256-modp2048")
    assert gw1.ike.proposals == tuple(parse_proposal(p, Protocol.IKE) for p in gw1.proposals)
    assert gw1.ike.psk == PSK_ASCII.encode()
    assert gw1.ike.local_id == Identity.hostname("hq.example.net")
    assert gw1.ike.remote_id == Identity.hostname("branch1.example.net")
    assert gw1.ike.dpd_interval == 10 and gw1.dpd_threshold == 5
    assert gw1.ike.nat_keepalive == 20 and gw1.ike.lifetime_seconds == 28800
    assert gw1.version == "v2-only" and gw1.auth_method == "pre-shared-keys"
    assert gw1.ike.auth_method == "psk" and gw1.ike.credentials is None
    gw2 = cfg.ike_gateways["GW-BRANCH2"]
    assert gw2.ike.psk == bytes.fromhex(PSK_HEX)
    assert gw2.ike.local_id == Identity.inet("203.0.113.1")     # default: local address
    assert gw2.ike.remote_id is None
    assert gw2.ike.dpd_interval == 0                             # no dead-peer-detection
    assert gw2.ike.nat_keepalive == 15
    assert [str(a) for a in gw2.ike.remote_addrs] == ["192.0.2.7/32"]

    vpn1 = cfg.vpns["VPN-BRANCH1"]
    assert (vpn1.gateway, vpn1.bind_interface, vpn1.bind_unit) == ("GW-BRANCH1", "st0.0", 0)
    assert vpn1.establish == "immediately" and vpn1.protocol == "esp"
    assert vpn1.proposals == ("aes256gcm16-modp2048", "aes128-sha256-modp2048")
    assert vpn1.pfs_group == 14
    assert [c.name for c in vpn1.children] == ["VPN-BRANCH1:TS-LAN", "VPN-BRANCH1:TS-VOICE"]
    lan = vpn1.children[0]
    assert lan == ChildConfig("VPN-BRANCH1:TS-LAN", vpn1.proposals, ("10.0.0.0/16",),
                              ("10.1.0.0/16",), 64, 3600, 1000000)
    # the gateway's IKEConfig carries the Child SAs of every VPN bound to it
    assert gw1.ike.children == vpn1.children
    vpn2 = cfg.vpns["VPN-BRANCH2"]
    assert vpn2.establish == "on-traffic" and vpn2.pfs_group is None
    assert vpn2.proposals == ("aes128-sha256",)
    (child,) = vpn2.children
    assert child.name == "VPN-BRANCH2" and child.replay_window == 512
    assert child.local_ts == ChildConfig(local_ts=("0.0.0.0/0",)).local_ts
    assert gw2.ike.children == vpn2.children

    assert cfg.interfaces == {0: (ipaddress.ip_interface("10.255.0.1/30"),), 1: ()}
    assert cfg.routes == {ipaddress.ip_network("10.1.0.0/16"): "st0.0",
                          ipaddress.ip_network("10.2.0.0/16"): "st0.1"}
    assert "routing-options static route 0.0.0.0/0" in cfg.ignored
    assert cfg.pyspu.tun_name == "st0" and cfg.pyspu.workers == 2
    assert cfg.pyspu.listen_address == "203.0.113.1"
    assert cfg.pyspu.control_socket == "/run/pyspu/gateway.sock"


def test_records_are_frozen():
    cfg = load_gateway_config(str(EXAMPLES / "gateway-psk.conf"))
    with pytest.raises(AttributeError):
        cfg.vpns = {}
    with pytest.raises(TypeError):
        cfg.vpns["X"] = None


def test_set_lines_build_the_same_tree_as_braces():
    curly = parse("""
        security { ike { proposal P1 { dh-group group14; encryption-algorithm aes-128-cbc; }
                          policy POL { proposals [ P1 P2 ]; } } }
        routing-options { static { route 10.0.0.0/8 { next-hop st0.0; } } }
        interfaces { st0 { unit 3 { family inet { address 10.9.9.1/30; } } } }
    """, "a.conf", TABLE)
    flat = parse("""
        set security ike proposal P1 dh-group group14
        set security ike proposal P1 encryption-algorithm aes-128-cbc
        set security ike policy POL proposals [ P1 P2 ]
        set routing-options static route 10.0.0.0/8 next-hop st0.0
        set interfaces st0 unit 3 family inet address 10.9.9.1/30
    """, "a.set", TABLE)
    assert curly == flat
    prop = curly.children[0].children[0].children[0]
    assert (prop.keyword, prop.values, prop.container) == ("proposal", ("P1",), True)
    assert prop.children[0] == Node("dh-group", ("group14",), 0)


def test_one_line_container_statement_equals_nested_block():
    a = parse("routing-options { static { route 10.0.0.0/8 next-hop st0.0; } }", "x", TABLE)
    b = parse("routing-options { static { route 10.0.0.0/8 { next-hop st0.0; } } }", "x", TABLE)
    assert a == b


def test_comments_quotes_and_escapes():
    tree = parse('/* block\n comment */ a "b c" "d\\"e" # rest of line\n;\n', "x")
    (node,) = tree.children
    assert node.values == ("b c", 'd"e') and node.line == 2


def test_inactive_and_deactivate_are_dropped():
    base = (EXAMPLES / "gateway-psk.conf").read_text()
    curly = load(base.replace("        vpn VPN-BRANCH2 {", "        inactive: vpn VPN-BRANCH2 {"))
    assert set(curly.vpns) == {"VPN-BRANCH1"}
    flat = load((EXAMPLES / "gateway-psk.set").read_text() +
                "deactivate security ipsec vpn VPN-BRANCH2\n", "gw.set")
    assert flat == curly
    leaf = load((EXAMPLES / "gateway-psk.set").read_text() +
                "deactivate security ike gateway GW-BRANCH2 nat-keepalive\n", "gw.set")
    assert leaf.ike_gateways["GW-BRANCH2"].ike.nat_keepalive == 20
    inline = load(MINI.replace("            local-address 203.0.113.1;",
                               "            local-address 203.0.113.1;\n"
                               "            inactive: nat-keepalive 30;"))
    assert inline.ike_gateways["GW"].ike.nat_keepalive == 20


# =============================================================================================
# Errors name the file and the right line
# =============================================================================================

MINI = """\
interfaces {
    st0 {
        unit 0 {
            family inet {
                address 10.255.0.1/30;
            }
        }
    }
}
security {
    ike {
        proposal P1 {
            authentication-method pre-shared-keys;
            dh-group group14;
            authentication-algorithm sha-256;
            encryption-algorithm aes-128-cbc;
        }
        policy POL {
            proposals P1;
            pre-shared-key ascii-text "mini secret";
        }
        gateway GW {
            ike-policy POL;
            address 198.51.100.2;
            local-address 203.0.113.1;
        }
    }
    ipsec {
        proposal E1 {
            protocol esp;
            encryption-algorithm aes-128-gcm;
        }
        policy IPOL {
            proposals E1;
        }
        vpn V {
            bind-interface st0.0;
            ike {
                gateway GW;
                ipsec-policy IPOL;
            }
        }
    }
}
routing-options {
    static {
        route 10.1.0.0/16 next-hop st0.0;
    }
}
"""


def line_of(text: str, needle: str) -> int:
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return i
    raise AssertionError(needle)


def edit(old: str, new: str) -> str:
    assert old in MINI
    return MINI.replace(old, new, 1)


def test_mini_config_is_valid():
    cfg = load(MINI)
    assert cfg.vpns["V"].proposals == ("aes128gcm16",)


SEMANTIC_ERRORS = [
    # (old, new, line marker, expected message part)
    ("dh-group group14;", "dh-grop group14;", "dh-grop",
     "unknown statement 'dh-grop' in security ike proposal P1 (did you mean 'dh-group'?)"),
    ("dh-group group14;", "dh-group group13;", "group13", "dh-group: 'group13' is not one of"),
    ("            dh-group group14;\n", "", "proposal P1", "missing dh-group"),
    ("            authentication-algorithm sha-256;\n", "", "encryption-algorithm aes-128-cbc",
     "authentication-algorithm is required with aes-128-cbc"),
    ("proposals P1;", "proposals [ P1 P9 ];", "proposals [ P1 P9 ]",
     "proposal 'P9' is not configured under security ike proposal"),
    ("proposals P1;", "proposals [ P1 P1 ];", "proposals [ P1 P1 ]", "listed twice"),
    ("proposals P1;", "proposals [ P1 P2 P3 P4 P5 ];", "P5", "at most 4 proposals, not 5"),
    ("ike-policy POL;", "ike-policy NOPE;", "ike-policy NOPE",
     "ike-policy 'NOPE' is not configured"),
    ("            ike-policy POL;\n", "", "gateway GW {", "missing ike-policy"),
    ("            address 198.51.100.2;\n", "", "gateway GW {", "missing address"),
    ("address 198.51.100.2;", "address 198.51.100.300;", "198.51.100.300",
     "address: '198.51.100.300' is not an IP address"),
    ("pre-shared-key ascii-text \"mini secret\";", "", "policy POL {", "missing pre-shared-key"),
    ("gateway GW;", "gateway GX;", "gateway GX;",
     "gateway 'GX' is not configured under security ike"),
    ("ipsec-policy IPOL;", "ipsec-policy NOPE;", "ipsec-policy NOPE",
     "ipsec-policy 'NOPE' is not configured"),
    ("bind-interface st0.0;", "bind-interface st0.7;", "bind-interface st0.7",
     "bind-interface st0.7 has no 'interfaces st0 unit 7'"),
    ("bind-interface st0.0;", "bind-interface ge-0/0/0.0;", "bind-interface ge-",
     "is not a tunnel interface st0.N"),
    ("route 10.1.0.0/16 next-hop st0.0;", "route 10.1.0.0/16 next-hop st0.4;", "st0.4",
     "next-hop st0.4 has no 'interfaces st0 unit 4'"),
    ("route 10.1.0.0/16 next-hop st0.0;", "route 10.1.0.0/16 {\n next-hop st0.0;\n metric 5;\n}",
     "metric 5", "unknown statement 'metric' in routing-options static route 10.1.0.0/16"),
    ("address 10.255.0.1/30;", "adress 10.255.0.1/30;", "adress",
     "unknown statement 'adress' in interfaces st0 unit 0 family inet"),
    ("protocol esp;", "protocol esb;", "protocol esb", "protocol: 'esb' is not one of esp | ah"),
    ("encryption-algorithm aes-128-gcm;",
     "encryption-algorithm aes-128-gcm;\n            authentication-algorithm hmac-sha1-96;",
     "proposal E1", "an AEAD cipher is its own integrity"),
    ("            ike {\n                gateway GW;",
     "            lifetime-seconds 100;\n            ike {\n                gateway GW;",
     "lifetime-seconds 100", "unknown statement 'lifetime-seconds' in security ipsec vpn V"),
    ("encryption-algorithm aes-128-cbc;",
     "encryption-algorithm aes-128-cbc;\n            lifetime-seconds 100;",
     "lifetime-seconds 100", "lifetime-seconds: 100 is out of range 180..86400"),
    ("encryption-algorithm aes-128-cbc;",
     "encryption-algorithm aes-128-cbc;\n            lifetime-seconds 1h;",
     "lifetime-seconds 1h", "lifetime-seconds: '1h' is not a number"),
    ("dh-group group14;", "dh-group group14;\n            dh-group group19;", "group19",
     "'dh-group' given twice in security ike proposal P1 (first on line 14)"),
    ("dh-group group14;", "dh-group group14 { x; }", "dh-group group14 {",
     "'dh-group' in security ike proposal P1 takes no '{ }' block"),
    ("address 198.51.100.2;", "address 198.51.100.2;\n            local-identity inet nope;",
     "local-identity inet nope", "local-identity inet: 'nope' is not an IP address"),
    ("address 198.51.100.2;",
     "address 198.51.100.2;\n            local-identity distinguished-name;",
     "local-identity distinguished-name", "needs certificate authentication"),
    ("address 198.51.100.2;", "address 198.51.100.2;\n            nat-keepalive 0;",
     "nat-keepalive 0", "nat-keepalive: 0 is out of range 1..300"),
    ("            ike {\n                gateway GW;",
     "            traffic-selector T1 {\n                local-ip 10.0.0.0/8;\n            }\n"
     "            ike {\n                gateway GW;",
     "traffic-selector T1", "traffic-selector T1: missing remote-ip"),
    ("pre-shared-key ascii-text \"mini secret\";", "pre-shared-key hexadecimal \"abc\";",
     "hexadecimal \"abc\"", "hexadecimal must be an even number of hex digits"),
    ("authentication-method pre-shared-keys;", "authentication-method rsa-signatures;",
     "policy POL {", "missing certificate { }"),
]


@pytest.mark.parametrize("old,new,marker,expected", SEMANTIC_ERRORS,
                         ids=[e[3][:40] for e in SEMANTIC_ERRORS])
def test_semantic_errors_name_the_line(old, new, marker, expected):
    text = edit(old, new)
    msg = error_of(text)
    assert msg.startswith(f"gw.conf:{line_of(text, marker)}: "), msg
    assert expected in msg, msg


def test_error_example_of_the_brief_exactly():
    text = edit("dh-group group14;", "dh-grop group14;")
    assert error_of(text).startswith("gw.conf:14: unknown statement 'dh-grop' in security ike "
                                     "proposal P1")


def test_errors_in_set_form_name_the_set_line():
    text = ("set interfaces st0 unit 0 family inet address 10.255.0.1/30\n"
            "set security ike proposal P1 authentication-method pre-shared-keys\n"
            "set security ike proposal P1 dh-grop group14\n")
    assert error_of(text, "gw.set") == ("gw.set:3: unknown statement 'dh-grop' in security ike "
                                        "proposal P1 (did you mean 'dh-group'?)")


def test_unknown_statement_in_pyspu_block():
    msg = error_of(MINI + "pyspu {\n    worker 2;\n}\n")
    assert msg.startswith(f"gw.conf:{len(MINI.splitlines()) + 2}: unknown statement 'worker' "
                          "in pyspu (did you mean 'workers'?)")


SYNTAX_ERRORS = [
    ('a {\n  b "unterminated;\n}\n', 2, "unterminated string"),
    ("a {\n  b {\n    c;\n  }\n", 1, "missing '}' for the '{' on this line"),
    ("a {\n  b {\n    c;\n", 2, "missing '}'"),
    ("a;\n}\n", 2, "unexpected '}'"),
    ("a {\n  b c\n}\n", 2, "missing ';' after the statement 'b' ..."),
    ("a {\n  b\n}\n", 2, "missing ';' after the statement 'b'"),
    ("a;\n/* never\nclosed\n", 2, "unterminated comment"),
    ("a [ b c;\n", 1, "unexpected ';' inside '[ ]'"),
    ("a [ b c\n", 1, "missing ']'"),
    ("a ];\n", 1, "unexpected ']'"),
    ("{ a; }\n", 1, "'{' without a statement name"),
    ("a;\n;\n", 2, "unexpected ';'"),
    ("a;\nset b c\n", 2, "'set' line in a curly-brace file"),
    ("set a b\nset c {\n", 2, "unexpected '{' in a set-form file"),
    ("set a b\ndelete c\n", 2, "expected a 'set' line"),
    ("set a b\nset\n", 2, "nothing after 'set'"),
    ("a\x01;\n", 1, "unexpected control character U+0001"),
    ("set security ike proposal\n", 1, "'proposal' needs a name"),
    ("set a b\ndeactivate a c\n", 2, "'deactivate' names a statement that is not configured"),
]


@pytest.mark.parametrize("text,line,expected", SYNTAX_ERRORS,
                         ids=[e[2][:40] for e in SYNTAX_ERRORS])
def test_syntax_errors_name_the_line(text, line, expected):
    with pytest.raises(ConfigError) as info:
        parse(text, "gw.conf", TABLE)
    assert str(info.value).startswith(f"gw.conf:{line}: "), str(info.value)
    assert expected in str(info.value)
    assert info.value.line == line and info.value.filename == "gw.conf"


def test_load_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_gateway_config(str(tmp_path / "missing.conf"))
    bad = tmp_path / "bad.conf"
    bad.write_bytes(b"a;\nb \xff;\n")
    with pytest.raises(ConfigError) as info:
        load_gateway_config(str(bad))
    assert str(info.value) == "bad.conf:2: not UTF-8 text"


# =============================================================================================
# Fuzz: nothing but ConfigError escapes
# =============================================================================================

_JUNOS_BITS = st.sampled_from([
    "{", "}", ";", "[", "]", '"', "\\", "#", "/*", "*/", "\n", " ", "set ", "deactivate ",
    "inactive: ", "security ", "ike ", "ipsec ", "proposal ", "P1 ", "policy ", "gateway ",
    "vpn ", "interfaces ", "st0 ", "unit ", "0 ", "family ", "inet ", "address ",
    "10.0.0.1/30 ", "routing-options ", "static ", "route ", "next-hop ", "st0.0 ",
    "pyspu ", "dh-group ", "group14 ", "proposals ", "manual ", "spi ", "4096 ",
    "pre-shared-key ", "ascii-text ", "hexadecimal ", "00ff ", "bind-interface ",
    "traffic-selector ", "local-ip ", "remote-ip ", "key ", "\x00", "é", "\r",
])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=300), st.lists(_JUNOS_BITS, max_size=60).map("".join)))
def test_fuzz_junos_parser_raises_only_config_error(text):
    for shape in (None, TABLE):
        try:
            tree = parse(text, "fuzz.conf", shape)
        except ConfigError as err:
            assert str(err).startswith("fuzz.conf")
            assert "\n" not in str(err)
        else:
            assert isinstance(tree, Node)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_JUNOS_BITS, max_size=80).map("".join))
def test_fuzz_whole_reader_raises_only_config_error(text):
    try:
        load(text, "fuzz.conf")
    except ConfigError as err:
        assert "\n" not in str(err)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(MINI)), st.sampled_from(["{", "}", ";", '"', "x ", "[", "\n"]))
def test_fuzz_damaged_valid_config(pos, junk):
    try:
        load(MINI[:pos] + junk + MINI[pos:])
    except ConfigError as err:
        assert "\n" not in str(err)


# =============================================================================================
# Every algorithm name of CONFIG.md maps to something the IKE core / the engine accepts
# =============================================================================================

def test_tables_cover_exactly_config_md_names():
    assert list(ja.IKE_ENCRYPTION) == IKE_ENC
    assert list(ja.IKE_AUTHENTICATION) == IKE_AUTH
    assert list(ja.DH_GROUPS) == DH
    assert list(ja.IKE_AUTH_METHODS) == IKE_METHODS
    assert list(ja.ESP_ENCRYPTION) == ESP_ENC
    assert list(ja.IPSEC_AUTHENTICATION) == ESP_AUTH
    assert list(ja.MANUAL_ENCRYPTION) == ESP_ENC
    assert list(ja.MANUAL_AUTHENTICATION) == ESP_AUTH


@pytest.mark.parametrize("enc", IKE_ENC)
def test_every_ike_combination_parses(enc):
    for auth in IKE_AUTH + [None]:
        for dh in DH:
            if auth is None and enc not in ja.IKE_AEAD:
                with pytest.raises(ValueError, match="required"):
                    ja.ike_proposal_text(enc, auth, dh)
                continue
            p = parse_proposal(ja.ike_proposal_text(enc, auth, dh), Protocol.IKE)
            types = {t.type for t in p.transforms}
            assert types == ({1, 2, 4} if enc in ja.IKE_AEAD else {1, 2, 3, 4})


def test_ike_gcm_prf_default_and_explicit():
    assert ja.ike_proposal_text("aes-128-gcm", None, "group19") == "aes128gcm16-prfsha256-ecp256"
    assert ja.ike_proposal_text("aes-256-gcm", None, "group20") == "aes256gcm16-prfsha384-ecp384"
    assert ja.ike_proposal_text("aes-128-gcm", "sha-256", "group14") == \
        "aes128gcm16-prfsha256-modp2048"
    assert ja.ike_proposal_text("aes-128-cbc", "sha-256", "group14") == "aes128-sha256-modp2048"


@pytest.mark.parametrize("enc", ESP_ENC + [None])
def test_every_esp_combination_runs_on_the_engine(enc):
    for auth in ESP_AUTH + [None]:
        for pfs in (None, "group14", "group31"):
            aead = enc in ja.ESP_AEAD
            if aead == (auth is not None) or (enc is None and auth is None):
                with pytest.raises(ValueError):
                    ja.esp_proposal_text(enc, auth, pfs)
                continue
            p = parse_proposal(ja.esp_proposal_text(enc, auth, pfs), Protocol.ESP)
            alg = esp_algorithms(p)          # what the engine will be asked to run
            if alg.aead:
                assert alg.aead in CIPHERS and alg.enc_key_len in CIPHERS[alg.aead].key_sizes
            else:
                assert alg.enc in CIPHERS and alg.auth in AUTHS
                assert alg.enc_key_len in CIPHERS[alg.enc].key_sizes


def test_manual_algorithms_match_the_engine():
    for name, spec in ja.MANUAL_ENCRYPTION.items():
        cipher = CIPHERS[spec.name]
        assert spec.key_len in cipher.key_sizes, name
        assert cipher.aead == bool(spec.icv_bits)
        if cipher.aead:
            assert spec.icv_bits in cipher.icv_bits
    for name, spec in ja.MANUAL_AUTHENTICATION.items():
        auth = AUTHS[spec.name]
        assert spec.key_len == auth.digest_len and spec.icv_bits == auth.rfc_bits, name
        assert name.endswith(f"-{spec.icv_bits}")


def test_ah_vpn_is_parsed_and_says_ah():
    text = edit("            protocol esp;\n            encryption-algorithm aes-128-gcm;",
                "            protocol ah;\n            authentication-algorithm hmac-sha-256-128;")
    vpn = load(text).vpns["V"]
    assert vpn.protocol == "ah" and vpn.proposals == ("sha256",)
    # AH children: protocol AH, RFC 7296 3.3.3 transforms (INTEG + ESN, no ENCR)
    assert vpn.children and all(c.protocol == Protocol.AH for c in vpn.children)
    (prop,) = vpn.children[0].proposals
    assert prop.protocol == Protocol.AH
    assert [(t.type, t.id) for t in prop.transforms] == [
        (TransformType.INTEG, Integ.HMAC_SHA2_256_128), (TransformType.ESN, ESN.NO)]


def test_v1_only_is_carried():
    text = edit("local-address 203.0.113.1;", "local-address 203.0.113.1;\n"
                "            version v1-only;")
    assert load(text).ike_gateways["GW"].version == "v1-only"
    assert load(MINI).ike_gateways["GW"].version == "v2-only"


# =============================================================================================
# Manual keys: the SAConfigs round-trip through two engines
# =============================================================================================

def _ipv4(src: str, dst: str, payload: bytes) -> bytes:
    h = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 7, 0, 64, 17, 0,
                              ipaddress.IPv4Address(src).packed,
                              ipaddress.IPv4Address(dst).packed))
    total = sum(struct.unpack("!10H", bytes(h)))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    h[10:12] = struct.pack("!H", ~total & 0xFFFF)
    return bytes(h) + payload


def _peer_view(text: str) -> str:
    """The same manual VPNs configured on the other end (addresses swapped)."""
    return (text.replace("203.0.113.1/24", "TMP").replace("gateway 198.51.100.2",
                                                          "gateway 203.0.113.1")
            .replace("TMP", "198.51.100.2/24"))


@pytest.mark.parametrize("vpn", ["MANUAL-CBC", "MANUAL-GCM"])
def test_manual_sas_round_trip_through_two_engines(vpn):
    from engine.batch import PacketBatch
    from engine.engine import Engine
    text = (EXAMPLES / "gateway-manual.conf").read_text()
    if vpn == "MANUAL-GCM":
        text = text.replace("gateway 192.0.2.7", "gateway 198.51.100.2")
    ours = load(text, "a.conf").manual_vpns[vpn]
    theirs = load(_peer_view(text), "b.conf").manual_vpns[vpn]
    assert ours.outbound.src == theirs.inbound.src == ipaddress.ip_address("203.0.113.1")
    assert ours.outbound == theirs.inbound and theirs.outbound == ours.inbound
    assert ours.outbound.spi == ours.inbound.spi and ours.outbound.mode == MODE_TUNNEL
    assert ours.outbound.proto == PROTO_ESP
    a, b = Engine(), Engine()
    h_out = a.install(ours.outbound, "out")
    b.install(theirs.inbound, "in")
    inner = _ipv4("10.0.0.5", "10.1.0.9", b"pyspu manual key payload " * 3)
    batch = PacketBatch.from_packets([inner])
    batch.sa[0] = h_out
    a.encrypt(batch)
    assert batch.drop[0] == 0
    wire = batch.packet(0)
    assert wire[9] == PROTO_ESP and inner[20:] not in wire
    back = PacketBatch.from_packets([wire])
    b.decrypt(back)
    assert back.drop[0] == 0 and back.packet(0) == inner


def test_manual_key_checks_name_the_key_line():
    text = (EXAMPLES / "gateway-manual.conf").read_text()
    short = text.replace(MANUAL_ENC_KEY, MANUAL_ENC_KEY[:-2])
    msg = error_of(short, "m.conf")
    assert msg.startswith(f"m.conf:{line_of(short, MANUAL_ENC_KEY[:-2])}: ")
    assert "aes-128-cbc needs a 16-byte key, this one has 15 bytes" in msg
    assert MANUAL_ENC_KEY[:-2] not in msg
    gcm = text.replace("404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
                       "60616263", "00" * 32)
    assert "needs a 36-byte key including the 4-byte salt" in error_of(gcm, "m.conf")
    nointeg = text.replace("algorithm aes-256-gcm;", "algorithm aes-256-cbc;")
    assert "aes-256-cbc needs a 32-byte key" in error_of(nointeg, "m.conf")


def test_manual_ah_and_local_address_sources():
    text = """
    interfaces { st0 { unit 0 { family inet; } } }
    security { ipsec { vpn M { bind-interface st0.0; manual {
        gateway 198.51.100.2; protocol ah; spi 300;
        authentication { algorithm hmac-sha1-96; key ascii-text "20-byte-ascii-key!!!"; }
    } } } }
    pyspu { listen-address 203.0.113.9; }
    """
    man = load(text).manual_vpns["M"]
    assert man.outbound.proto == PROTO_AH and man.outbound.auth == "hmac(sha1)"
    assert man.outbound.auth_key == b"20-byte-ascii-key!!!" and man.outbound.icv_bits == 96
    assert man.local_address == ipaddress.ip_address("203.0.113.9")
    assert man.outbound.replay_window == 0          # manual SAs: no anti-replay by default
    msg = error_of(text.replace("pyspu { listen-address 203.0.113.9; }", ""))
    assert "no local address" in msg


# =============================================================================================
# Secrets: hex and ASCII; never in repr, str, describe() or errors
# =============================================================================================

def test_syntax_errors_do_not_echo_values():
    text = edit('pre-shared-key ascii-text "mini secret";',
                'pre-shared-key ascii-text "mini secret"')
    msg = error_of(text)
    assert msg.startswith(f"gw.conf:{line_of(text, 'pre-shared-key ascii')}: missing ';'")
    assert "mini" not in msg and "secret" not in msg
    msg = error_of('set a b\n"mini secret" and more\n', "gw.set")
    assert msg == "gw.set:2: expected a 'set' line, not this (a file is either set lines or braces)"


def test_psk_hex_and_ascii_are_the_same_key():
    ascii_cfg = load(MINI)
    hex_text = edit('pre-shared-key ascii-text "mini secret";',
                    f'pre-shared-key hexadecimal "{b"mini secret".hex()}";')
    hex0x = edit('pre-shared-key ascii-text "mini secret";',
                 f'pre-shared-key hexadecimal 0x{b"mini secret".hex().upper()};')
    assert load(hex_text) == ascii_cfg == load(hex0x)
    assert ascii_cfg.ike_gateways["GW"].ike.psk == b"mini secret"


def test_no_secret_in_repr_str_or_describe():
    cfgs = [load_gateway_config(str(EXAMPLES / "gateway-psk.conf")),
            load_gateway_config(str(EXAMPLES / "gateway-manual.conf"))]
    secrets = [PSK_ASCII, PSK_HEX, "branch2 key", MANUAL_AUTH_KEY, MANUAL_ENC_KEY,
               "4041424344454647"]
    for cfg in cfgs:
        shown = repr(cfg) + str(cfg) + cfg.describe()
        for man in cfg.manual_vpns.values():
            shown += repr(man) + repr(man.inbound)
        for gw in cfg.ike_gateways.values():
            shown += repr(gw) + repr(gw.ike)
        for s in secrets:
            assert s not in shown
            assert repr(bytes.fromhex(s) if s == PSK_HEX else s.encode())[2:-1] not in shown


@pytest.mark.parametrize("value", ['ascii-text', 'hexadecimal "zz-top-secret"',
                                   'ascii-text "$9$top_secret"', 'plain "top-secret"',
                                   'ascii-text "top\\tsecret"', 'hexadecimal "$9$secret"'])
def test_bad_secret_errors_do_not_echo_it(value):
    msg = error_of(edit('pre-shared-key ascii-text "mini secret";', f"pre-shared-key {value};"))
    assert msg.startswith(f"gw.conf:{line_of(MINI, 'pre-shared-key ascii')}: pre-shared-key")
    assert "secret" not in msg.split("pre-shared-key", 1)[1].replace("ascii-text", "")


def test_describe_summarises():
    text = load_gateway_config(str(EXAMPLES / "gateway-psk.conf")).describe()
    for part in ("gateway GW-BRANCH1", "aes256gcm16-prfsha384-ecp384", "vpn VPN-BRANCH1",
                 "10.0.200.0/24 <-> 10.1.200.0/24", "interface st0.0: 10.255.0.1/30",
                 "route 10.1.0.0/16 -> st0.0", "pyspu: tun st0", "ignored: system"):
        assert part in text


# =============================================================================================
# Certificates (files made by the test, names relative to the configuration file)
# =============================================================================================

def test_certificate_example(tmp_path):
    from cert_factory import Pki
    pki = Pki("ecdsa-256")
    leaf, key = pki.leaf("C=CH, O=pyspu test, CN=gw.example.net", key_type="ecdsa-256")
    pki.write(tmp_path / "certs", leaf, key)
    conf = tmp_path / "gateway-cert.conf"
    shutil.copy(EXAMPLES / "gateway-cert.conf", conf)
    cfg = load_gateway_config(str(conf))
    gw = cfg.ike_gateways["GW-PEER"]
    assert gw.auth_method == "ecdsa-signatures-256"
    assert gw.ike.auth_method == "ecdsa-signatures-256" and gw.ike.psk == b""
    assert gw.ike.credentials is not None
    assert gw.ike.local_id == Identity.from_certificate(leaf)
    assert gw.ike.remote_id == Identity.distinguished_name(
        "C=CH, O=pyspu test, CN=peer.example.net")
    assert gw.ike.dpd_interval == 10                 # `dead-peer-detection;` alone: defaults
    assert cfg.vpns["VPN-PEER"].proposals == ("aes128gcm16-ecp256",)
    assert "BEGIN" not in repr(cfg) and "PRIVATE" not in cfg.describe()
    (tmp_path / "certs" / "gw.key").write_text("not a key")
    msg = str(pytest.raises(ConfigError, load_gateway_config, str(conf)).value)
    assert msg.startswith(f"gateway-cert.conf:{line_of(conf.read_text(), 'certificate {')}: ")
    assert "private key" in msg


# =============================================================================================
# $9$: keys as `show configuration` prints them
# =============================================================================================

# Two encodings of b"hello" (different random start and filler characters), from the
# juniper9-crypt README (github.com/antoinekh/juniper9-crypt), a port of Crypt::Juniper.
NINE_HELLO = ("$9$FNkC3/t1IcevLuOWx", "$9$o1aGiPfz/Cuk.tO")


@pytest.mark.parametrize("encoded", NINE_HELLO)
def test_nine_encoded_psk_is_decoded(encoded):
    from ike.junos_secret import decode
    assert decode(encoded) == b"hello"
    cfg = load(edit('pre-shared-key ascii-text "mini secret";',
                    f'pre-shared-key ascii-text "{encoded}"; ## SECRET-DATA'))
    assert cfg.ike_gateways["GW"].ike.psk == b"hello"


def test_nine_decoder_refuses_malformed_values():
    from ike.junos_secret import decode
    for bad in ("$9$", "$9$FNkC3/t1IcevLuOW", "$9$FNk C3", "hello", "$9$Q"):
        with pytest.raises(ValueError, match="not a valid"):
            decode(bad)


_LEAF_LINES = [i for i, line in enumerate(MINI.splitlines()) if line.rstrip().endswith(";")]
_EXTRA_LEAVES = ["local-identity distinguished-name", "remote-identity distinguished-name",
                 "local-identity hostname", "remote-identity user-at-hostname",
                 "local-identity inet", "nat-keepalive", "version", "external-interface"]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_LEAF_LINES), st.text(max_size=40),
       st.sampled_from(_EXTRA_LEAVES))
def test_fuzz_statement_values(index, value, extra):
    """Any value in any statement of a valid configuration: a config or a ConfigError."""
    quoted = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    lines = MINI.splitlines()
    words = lines[index].strip().rstrip(";").split()
    lines[index] = " ".join(words[:-1] + [quoted]) + ";"
    anchor = "local-address 203.0.113.1;"
    variants = ["\n".join(lines), MINI.replace(anchor, anchor + f"\n{extra} {quoted};")]
    for text in variants:
        try:
            load(text)
        except ConfigError as err:
            assert "\n" not in str(err)


# =============================================================================================
# Smaller behaviours
# =============================================================================================

def test_set_form_proposal_lists_accumulate_like_junos():
    flat = (EXAMPLES / "gateway-psk.set").read_text().replace(
        "set security ike policy IKE-POL-BRANCH1 proposals [ IKE-GCM IKE-CBC ]",
        "set security ike policy IKE-POL-BRANCH1 proposals IKE-GCM\n"
        "set security ike policy IKE-POL-BRANCH1 proposals IKE-CBC")
    assert load(flat, "gw.set") == load_gateway_config(str(EXAMPLES / "gateway-psk.conf"))


def test_no_nat_traversal_turns_keepalives_off():
    gw = load(edit("local-address 203.0.113.1;",
                   "local-address 203.0.113.1;\n            no-nat-traversal;")).ike_gateways["GW"]
    assert gw.nat_traversal is False and gw.ike.nat_keepalive == 0
    assert load(MINI).ike_gateways["GW"].nat_traversal is True


def test_identities():
    def gw(extra):
        return load(edit("local-address 203.0.113.1;",
                         "local-address 203.0.113.1;\n" + extra)).ike_gateways["GW"].ike
    ike = gw('local-identity user-at-hostname "vpn@hq.example.net";\n'
             "remote-identity inet 198.51.100.2;")
    assert ike.local_id == Identity.user_at_hostname("vpn@hq.example.net")
    assert ike.remote_id == Identity.inet("198.51.100.2")
    ike = gw('remote-identity distinguished-name "C=CH, O=pyspu, CN=branch";')
    assert ike.remote_id == Identity.distinguished_name("C=CH, O=pyspu, CN=branch")
    text = edit("local-address 203.0.113.1;",
                'local-address 203.0.113.1;\nlocal-identity user-at-hostname "nobody";')
    assert "expected user@host" in error_of(text)


def test_ipv6_gateway_and_selectors():
    text = (MINI.replace("address 10.255.0.1/30;", "address 10.255.0.1/30;\n}\n"
                         "family inet6 {\naddress 2001:db8:ff::1/64;")
            .replace("198.51.100.2", "2001:db8::2").replace("203.0.113.1", "2001:db8::1")
            .replace("            ike {\n                gateway GW;",
                     "            traffic-selector T6 { local-ip 2001:db8:10::/48; "
                     "remote-ip 2001:db8:20::/48; }\n"
                     "            ike {\n                gateway GW;"))
    cfg = load(text)
    gw = cfg.ike_gateways["GW"]
    assert gw.address == ipaddress.ip_address("2001:db8::2")
    assert gw.ike.local_id == Identity.inet("2001:db8::1")
    (child,) = cfg.vpns["V"].children
    assert child.local_ts == ChildConfig(local_ts=("2001:db8:10::/48",)).local_ts
    assert cfg.interfaces[0][1] == ipaddress.ip_interface("2001:db8:ff::1/64")
    mixed = text.replace("local-address 2001:db8::1;", "local-address 203.0.113.1;")
    assert "different families" in error_of(mixed)
    wrong = text.replace("address 2001:db8:ff::1/64;", "address 10.9.9.9/24;")
    assert "not a family inet6 address" in error_of(wrong)


def test_pyspu_block():
    cfg = load(MINI + "pyspu {\n tun-name vpn0;\n control-socket /tmp/gw.sock;\n"
               " listen-address 203.0.113.5;\n workers 4;\n}\n")
    s = cfg.pyspu
    assert (s.tun_name, s.control_socket, s.listen_address, s.workers) == (
        "vpn0", "/tmp/gw.sock", "203.0.113.5", 4)
    assert "workers: 65 is out of range 1..64" in error_of(MINI + "pyspu { workers 65; }")
    assert "not a Linux interface name" in error_of(MINI + 'pyspu { tun-name "a/b"; }')
    too_long = MINI + "pyspu { tun-name st0-is-way-too-long; }"
    assert "not a Linux interface name" in error_of(too_long)


def test_empty_configuration_is_valid_and_empty():
    cfg = load("/* nothing */\n")
    assert not cfg.ike_gateways and not cfg.vpns and not cfg.manual_vpns and not cfg.routes
    assert cfg.pyspu.listen_address == "0.0.0.0"
