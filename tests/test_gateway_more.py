"""`spu gateway` scenarios beyond PSK: certificates against strongSwan, manual keys,
several traffic selectors in one vpn, and DES / 3DES for the IKE SA.

Rig (bench/rig.py): pyspu's gateway in the left namespace; the peer (strongSwan 5.9.8's
charon with kernel-libipsec, or a second `spu gateway`) in the right one. The kernels' own
ping and TCP carry the traffic; `spu status --json`, `swanctl --list-sas` and charon's log
say what both ends agreed. Without root or strongSwan the tests are skipped locally and
fail under CI=true.

The in-memory part (DES-CBC / 3DES-CBC SK encryption) runs everywhere: two IKE cores
(tests/ike_harness.py) and a known-answer check of single DES, FIPS PUB 81 appendix B
(CBC example: key 0123456789abcdef, IV 1234567890abcdef, "Now is the time for all ").
"""
from __future__ import annotations

import datetime
import hmac
import re
import shutil
import subprocess

import pytest
from cert_factory import Pki
from cryptography.hazmat.primitives import serialization
from ike_harness import Pair as IKEPair
from ike_harness import configs, of

from bench.rig import INNER_HOST, INNER_NET
from gateway_helpers import logs as _logs, rig_fixture, tail as _tail, wait_until as _wait
from bench.tunnel_configs import PAIRS, Pair, junos, junos_manual, swanctl
from ike import events as ev
from ike.constants import Encr, Integ
from ike.crypto import CbcHmacProtector, ike_encr_spec
from ike.errors import IntegrityError

TCP_BYTES = 1_000_000


rig = rig_fixture(need_strongswan=True)


rig2 = rig_fixture(need_strongswan=False, name="rig2")     # pyspu on both sides


def _traffic_both_ways(rig, *procs, nbytes: int = TCP_BYTES, src=None, dst=None) -> None:
    """ping + one TCP transfer each way between the inner hosts (or src/dst: per side)."""
    src = src or dict(INNER_HOST)
    dst = dst or {"left": INNER_HOST["right"], "right": INNER_HOST["left"]}
    for side in ("left", "right"):
        # the first packets may wait for Numba to compile the kernels (after an edit)
        assert rig.wait_ping(side, 60, src=src[side], dst=dst[side]), \
            f"no ping {src[side]} -> {dst[side]}" + _logs(*procs)
        r = rig.tcp_transfer(side, nbytes, src_host=src[side], dst_host=dst[side])
        assert r.get("digest_ok") and r["received"] == nbytes, (r, _logs(*procs))


def _clean(gw) -> None:
    log = gw.log_text()
    assert "Traceback" not in log, log[-4000:]


# --- 1. certificates through the gateway against strongSwan ----------------------------------

PYSPU_DN = "C=CH, O=pyspu, CN=pyspu gateway"
CHARON_DN = "C=CH, O=strongSwan, CN=charon"
CERT_PAIR = Pair("aes128-sha256-modp2048", "aes-128-cbc", "sha-256", "group14", "aes-128-cbc",
                 "hmac-sha1-96", None, "aes128-sha256-modp2048", "aes128-sha1")
METHODS = {"rsa": "rsa-signatures", "ecdsa-256": "ecdsa-signatures-256"}

# (key type, pyspu local-identity, pyspu remote-identity, charon id, charon's id for us)
CERT_CASES = {
    # RSA: pyspu is known by its certificate's DN, charon by a hostname in its SAN
    "rsa-dn": ("rsa", "distinguished-name", "hostname charon.pyspu.test",
               "charon.pyspu.test", PYSPU_DN),
    # ECDSA P-256: pyspu by hostname (its SAN), charon by its DN
    "ecdsa-hostname": ("ecdsa-256", "hostname pyspu.test",
                       f'distinguished-name "{CHARON_DN}"', CHARON_DN, "pyspu.test"),
}


def _pki_files(key_type: str, pyspu_trusts: str = "own"):
    """A root -> intermediate -> leaf PKI valid now (charon reads its own clock): charon's
    files in swanctl's directories, pyspu's in certs/ next to its configuration.
    `pyspu_trusts="stranger"`: pyspu's trusted-ca is a different root."""
    now = datetime.datetime.now(datetime.timezone.utc)
    pki = Pki(key_type, name="gateway interop", now=now)
    ours, our_key = pki.leaf(PYSPU_DN, key_type, dns=["pyspu.test"])
    theirs, their_key = pki.leaf(CHARON_DN, key_type, dns=["charon.pyspu.test"])
    pem = serialization.Encoding.PEM
    pkcs8 = (pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    charon_files = {"x509/charon.pem": theirs.public_bytes(pem),
                    "x509ca/root.pem": pki.root.public_bytes(pem),
                    "x509ca/inter.pem": pki.inter.public_bytes(pem),
                    "private/charon.key": their_key.private_bytes(*pkcs8)}
    root = pki.root if pyspu_trusts == "own" else \
        Pki(key_type, name="stranger", now=now).root
    pyspu_files = {"certs/gw.pem": ours.public_bytes(pem) + pki.inter.public_bytes(pem),
                   "certs/gw.key": our_key.private_bytes(*pkcs8),
                   "certs/ca.pem": root.public_bytes(pem)}
    return charon_files, pyspu_files


CERT_FILES = {"cert": "certs/gw.pem", "key": "certs/gw.key", "ca": "certs/ca.pem"}


def _cert_up(rig, case: str, role: str, pyspu_trusts: str = "own"):
    key_type, lid, rid, charon_id, charon_remote = CERT_CASES[case]
    charon_files, pyspu_files = _pki_files(key_type, pyspu_trusts)
    charon = rig.charon("right", swanctl("right", CERT_PAIR, auth="pubkey", local_id=charon_id,
                                         remote_id=charon_remote, cert="charon.pem"),
                        files=charon_files)
    gw = rig.gateway("left", junos("left", CERT_PAIR, auth=METHODS[key_type],
                                   cert_files=CERT_FILES, local_id=lid, remote_id=rid,
                                   establish="immediately" if role == "initiator"
                                   else "on-traffic"),
                     files=pyspu_files)
    return gw, charon


@pytest.mark.parametrize("role", ["initiator", "responder"])
@pytest.mark.parametrize("case", list(CERT_CASES))
def test_certificates_with_strongswan(rig, case, role):
    key_type, _, _, charon_id, charon_remote = CERT_CASES[case]
    gw, charon = _cert_up(rig, case, role)
    if role == "responder":
        r = charon.swanctl("--initiate", "--child", "net", "--timeout", "30", check=False)
        assert r.returncode == 0, r.stdout + r.stderr + _logs(gw, charon)
    _traffic_both_ways(rig, gw, charon)

    st = gw.status()
    assert len(st["ike"]) == 1, st["ike"]
    ike = st["ike"][0]
    assert ike["state"] == "UP" and ike["role"] == role, ike
    assert ike["remote_identity"] == charon_id, ike           # the peer's ID, as text
    assert ike["local_identity"] == charon_remote, ike
    assert len(st["ipsec"]) == 2 and all(sa["packets"] > 100 for sa in st["ipsec"]), st
    spis = {sa["direction"]: sa["spi"] for sa in st["ipsec"]}
    sas = charon.list_sas()
    assert re.search(rf"\bin\s+{spis['out']}", sas) and re.search(rf"\bout\s+{spis['in']}",
                                                                  sas), (spis, sas)
    assert re.search(rf"remote\s+'{re.escape(charon_remote)}'", sas), sas

    clog = (charon.dir / "charon.log").read_text(errors="replace")
    # charon verified our signature with our certificate's key, chained to its root
    assert re.search(rf"authentication of '{re.escape(charon_remote)}' with .+ successful",
                     clog), clog[-3000:]
    if key_type == "rsa":
        # an RSA IKE_AUTH (two certificates, 256-byte AUTH) does not fit 1280 bytes: charon
        # split its message and put ours back together (RFC 7383)
        assert re.search(r"splitting IKE message .* into \d+ fragments", clog), clog[-3000:]
        assert "reassembled fragmented IKE message" in clog, clog[-3000:]
    text = gw.spu("status").stdout
    assert f"remote {charon_id}" in text, text
    _clean(gw)


@pytest.mark.parametrize("role", ["initiator", "responder"])
def test_certificate_from_an_untrusted_ca_fails_cleanly(rig, role):
    """pyspu's trusted-ca is another root: charon's chain leads nowhere pyspu trusts."""
    gw, charon = _cert_up(rig, "rsa-dn", role, pyspu_trusts="stranger")
    if role == "responder":
        r = charon.swanctl("--initiate", "--child", "net", "--timeout", "20", check=False)
        assert r.returncode != 0, r.stdout
        assert "AUTHENTICATION_FAILED" in r.stdout, r.stdout          # pyspu said why
    assert _wait(lambda: "authentication failed" in gw.log_text().lower(), 30), _tail(gw)
    assert re.search(r"authentication failed: unknown-ca", gw.log_text()), _tail(gw)
    assert not gw.status()["ipsec"]
    assert not [s for s in gw.status()["ike"] if s["state"] == "UP"]
    assert "ESTABLISHED" not in charon.list_sas()
    assert not rig.wait_ping("left", 2)
    _clean(gw)


# --- 2. manual keys, pyspu <-> pyspu -----------------------------------------------------------

def test_manual_key_vpn(rig2):
    left = rig2.gateway("left", junos_manual("left"))
    right = rig2.gateway("right", junos_manual("right"))
    _traffic_both_ways(rig2, left, right)
    for g in (left, right):
        st = g.status()
        assert st["ike"] == [], st["ike"]
        sas = {sa["direction"]: sa for sa in st["ipsec"]}
        assert set(sas) == {"in", "out"}, st["ipsec"]
        for sa in sas.values():
            assert sa["spi"] == "00001000" and sa["vpn"] == "man1" and sa["proposal"] == "manual"
            assert sa["port"] is None and sa["packets"] > 500, sa          # raw ESP
            assert sum(sa["dropped"].values()) == 0, sa
        text = g.spu("status").stdout
        assert "Total active tunnels: 1" in text and "man1" in text, text
        assert re.search(r"<\d+\s+ESP:aes-cbc-128/sha256\s+00001000", text), text
        row = [ln for ln in text.splitlines() if ln.startswith(">") and "man1" in ln]
        assert row and int(row[0].split()[-3]) >= sas["out"]["packets"], text   # counters
        _clean(g)
        assert "202122232425262728292a2b2c2d2e2f" not in g.log_text()   # keys never logged


def test_manual_key_mismatch_counts_auth_failures(rig2):
    left = rig2.gateway("left", junos_manual("left"))
    right = rig2.gateway("right", junos_manual(
        "right", auth_key="ff" * 32))                                  # another HMAC key
    r = rig2.ping("left", count=5, timeout=20)
    assert r.returncode != 0                                            # nothing gets through
    st = right.status()
    sa_in = next(sa for sa in st["ipsec"] if sa["direction"] == "in")
    assert sa_in["dropped"].get("auth_failed", 0) >= 5, sa_in
    assert sa_in["packets"] == 0, sa_in
    assert st["engine"]["dropped"].get("auth_failed", 0) >= 5, st["engine"]
    text = right.spu("status").stdout
    row = [ln for ln in text.splitlines() if ln.startswith("<") and "man1" in ln]
    # counted again a moment later (the kernels may send more meanwhile): never fewer
    assert row and int(row[0].split()[-1]) >= sa_in["dropped"]["auth_failed"], text
    for g in (left, right):
        assert g.proc.poll() is None, _tail(g)                          # still running
        _clean(g)


# --- 3. several traffic selectors in one vpn -----------------------------------------------

NET2 = {"left": "10.201.1.0/24", "right": "10.202.1.0/24"}
HOST2 = {"left": "10.201.1.1", "right": "10.202.1.1"}


def _selectors(side: str) -> list:
    peer = "right" if side == "left" else "left"
    return [(INNER_NET[side], INNER_NET[peer]), (NET2[side], NET2[peer])]


def _both_subnets(rig, *procs) -> None:
    _traffic_both_ways(rig, *procs)
    _traffic_both_ways(rig, *procs, src=dict(HOST2),
                       dst={"left": HOST2["right"], "right": HOST2["left"]})


def _two_pairs(st: dict) -> dict:
    """{child selector -> {direction: spi}}: two IPsec SA pairs, each carrying traffic."""
    ids = {sa["id"] for sa in st["ipsec"]}
    assert len(ids) == 2 and len(st["ipsec"]) == 4, st["ipsec"]
    for sa in st["ipsec"]:
        assert sa["vpn"] == "vpn1" and sa["packets"] > 50, sa
        assert sum(sa["dropped"].values()) == 0, sa
    return {i: {sa["direction"]: sa["spi"] for sa in st["ipsec"] if sa["id"] == i}
            for i in ids}


def test_two_traffic_selectors_pyspu_to_pyspu(rig2):
    pair = PAIRS[1]
    left = rig2.gateway("left", junos("left", pair, establish="immediately",
                                      selectors=_selectors("left")))
    right = rig2.gateway("right", junos("right", pair, establish="on-traffic",
                                        selectors=_selectors("right")))
    _both_subnets(rig2, left, right)
    a, b = _two_pairs(left.status()), _two_pairs(right.status())
    ins_a = {p["in"] for p in a.values()}
    outs_b = {p["out"] for p in b.values()}
    assert ins_a == outs_b, (a, b)
    assert len(left.status()["ike"]) == 1
    for g in (left, right):
        _clean(g)
        assert "vpn1:ts2" in g.log_text() or "10.201.1.0/24" in g.log_text()


@pytest.mark.parametrize("role", ["initiator", "responder"])
def test_two_traffic_selectors_with_strongswan(rig, role):
    pair = PAIRS[0]
    charon = rig.charon("right", swanctl("right", pair, selectors=_selectors("right")))
    rig.add_inner_on_lo("right", HOST2["right"])
    gw = rig.gateway("left", junos("left", pair, selectors=_selectors("left"),
                                   establish="immediately" if role == "initiator"
                                   else "on-traffic"))
    if role == "responder":
        for child in ("net", "net2"):
            r = charon.swanctl("--initiate", "--child", child, "--timeout", "30", check=False)
            assert r.returncode == 0, r.stdout + r.stderr + _logs(gw, charon)
    _both_subnets(rig, gw, charon)
    pairs = _two_pairs(gw.status())
    sas = charon.list_sas()
    assert sas.count("INSTALLED") == 2, sas
    for p in pairs.values():
        assert re.search(rf"\bin\s+{p['out']}", sas) and re.search(rf"\bout\s+{p['in']}",
                                                                   sas), (pairs, sas)
    for lo, remote in _selectors("right"):
        assert re.search(rf"local\s+{re.escape(lo)}", sas), sas
        assert re.search(rf"remote\s+{re.escape(remote)}", sas), sas
    assert len(gw.status()["ike"]) == 1
    # rekeying the vpn rekeys both Child SAs, each replacing only its own pair
    gw.request("rekey-child", "vpn1")
    assert _wait(lambda: gw.log_text().count("IPsec SA rekeyed") >= 2 and
                 len(gw.status()["ipsec"]) == 4, 15), _tail(gw)
    after = {sa["spi"] for sa in gw.status()["ipsec"]}
    before = {spi for p in pairs.values() for spi in p.values()}
    assert not after & before, (before, after)
    assert {sa["id"] for sa in gw.status()["ipsec"]} == set(pairs), gw.status()["ipsec"]
    for side, src, dst in (("left", INNER_HOST["left"], INNER_HOST["right"]),
                           ("left", HOST2["left"], HOST2["right"]),
                           ("right", HOST2["right"], HOST2["left"])):
        assert rig.wait_ping(side, 10, src=src, dst=dst), _logs(gw, charon)
    assert charon.list_sas().count("INSTALLED") == 2, charon.list_sas()
    # charon deletes the second selector's Child SA only: pyspu brings that one back (the
    # ticker for `establish-tunnels immediately`, the first packet for on-traffic) over
    # the same IKE SA, and leaves the first alone
    st = gw.status()
    first_id = min(sa["id"] for sa in st["ipsec"])            # ts1 came up first
    keep = {sa["spi"] for sa in st["ipsec"] if sa["id"] == first_id}
    gone = {sa["spi"] for sa in st["ipsec"]} - keep
    charon.swanctl("--terminate", "--child", "net2")
    # (immediately: the replacement may already be up when we look)
    assert _wait(lambda: not gone & {sa["spi"] for sa in gw.status()["ipsec"]}, 10), _tail(gw)
    assert "deleted by peer" in gw.log_text(), _tail(gw)
    assert rig.wait_ping("left", 20, src=HOST2["left"], dst=HOST2["right"]), _logs(gw, charon)
    assert _wait(lambda: len(gw.status()["ipsec"]) == 4, 10), gw.status()["ipsec"]
    st = gw.status()
    assert keep <= {sa["spi"] for sa in st["ipsec"]} and len(st["ike"]) == 1, st
    assert len({sa["id"] for sa in st["ipsec"]}) == 2, st["ipsec"]
    assert rig.wait_ping("right", 10, src=HOST2["right"], dst=HOST2["left"]), _logs(gw, charon)
    assert charon.list_sas().count("INSTALLED") == 2, charon.list_sas()
    _clean(gw)


# --- 4. DES-CBC and 3DES-CBC for the IKE SA ----------------------------------------------------

FIPS81_KEY = bytes.fromhex("0123456789abcdef")
FIPS81_IV = bytes.fromhex("1234567890abcdef")
FIPS81_PLAIN = b"Now is the time for all "
FIPS81_CBC = bytes.fromhex("e5c7cdde872bf27c43e934008c389c0f683788499a7c05f6")
PREFIX = bytes(range(28)) + b"\x2e\x00\x00\x40"        # stands for IKE header + SK header


def test_des_sk_cipher_known_answer():
    """FIPS PUB 81 appendix B's CBC example through the SK payload path (RFC 7296 3.14):
    a body built from the published ciphertext opens to the published plaintext."""
    spec = ike_encr_spec(Encr.DES, None)
    assert (spec.key_len, spec.iv_len, spec.block) == (8, 8, 8)
    akey = b"k" * 20
    p = CbcHmacProtector(spec, FIPS81_KEY, Integ.HMAC_SHA1_96, akey)
    # The published three blocks, then one block of padding (7 zero bytes, pad length 7)
    # whose ciphertext comes from chaining: CBC block 4 = E(K, C3 xor P4), computed with
    # the protector's cipher (IV = C3) and cross-checked against OpenSSL below.
    pad_block = bytes(7) + b"\x07"
    body3 = FIPS81_IV + FIPS81_CBC
    c3 = FIPS81_CBC[-8:]
    one = CbcHmacProtector(spec, FIPS81_KEY, Integ.HMAC_SHA1_96, akey)
    c4 = _des_cbc_block(one, c3, pad_block)
    body = body3 + c4
    body += hmac.new(akey, PREFIX + body, "sha1").digest()[:12]
    assert p.open(PREFIX, body) == FIPS81_PLAIN
    # and the first three blocks our cipher makes from the plaintext are FIPS 81's
    assert _des_cbc_block(one, FIPS81_IV, FIPS81_PLAIN) == FIPS81_CBC
    # OpenSSL's own DES (legacy provider), when the command line has it, agrees
    openssl = shutil.which("openssl")
    if openssl:
        r = subprocess.run([openssl, "enc", "-des-cbc", "-provider", "legacy", "-provider",
                            "default", "-K", FIPS81_KEY.hex(), "-iv", FIPS81_IV.hex(), "-nopad"],
                           input=FIPS81_PLAIN + pad_block, capture_output=True, timeout=10,
                           check=False)
        if r.returncode == 0:
            assert r.stdout == FIPS81_CBC + c4
            # and it decrypts what seal() makes: IV | DES-CBC(payload | pad | pad length)
            sealed = p.seal(PREFIX, b"IKE payloads, 29 bytes long..")
            d = subprocess.run([openssl, "enc", "-d", "-des-cbc", "-provider", "legacy",
                                "-provider", "default", "-K", FIPS81_KEY.hex(), "-iv",
                                sealed[:8].hex(), "-nopad"], input=sealed[8:-12],
                               capture_output=True, timeout=10, check=False)
            assert d.returncode == 0 and d.stdout == b"IKE payloads, 29 bytes long.." + \
                bytes(2) + b"\x02", d
    # tampering is caught by the ICV before any decryption
    bad = bytearray(body)
    bad[10] ^= 1
    with pytest.raises(IntegrityError, match="ICV"):
        p.open(PREFIX, bytes(bad))


def _des_cbc_block(p: CbcHmacProtector, iv: bytes, data: bytes) -> bytes:
    """Raw DES-CBC of whole blocks with the protector's cipher (no padding, no ICV)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, modes
    enc = Cipher(p._algo(), modes.CBC(iv)).encryptor()
    return enc.update(data) + enc.finalize()


@pytest.mark.parametrize("ike", ["des-sha1-modp2048", "3des-sha256-modp2048",
                                 "des-md5-modp1024"])
def test_des_ike_sa_in_memory(ike):
    """Two IKE cores agree on a DES / 3DES IKE SA, run IKE_AUTH through it, rekey the
    Child SA and the IKE SA over it; every SK payload is IV (8) + whole 8-byte blocks."""
    ci, cr = configs(ike=(ike,))
    pair = IKEPair(ci, cr)
    pair.start()
    pair.run()
    up_i = of(pair.events_i, ev.IKESAEstablished)
    up_r = of(pair.events_r, ev.IKESAEstablished)
    assert up_i and up_r, (pair.events_i, pair.events_r)
    word = "DES3" if ike.startswith("3des") else "DES"
    assert up_i[0].proposal.split("/")[0] == word, up_i[0].proposal
    assert of(pair.events_i, ev.ChildSAEstablished) and of(pair.events_r, ev.ChildSAEstablished)
    icv = 16 if "sha256" in ike else 12
    auth_msgs = [d for d in pair.sent_i + pair.sent_r if d[18] == 35]  # IKE_AUTH
    assert auth_msgs
    for d in auth_msgs:
        sk_len = int.from_bytes(d[30:32], "big")            # first payload: SK (46)
        assert d[16] == 46 and (sk_len - 4 - 8 - icv) % 8 == 0, (d[16], sk_len)
    child = of(pair.events_i, ev.ChildSAEstablished)[0]
    pair.i.rekey_child(child.spi_in, pair.now)
    pair.run()
    assert of(pair.events_i, ev.ChildSARekeyed), pair.events_i
    pair.i.rekey_ike(pair.now)
    pair.run()
    assert of(pair.events_i, ev.IKESARekeyed), pair.events_i


def test_des_ike_wrong_key_length_refused():
    with pytest.raises(ValueError):
        ike_encr_spec(Encr.DES, 128)


@pytest.mark.parametrize("ike_enc,swan,role", [("des-cbc", "des-sha1-modp2048", "initiator"),
                                               ("des-cbc", "des-sha1-modp2048", "responder"),
                                               ("3des-cbc", "3des-sha1-modp2048", "initiator")])
def test_des_ike_sa_with_strongswan(rig, ike_enc, swan, role):
    """charon's openssl plugin offers DES_CBC / 3DES_CBC for IKE: the IKE SA runs on it."""
    pair = Pair(swan, ike_enc, "sha1", "group14", "aes-128-cbc", "hmac-sha1-96", None,
                swan, "aes128-sha1")
    charon = rig.charon("right", swanctl("right", pair))
    gw = rig.gateway("left", junos("left", pair, establish="immediately"
                                   if role == "initiator" else "on-traffic"))
    if role == "responder":
        r = charon.swanctl("--initiate", "--child", "net", "--timeout", "30", check=False)
        assert r.returncode == 0, r.stdout + r.stderr + _logs(gw, charon)
    assert rig.wait_ping("left", 60), _logs(gw, charon)
    assert rig.ping("right").returncode == 0, _logs(gw, charon)
    st = gw.status()
    assert st["ike"][0]["proposal"].startswith("DES3" if ike_enc == "3des-cbc" else "DES/"), \
        st["ike"]
    sas = charon.list_sas()
    want = "3DES_CBC" if ike_enc == "3des-cbc" else "DES_CBC"
    assert re.search(rf"\b{want}/HMAC_SHA1_96/PRF_HMAC_SHA1/MODP_2048", sas), sas
    # an exchange inside the IKE SA after IKE_AUTH: charon rekeys the Child SA over DES
    charon.swanctl("--rekey", "--child", "net")
    assert _wait(lambda: "rekeyed" in gw.log_text(), 15), _tail(gw)
    assert rig.ping("left").returncode == 0, _logs(gw, charon)
    _clean(gw)
