"""A two-namespace test bed for whole gateways: pyspu or strongSwan on each side.

    left  namespace: 10.200.0.1/24 on a veth, inner network 10.201.0.0/24 (host .1)
    right namespace: 10.200.0.2/24 on a veth, inner network 10.202.0.0/24 (host .1)

A side runs either `spu gateway` (its TUN st0 holds the inner address) or strongSwan's
charon with the kernel-libipsec userspace ESP (inner address on lo, charon's ipsec0 TUN
routes to the other side; ../shared/recipes/strongswan.md). Traffic never leaves the
namespaces made here. Used by tests/test_gateway*.py and bench/tunnel_bench.py (iperf3).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parent.parent
CHARON = "/usr/lib/ipsec/charon"
SWANCTL = "/usr/sbin/swanctl"
LIBIPSEC = "/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so"
CHARON_PLUGINS = ("random nonce openssl aes sha1 sha2 md5 hmac gcm chapoly curve25519 xcbc "
                  "cmac ctr ccm pem pkcs1 pkcs8 pkcs12 x509 pubkey revocation constraints kdf "
                  "kernel-libipsec kernel-netlink socket-default vici updown")

OUTER = {"left": "10.200.0.1", "right": "10.200.0.2"}
INNER_NET = {"left": "10.201.0.0/24", "right": "10.202.0.0/24"}
INNER_HOST = {"left": "10.201.0.1", "right": "10.202.0.1"}


def other(side: str) -> str:
    return "right" if side == "left" else "left"


def missing_requirements(need_strongswan: bool = True, need: tuple = ()) -> str:
    """Why the rig cannot run here ("" when it can)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if not os.path.exists("/dev/net/tun"):
        return "no /dev/net/tun"
    paths = [CHARON, SWANCTL, LIBIPSEC] if need_strongswan else []
    for path in paths:
        if not os.path.exists(path):
            return f"strongSwan not installed ({path} missing)"
    for tool in ("ip", "ping") + tuple(need):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    return ""


def sh(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=timeout)


class Charon:
    """One charon in a namespace, with a private /run, strongswan.conf and VICI socket."""

    def __init__(self, rig: "Rig", side: str, swanctl_conf: str, files: dict | None = None):
        self.rig, self.side = rig, side
        self.dir = rig.dir / f"charon-{side}"
        self.dir.mkdir()
        self.vici = f"unix://{self.dir}/charon.vici"
        for rel, content in (files or {}).items():      # certificates etc. under swanctl/
            path = self.dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content if isinstance(content, bytes) else content.encode())
        (self.dir / "swanctl.conf").write_text(swanctl_conf)
        (self.dir / "strongswan.conf").write_text(f"""
charon {{
    load = {CHARON_PLUGINS}
    filelog {{
        rig {{
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
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", rig.ns[side], "sh", "-c",
             'mount -n --bind "$1" /run && exec env STRONGSWAN_CONF="$1/strongswan.conf" "$2"',
             "charon", str(self.dir), CHARON],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.swanctl("--stats", check=False).returncode == 0:
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"charon exited: {self.log_tail()}")
            time.sleep(0.1)
        else:
            raise RuntimeError(f"charon's VICI socket never came up: {self.log_tail()}")
        base = ["--load-all", "--noprompt", "--file", str(self.dir / "swanctl.conf")]
        r = self.swanctl(*base, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"swanctl --load-all failed: {r.stdout}{r.stderr}")

    def swanctl(self, *args: str, check: bool = True, timeout: float = 30):
        return sh(SWANCTL, *args, "--uri", self.vici, check=check, timeout=timeout)

    def list_sas(self) -> str:
        return self.swanctl("--list-sas").stdout

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join((self.dir / "charon.log").read_text().splitlines()[-n:])
        except OSError:
            return "(no charon log)"

    def log_size(self) -> int:
        """Where the log ends now: log_since(size) reads what comes after."""
        try:
            return (self.dir / "charon.log").stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int) -> str:
        try:
            with open(self.dir / "charon.log", "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """Vanish without a Delete (SIGKILL): the other side must notice by liveness checks."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class Gateway:
    """`spu gateway --config` in a namespace; `status()` and `request()` over its socket."""

    def __init__(self, rig: "Rig", side: str, junos_conf: str, files: dict | None = None,
                 extra_args: tuple = ()):
        self.rig, self.side = rig, side
        self.dir = rig.dir / f"pyspu-{side}"
        self.dir.mkdir()
        for rel, content in (files or {}).items():
            path = self.dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content if isinstance(content, bytes) else content.encode())
        self.socket = str(self.dir / "gateway.sock")
        self.config = self.dir / "gateway.conf"
        self.config.write_text(junos_conf.replace("@DIR@", str(self.dir)))
        self.log = self.dir / "gateway.log"
        env = dict(os.environ, PYTHONPATH=str(REPO))
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", rig.ns[side], sys.executable, "-m", "engine.cli",
                 "gateway", "--config", str(self.config), "--control-socket", self.socket,
                 "--log-level", "debug", *extra_args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                cwd=str(REPO))
        deadline = time.monotonic() + 60        # the first start compiles Numba kernels
        while time.monotonic() < deadline:
            if os.path.exists(self.socket):
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"spu gateway exited ({self.proc.returncode}):\n"
                                   f"{self.log_tail()}")
            time.sleep(0.1)
        else:
            raise RuntimeError(f"spu gateway never opened its control socket:\n"
                               f"{self.log_tail()}")

    def spu(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        return subprocess.run([sys.executable, "-m", "engine.cli", *args, "--socket",
                               self.socket], capture_output=True, text=True, timeout=30,
                              check=check, env=env, cwd=str(REPO))

    def status(self) -> dict:
        return json.loads(self.spu("status", "--json").stdout)

    def request(self, action: str, vpn: str) -> str:
        return self.spu("request", action, vpn).stdout

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no gateway log)"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


class Rig:
    def __init__(self):
        tag = f"{os.getpid() % 100000}{int(time.monotonic() * 1000) % 1000:03d}"
        self.ns = {"left": f"pyspu-gw{tag}-l", "right": f"pyspu-gw{tag}-r"}
        self.veth = {"left": f"pgw{tag}l", "right": f"pgw{tag}r"}
        self.dir = Path(tempfile.mkdtemp(prefix="pyspu-rig-"))
        self._made: list[str] = []
        self.procs: list = []

    def __enter__(self) -> "Rig":
        self.up()
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    def up(self) -> None:
        for side in ("left", "right"):
            sh("ip", "netns", "add", self.ns[side])
            self._made.append(self.ns[side])
        sh("ip", "link", "add", self.veth["left"], "netns", self.ns["left"], "type", "veth",
           "peer", "name", self.veth["right"], "netns", self.ns["right"])
        for side in ("left", "right"):
            ns = self.ns[side]
            sh("ip", "-n", ns, "addr", "add", f"{OUTER[side]}/24", "dev", self.veth[side])
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "link", "set", self.veth[side], "up")

    def inner_on_lo(self, side: str) -> None:
        """strongSwan sides: the inner host address lives on lo (no dummy driver here)."""
        sh("ip", "-n", self.ns[side], "addr", "add", f"{INNER_HOST[side]}/32", "dev", "lo")

    def add_inner_on_lo(self, side: str, host: str) -> None:
        """One more inner host address on a strongSwan side (several traffic selectors)."""
        sh("ip", "-n", self.ns[side], "addr", "add", f"{host}/32", "dev", "lo")

    def charon(self, side: str, swanctl_conf: str, files: dict | None = None) -> Charon:
        self.inner_on_lo(side)
        c = Charon(self, side, swanctl_conf, files)
        self.procs.append(c)
        return c

    def gateway(self, side: str, junos_conf: str, files: dict | None = None,
                extra_args: tuple = ()) -> Gateway:
        g = Gateway(self, side, junos_conf, files, extra_args)
        self.procs.append(g)
        return g

    def run(self, side: str, *cmd: str, check: bool = False, timeout: float = 60):
        return sh("ip", "netns", "exec", self.ns[side], *cmd, check=check, timeout=timeout)

    def popen(self, side: str, *cmd: str, **kw) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.ns[side], *cmd], **kw)

    def ping(self, side: str, count: int = 3, timeout: float = 20) -> subprocess.CompletedProcess:
        """ping the other side's inner host from this side's inner address."""
        return self.run(side, "ping", "-c", str(count), "-i", "0.2", "-W", "2", "-I",
                        INNER_HOST[side], INNER_HOST[other(side)], timeout=timeout)

    def wait_ping(self, side: str, within: float = 30, src: Optional[str] = None,
                  dst: Optional[str] = None) -> bool:
        """Ping until one reply comes (tunnels come up on the first packets); `src`/`dst`
        default to the two inner hosts."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            r = self.run(side, "ping", "-c", "1", "-W", "1", "-I", src or INNER_HOST[side],
                         dst or INNER_HOST[other(side)], timeout=10)
            if r.returncode == 0:
                return True
            time.sleep(0.3)
        return False

    def tcp_transfer(self, sender: str, nbytes: int, timeout: float = 60,
                     port: int = 5001, pace: float = 0.0, src_host: Optional[str] = None,
                     dst_host: Optional[str] = None) -> dict:
        """Send `nbytes` over one TCP connection from `sender`'s inner host to the other's
        (or from `src_host` to `dst_host`); returns {"sent", "received", "digest_ok",
        "seconds"} (the receiver hashes)."""
        receiver = other(sender)
        dst_host = dst_host or INNER_HOST[receiver]
        src_host = src_host or INNER_HOST[sender]
        code = (Path(__file__).with_name("tcp_sink.py"))
        sink = self.popen(receiver, sys.executable, str(code), "sink", dst_host,
                          str(port), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(0.3)
            try:
                src = self.run(sender, sys.executable, str(code), "source",
                               dst_host, str(port), str(nbytes), src_host,
                               str(pace), timeout=timeout)
                out, err = sink.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                return {"error": f"the transfer did not finish within {timeout:g} s"}
        finally:
            if sink.poll() is None:
                sink.kill()
                sink.wait(5)
        try:
            sent = json.loads(src.stdout.strip().splitlines()[-1])
            got = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return {"error": f"source: {src.stdout}{src.stderr} sink: {out}{err}"}
        return {"sent": sent["bytes"], "received": got["bytes"],
                "digest_ok": sent["sha256"] == got["sha256"], "seconds": sent["seconds"]}

    def down(self) -> None:
        for p in reversed(self.procs):
            try:
                p.stop()
            except Exception:      # noqa: BLE001 - tear-down goes on whatever one process did
                pass
        for ns in self._made:
            sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)
