"""Two network namespaces joined by a veth pair, and a way to open fds inside them.

`Netns.enter()` switches the calling thread into a namespace (setns(2)) and back: a socket
or TUN device created inside stays bound to that namespace after the switch back, so one
test process can own the endpoints of both sides and drive them in lockstep. Subprocesses
(ping, ip) started inside inherit the namespace. Everything is created with addresses the
test assigns and removed by `down()`.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from contextlib import contextmanager

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)

A4, B4 = "192.0.2.1", "192.0.2.2"          # RFC 5737 TEST-NET-1 on the veth pair
A6, B6 = "2001:db8:77::1", "2001:db8:77::2"  # RFC 3849 documentation prefix


def missing() -> str:
    """Why namespace tests cannot run here, or ''."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if shutil.which("ip") is None:
        return "iproute2 missing"
    if not os.path.exists("/dev/net/tun"):
        return "no /dev/net/tun"
    return ""


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=30)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns: {os.strerror(e)}")


class Netns:
    def __init__(self, name: str):
        self.name = name

    @contextmanager
    def enter(self):
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            _setns(target)
            try:
                yield self
            finally:
                _setns(own)
        finally:
            os.close(own)
            os.close(target)

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return sh("ip", "-n", self.name, *args, check=check)

    def exec(self, *args: str) -> list[str]:
        """argv prefix that runs a command inside this namespace."""
        return ["ip", "netns", "exec", self.name, *args]


class Pair:
    """ns a (veth A4/A6) <-> ns b (veth B4/B6)."""

    def __init__(self, tag: str):
        t = f"{tag}{os.getpid() % 100000}"
        self.a, self.b = Netns(f"pyspu-{t}-a"), Netns(f"pyspu-{t}-b")
        self.va, self.vb = f"v{t}a", f"v{t}b"
        self.made: list[Netns] = []

    def up(self) -> "Pair":
        for ns in (self.a, self.b):
            sh("ip", "netns", "add", ns.name)
            self.made.append(ns)
        sh("ip", "link", "add", self.va, "netns", self.a.name, "type", "veth", "peer", "name",
           self.vb, "netns", self.b.name)
        for ns, dev, v4, v6 in ((self.a, self.va, A4, A6), (self.b, self.vb, B4, B6)):
            ns.ip("addr", "add", f"{v4}/24", "dev", dev)
            ns.ip("addr", "add", f"{v6}/64", "dev", dev, "nodad")
            ns.ip("link", "set", "lo", "up")
            ns.ip("link", "set", dev, "up")
            sh(*ns.exec("sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"))
        return self

    def down(self) -> None:
        for ns in self.made:
            sh("ip", "netns", "del", ns.name, check=False)
        self.made.clear()


def pair_fixture(tag: str):
    """A module-scoped `pair` fixture: a Pair named by `tag`, skipped locally without root,
    a failure under CI=true (where the bootstrap makes everything available)."""
    import pytest

    @pytest.fixture(scope="module", name="pair")
    def pair():
        why = missing()
        if why:
            if os.environ.get("CI") == "true":
                pytest.fail(f"network-namespace tests cannot run under CI: {why}")
            pytest.skip(why)
        p = Pair(tag)
        try:
            p.up()
            yield p
        finally:
            p.down()
    return pair
