"""The Intel multi-buffer backend (engine/_mb.pyx) against the OpenSSL backend (engine/_crypto.pyx).

The OpenSSL backend is itself checked against scapy, tshark and the RFC vectors
(tests/test_esp_scapy.py, test_tshark.py, test_kat.py), so here it is the oracle:
- every transform the multi-buffer backend runs, ESN on and off, tunnel and transport,
  IPv4 and IPv6: Engine(backend="ipsec-mb") output decrypts on Engine(backend="openssl")
  and the other way round, byte for byte back to the original packets;
- counter modes and AEADs (AES-CTR, GCM, GMAC, ChaCha20-Poly1305, and NULL) produce the
  same bytes on both backends for the same packets and sequence numbers (the IV is the
  sequence number on both); CBC IVs come from a random per-SA key, so only the round trip
  and IV uniqueness are checked there;
- tampered packets are dropped as AUTH_FAILED (3), and the rest of the batch still passes;
- keys are wiped on remove (the slot's whole native record reads back as zeros);
- the RFC whole-packet vectors of tests/test_kat.py decrypt through backend="ipsec-mb".

Under CI (CI=true) a missing engine._mb is a failure, not a skip (no silent degradation).
"""
from __future__ import annotations

import functools
import importlib
import ipaddress
import os
import threading

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw

import test_kat as kat
from engine.batch import PacketBatch
from engine.drops import Drop
from engine.engine import Engine
from engine.sa import MODE_TRANSPORT, MODE_TUNNEL, PROTO_AH, SAConfig
from oracle import INNER, OUTER, alg_aead, alg_enc, alg_id, esp_offset, make_sa, run
from vectors import aes_cbc

try:
    from engine import _mb
except ImportError:          # not built: every test below but the CI check is skipped
    _mb = None

needs_mb = pytest.mark.skipif(_mb is None, reason="engine._mb not built (no intel-ipsec-mb.h)")


def test_mb_backend_built_under_ci():
    """No silent degradation (STYLE 14): CI installs libipsec-mb-dev, so the extension
    must be there and the default engine must use it."""
    if os.environ.get("CI") != "true":
        pytest.skip("only enforced under CI=true")
    importlib.import_module("engine._mb")          # ImportError = failure
    assert "ipsec-mb" in Engine.backend() and "not built" not in Engine.backend()


NOT_BUILT = """
import importlib.util
real = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a: None if name == "engine._mb" else real(name, *a)
import ipaddress
from engine.batch import PacketBatch
from engine.engine import Engine
from engine.sa import PROTO_ESP, SAConfig
cfg = SAConfig(src=ipaddress.ip_address("192.0.2.1"), dst=ipaddress.ip_address("192.0.2.2"),
               proto=PROTO_ESP, spi=0x1001, aead="rfc4106(gcm(aes))", aead_key=b"k" * 20,
               icv_bits=128)
e = Engine()
h = e.install(cfg, "out")
b = PacketBatch.from_packets([bytes.fromhex("4500001c00010000401100000a0100010a020001"
                                            "03e807d000080000")])
b.sa[0] = h
e.encrypt(b)
print(Engine.backend()); print(e.backend()); print(e.backend_of(h)); print(int(b.drop[0]))
try:
    Engine(backend="ipsec-mb")
except RuntimeError as x:
    print("refused:", x)
"""


def test_fallback_when_not_built():
    """Without engine._mb, backend="auto" runs on OpenSSL and says so; "ipsec-mb" is an
    error (simulated in a subprocess: the extension is hidden from the import system)."""
    import subprocess
    import sys
    p = subprocess.run([sys.executable, "-c", NOT_BUILT], capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       timeout=300)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == lines[1] and lines[0].startswith("openssl ")
    assert lines[0].endswith("(ipsec-mb: not built)")
    assert lines[2].startswith("openssl ") and "ipsec-mb" not in lines[2]
    assert lines[3] == "0"
    assert lines[4].startswith("refused: crypto backend 'ipsec-mb' is not available (not built)")


# ---------------------------------------------------------------------------------------
# What the multi-buffer backend runs
# ---------------------------------------------------------------------------------------
ENCS = [("cbc(aes)", 16), ("cbc(aes)", 24), ("cbc(aes)", 32), ("cbc(des3_ede)", 24),
        ("cbc(des)", 8), ("rfc3686(ctr(aes))", 20), ("rfc3686(ctr(aes))", 28),
        ("rfc3686(ctr(aes))", 36), ("ecb(cipher_null)", 0)]
# RFC truncations, Linux's 96-bit `auth hmac(sha256)` default, the shortest (32 bits) and
# full-length digests, which the library cannot emit directly (the backend truncates).
AUTHS_ = [("hmac(md5)", 96), ("hmac(sha1)", 96), ("hmac(sha256)", 128), ("hmac(sha256)", 96),
          ("hmac(sha384)", 192), ("hmac(sha512)", 256), ("hmac(sha1)", 32),
          ("hmac(sha256)", 256), ("digest_null", 0)]
AEADS = ([alg_aead("rfc4106(gcm(aes))", k, icv) for k in (20, 28, 36) for icv in (64, 96, 128)]
         + [alg_aead("rfc4543(gcm(aes))", k, 128) for k in (20, 28, 36)]
         + [alg_aead("rfc7539esp(chacha20,poly1305)", 36, 128)])
ALGS = [alg_enc(e, k, a, b) for e, k in ENCS for a, b in AUTHS_
        if not (e == "ecb(cipher_null)" and a == "digest_null")] + AEADS


def runs_on_mb(alg: dict, esn: bool) -> bool:
    return not (alg.get("aead") == "rfc4543(gcm(aes))" and esn)


CASES = [(a, esn) for a in ALGS for esn in (False, True) if runs_on_mb(a, esn)]
CASE_IDS = [f"{alg_id(a)}{'-esn' if esn else ''}" for a, esn in CASES]

# (mode, outer family, inner family, UDP encapsulation)
TOPOLOGIES = [(MODE_TUNNEL, 4, 4, False), (MODE_TUNNEL, 6, 6, False),
              (MODE_TUNNEL, 6, 4, False), (MODE_TUNNEL, 4, 6, True),
              (MODE_TRANSPORT, 4, 4, False), (MODE_TRANSPORT, 6, 6, False),
              (MODE_TRANSPORT, 4, 4, True)]
TOPO_IDS = [("tunnel-%din%d" % (i, o) if m == MODE_TUNNEL else "transport-v%d" % o)
            + ("-udp" if u else "") for m, o, i, u in TOPOLOGIES]
TOPO_ALGS = [alg_enc("cbc(aes)", 16, "hmac(sha1)", 96),
             alg_enc("cbc(des3_ede)", 24, "hmac(sha256)", 128),
             alg_enc("rfc3686(ctr(aes))", 20, "hmac(sha512)", 256),
             alg_enc("ecb(cipher_null)", 0, "hmac(md5)", 96),
             alg_aead("rfc4106(gcm(aes))", 20, 128),
             alg_aead("rfc4543(gcm(aes))", 36, 128),
             alg_aead("rfc7539esp(chacha20,poly1305)", 36, 128)]

ESN_OSEQ = 0xFFFFFFF0          # the batch crosses 2^32: high bits 0, then 1


@functools.lru_cache(maxsize=None)
def _packets(family: int, n_extra: int, transport: bool) -> tuple[bytes, ...]:
    src, dst = (OUTER if transport else INNER)[family]
    hdr = IP(src=src, dst=dst) if family == 4 else IPv6(src=src, dst=dst)
    sizes = list(range(0, 34)) + [63, 64, 100, 255, 1000, 1400] + [17] * n_extra
    return tuple(bytes(hdr / UDP(sport=1000 + k, dport=2000) / Raw(bytes((k + i) & 0xFF
                                                                 for i in range(s))))
            for k, s in enumerate(sizes))


def packets(family: int, n_extra: int = 0, transport: bool = False) -> list[bytes]:
    """Packets around block boundaries and a few large ones, UDP over IPv4 or IPv6; in
    transport mode they travel between the SA's own endpoints."""
    return list(_packets(family, n_extra, transport))


def sa_for(alg: dict, esn: bool, mode=MODE_TUNNEL, outer=4, encap=False) -> SAConfig:
    # the receiver's replay top sits just below the sender's first number, so that it
    # infers the ESN high bits across the 2^32 boundary (RFC 4303 Appendix A)
    kw = dict(esn=True, oseq=ESN_OSEQ, seq=ESN_OSEQ, replay_window=128) if esn else {}
    return make_sa(alg, mode=mode, outer=outer, encap=encap, **kw)


def encrypt(backend: str, cfg: SAConfig, pkts: list[bytes]):
    e = Engine(max_sas=8, backend=backend)
    h = e.install(cfg, "out")
    out, drops = run(e, pkts, "encrypt")
    assert drops == [Drop.NONE] * len(pkts)
    return out, e.backend_of(h)


def decrypt(backend: str, cfg: SAConfig, pkts: list[bytes]):
    d = Engine(max_sas=8, backend=backend)
    h = d.install(cfg, "in")
    out, drops = run(d, pkts, "decrypt")
    return out, drops, d.backend_of(h)


def check_both_ways(cfg: SAConfig, pkts: list[bytes], alg: dict) -> None:
    mb_out, mb_label = encrypt("ipsec-mb", cfg, pkts)
    ossl_out, ossl_label = encrypt("openssl", cfg, pkts)
    assert mb_label.startswith("ipsec-mb ") and ossl_label.startswith("openssl ")
    for src, dst in ((mb_out, "openssl"), (ossl_out, "ipsec-mb")):
        got, drops, _ = decrypt(dst, cfg, src)
        assert drops == [Drop.NONE] * len(pkts)
        assert got == pkts
    if alg.get("enc") == "cbc(aes)" or alg.get("enc", "").startswith("cbc(des"):
        # random per-SA IV key: same framing, different IVs and ciphertext
        assert [len(p) for p in mb_out] == [len(p) for p in ossl_out]
        iv_len = 16 if alg["enc"] == "cbc(aes)" else 8
        ivs = {p[esp_offset(p) + 8:esp_offset(p) + 8 + iv_len] for p in mb_out}
        assert len(ivs) == len(mb_out)                      # unique per packet
    else:
        assert mb_out == ossl_out                           # IV = sequence number


# ---------------------------------------------------------------------------------------
# Round trips between the backends, and identical output where the IV is the seq number
# ---------------------------------------------------------------------------------------
@needs_mb
@pytest.mark.parametrize("alg,esn", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("family", [4, 6])
def test_cross_backend_tunnel(alg, esn, family):
    check_both_ways(sa_for(alg, esn, MODE_TUNNEL, outer=family), packets(family), alg)


@needs_mb
@pytest.mark.parametrize("alg,esn", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("family", [4, 6])
def test_cross_backend_transport(alg, esn, family):
    check_both_ways(sa_for(alg, esn, MODE_TRANSPORT, outer=family),
                    packets(family, transport=True), alg)


@needs_mb
@pytest.mark.parametrize("topo", TOPOLOGIES, ids=TOPO_IDS)
@pytest.mark.parametrize("alg", TOPO_ALGS, ids=[alg_id(a) for a in TOPO_ALGS])
def test_cross_backend_topologies(alg, topo):
    mode, outer, inner, encap = topo
    check_both_ways(sa_for(alg, False, mode, outer, encap),
                    packets(inner, transport=mode == MODE_TRANSPORT), alg)


@needs_mb
@pytest.mark.parametrize("n_extra", [200, 216, 230, 2000])
@pytest.mark.parametrize("esn", [False, True], ids=["", "esn"])
@pytest.mark.parametrize("alg", [alg_aead("rfc4106(gcm(aes))", 20, 128),
                                 alg_enc("cbc(aes)", 16, "hmac(sha1)", 96),
                                 alg_enc("rfc3686(ctr(aes))", 20, "hmac(sha256)", 128),
                                 alg_enc("ecb(cipher_null)", 0, "hmac(sha1)", 96),
                                 alg_enc("cbc(aes)", 16, None, 0),
                                 alg_aead("rfc7539esp(chacha20,poly1305)", 36, 128)],
                         ids=["gcm", "cbc-sha1", "ctr-sha256", "null-sha1", "cbc", "chacha"])
def test_large_batch_wraps_the_job_queue(alg, esn, n_extra):
    """Batches around and far beyond the manager's ring (256 jobs): jobs in flight while
    more are submitted, the ring wrapping, the final drain. (A 1.3 IMB_FLUSH_BURST bug
    showed up here as wrong ICVs on the last ~80 packets of 240-270 packet batches.)"""
    check_both_ways(sa_for(alg, esn), packets(4, n_extra=n_extra), alg)


# ---------------------------------------------------------------------------------------
# Tampering
# ---------------------------------------------------------------------------------------
INTEGRITY = [(a, esn) for a, esn in CASES if a.get("aead") or a.get("auth")]


@needs_mb
@pytest.mark.parametrize("alg,esn", INTEGRITY,
                         ids=[f"{alg_id(a)}{'-esn' if e else ''}" for a, e in INTEGRITY])
def test_tampered_packets_fail_auth(alg, esn):
    cfg = sa_for(alg, esn)
    pkts = packets(4)[30:38]
    enc, _ = encrypt("openssl", cfg, pkts)
    bad = []
    for k, p in enumerate(enc):
        b = bytearray(p)
        o = esp_offset(p)
        where = (o + 3, o + 9, o + 20, len(p) - 1, len(p) - 5, len(p) - 12)[k % 6]
        b[where] ^= 0x40                                # SPI, IV, payload, ICV
        bad.append(bytes(b) if k % 2 == 0 else p)       # every other packet intact
    out, drops, label = decrypt("ipsec-mb", cfg, bad)
    assert label.startswith("ipsec-mb ")
    for k in range(len(bad)):
        if k % 2 == 0:
            # a flipped SPI finds no SA; everything else fails the ICV check
            assert drops[k] in (Drop.AUTH_FAILED, Drop.NO_SA), (k, drops[k])
            assert drops[k] == Drop.AUTH_FAILED or k % 6 == 0
        else:
            assert drops[k] == Drop.NONE and out[k] == pkts[k]


@needs_mb
def test_esn_high_bits_are_authenticated():
    """A receiver inferring other high bits (its window far from the sender's) fails the
    ICV for HMAC and AEAD SAs alike: the high bits are hashed / in the AAD."""
    for alg in (alg_enc("cbc(aes)", 16, "hmac(sha256)", 128),
                alg_aead("rfc4106(gcm(aes))", 20, 128),
                alg_aead("rfc7539esp(chacha20,poly1305)", 36, 128)):
        tx = make_sa(alg, esn=True, oseq=(5 << 32) | 100, replay_window=64)
        rx = make_sa(alg, esn=True, seq=(7 << 32) | 90, replay_window=64)
        enc, _ = encrypt("ipsec-mb", tx, packets(4)[:4])
        _, drops, _ = decrypt("ipsec-mb", rx, enc)
        assert drops == [Drop.AUTH_FAILED] * 4
        rx_ok = make_sa(alg, esn=True, seq=(5 << 32) | 90, replay_window=64)
        out, drops, _ = decrypt("ipsec-mb", rx_ok, enc)
        assert drops == [Drop.NONE] * 4 and out == packets(4)[:4]


# ---------------------------------------------------------------------------------------
# Backend selection
# ---------------------------------------------------------------------------------------
GMAC_ESN = sa_for(alg_aead("rfc4543(gcm(aes))", 20, 128), True)
AH_CFG = SAConfig(src=ipaddress.ip_address(OUTER[4][0]), dst=ipaddress.ip_address(OUTER[4][1]),
                  proto=PROTO_AH, spi=0x2001, mode=MODE_TUNNEL, auth="hmac(sha1)",
                  auth_key=b"k" * 20, icv_bits=96)


@needs_mb
def test_backend_labels_and_selection():
    auto = Engine(max_sas=8)
    assert auto.backend() == Engine.backend()
    assert auto.backend() == f"{_mb.version()} + {Engine(backend='openssl').backend()}"
    assert _mb.version().startswith("ipsec-mb 1.") and _mb.arch() in (
        "avx512", "avx2", "avx", "sse", "no-aesni")
    assert Engine(backend="openssl").backend().startswith("openssl 3.")
    assert Engine(backend="ipsec-mb").backend() == _mb.version()
    h_gcm = auto.install(sa_for(alg_aead("rfc4106(gcm(aes))", 20, 128), True), "out")
    h_gmac = auto.install(GMAC_ESN, "out")
    h_ah = auto.install(AH_CFG, "out")
    assert auto.backend_of(h_gcm) == _mb.version()
    assert auto.backend_of(h_gmac).startswith("openssl ")     # GMAC + ESN: not contiguous
    assert auto.backend_of(h_ah).startswith("openssl ")       # AH stays on OpenSSL
    assert not auto.sad.crypto.enabled(h_gcm) and auto.sad.mb.installed(h_gcm)
    assert auto.sad.crypto.enabled(h_gmac) and not auto.sad.mb.installed(h_gmac)
    only = Engine(max_sas=8, backend="openssl")
    assert only.sad.mb is None
    assert only.backend_of(only.install(sa_for(alg_aead("rfc4106(gcm(aes))", 20, 128),
                                                False), "out")).startswith("openssl ")
    strict = Engine(max_sas=8, backend="ipsec-mb")
    with pytest.raises(ValueError, match="ipsec-mb"):
        strict.install(GMAC_ESN, "out")
    with pytest.raises(ValueError, match="ipsec-mb"):
        strict.install(AH_CFG, "out")
    assert strict.handles() == []                              # nothing half-installed
    with pytest.raises(ValueError, match="unknown crypto backend"):
        Engine(backend="qat")


@needs_mb
def test_mixed_batch_both_backends():
    """One batch, SAs on both backends (auto): each pass takes only its own rows."""
    algs = [alg_aead("rfc4106(gcm(aes))", 20, 128), alg_aead("rfc4543(gcm(aes))", 20, 128),
            alg_enc("cbc(aes)", 32, "hmac(sha1)", 96)]
    cfgs = [make_sa(a, spi=0x3000 + k, esn=True, oseq=ESN_OSEQ, seq=ESN_OSEQ,
                    replay_window=128) for k, a in enumerate(algs)]
    pkts = packets(4)
    for tx_backend, rx_backend in (("auto", "openssl"), ("openssl", "auto"), ("auto", "auto")):
        tx, rx = Engine(max_sas=8, backend=tx_backend), Engine(max_sas=8, backend=rx_backend)
        hs = [tx.install(c, "out") for c in cfgs]
        for c in cfgs:
            rx.install(c, "in")
        b = PacketBatch.from_packets(pkts)
        b.sa[:b.count] = [hs[k % 3] for k in range(b.count)]
        tx.encrypt(b)
        assert not b.drop[:b.count].any()
        out, drops = run(rx, b.packets(), "decrypt")
        assert drops == [Drop.NONE] * len(pkts) and out == pkts
    assert [tx.backend_of(h).split()[0] for h in hs] == ["ipsec-mb", "openssl", "ipsec-mb"]


@needs_mb
def test_concurrent_threads_share_the_manager():
    """Two threads, two engines, one process-wide IMB_MGR: the lock keeps jobs apart."""
    alg = alg_enc("cbc(aes)", 16, "hmac(sha1)", 96)
    cfg = sa_for(alg, False)
    pkts = packets(4, n_extra=300)
    errors = []

    def work():
        try:
            for _ in range(20):
                enc, _ = encrypt("ipsec-mb", cfg, pkts)
                out, drops, _ = decrypt("ipsec-mb", cfg, enc)
                if drops != [Drop.NONE] * len(pkts) or out != pkts:
                    errors.append("mismatch")
        except Exception as e:           # surfaced below
            errors.append(repr(e))

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# ---------------------------------------------------------------------------------------
# Key wiping
# ---------------------------------------------------------------------------------------
@needs_mb
@pytest.mark.parametrize("alg", [alg_enc("cbc(aes)", 32, "hmac(sha512)", 256),
                                 alg_aead("rfc4106(gcm(aes))", 36, 128),
                                 alg_aead("rfc7539esp(chacha20,poly1305)", 36, 128),
                                 alg_enc("cbc(des3_ede)", 24, "hmac(md5)", 96)],
                         ids=["cbc-sha512", "gcm", "chacha", "3des-md5"])
def test_keys_wiped_on_remove(alg):
    e = Engine(max_sas=4)
    h = e.install(sa_for(alg, False), "out")
    state = e.sad.mb._state(h)
    assert len(state) - state.count(0) >= 28        # schedules, GCM tables, HMAC states
    key = alg.get("aead_key") or alg["enc_key"]
    assert alg.get("aead") != "rfc7539esp(chacha20,poly1305)" or key[:32] in state
    e.remove(h)
    assert e.sad.mb._state(h) == bytes(len(state))
    assert not e.sad.mb.installed(h) and not e.sad.crypto.enabled(h)
    # the slot is reusable, and by another backend
    h2 = e.install(GMAC_ESN, "out")
    assert h2 == h and e.sad.crypto.enabled(h2) and e.sad.mb._state(h2) == bytes(len(state))


@needs_mb
def test_mbtable_direct_api():
    t = _mb.MBTable(2)
    with pytest.raises(IndexError):
        t.install(2, 5, b"k" * 20, 4, 0, b"", 16, 8, False, True)
    with pytest.raises(ValueError):                 # AES-GCM with a 15-byte key
        t.install(0, 5, b"k" * 19, 4, 0, b"", 16, 8, False, True)
    assert t._state(0) == bytes(len(t._state(0)))    # a failed install leaves nothing
    assert not _mb.supports(6, 0, 16, True)          # GMAC + ESN
    assert not _mb.supports(1, 2, 12, False, 51)     # AH
    assert not _mb.supports(0, 0, 0, False)          # NULL + NULL: nothing to run
    assert _mb.supports(1, 5, 4, True)               # CBC + HMAC-SHA-512 truncated to 32 bits


# ---------------------------------------------------------------------------------------
# RFC whole-packet vectors (tests/test_kat.py) through backend="ipsec-mb"
# ---------------------------------------------------------------------------------------
def decrypt_one(cfg: SAConfig, packet: bytes):
    eng = Engine(max_sas=4, backend="ipsec-mb")
    h = eng.install(cfg, "in")
    assert eng.backend_of(h) == _mb.version()
    batch = PacketBatch.from_packets([packet])
    eng.decrypt(batch)
    return int(batch.drop[0]), batch.packet(0)


@needs_mb
@pytest.mark.parametrize("v", aes_cbc.RFC3602_ESP, ids=kat._ids(aes_cbc.RFC3602_ESP))
def test_kat_rfc3602_packets(v, monkeypatch):
    monkeypatch.setattr(kat, "decrypt_one", decrypt_one)
    kat.test_engine_esp_rfc3602(v)


@needs_mb
@pytest.mark.parametrize("v", kat.GCM_PACKET_CASES, ids=kat._ids(kat.GCM_PACKET_CASES))
def test_kat_gcm_packets(v, monkeypatch):
    monkeypatch.setattr(kat, "decrypt_one", decrypt_one)
    kat.test_engine_esp_gcm_packet(v)
    kat.test_engine_esp_gcm_packet_tampered(v)


@needs_mb
@pytest.mark.parametrize("v", kat.GMAC_CASES, ids=kat._ids(kat.GMAC_CASES))
def test_kat_gmac_packets(v, monkeypatch):
    monkeypatch.setattr(kat, "decrypt_one", decrypt_one)
    kat.test_engine_esp_gmac_packet(v)


@needs_mb
def test_kat_rfc7634_packet(monkeypatch):
    monkeypatch.setattr(kat, "decrypt_one", decrypt_one)
    kat.test_engine_esp_rfc7634()
    kat.test_engine_esp_rfc7634_tampered()
