"""tshark (Wireshark's ESP dissector) decrypts and authenticates the engine's output.

Oracle: Wireshark's packet-ipsec.c, a C implementation on libgcrypt that shares no code
with the engine (OpenSSL) nor with scapy/cryptography used by the other cross-checks. The
engine's output is written to a raw-IP pcap (link type 101), tshark is given the SAs via
its `esp_sa` UAT on the command line (`-o uat:esp_sa:...`, field order of Wireshark 4.0:
protocol, src, dst, SPI, encryption, key, authentication, key) with decryption and ICV
checking switched on, and every packet must show a good ICV, the right SPI and sequence
number, padding 1, 2, 3, ... and the original inner header fields.

tshark missing: skipped locally, but a failure under CI (env CI=true), so the check can
never disappear silently there.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw

from engine.algorithms import CIPHERS
from engine.sa import MODE_TRANSPORT, MODE_TUNNEL

from oracle import INNER, alg_aead, alg_enc, engine_for, make_sa, run, write_pcap

TSHARK = shutil.which("tshark")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="module")
def tshark():
    if TSHARK is None:
        if IN_CI:
            pytest.fail("tshark is required under CI (apt-get install tshark)")
        pytest.skip("tshark not installed")
    return TSHARK


# Linux name (+ key length) -> Wireshark 4.0 UAT value strings
WS_ENC = {"cbc(aes)": "AES-CBC [RFC3602]", "cbc(des3_ede)": "TripleDES-CBC [RFC2451]",
          "cbc(des)": "DES-CBC [RFC2405]", "rfc3686(ctr(aes))": "AES-CTR [RFC3686]",
          "ecb(cipher_null)": "NULL"}
WS_GCM = {64: "AES-GCM with 8 octet ICV [RFC4106]", 96: "AES-GCM with 12 octet ICV [RFC4106]",
          128: "AES-GCM with 16 octet ICV [RFC4106]"}
WS_AUTH = {("hmac(sha1)", 96): "HMAC-SHA-1-96 [RFC2404]",
           ("hmac(md5)", 96): "HMAC-MD5-96 [RFC2403]",
           ("hmac(sha256)", 128): "HMAC-SHA-256-128 [RFC4868]",
           ("hmac(sha384)", 192): "HMAC-SHA-384-192 [RFC4868]",
           ("hmac(sha512)", 256): "HMAC-SHA-512-256 [RFC4868]"}


def uat(cfg, auth_key=None) -> str:
    def q(*fields):
        return ",".join(f'"{f}"' for f in fields)
    proto = "IPv4" if cfg.dst.version == 4 else "IPv6"
    head = (proto, str(cfg.src), str(cfg.dst), f"0x{cfg.spi:08x}")
    if cfg.aead:
        return "uat:esp_sa:" + q(*head, WS_GCM[cfg.icv_bits], "0x" + cfg.aead_key.hex(), "NULL", "")
    key = cfg.auth_key if auth_key is None else auth_key
    return "uat:esp_sa:" + q(*head, WS_ENC[cfg.enc], "0x" + cfg.enc_key.hex(),
                             WS_AUTH[(cfg.auth, cfg.icv_bits)], "0x" + key.hex())


FIELDS = ["esp.spi", "esp.sequence", "esp.pad_len", "esp.pad", "esp.protocol",
          "esp.icv_good", "esp.icv_bad", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst",
          "udp.srcport", "udp.dstport", "udp.length"]


def dissect(tshark, pcap, sa_pref: str, home) -> list[dict]:
    cmd = [tshark, "-n", "-r", str(pcap),
           "-o", "esp.enable_encryption_decode:TRUE",
           "-o", "esp.enable_authentication_check:TRUE",
           "-o", sa_pref,
           "-T", "fields", "-E", "separator=\t", "-E", "occurrence=l"]
    for f in FIELDS:
        cmd += ["-e", f]
    env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home))  # no user profile
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    rows = [line.split("\t") for line in res.stdout.splitlines()]
    return [dict(zip(FIELDS, r)) for r in rows]


CASES = [
    # (alg, mode, outer family, inner family, udp encapsulation)
    (alg_enc("cbc(aes)", 16, "hmac(sha1)", 96), MODE_TUNNEL, 4, 4, False),
    (alg_enc("cbc(aes)", 32, "hmac(sha256)", 128), MODE_TUNNEL, 6, 4, False),
    (alg_enc("cbc(aes)", 24, "hmac(sha512)", 256), MODE_TUNNEL, 4, 6, False),
    (alg_enc("cbc(des3_ede)", 24, "hmac(md5)", 96), MODE_TRANSPORT, 4, 4, False),
    (alg_enc("cbc(des)", 8, "hmac(sha384)", 192), MODE_TUNNEL, 4, 4, False),
    (alg_enc("rfc3686(ctr(aes))", 20, "hmac(sha1)", 96), MODE_TUNNEL, 4, 4, False),
    (alg_enc("ecb(cipher_null)", 0, "hmac(sha256)", 128), MODE_TRANSPORT, 6, 6, False),
    (alg_aead("rfc4106(gcm(aes))", 20, 128), MODE_TUNNEL, 4, 4, False),
    (alg_aead("rfc4106(gcm(aes))", 36, 64), MODE_TUNNEL, 6, 6, False),
    (alg_aead("rfc4106(gcm(aes))", 28, 96), MODE_TRANSPORT, 4, 4, False),
    (alg_aead("rfc4106(gcm(aes))", 20, 128), MODE_TUNNEL, 4, 4, True),
    (alg_enc("cbc(aes)", 16, "hmac(sha1)", 96), MODE_TUNNEL, 4, 4, True),
]


def case_id(c) -> str:
    alg, mode, o, i, udp = c
    name = alg.get("aead") or f"{alg['enc']}+{alg['auth']}"
    where = f"tunnel-{i}in{o}" if mode == MODE_TUNNEL else f"transport-v{o}"
    return f"{name}-{where}" + ("-udp" if udp else "")


def inner_packets(cfg, fam):
    # UDP to port 9 (discard): a port whose dissector cannot throw, since an exception in a
    # payload dissector (e.g. FIND on 1001/2001) stops tshark before it shows the ESP trailer.
    src, dst = ((str(cfg.src), str(cfg.dst)) if cfg.mode == MODE_TRANSPORT else INNER[fam])
    hdr = (lambda: IP(src=src, dst=dst)) if fam == 4 else (lambda: IPv6(src=src, dst=dst))
    return [(bytes(hdr() / UDP(sport=50000 + n, dport=9) / Raw(bytes(n))), src, dst, n)
            for n in (0, 1, 13, 14, 15, 16, 100, 999)]


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_tshark_decrypts_engine_output(tshark, tmp_path, case):
    alg, mode, outer, inner, udp = case
    cfg = make_sa(alg, mode=mode, outer=outer, encap=udp, spi=0x0C0FFEE0, oseq=7)
    pkts = inner_packets(cfg, inner)
    outs, drops = run(engine_for(cfg, "out"), [p for p, *_ in pkts], "encrypt")
    assert not any(drops)
    pcap = tmp_path / "esp.pcap"
    write_pcap(pcap, outs)
    rows = dissect(tshark, pcap, uat(cfg), tmp_path)
    assert len(rows) == len(pkts)
    block = CIPHERS[cfg.aead or cfg.enc].block
    for k, (row, (p, src, dst, n)) in enumerate(zip(rows, pkts)):
        assert int(row["esp.spi"], 0) == cfg.spi
        assert int(row["esp.sequence"]) == 8 + k
        assert row["esp.icv_good"] == "1" and row["esp.icv_bad"] == "0", row
        assert int(row["esp.protocol"], 0) == (17 if mode == MODE_TRANSPORT
                                               else 4 if inner == 4 else 41)
        pad_len = int(row["esp.pad_len"])
        assert pad_len < 256
        if pad_len:
            assert row["esp.pad"] == bytes(range(1, pad_len + 1)).hex()
        payload = len(p) - (0 if mode == MODE_TUNNEL else 20 if inner == 4 else 40)
        assert (payload + pad_len + 2) % block == 0
        fam = "ip" if inner == 4 else "ipv6"
        assert (row[f"{fam}.src"], row[f"{fam}.dst"]) == (src, dst)
        assert int(row["udp.srcport"]) == 50000 + n and int(row["udp.dstport"]) == 9
        assert int(row["udp.length"]) == 8 + n


def test_tshark_rejects_wrong_key(tshark, tmp_path):
    """Negative control: the same capture with a wrong HMAC key shows a bad ICV, so the
    positive checks above cannot pass vacuously."""
    cfg = make_sa(alg_enc("cbc(aes)", 16, "hmac(sha1)", 96))
    outs, _ = run(engine_for(cfg, "out"), [p for p, *_ in inner_packets(cfg, 4)], "encrypt")
    pcap = tmp_path / "esp.pcap"
    write_pcap(pcap, outs)
    rows = dissect(tshark, pcap, uat(cfg, auth_key=bytes(20)), tmp_path)
    assert rows and all(r["esp.icv_good"] == "0" and r["esp.icv_bad"] == "1" for r in rows)
