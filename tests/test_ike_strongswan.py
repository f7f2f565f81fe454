"""Interop: pyspu's IKEv2 initiator against a live strongSwan responder.

The bed (built and torn down here, after /work/shared/recipes/strongswan.md):
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
Traffic stays inside the two namespaces this test creates. Without root or strongSwan the
test is skipped locally and fails under CI=true (the CI bootstrap installs strongSwan).
"""
from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

CHARON = "/usr/lib/ipsec/charon"
SWANCTL = "/usr/sbin/swanctl"
LIBIPSEC = "/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so"
PLUGINS = ("random nonce openssl aes sha1 sha2 md5 hmac gcm chapoly curve25519 xcbc cmac ctr "
           "ccm pem pkcs1 pkcs8 pkcs12 x509 pubkey revocation constraints kdf kernel-libipsec "
           "kernel-netlink socket-default vici updown")
PSK = "pyspu-interop-psk-0123456789abcdef"
PYSPU, CHARON_IP = "10.200.0.1", "10.200.0.2"
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


def _strongswan_missing() -> str:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for path in (CHARON, SWANCTL, LIBIPSEC):
        if not os.path.exists(path):
            return f"strongSwan not installed ({path} missing)"
    if shutil.which("ip") is None:
        return "iproute2 missing"
    return ""


def _sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=30)


class Bed:
    def __init__(self):
        tag = f"{os.getpid() % 100000}"
        self.ns_a, self.ns_b = f"pyspu-ike-{tag}-a", f"pyspu-ike-{tag}-b"
        self.dir = Path(tempfile.mkdtemp(prefix="pyspu-ike-"))
        self.vici = f"unix://{self.dir}/charon.vici"
        self.charon: subprocess.Popen | None = None
        self.netns_made: list[str] = []

    def up(self) -> None:
        for ns in (self.ns_a, self.ns_b):
            _sh("ip", "netns", "add", ns)
            self.netns_made.append(ns)
        tag = self.ns_a.split("-")[2]
        va, vb = f"pik{tag}a", f"pik{tag}b"
        _sh("ip", "link", "add", va, "netns", self.ns_a, "type", "veth", "peer", "name", vb,
            "netns", self.ns_b)
        _sh("ip", "-n", self.ns_a, "addr", "add", f"{PYSPU}/24", "dev", va)
        _sh("ip", "-n", self.ns_b, "addr", "add", f"{CHARON_IP}/24", "dev", vb)
        _sh("ip", "-n", self.ns_b, "addr", "add", "10.202.0.1/32", "dev", "lo")
        for ns, dev in ((self.ns_a, va), (self.ns_b, vb)):
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
            _sh("ip", "-n", ns, "link", "set", dev, "up")
        (self.dir / "swanctl.conf").write_text(SWANCTL_CONF)
        (self.dir / "strongswan.conf").write_text(f"""
charon {{
    load = {PLUGINS}
    filelog {{
        test {{
            path = {self.dir}/charon.log
            append = no
            flush_line = yes
            default = 1
            ike = 2
            cfg = 2
            knl = 1
            chd = 2
        }}
    }}
    plugins {{
        vici {{
            socket = {self.vici}
        }}
    }}
}}
""")
        # `ip netns exec` gives charon a private mount namespace: /run there is our dir.
        self.charon = subprocess.Popen(
            ["ip", "netns", "exec", self.ns_b, "sh", "-c",
             'mount -n --bind "$1" /run && exec env STRONGSWAN_CONF="$1/strongswan.conf" "$2"',
             "charon", str(self.dir), CHARON],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if _sh(SWANCTL, "--stats", "--uri", self.vici, check=False).returncode == 0:
                break
            if self.charon.poll() is not None:
                raise RuntimeError(f"charon exited: {self.log_tail()}")
            time.sleep(0.1)
        else:
            raise RuntimeError(f"charon's VICI socket never came up: {self.log_tail()}")
        _sh(SWANCTL, "--load-all", "--noprompt", "--file", str(self.dir / "swanctl.conf"),
            "--uri", self.vici)

    def list_sas(self) -> str:
        return _sh(SWANCTL, "--list-sas", "--uri", self.vici).stdout

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join((self.dir / "charon.log").read_text().splitlines()[-n:])
        except OSError:
            return "(no charon log)"

    def down(self) -> None:
        if self.charon is not None and self.charon.poll() is None:
            self.charon.terminate()
            try:
                self.charon.wait(10)
            except subprocess.TimeoutExpired:
                self.charon.kill()
                self.charon.wait(5)
        for ns in self.netns_made:
            _sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def bed():
    missing = _strongswan_missing()
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

    def __init__(self, bed: Bed, role: str, ike: list, esp: list):
        args = {"role": role, "local": PYSPU, "remote": CHARON_IP, "psk": PSK, "ike": ike,
                "esp": esp, "local_ts": "10.201.0.0/24", "remote_ts": "10.202.0.0/24",
                "ping_src": "10.201.0.1", "ping_dst": "10.202.0.1"}
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
