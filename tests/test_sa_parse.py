"""SA-file parser: the `ip xfrm state add` argument syntax of the `spu` contract."""
from __future__ import annotations

import ipaddress

import pytest

from engine.algorithms import AUTHS, CIPHERS, Auth, Cipher
from engine.sa import (
    MODE_TRANSPORT,
    MODE_TUNNEL,
    PROTO_AH,
    PROTO_ESP,
    SAParseError,
    parse_sa_file,
    parse_sa_text,
)

ID = "src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x1001"
AH_ID = "src 192.0.2.1 dst 192.0.2.2 proto ah spi 0x1001"
AES128 = "0x00112233445566778899aabbccddeeff"
SHA1_KEY = "0x0011223344556677889900112233445566778899"
CBC_SHA1 = f"enc 'cbc(aes)' {AES128} auth-trunc 'hmac(sha1)' {SHA1_KEY} 96"
GCM128 = "0x" + "11" * 16 + "cafebabe"        # AES-128 key || 4-byte salt


def one(text: str):
    sas = parse_sa_text(text)
    assert len(sas) == 1
    return sas[0]


def error(text: str) -> SAParseError:
    with pytest.raises(SAParseError) as info:
        parse_sa_text(text)
    return info.value


# --- the contract's example ----------------------------------------------------------------

CONTRACT_EXAMPLE = r"""
    src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x00001001 mode tunnel \
        replay-window 64 flag esn replay-oseq 0xfffffff0 \
        enc 'cbc(aes)' 0x00112233445566778899aabbccddeeff \
        auth-trunc 'hmac(sha1)' 0x0011223344556677889900112233445566778899 96 \
        encap espinudp 4500 4500 0.0.0.0 \
        sel src 10.1.0.0/16 dst 10.2.0.0/16
"""


def test_contract_example():
    sa = one(CONTRACT_EXAMPLE)
    assert sa.src == ipaddress.ip_address("192.0.2.1")
    assert sa.dst == ipaddress.ip_address("192.0.2.2")
    assert (sa.proto, sa.spi, sa.mode) == (PROTO_ESP, 0x1001, MODE_TUNNEL)
    assert (sa.replay_window, sa.esn, sa.oseq, sa.seq) == (64, True, 0xFFFFFFF0, 0)
    assert sa.enc == "cbc(aes)" and sa.enc_key == bytes.fromhex(AES128[2:])
    assert sa.auth == "hmac(sha1)" and sa.auth_key == bytes.fromhex(SHA1_KEY[2:])
    assert sa.icv_bits == 96 and sa.aead is None and sa.aead_key == b""
    assert (sa.encap_sport, sa.encap_dport) == (4500, 4500)
    assert sa.sel.src == ipaddress.ip_network("10.1.0.0/16")
    assert sa.sel.dst == ipaddress.ip_network("10.2.0.0/16")
    assert (sa.sel.proto, sa.sel.sport, sa.sel.dport) == (0, None, None)
    assert sa.line == 2                           # the blank first line counts
    assert sa.cipher_id == Cipher.AES_CBC and sa.auth_id == Auth.HMAC_SHA1
    assert sa.has_integrity and sa.family == 4


def test_defaults():
    sa = one(f"{ID} {CBC_SHA1}")
    assert sa.mode == MODE_TUNNEL and sa.replay_window == 64
    assert (sa.esn, sa.oseq, sa.seq) == (False, 0, 0)
    assert sa.encap_sport is None and sa.encap_dport is None and sa.sel is None
    assert sa.line == 1


def test_file_order_and_line_numbers():
    text = (
        "# two SAs\n"
        "\n"
        f"{ID} \\\n"
        f"  {CBC_SHA1}\n"
        "   # indented comment\n"
        f"  src 192.0.2.2 dst 192.0.2.1 proto esp spi 0x2002 {CBC_SHA1}  \n"
        f"src 2001:db8::1 dst 2001:db8::2 proto ah spi 7 auth 'hmac(sha256)' {SHA1_KEY}\r\n"
    )
    sas = parse_sa_text(text)
    assert [(s.spi, s.line) for s in sas] == [(0x1001, 3), (0x2002, 6), (7, 7)]
    assert sas[2].family == 6 and sas[2].proto == PROTO_AH


def test_empty_text():
    assert parse_sa_text("") == []
    assert parse_sa_text("# nothing\n\n   \n") == []


# --- algorithms --------------------------------------------------------------------------

ENC_KEYS = {
    "cbc(aes)": ["0x" + "01" * 16, "0x" + "01" * 24, "0x" + "01" * 32],
    "cbc(des3_ede)": ["0x" + "02" * 24],
    "cbc(des)": ["0x" + "03" * 8],
    "rfc3686(ctr(aes))": ["0x" + "04" * 20, "0x" + "04" * 28, "0x" + "04" * 36],
    "ecb(cipher_null)": ['""', "''", "0x"],
}


@pytest.mark.parametrize("name,key", [(n, k) for n, ks in ENC_KEYS.items() for k in ks])
def test_enc_algorithms(name, key):
    sa = one(f"{ID} enc '{name}' {key} auth 'hmac(sha1)' {SHA1_KEY}")
    assert sa.enc == name and sa.cipher_id == CIPHERS[name].id
    assert len(sa.enc_key) in CIPHERS[name].key_sizes


def test_every_non_aead_cipher_is_covered():
    assert set(ENC_KEYS) == {n for n, s in CIPHERS.items() if not s.aead}


# `longest`: the full digest, capped at the data path's 256-bit ICV limit (MAX_ICV)
@pytest.mark.parametrize("name,default,full", [
    ("hmac(md5)", 96, 128), ("hmac(sha1)", 96, 160), ("hmac(sha256)", 96, 256),
    ("hmac(sha384)", 192, 256), ("hmac(sha512)", 256, 256),
])
def test_auth_algorithms(name, default, full):
    key = "0x" + "ab" * AUTHS[name].digest_len
    sa = one(f"{ID} enc 'cbc(aes)' {AES128} auth '{name}' {key}")
    assert (sa.auth, sa.icv_bits, sa.auth_id) == (name, default, AUTHS[name].id)
    for bits in (32, AUTHS[name].rfc_bits, full):
        sa = one(f"{ID} enc 'cbc(aes)' {AES128} auth-trunc '{name}' {key} {bits}")
        assert (sa.auth, sa.icv_bits) == (name, bits)


def test_hmac_key_of_any_length():
    # RFC 2104 2: HMAC takes keys of any length (long ones are hashed first).
    for key in ("0x01", "'secret'", "0x" + "01" * 200):
        assert one(f"{ID} enc 'cbc(aes)' {AES128} auth 'hmac(sha256)' {key}").auth_key


@pytest.mark.parametrize("key", ['""', "0x", "''"])
def test_digest_null_means_no_integrity(key):
    sa = one(f"{ID} enc 'cbc(aes)' {AES128} auth digest_null {key}")
    assert sa.auth is None and sa.auth_key == b"" and sa.icv_bits == 0
    assert not sa.has_integrity and sa.auth_id == Auth.NONE
    sa = one(f"{ID} enc 'cbc(aes)' {AES128} auth-trunc digest_null {key} 0")
    assert sa.auth is None and sa.icv_bits == 0


def test_enc_without_auth_is_allowed():
    sa = one(f"{ID} enc 'cbc(aes)' {AES128}")
    assert sa.auth is None and sa.icv_bits == 0 and not sa.has_integrity


def test_null_encryption():
    sa = one(f"{ID} enc 'ecb(cipher_null)' \"\" auth 'hmac(sha1)' {SHA1_KEY}")
    assert sa.enc == "ecb(cipher_null)" and sa.enc_key == b"" and sa.cipher_id == Cipher.NULL
    assert sa.has_integrity


@pytest.mark.parametrize("name,key,bits", [
    ("rfc4106(gcm(aes))", GCM128, 64), ("rfc4106(gcm(aes))", GCM128, 96),
    ("rfc4106(gcm(aes))", "0x" + "22" * 28, 128), ("rfc4106(gcm(aes))", "0x" + "22" * 36, 128),
    ("rfc4543(gcm(aes))", GCM128, 128), ("rfc4543(gcm(aes))", "0x" + "33" * 36, 128),
    ("rfc7539esp(chacha20,poly1305)", "0x" + "44" * 36, 128),
])
def test_aead_algorithms(name, key, bits):
    sa = one(f"{ID} aead '{name}' {key} {bits}")
    assert (sa.aead, sa.icv_bits, sa.cipher_id) == (name, bits, CIPHERS[name].id)
    assert sa.aead_key == bytes.fromhex(key[2:])
    assert sa.enc is None and sa.auth is None and sa.has_integrity


def test_ah():
    sa = one(f"{AH_ID} mode transport auth-trunc 'hmac(sha256)' 0x{'55' * 32} 128")
    assert (sa.proto, sa.mode, sa.auth, sa.icv_bits) == (PROTO_AH, MODE_TRANSPORT,
                                                          "hmac(sha256)", 128)
    assert sa.enc is None and sa.aead is None


def test_ascii_key():
    sa = one(f"{ID} enc 'cbc(aes)' '0123456789abcdef' auth 'hmac(md5)' \"my key\"")
    assert sa.enc_key == b"0123456789abcdef" and sa.auth_key == b"my key"


def test_hex_key_case():
    sa = one(f"{ID} enc 'cbc(aes)' 0X{'AbCd' * 8}")
    assert sa.enc_key == bytes.fromhex("abcd" * 8)


# --- syntax ------------------------------------------------------------------------------

def test_quotes_optional():
    bare = one("src 192.0.2.1 dst 192.0.2.2 proto esp spi 4097 mode transport "
               f"enc cbc(aes) {AES128} auth hmac(sha1) {SHA1_KEY} "
               "sel src 10.0.0.1 dst 10.0.0.2 proto udp dport 500")
    double = one('"src" "192.0.2.1" "dst" "192.0.2.2" "proto" "esp" "spi" "4097" '
                 '"mode" "transport" '
                 f'"enc" "cbc(aes)" "{AES128}" "auth" "hmac(sha1)" "{SHA1_KEY}" '
                 '"sel" "src" "10.0.0.1" "dst" "10.0.0.2" "proto" "udp" "dport" "500"')
    single = one("'src' '192.0.2.1' dst '192.0.2.2' proto 'esp' spi '4097' mode 'transport' "
                 f"'enc' 'cbc(aes)' '{AES128}' auth 'hmac(sha1)' '{SHA1_KEY}' "
                 "sel 'src' '10.0.0.1' dst 10.0.0.2 'proto' udp dport '500'")
    glued = one("src 192.0.2.1 dst 192.0.2.2 proto e'sp' spi 4097 mode tr\"ansport\" "
                f"enc 'cbc'(aes) {AES128} auth hmac'(sha1)' {SHA1_KEY} "
                "sel src 10.0.0.1 dst 10.0.0.2 proto udp dport 500")
    assert bare == double == single == glued


def test_keywords_in_any_order():
    a = one(f"{ID} mode transport replay-window 32 {CBC_SHA1} encap espinudp 4500 4500 0.0.0.0")
    b = one(f"encap espinudp 4500 4500 0.0.0.0 {CBC_SHA1} replay-window 32 mode transport "
            "spi 0x1001 proto esp dst 192.0.2.2 src 192.0.2.1")
    assert a == b


def test_numbers_hex_and_decimal():
    a = one(f"src 192.0.2.1 dst 192.0.2.2 proto esp spi 0xfFfFfFfF replay-window 0x40 "
            f"replay-oseq 0x10 replay-seq 0X20 {CBC_SHA1} encap espinudp 0x1194 4500 0.0.0.0")
    b = one(f"src 192.0.2.1 dst 192.0.2.2 proto esp spi 4294967295 replay-window 64 "
            f"replay-oseq 16 replay-seq 32 {CBC_SHA1} encap espinudp 4500 0x1194 0.0.0.0")
    assert a == b and a.spi == 0xFFFFFFFF and (a.oseq, a.seq) == (16, 32)
    assert one(f"{ID} {CBC_SHA1} replay-window 010").replay_window == 10   # decimal, not octal


@pytest.mark.parametrize("window", [0, 1, 63, 64, 4096, 65536])
def test_replay_window_values(window):
    sa = one(f"{ID} {CBC_SHA1} replay-window {window}")
    assert sa.replay_window == window


def test_esn_64_bit_sequence_numbers():
    sa = one(f"{ID} {CBC_SHA1} flag esn replay-oseq 0x1fffffff0 replay-seq 0xffffffffffffffff")
    assert (sa.esn, sa.oseq, sa.seq) == (True, 0x1FFFFFFF0, 2**64 - 1)
    sa = one(f"{ID} {CBC_SHA1} flag esn replay-oseq 0xfffffff0 replay-oseq-hi 1 "
             "replay-seq-hi 0x2 replay-seq 5")
    assert (sa.oseq, sa.seq) == (0x1FFFFFFF0, (2 << 32) | 5)
    sa = one(f"{ID} {CBC_SHA1} flag esn replay-seq-hi 3")
    assert sa.seq == 3 << 32 and sa.oseq == 0
    # A zero high word is fine without ESN.
    assert one(f"{ID} {CBC_SHA1} replay-oseq-hi 0 replay-oseq 0xffffffff").oseq == 0xFFFFFFFF


def test_flags():
    assert one(f"{ID} {CBC_SHA1} flag esn").esn
    assert one(f"{ID} {CBC_SHA1} flag af-unspec esn nopmtudisc").esn
    assert not one(f"{ID} {CBC_SHA1} flag af-unspec").esn
    assert one(f"{ID} flag esn {CBC_SHA1}").esn           # the flag list ends at a keyword


def test_reqid_is_accepted():
    assert one(f"{ID} reqid 1 {CBC_SHA1}") == one(f"{ID} {CBC_SHA1}")


def test_ipv6_sa_with_encap():
    sa = one(f"src 2001:db8::1 dst 2001:db8::2 proto esp spi 5 {CBC_SHA1} "
             "encap espinudp 4500 4500 ::")
    assert sa.family == 6 and sa.encap_dport == 4500


# --- selectors ---------------------------------------------------------------------------

def sel(text: str):
    return one(f"{ID} {CBC_SHA1} sel {text}").sel


def test_sel_hosts_and_prefixes():
    s = sel("src 10.0.0.1 dst 10.0.0.0/8")
    assert s.src == ipaddress.ip_network("10.0.0.1/32") and s.dst.prefixlen == 8
    s = sel("src 2001:db8::1 dst 2001:db8:1::/48")
    assert s.src.prefixlen == 128 and s.dst == ipaddress.ip_network("2001:db8:1::/48")
    assert sel("src 10.1.2.3/16 dst 0.0.0.0/0").src == ipaddress.ip_network("10.1.0.0/16")


@pytest.mark.parametrize("name,number", [
    ("tcp", 6), ("udp", 17), ("icmp", 1), ("ipv6-icmp", 58), ("gre", 47), ("esp", 50),
    ("ah", 51), ("sctp", 132), ("TCP", 6), ("6", 6), ("0x11", 17), ("0", 0), ("255", 255),
])
def test_sel_proto(name, number):
    assert sel(f"src 10.0.0.0/8 dst 10.0.0.0/8 proto {name}").proto == number


def test_sel_ports_any_order():
    s = sel("dport 443 proto tcp sport 0x400 dst 10.2.0.0/16 src 10.1.0.0/16")
    assert (s.proto, s.sport, s.dport) == (6, 1024, 443)
    s = sel("src 10.0.0.1 dst 10.0.0.2 proto udp dport 0")     # port 0: any (iproute2)
    assert s.dport is None and s.sport is None


def test_sel_ends_at_next_keyword():
    sa = one(f"{ID} sel src 10.0.0.0/8 dst 10.0.0.0/8 proto 6 {CBC_SHA1} mode transport")
    assert sa.sel.proto == 6 and sa.mode == MODE_TRANSPORT and sa.auth == "hmac(sha1)"


def test_tunnel_may_carry_other_family():
    s = sel("src 2001:db8:1::/48 dst 2001:db8:2::/48")
    assert s.src.version == 6
    sa = one(f"src 2001:db8::1 dst 2001:db8::2 proto esp spi 9 {CBC_SHA1} "
             "sel src 10.0.0.0/8 dst 10.0.0.0/8")
    assert sa.family == 6 and sa.sel.src.version == 4


# --- errors ------------------------------------------------------------------------------

ENC = f"enc 'cbc(aes)' {AES128}"

ERRORS = [
    # (SA text, message fragment)
    ("frob 1", "unknown keyword 'frob'"),
    (f"{ID} {CBC_SHA1} lifetime 5", "unknown keyword 'lifetime'"),
    (f"dst 192.0.2.2 proto esp spi 1 {ENC}", "missing src"),
    (f"src 192.0.2.1 proto esp spi 1 {ENC}", "missing dst"),
    (f"src 192.0.2.1 dst 192.0.2.2 spi 1 {ENC}", "missing proto"),
    (f"src 192.0.2.1 dst 192.0.2.2 proto esp {ENC}", "missing spi"),
    (f"src 192.0.2.1 dst 2001:db8::1 proto esp spi 1 {ENC}", "different address families"),
    (f"src 192.0.2.1/32 dst 192.0.2.2 proto esp spi 1 {ENC}", "bad src address"),
    (f"src 192.0.2.1 dst nowhere proto esp spi 1 {ENC}", "bad dst address"),
    (f"src 192.0.2.1 dst 192.0.2.2 proto comp spi 1 {ENC}", "proto must be esp or ah"),
    (f"{ID} {ENC} mode beet", "mode must be tunnel or transport"),
    (f"src 192.0.2.1 dst 192.0.2.2 proto esp spi 0 {ENC}", "spi 0 out of range"),
    (f"src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x100000000 {ENC}", "out of range"),
    (f"src 192.0.2.1 dst 192.0.2.2 proto esp spi -1 {ENC}", "bad spi '-1'"),
    (f"src 192.0.2.1 dst 192.0.2.2 proto esp spi 1_000 {ENC}", "bad spi"),
    (f"src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x {ENC}", "bad spi"),
    (f"src 192.0.2.1 dst 192.0.2.2 proto esp {ENC} spi", "missing spi"),
    (f"{ID} {ENC} replay-window -1", "bad replay-window '-1'"),
    (f"{ID} {ENC} replay-window 2000000", "replay-window 2000000 out of range"),
    (f"{ID} {ENC} flag", "missing flag name"),
    (f"{ID} {ENC} flag foo", "unknown flag 'foo'"),
    (f"{ID} {ENC} flag esn foo", "unknown flag 'foo'"),
    (f"{ID} {ENC} flag noecn", "flag 'noecn' is not supported"),
    (f"{ID} {ENC} flag decap-dscp", "not supported"),
    (f"{ID} {ENC} replay-oseq 0x100000000", "needs 'flag esn'"),
    (f"{ID} {ENC} replay-seq 0x100000000", "needs 'flag esn'"),
    (f"{ID} {ENC} replay-seq-hi 1", "needs 'flag esn'"),
    (f"{ID} {ENC} replay-oseq-hi 0x100000000 flag esn", "out of range"),
    (f"{ID} {ENC} flag esn replay-oseq 0x100000000 replay-oseq-hi 1", "cannot be combined"),
    (f"{ID} {ENC} replay-oseq 0x10000000000000000 flag esn", "out of range"),
    (f"{ID} enc 'cbc(aes3)' {AES128}", "unknown enc algorithm 'cbc(aes3)'"),
    (f"{ID} enc 'hmac(sha1)' {AES128}", "unknown enc algorithm"),
    (f"{ID} enc 'rfc4106(gcm(aes))' {GCM128}", "is an AEAD algorithm: use 'aead"),
    (f"{ID} aead 'cbc(aes)' {AES128} 128", "is not an AEAD algorithm: use 'enc"),
    (f"{ID} aead 'gcm(aes)' {GCM128} 128", "unknown aead algorithm"),
    (f"{ID} {ENC} auth 'hmac(sha3)' {SHA1_KEY}", "unknown auth algorithm 'hmac(sha3)'"),
    (f"{ID} {ENC} auth-trunc sha1 {SHA1_KEY} 96", "unknown auth-trunc algorithm"),
    (f"{ID} enc 'cbc(aes)' 0x{'00' * 15}", "enc key must be 16, 24 or 32 bytes, got 15"),
    (f"{ID} enc 'cbc(des3_ede)' 0x{'00' * 16}", "must be 24 bytes, got 16"),
    (f"{ID} enc 'cbc(des)' 0x{'00' * 7}", "must be 8 bytes, got 7"),
    (f"{ID} enc 'rfc3686(ctr(aes))' {AES128}", "20, 28 or 36 bytes including the 4-byte"),
    (f"{ID} enc 'ecb(cipher_null)' 0x00", "must be 0 bytes, got 1"),
    (f"{ID} enc 'cbc(aes)' 0x0011", "got 2"),
    (f"{ID} enc 'cbc(aes)' 0x001", "not valid hex"),
    (f"{ID} enc 'cbc(aes)' 0x00zz", "not valid hex"),
    (f"{ID} enc 'cbc(aes)' '0x00 11'", "not valid hex"),
    (f"{ID} enc 'cbc(aes)' 00112233445566778899aabbccddeeff", "0x-hex or a quoted ASCII"),
    (f"{ID} enc 'cbc(aes)' 'caf\u00e9cafecafecafe'", "0x-hex or a quoted ASCII"),
    (f"{ID} enc 'cbc(aes)'", "missing enc key"),
    (f"{ID} enc", "missing enc algorithm"),
    (f"{ID} aead 'rfc4106(gcm(aes))' {AES128} 128", "including the 4-byte salt"),
    (f"{ID} aead 'rfc7539esp(chacha20,poly1305)' 0x{'00' * 32} 128", "must be 36 bytes"),
    (f"{ID} aead 'rfc4106(gcm(aes))' {GCM128} 32", "ICV must be 64, 96 or 128 bits, got 32"),
    (f"{ID} aead 'rfc4543(gcm(aes))' {GCM128} 96", "ICV must be 128 bits, got 96"),
    (f"{ID} aead 'rfc4106(gcm(aes))' {GCM128}", "missing aead ICV bits"),
    (f"{ID} {ENC} auth 'hmac(sha1)' ''", "auth key is empty"),
    (f"{ID} {ENC} auth digest_null 0x00", "auth key must be 0 bytes"),
    (f"{ID} {ENC} auth digest_null nothing", "0x-hex or a quoted ASCII"),
    (f"{ID} {ENC} auth-trunc digest_null '' 96", "'digest_null' bits must be 0"),
    (f"{ID} {ENC} auth-trunc 'hmac(sha1)' {SHA1_KEY} 100", "multiple of 8 in 32..160"),
    (f"{ID} {ENC} auth-trunc 'hmac(sha1)' {SHA1_KEY} 168", "got 168"),
    (f"{ID} {ENC} auth-trunc 'hmac(md5)' {SHA1_KEY} 24", "multiple of 8 in 32..128"),
    (f"{ID} {ENC} auth-trunc 'hmac(sha1)' {SHA1_KEY}", "missing auth-trunc bits"),
    (f"{ID} {ENC} auth-trunc 'hmac(sha1)' {SHA1_KEY} mode tunnel", "bad auth-trunc bits"),
    (ID, "ESP needs a transform"),
    (f"{ID} mode transport", "ESP needs a transform"),
    (f"{ID} auth 'hmac(sha1)' {SHA1_KEY}", "ESP needs enc"),
    (f"{ID} aead 'rfc4106(gcm(aes))' {GCM128} 128 {ENC}", "aead cannot be combined"),
    (f"{ID} aead 'rfc4106(gcm(aes))' {GCM128} 128 auth 'hmac(sha1)' {SHA1_KEY}",
     "aead cannot be combined"),
    (f"{AH_ID} {ENC} auth 'hmac(sha1)' {SHA1_KEY}", "AH takes only auth"),
    (f"{AH_ID} aead 'rfc4106(gcm(aes))' {GCM128} 128", "AH takes only auth"),
    (AH_ID, "AH needs auth or auth-trunc"),
    (f"{AH_ID} auth digest_null ''", "not 'digest_null'"),
    (f"{AH_ID} auth 'hmac(sha1)' {SHA1_KEY} encap espinudp 4500 4500 0.0.0.0",
     "encap espinudp needs proto esp"),
    (f"{ID} {ENC} encap espinudp-nonike 4500 4500 0.0.0.0", "unsupported encap type"),
    (f"{ID} {ENC} encap espintcp 4500 4500 0.0.0.0", "unsupported encap type"),
    (f"{ID} {ENC} encap espinudp 0 4500 0.0.0.0", "encap source port 0 out of range"),
    (f"{ID} {ENC} encap espinudp 4500 65536 0.0.0.0", "encap destination port 65536 out of"),
    (f"{ID} {ENC} encap espinudp 4500 4500", "missing encap original address"),
    (f"{ID} {ENC} encap espinudp 4500 4500 somewhere", "bad encap original address"),
    (f"{ID} {ENC} sel", "sel needs both src and dst"),
    (f"{ID} {ENC} sel src 10.0.0.0/8", "sel needs both src and dst"),
    (f"{ID} {ENC} sel src 10.0.0.0/8 dst 2001:db8::/32", "sel src and dst are of different"),
    (f"{ID} {ENC} sel src 10.0.0.0/33 dst 10.0.0.0/8", "bad sel src prefix"),
    (f"{ID} {ENC} sel src 10.0.0.0/8 dst x", "bad sel dst prefix"),
    (f"{ID} {ENC} sel src 10.0.0.0/8 dst 10.0.0.0/8 proto bogus", "bad sel proto 'bogus'"),
    (f"{ID} {ENC} sel src 10.0.0.0/8 dst 10.0.0.0/8 proto 256", "sel proto 256 out of range"),
    (f"{ID} {ENC} sel src 10.0.0.0/8 dst 10.0.0.0/8 sport 80", "need proto tcp or udp"),
    (f"{ID} {ENC} sel src 10.0.0.0/8 dst 10.0.0.0/8 proto icmp dport 1", "need proto tcp"),
    (f"{ID} {ENC} sel src 10.0.0.0/8 dst 10.0.0.0/8 proto tcp sport 65536",
     "sel sport 65536 out of range"),
    (f"{ID} {ENC} sel src 10.0.0.0/8 dst 10.0.0.0/8 proto tcp dport -1", "bad sel dport"),
    (f"{ID} {ENC} mode transport sel src 2001:db8::/32 dst 2001:db8::/32",
     "transport mode: sel family"),
    (f"{ID} {ENC} mode tunnel mode transport", "mode given twice"),
    (f"{ID} {ENC} spi 2", "spi given twice"),
    (f"{ID} {ENC} {ENC}", "enc given twice"),
    (f"{ID} {ENC} flag esn flag esn", "flag given twice"),
    (f"{ID} {ENC} auth 'hmac(sha1)' {SHA1_KEY} auth-trunc 'hmac(sha1)' {SHA1_KEY} 96",
     "auth-trunc conflicts with auth"),
    (f"{ID} {ENC} sel src 10.0.0.0/8 dst 10.0.0.0/8 sel src 10.0.0.0/8 dst 10.0.0.0/8",
     "sel given twice"),
    (f"{ID} {ENC} sel src 10.0.0.0/8 dst 10.0.0.0/8 src 10.0.0.1", "src given twice"),
    (f"{ID} enc 'cbc(aes) {AES128}", "unterminated quote"),
    (f"{ID} enc \"cbc(aes)' {AES128}", "unterminated quote"),
]


@pytest.mark.parametrize("text,fragment", ERRORS)
def test_errors(text, fragment):
    err = error(f"# leading comment\n\n{text}\n")
    assert str(err).startswith("line 3: ") and err.line == 3
    assert fragment in str(err)
    assert "\n" not in str(err)


def test_error_in_continued_entry_names_first_line():
    text = (f"{ID} {CBC_SHA1}\n"
            "# second SA, over three lines\n"
            "src 192.0.2.1 dst 192.0.2.2 \\\n"
            "    proto esp spi 2 \\\n"
            "    enc 'cbc(aes)' 0x00\n")
    err = error(text)
    assert str(err) == "line 3: enc key must be 16, 24 or 32 bytes, got 1"


def test_comment_ends_a_continued_entry():
    # As in a shell or `ip -batch`: the comment line does not continue the entry.
    text = f"{ID} \\\n# {CBC_SHA1}\n"
    assert str(error(text)) == "line 1: ESP needs a transform: enc [auth|auth-trunc] or aead"
    text = f"{ID} {CBC_SHA1} \\\n\nmode transport\n"
    assert str(error(text)) == "line 3: missing src"


def test_trailing_backslash_at_end_of_file():
    assert one(f"{ID} \\\n{CBC_SHA1} \\").line == 1


def test_duplicate_sa_names_second_line():
    text = (f"{ID} {CBC_SHA1}\n"
            "\n"
            f"src 192.0.2.9 dst 192.0.2.2 proto esp spi 4097 {CBC_SHA1}\n")
    err = error(text)
    assert str(err).startswith("line 3: duplicate SA (spi 0x00001001, dst 192.0.2.2, proto esp)")
    assert "line 1" in str(err)
    continued = (f"{ID} \\\n  {CBC_SHA1}\n# again\nsrc 192.0.2.9 \\\n dst 192.0.2.2 \\\n"
                 f" proto esp spi 0x1001 {CBC_SHA1}\n")
    assert str(error(continued)).startswith("line 4: duplicate SA")


def test_not_duplicates():
    # The triplet (SPI, dst, proto) identifies an inbound SA; any difference is a new SA.
    sas = parse_sa_text(
        f"{ID} {CBC_SHA1}\n"
        f"src 192.0.2.1 dst 192.0.2.3 proto esp spi 0x1001 {CBC_SHA1}\n"
        f"src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x1002 {CBC_SHA1}\n"
        f"{AH_ID} auth 'hmac(sha1)' {SHA1_KEY}\n")
    assert len(sas) == 4


# --- keys stay out of reprs and messages -------------------------------------------------

KEYED = (f"{ID} enc 'cbc(aes)' 0x{'a1' * 16} auth 'hmac(sha256)' 0x{'b2' * 32}\n"
         f"src 192.0.2.1 dst 192.0.2.2 proto esp spi 2 aead 'rfc4106(gcm(aes))' 0x{'c3' * 20} 128\n"
         f"{AH_ID} auth 'hmac(sha1)' 'ascii-secret-key'\n")


def test_no_key_bytes_in_repr():
    sas = parse_sa_text(KEYED)
    for sa in sas:
        text = repr(sa) + str(sa)
        for key in (sa.enc_key, sa.auth_key, sa.aead_key):
            if key:
                assert key.hex() not in text and repr(key) not in text
        assert "a1a1" not in text and "b2b2" not in text and "c3c3" not in text
        assert "secret" not in text


@pytest.mark.parametrize("text", [
    f"{ID} enc 'cbc(aes)' 0x{'a1' * 15}",                      # wrong length
    f"{ID} enc 'cbc(aes)' 0x{'a1' * 15}a",                     # odd hex
    f"{ID} enc 'cbc(aes)' 'my-ascii-secret'",                  # wrong length, ASCII
    f"{ID} enc 'cbc(aes)' 0x{'a1' * 16} 0x{'a1' * 20}",        # stray key as a keyword
])
def test_no_key_in_error_messages(text):
    message = str(error(text))
    assert "a1a1" not in message and "secret" not in message


# --- files -------------------------------------------------------------------------------

def test_parse_sa_file(tmp_path):
    path = tmp_path / "sa.conf"
    path.write_text(CONTRACT_EXAMPLE)
    assert parse_sa_file(str(path)) == parse_sa_text(CONTRACT_EXAMPLE)


def test_missing_file_is_oserror(tmp_path):
    with pytest.raises(OSError):
        parse_sa_file(str(tmp_path / "absent.conf"))


def test_file_not_utf8(tmp_path):
    path = tmp_path / "sa.conf"
    path.write_bytes(f"{ID} {CBC_SHA1}\n# caf\xe9\n".encode("latin-1"))
    with pytest.raises(SAParseError) as info:
        parse_sa_file(str(path))
    assert str(info.value) == "line 2: not UTF-8 text"


def test_file_error_line(tmp_path):
    path = tmp_path / "sa.conf"
    path.write_text(f"# header\n{ID} {CBC_SHA1}\n{ID} {CBC_SHA1}\n")
    with pytest.raises(SAParseError, match=r"^line 3: duplicate SA"):
        parse_sa_file(str(path))


def test_icv_longer_than_the_data_path_supports_is_refused():
    # A 64-byte HMAC-SHA-512 ICV would not fit the batch tailroom (MAX_ICV = 32 bytes).
    line = ("src 192.0.2.1 dst 192.0.2.2 proto esp spi 1 enc 'cbc(aes)' 0x" + "00" * 16
            + " auth-trunc 'hmac(sha512)' 0x" + "11" * 64 + " 512")
    with pytest.raises(SAParseError, match=r"^line 1: .*32\.\.256"):
        parse_sa_text(line)
