"""Interop: pyspu's IKEv2 initiator against a live strongSwan responder.

The bed (bench/rig.py, after /work/shared/recipes/strongswan.md; built and torn down here):
  namespace A: 10.200.0.1/24 on a veth, runs tests/ike_interop_peer.py (ike/daemon.py
               around the sans-I/O core, pyspu's engine for ESP)
  namespace B: 10.200.0.2/24, 10.202.0.1/32 on lo, runs charon 5.9 with kernel-libipsec
               (ESP in userspace over a TUN device, always UDP-encapsulated on 4500: it
               fakes NAT detection, so this also exercises NAT-T floating)
charon gets a private /run (its pid file is hard-wired), its own strongswan.conf and
VICI socket, and kernel-libipsec loaded before kernel-netlink.

Per proposal pair the test asserts that
  - swanctl --list-sas shows the IKE SA ESTABLISHED with pyspu's IKE SPIs and the CHILD_SA
    INSTALLED with pyspu's ESP SPIs (charon's "in" SPI is pyspu's outbound SPI),
  - an ICMP echo encrypted by pyspu's engine with the negotiated keys is decrypted by
    charon (its inbound packet counter moves), answered by charon's kernel, encrypted by
    libipsec and decrypted by pyspu's engine: both directions' keys agree (RFC 7296 2.17),
  - pyspu's INFORMATIONAL Delete removes the IKE SA on charon's side.
With certificates (RSA and ECDSA chains root -> intermediate -> leaf made at test time,
tests/cert_factory.py) in both roles, IKE_AUTH crosses as RFC 7383 fragments both ways
(charon's log says it split and reassembled them). Failures in both roles (wrong PSK, no
common IKE proposal, no common ESP proposal) must give pyspu's failure event, leave
charon without the SA, show up in charon's log, and put no traceback in pyspu's output.
Rekeying (test_rekeys_both_ways, with and without PFS): pyspu and charon each rekey the
Child SA and the IKE SA; charon lists the new SPIs and not the old, and ESP crosses the
new Child SAs both ways.
Traffic stays inside the two namespaces this test creates. Without root or strongSwan the
test is skipped locally and fails under CI=true (the CI bootstrap installs strongSwan).
"""
from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.rig import OUTER, SWANCTL, Rig, missing_requirements

PSK = "pyspu-interop-psk-0123456789abcdef"
PYSPU, CHARON_IP = OUTER["left"], OUTER["right"]
PEER_SCRIPT = Path(__file__).with_name("ike_interop_peer.py")
REPO = PEER_SCRIPT.parent.parent

# pyspu as initiator: (its IKE proposals, its ESP proposal); charon accepts each of these.
# The last one makes charon answer INVALID_KE_PAYLOAD first (RFC 7296 1.2): pyspu's KE is
# for ECP-521, which charon is not configured for.
PAIRS = [
    (["aes128-sha256-modp2048"], "aes128-sha1"),
    (["aes256gcm16-prfsha256-ecp256"], "aes256gcm16"),
    (["aes128-sha256-curve25519"], "aes128-sha256"),
    (["aes128-sha256-ecp521", "aes128-sha256-modp2048"], "aes128-sha1"),
]
# pyspu as responder to charon's initiation: pyspu's IKE proposals. charon proposes
# modp2048 first (its KE); with only Curve25519 acceptable pyspu asks for that group.
RESPONDER = [
    (["aes256gcm16-prfsha256-ecp256", "aes128-sha256-modp2048"], "MODP_2048"),
    (["aes128-sha256-curve25519"], "CURVE25519"),
]

SWANCTL_CONF = f"""
connections {{
    tun {{
        version = 2
        local_addrs = {CHARON_IP}
        remote_addrs = {PYSPU}
        proposals = aes128-sha256-modp2048, aes256gcm16-prfsha256-ecp256, aes128-sha256-curve25519
        local {{
            auth = psk
            id = {CHARON_IP}
        }}
        remote {{
            auth = psk
            id = {PYSPU}
        }}
        children {{
            net {{
                local_ts = 10.202.0.0/24
                remote_ts = 10.201.0.0/24
                esp_proposals = aes128-sha1, aes256gcm16, aes128-sha256
                mode = tunnel
                start_action = none
            }}
        }}
    }}
}}
secrets {{
    ike-pyspu {{
        id-a = {PYSPU}
        id-b = {CHARON_IP}
        secret = "{PSK}"
    }}
}}
"""


def _sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=30)


class Bed:
    """bench/rig.py's two namespaces, with charon on the right side (B) loaded with
    SWANCTL_CONF; pyspu's peer runs in the left one (A)."""

    def __init__(self):
        self.rig = Rig()
        self.charon = None

    def up(self) -> None:
        self.rig.up()
        self.ns_a, self.ns_b = self.rig.ns["left"], self.rig.ns["right"]
        self.charon = self.rig.charon("right", SWANCTL_CONF)
        self.dir, self.vici = self.charon.dir, self.charon.vici

    def load(self, conf: str, files: dict | None = None, name: str = "alt") -> None:
        """Replace charon's connections and credentials with `conf` (and `files`, paths
        relative to it: x509/, x509ca/, private/ as swanctl expects them)."""
        where = self.dir / name
        where.mkdir(exist_ok=True)
        for rel, data in (files or {}).items():
            (where / rel).parent.mkdir(parents=True, exist_ok=True)
            (where / rel).write_bytes(data)
        (where / "swanctl.conf").write_text(conf)
        self.charon.swanctl("--load-all", "--clear", "--noprompt", "--file",
                            str(where / "swanctl.conf"))

    def restore(self) -> None:
        self.charon.swanctl("--terminate", "--ike", "tun", "--force", "--timeout", "5",
                            check=False)
        self.charon.swanctl("--load-all", "--clear", "--noprompt", "--file",
                            str(self.dir / "swanctl.conf"))

    def log_size(self) -> int:
        return self.charon.log_size()

    def log_since(self, offset: int) -> str:
        return self.charon.log_since(offset)

    def list_sas(self) -> str:
        return self.charon.list_sas()

    def log_tail(self, n: int = 40) -> str:
        return self.charon.log_tail(n)

    def down(self) -> None:
        self.rig.down()


@pytest.fixture(scope="module")
def bed():
    missing = missing_requirements(need_strongswan=True)
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"strongSwan interop cannot run under CI: {missing}")
        pytest.skip(missing)
    b = Bed()
    try:
        b.up()
        yield b
    finally:
        b.down()


class Peer:
    """tests/ike_interop_peer.py in namespace A; JSON lines on stdout."""

    def __init__(self, bed: Bed, role: str, ike: list, esp: list, **extra):
        args = {"role": role, "local": PYSPU, "remote": CHARON_IP, "psk": PSK, "ike": ike,
                "esp": esp, "local_ts": "10.201.0.0/24", "remote_ts": "10.202.0.0/24",
                "ping_src": "10.201.0.1", "ping_dst": "10.202.0.1", **extra}
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(PEER_SCRIPT.parent)]))
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", bed.ns_a, sys.executable, str(PEER_SCRIPT),
             json.dumps(args)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=env)

    def step(self, timeout: float = 30) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise AssertionError("the pyspu peer said nothing in time")
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the pyspu peer exited: {self.proc.stderr.read()[-2000:]}")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)

    def finish(self, timeout: float = 10) -> str:
        """Wait for a normal exit; its stderr (pyspu's log lines)."""
        _, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, err[-3000:]
        return err


def _child_counters(sas: str, spi: str) -> int:
    m = re.search(rf"\bin\s+{spi}\b[^\n]*?(\d+) packets", sas)
    return int(m.group(1)) if m else -1


def _check_established(bed: Bed, up: dict) -> None:
    assert up["step"] == "established", f"{up}\n{bed.log_tail()}"
    sas = bed.list_sas()
    assert "ESTABLISHED" in sas, sas
    assert f"{up['spi_i']}_i" in sas and f"{up['spi_r']}_r" in sas, (up, sas)
    assert re.search(r"net: #\d+, reqid \d+, INSTALLED, TUNNEL-in-UDP", sas), sas
    # charon's inbound SPI is the one pyspu sends with, and the other way round
    assert re.search(rf"\bin\s+{up['child_spi_out']}\b", sas), (up, sas)
    assert re.search(rf"\bout\s+{up['child_spi_in']}\b", sas), (up, sas)
    # libipsec fakes a NAT: both ends float to 4500 and encapsulate (RFC 7296 2.23)
    assert up["encap"] == [4500, 4500] and (up["nat_local"] or up["nat_remote"])
    assert up["local_ts"] == "10.201.0.0/24" and up["remote_ts"] == "10.202.0.0/24"


def _check_esp(bed: Bed, peer: Peer, up: dict) -> None:
    esp_step = peer.step()
    assert esp_step["step"] == "esp" and esp_step["reply"], f"{esp_step}\n{bed.log_tail()}"
    assert _child_counters(bed.list_sas(), up["child_spi_out"]) >= 1


def _wait_gone(bed: Bed) -> None:
    deadline = time.monotonic() + 5
    while "ESTABLISHED" in bed.list_sas() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "ESTABLISHED" not in bed.list_sas(), bed.list_sas()


@pytest.mark.parametrize("ike,esp", PAIRS, ids=["/".join(i) + f"/{e}" for i, e in PAIRS])
def test_pyspu_initiator_strongswan_responder(bed: Bed, ike: list, esp: str):
    peer = Peer(bed, "initiator", ike, [esp])
    try:
        up = peer.step()
        _check_established(bed, up)
        _check_esp(bed, peer, up)
        peer.proc.stdin.write("delete\n")
        peer.proc.stdin.flush()
        gone = peer.step()
        assert gone["step"] == "deleted" and not gone["by_peer"], gone
        _wait_gone(bed)
    finally:
        peer.close()


@pytest.mark.parametrize("ike,group", RESPONDER, ids=[g for _, g in RESPONDER])
def test_strongswan_initiator_pyspu_responder(bed: Bed, ike: list, group: str):
    peer = Peer(bed, "responder", ike, ["aes256gcm16", "aes128-sha1"])
    try:
        assert peer.step()["step"] == "listening"
        initiate = subprocess.Popen(
            [SWANCTL, "--initiate", "--child", "net", "--ike", "tun", "--timeout", "20",
             "--uri", bed.vici], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        up = peer.step()
        out, _ = initiate.communicate(timeout=20)
        assert initiate.returncode == 0, out
        _check_established(bed, up)
        assert group in up["proposal"], up
        assert up["child_proposal"].startswith("AES_GCM_16_256"), up   # our first choice
        _check_esp(bed, peer, up)
        _sh(SWANCTL, "--terminate", "--ike", "tun", "--timeout", "10", "--uri", bed.vici)
        gone = peer.step()
        assert gone["step"] == "deleted" and gone["by_peer"], gone
        _wait_gone(bed)
    finally:
        peer.close()


# --- certificates (RFC 7296 2.15, RFC 7427, RFC 7383 fragments) -----------------------------

CERT_CONF = f"""
connections {{
    tun {{
        version = 2
        local_addrs = {CHARON_IP}
        remote_addrs = {PYSPU}
        proposals = aes128-sha256-modp2048
        fragmentation = yes
        local {{
            auth = pubkey
            certs = charon.pem
            id = charon.pyspu.test
        }}
        remote {{
            auth = pubkey
            id = "C=CH, O=pyspu, CN=pyspu gateway"
        }}
        children {{
            net {{
                local_ts = 10.202.0.0/24
                remote_ts = 10.201.0.0/24
                esp_proposals = aes128-sha1
                mode = tunnel
                start_action = none
            }}
        }}
    }}
}}
"""
METHODS = {"rsa": "rsa-signatures", "ecdsa-256": "ecdsa-signatures-256",
           "ecdsa-384": "ecdsa-signatures-384"}


def _cert_setup(bed: Bed, key_type: str) -> dict:
    """A root -> intermediate -> leaf PKI valid now (charon reads its own clock): charon's
    files go to swanctl's directories, pyspu's are returned as peer arguments."""
    import datetime

    from cryptography.hazmat.primitives import serialization

    from cert_factory import Pki
    now = datetime.datetime.now(datetime.timezone.utc)
    pki = Pki(key_type, name="interop", now=now)
    ours, our_key = pki.leaf("C=CH, O=pyspu, CN=pyspu gateway", key_type,
                             dns=["pyspu.test"])
    theirs, their_key = pki.leaf("C=CH, O=strongSwan, CN=charon", key_type,
                                 dns=["charon.pyspu.test"])
    pem = serialization.Encoding.PEM
    files = {"x509/charon.pem": theirs.public_bytes(pem),
             "x509ca/root.pem": pki.root.public_bytes(pem),
             "x509ca/inter.pem": pki.inter.public_bytes(pem),
             "private/charon.key": their_key.private_bytes(
                 pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())}
    bed.load(CERT_CONF, files, name=f"cert-{key_type}")
    paths = pki.write(bed.dir / f"pyspu-{key_type}", ours, our_key, prefix="pyspu")
    return {"cert": {"cert": paths["cert"], "key": paths["key"], "ca": paths["ca"],
                     "method": METHODS[key_type]},
            "local_id": "cert", "remote_id": "fqdn:charon.pyspu.test", "psk": ""}


def _check_fragments(log: str) -> None:
    # charon both split its IKE_AUTH message and reassembled ours (RFC 7383)
    assert re.search(r"splitting IKE message .* into \d+ fragments", log), log[-3000:]
    assert "reassembled fragmented IKE message" in log, log[-3000:]


def _check_cert_established(bed: Bed, up: dict, log: str, key_type: str) -> None:
    assert up["step"] == "established", f"{up}\n{bed.log_tail()}"
    sas = bed.list_sas()
    assert re.search(r"local\s+'charon\.pyspu\.test'", sas), sas
    assert re.search(r"remote\s+'C=CH, O=pyspu, CN=pyspu gateway'", sas), sas
    assert re.search(r"authentication of 'C=CH, O=pyspu, CN=pyspu gateway' with .+ "
                     r"successful", log), log[-3000:]
    if key_type == "rsa":      # ECDSA chains fit one 1280-byte datagram
        _check_fragments(log)


# how charon names the signature scheme it verified (RFC 7427 vs the classic methods)
SCHEMES = {("rsa", True): "RSA_EMSA_PKCS1_SHA2_256", ("rsa", False): "RSA signature",
           ("ecdsa-256", True): "ECDSA_WITH_SHA256_DER",
           ("ecdsa-256", False): "ECDSA-256 signature",
           ("ecdsa-384", True): "ECDSA_WITH_SHA384_DER"}


@pytest.mark.parametrize("key_type,rfc7427", list(SCHEMES),
                         ids=[f"{k}-{'rfc7427' if r else 'classic'}" for k, r in SCHEMES])
def test_certificates_pyspu_initiator(bed: Bed, key_type: str, rfc7427: bool):
    extra = _cert_setup(bed, key_type)
    mark = bed.log_size()
    peer = Peer(bed, "initiator", ["aes128-sha256-modp2048"], ["aes128-sha1"],
                rfc7427=rfc7427, **extra)
    try:
        up = peer.step()
        log = bed.log_since(mark)
        _check_cert_established(bed, up, log, key_type)
        # charon verified pyspu's AUTH with, and signed its own with, this scheme
        assert f"'C=CH, O=pyspu, CN=pyspu gateway' with {SCHEMES[key_type, rfc7427]} " \
            "successful" in log, log[-3000:]
        assert f"'charon.pyspu.test' (myself) with {SCHEMES[key_type, rfc7427]}" in log
        _check_esp(bed, peer, up)
        peer.proc.stdin.write("delete\n")
        peer.proc.stdin.flush()
        assert peer.step()["step"] == "deleted"
        _wait_gone(bed)
    finally:
        peer.close()
        bed.restore()


@pytest.mark.parametrize("key_type", list(METHODS))
def test_certificates_pyspu_responder(bed: Bed, key_type: str):
    extra = _cert_setup(bed, key_type)
    mark = bed.log_size()
    peer = Peer(bed, "responder", ["aes128-sha256-modp2048"], ["aes128-sha1"], **extra)
    try:
        assert peer.step()["step"] == "listening"
        out = _sh(SWANCTL, "--initiate", "--child", "net", "--ike", "tun", "--timeout", "20",
                  "--uri", bed.vici, check=False)
        up = peer.step()
        assert out.returncode == 0, out.stdout + out.stderr
        _check_cert_established(bed, up, bed.log_since(mark), key_type)
        _check_esp(bed, peer, up)
        _sh(SWANCTL, "--terminate", "--ike", "tun", "--timeout", "10", "--uri", bed.vici)
        assert peer.step()["step"] == "deleted"
        _wait_gone(bed)
    finally:
        peer.close()
        bed.restore()


def test_certificate_from_an_unknown_ca_is_refused(bed: Bed):
    """charon's certificate chain does not lead to pyspu's trusted CA."""
    import datetime

    from cert_factory import Pki
    extra = _cert_setup(bed, "rsa")
    other = Pki("rsa", name="stranger", now=datetime.datetime.now(datetime.timezone.utc))
    files = other.write(bed.dir / "stranger", *other.leaf("CN=x"))
    extra["cert"]["ca"] = files["ca"]
    mark = bed.log_size()
    peer = Peer(bed, "initiator", ["aes128-sha256-modp2048"], ["aes128-sha1"],
                expect="failure", **extra)
    try:
        failed = peer.step()
        assert failed["event"] == "AuthenticationFailed" and not failed["by_peer"], failed
        assert failed["reason"].startswith("unknown-ca"), failed
        err = peer.finish()
        assert "unknown-ca" in err and "Traceback" not in err, err
        _no_sa(bed)
        assert "AUTHENTICATION_FAILED" in bed.log_since(mark) or \
            "AUTH_FAILED" in bed.log_since(mark), bed.log_since(mark)[-3000:]
    finally:
        peer.close()
        bed.restore()


# --- clean failures against charon, both roles ---------------------------------------------

def _no_sa(bed: Bed, ike_too: bool = True) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        sas = bed.list_sas()
        if "INSTALLED" not in sas and (not ike_too or "ESTABLISHED" not in sas):
            return
        time.sleep(0.1)
    raise AssertionError(f"charon still holds an SA:\n{bed.list_sas()}")


WRONG_PSK = SWANCTL_CONF.replace(f'secret = "{PSK}"', 'secret = "not-the-pyspu-secret-42"')
IKE_MISMATCH = SWANCTL_CONF.replace(
    "proposals = aes128-sha256-modp2048, aes256gcm16-prfsha256-ecp256, aes128-sha256-curve25519",
    "proposals = aes256-sha512-ecp384")
ESP_MISMATCH = SWANCTL_CONF.replace("esp_proposals = aes128-sha1, aes256gcm16, aes128-sha256",
                                    "esp_proposals = aes256gcm16")
# case: (charon's conf, pyspu's event, child?, pyspu's log word when pyspu decides,
#        charon's log when it refuses (pyspu initiates), when pyspu refuses (charon initiates))
FAILURES = {
    "wrong-psk": (WRONG_PSK, "AuthenticationFailed", None, "bad-psk",
                  r"but MAC mismatched\n.*generating IKE_AUTH response 1 \[ N\(AUTH_FAILED\) \]",
                  r"received AUTHENTICATION_FAILED notify error"),
    "ike-proposals": (IKE_MISMATCH, "NoProposalChosen", False, "no IKE proposal",
                      r"generating IKE_SA_INIT response 0 \[ N\(NO_PROP\) \]",
                      r"received NO_PROPOSAL_CHOSEN notify error"),
    "esp-proposals": (ESP_MISMATCH, "NoProposalChosen", True, "Child SA",
                      r"no acceptable proposal found\n.*failed to establish CHILD_SA, "
                      r"keeping IKE_SA",
                      r"received NO_PROPOSAL_CHOSEN notify, no CHILD_SA built"),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_failure_pyspu_initiator(bed: Bed, case: str):
    conf, event, child, _, charon_says, _ = FAILURES[case]
    bed.load(conf, name=f"fail-{case}")
    mark = bed.log_size()
    peer = Peer(bed, "initiator", ["aes128-sha256-modp2048"], ["aes128-sha1"],
                expect="failure")
    try:
        failed = peer.step()
        assert failed["step"] == "failed" and failed["event"] == event, failed
        assert failed["by_peer"], failed          # charon refused: it sent the notify
        if child is not None:
            assert failed["child"] is child, failed
        if case == "esp-proposals":
            # the IKE SA stands without a Child SA (RFC 7296 2.21.3); pyspu deletes it
            assert failed["established"]
            _no_sa(bed, ike_too=False)
            peer.proc.stdin.write("delete\n")
            peer.proc.stdin.flush()
            assert peer.step()["step"] == "deleted"
        err = peer.finish()
        assert "Traceback" not in err, err
        _no_sa(bed)
        assert re.search(charon_says, bed.log_since(mark)), bed.log_since(mark)[-3000:]
    finally:
        peer.close()
        bed.restore()


@pytest.mark.parametrize("case", list(FAILURES))
def test_failure_pyspu_responder(bed: Bed, case: str):
    conf, event, child, word, _, charon_says = FAILURES[case]
    bed.load(conf, name=f"fail-{case}")
    mark = bed.log_size()
    peer = Peer(bed, "responder", ["aes128-sha256-modp2048"], ["aes128-sha1"],
                expect="failure")
    try:
        assert peer.step()["step"] == "listening"
        out = _sh(SWANCTL, "--initiate", "--child", "net", "--ike", "tun", "--timeout", "15",
                  "--uri", bed.vici, check=False)
        assert out.returncode != 0, out.stdout          # charon's initiation failed
        failed = peer.step()
        assert failed["step"] == "failed" and failed["event"] == event, failed
        assert failed["by_peer"] is False, failed       # pyspu decided and said so
        if child is not None:
            assert failed["child"] is child, failed
        if case == "wrong-psk":
            assert failed["reason"].startswith(word), failed
        if case == "esp-proposals":
            assert failed["established"]
            _no_sa(bed, ike_too=False)
            _sh(SWANCTL, "--terminate", "--ike", "tun", "--timeout", "10", "--uri", bed.vici)
            assert peer.step()["step"] == "deleted"
        err = peer.finish()
        assert "Traceback" not in err, err
        assert word in err, err                          # pyspu's log line says why
        _no_sa(bed)
        assert re.search(charon_says, bed.log_since(mark)), bed.log_since(mark)[-3000:]
    finally:
        peer.close()
        bed.restore()


# -- rekeying (RFC 7296 1.3.2, 1.3.3, 2.8, 2.17, 2.18), both ways --------------------------------
# pyspu initiates the IKE SA and stays up; then pyspu rekeys the Child SA, charon rekeys it
# (`swanctl --rekey --child`), pyspu rekeys the IKE SA, charon rekeys it (`--rekey --ike`),
# and pyspu rekeys the Child SA once more over the twice-rekeyed IKE SA. After each Child
# rekey charon lists the new SPIs and not the old ones and an ICMP echo crosses the new SA
# both ways (pyspu's engine <-> libipsec); after each IKE rekey charon lists the new IKE
# SPIs and not the old ones. With PFS charon's Child SA shows the group it negotiated.
PFS_CONF = SWANCTL_CONF.replace("esp_proposals = aes128-sha1, aes256gcm16, aes128-sha256",
                                "esp_proposals = aes128-sha256-x25519")
REKEYS = [("aes128-sha256", 0, ""), ("aes128-sha256-x25519", 31, "CURVE_25519")]


def _command(peer: Peer, line: str) -> None:
    peer.proc.stdin.write(line + "\n")
    peer.proc.stdin.flush()


def _wait_sas(bed: Bed, present: list, absent: list, what: str) -> str:
    """charon's --list-sas until every pattern in `present` matches and none in `absent`."""
    deadline = time.monotonic() + 10
    while True:
        sas = bed.list_sas()
        if all(re.search(p, sas) for p in present) and \
                not any(re.search(p, sas) for p in absent):
            return sas
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: {present} / not {absent}\n{sas}\n{bed.log_tail()}")
        time.sleep(0.1)


def _child_rekey(bed: Bed, peer: Peer, command: str, old: tuple, group: int,
                 group_name: str) -> tuple:
    _command(peer, command)
    if command == "expect-child":
        _sh(SWANCTL, "--rekey", "--child", "net", "--uri", bed.vici)
    done = peer.step()
    assert done["step"] == "child-rekeyed", f"{done}\n{bed.log_tail()}"
    assert (done["old_spi_in"], done["old_spi_out"]) == old, (done, old)
    assert done["pfs_group"] == group and done["outbound_ready"] == (command == "rekey-child")
    # charon's inbound SPI is pyspu's outbound one; the old pair is gone on both sides
    sas = _wait_sas(bed, [rf"\bin\s+{done['spi_out']}\b", rf"\bout\s+{done['spi_in']}\b"],
                    [rf"\bin\s+{old[1]}\b", rf"\bout\s+{old[0]}\b"], command)
    if group_name:
        assert re.search(rf"net: #\d+, reqid \d+, INSTALLED, TUNNEL-in-UDP, ESP:\S+/"
                         rf"{group_name}", sas), sas
    _command(peer, "ping")
    esp = peer.step()
    assert esp["step"] == "esp" and esp["reply"], f"{esp}\n{bed.log_tail()}"
    assert _child_counters(bed.list_sas(), done["spi_out"]) >= 1
    return done["spi_in"], done["spi_out"]


def _ike_rekey(bed: Bed, peer: Peer, command: str, old: tuple) -> tuple:
    _command(peer, command)
    if command == "expect-ike":
        _sh(SWANCTL, "--rekey", "--ike", "tun", "--uri", bed.vici)
    done = peer.step()
    assert done["step"] == "ike-rekeyed", f"{done}\n{bed.log_tail()}"
    assert done["old_gone"] and done["by_peer"] == (command == "expect-ike"), done
    _wait_sas(bed, [rf"{done['spi_i']}_i", rf"{done['spi_r']}_r", "ESTABLISHED"],
              [rf"{old[0]}_i", rf"{old[1]}_r"], command)
    return done["spi_i"], done["spi_r"]


@pytest.mark.parametrize("esp,group,group_name", REKEYS, ids=["no-pfs", "pfs-x25519"])
def test_rekeys_both_ways(bed: Bed, esp: str, group: int, group_name: str):
    if group:
        bed.load(PFS_CONF, name="pfs")
    peer = Peer(bed, "initiator", ["aes128-sha256-modp2048"], [esp], commands=True)
    try:
        up = peer.step()
        _check_established(bed, up)
        _check_esp(bed, peer, up)
        child = (up["child_spi_in"], up["child_spi_out"])
        ike = (up["spi_i"], up["spi_r"])
        child = _child_rekey(bed, peer, "rekey-child", child, group, group_name)
        child = _child_rekey(bed, peer, "expect-child", child, group, group_name)
        ike = _ike_rekey(bed, peer, "rekey-ike", ike)
        ike = _ike_rekey(bed, peer, "expect-ike", ike)
        _child_rekey(bed, peer, "rekey-child", child, group, group_name)
        _command(peer, "delete")
        gone = peer.step()
        assert gone["step"] == "deleted" and not gone["by_peer"], gone
        _wait_gone(bed)
        assert "Traceback" not in peer.finish()
    finally:
        peer.close()
        if group:
            bed.restore()
