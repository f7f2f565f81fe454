"""`spu gateway` on both ends of a tunnel (bench/rig.py namespaces), and its commands.

Without a NAT between them two pyspu gateways send plain ESP (IP protocol 50, raw
sockets); the kernels' ping and TCP on both sides carry the traffic. Rekeys started by
either side while TCP runs must not lose the connection; a killed peer is noticed by the
liveness checks. Without root the tests are skipped locally and fail under CI=true.
"""
from __future__ import annotations

import threading
import time

import pytest

from bench.tunnel_configs import PAIRS, junos
from gateway_helpers import logs as _logs, rig_fixture, wait_until as _wait


rig = rig_fixture(need_strongswan=False)


def _pair_up(rig, pair, **kw):
    left = rig.gateway("left", junos("left", pair, establish="immediately", **kw))
    right = rig.gateway("right", junos("right", pair, establish="on-traffic", **kw))
    assert rig.wait_ping("left", 40), "no ping through the tunnel" + _logs(left, right)
    return left, right


@pytest.mark.parametrize("pair", PAIRS, ids=[p.name for p in PAIRS])
def test_pyspu_to_pyspu_ping_and_tcp(rig, pair):
    left, right = _pair_up(rig, pair)
    assert rig.ping("right").returncode == 0
    for sender in ("left", "right"):
        r = rig.tcp_transfer(sender, 3_000_000)
        assert r.get("digest_ok") and r["received"] == 3_000_000, (r, _logs(left, right))
    a, b = left.status(), right.status()
    spi = {g: {s["direction"]: s["spi"] for s in st["ipsec"]} for g, st in (("l", a), ("r", b))}
    assert spi["l"]["in"] == spi["r"]["out"] and spi["l"]["out"] == spi["r"]["in"], spi
    for st in (a, b):
        assert not st["ike"][0]["nat"], st["ike"]
        for sa in st["ipsec"]:
            assert sa["port"] is None and sa["packets"] > 1000, sa    # raw ESP, no UDP
    assert a["io"]["esp"]["rx_packets"] > 1000, a["io"]
    for g in (left, right):
        assert "Traceback" not in g.log_text()


def test_pyspu_rekeys_under_traffic(rig):
    left, right = _pair_up(rig, PAIRS[2])
    first = {s["direction"]: s["spi"] for s in left.status()["ipsec"]}
    result = {}
    t = threading.Thread(target=lambda: result.update(
        rig.tcp_transfer("right", 6_000_000, timeout=120, pace=0.04)))
    t.start()
    time.sleep(1.0)
    for g, action in ((left, "rekey-child"), (right, "rekey-child"), (left, "rekey-ike"),
                      (right, "rekey-ike")):
        g.request(action, "vpn1")
        time.sleep(1.0)
    t.join(150)
    assert result.get("digest_ok") and result["received"] == 6_000_000, (result,
                                                                           _logs(left, right))
    now = {s["direction"]: s["spi"] for s in left.status()["ipsec"]}
    assert now["in"] != first["in"] and len(left.status()["ipsec"]) == 2


def test_pyspu_kilobyte_lifetime_rekeys(rig):
    """A 3000 KB lifetime: 8 MB of TCP (about 1.3 MB/s) rekeys on the way and arrives."""
    left, right = _pair_up(rig, PAIRS[0], esp_kb=3000)
    first = {s["direction"]: s["spi"] for s in left.status()["ipsec"]}
    r = rig.tcp_transfer("left", 8_000_000, timeout=120, pace=0.05)
    assert r.get("digest_ok"), (r, _logs(left, right))
    now = {s["direction"]: s["spi"] for s in left.status()["ipsec"]}
    assert now["in"] != first["in"], (first, now)


def test_pyspu_dead_peer(rig):
    left, right = _pair_up(rig, PAIRS[1])
    right.kill()
    assert _wait(lambda: not left.status()["ipsec"], 30), left.log_tail()
