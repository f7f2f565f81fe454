"""`spu gateway` against strongSwan 5.9.8 as a live peer, carrying real traffic.

Rig (bench/rig.py): pyspu's gateway in the left namespace (TUN st0 = 10.201.0.1/24), charon
with kernel-libipsec in the right one (10.202.0.1 on lo; libipsec's TUN routes to us).
libipsec fakes NAT detection, so every tunnel here floats to UDP 4500 (RFC 3948).

Each test shows, through the kernels' own ping and TCP on both sides, that packets cross
the tunnel both ways, and through `spu status --json` and `swanctl --list-sas` that both
ends agree on the SAs. Without root or strongSwan the tests are skipped locally and fail
under CI=true (the CI bootstrap installs strongSwan).
"""
from __future__ import annotations

import re
import threading
import time

import pytest

from bench.tunnel_configs import PAIRS, PSK, junos, swanctl
from gateway_helpers import logs as _logs, rig_fixture, wait_until as _wait

TCP_BYTES = 2_000_000


rig = rig_fixture(need_strongswan=True)


def _child_spis(status: dict) -> dict:
    return {sa["direction"]: sa["spi"] for sa in status["ipsec"]}


def _check_agreement(gw, charon) -> dict:
    """pyspu's inbound SPI is charon's outbound one and the other way round."""
    st = gw.status()
    assert [s["state"] for s in st["ike"]] == ["UP"], st["ike"]
    spis = _child_spis(st)
    sas = charon.list_sas()
    assert "ESTABLISHED" in sas and "INSTALLED" in sas, sas
    assert re.search(rf"\bin\s+{spis['out']}", sas), (spis, sas)
    assert re.search(rf"\bout\s+{spis['in']}", sas), (spis, sas)
    return st


def _up(rig, pair, role: str):
    charon = rig.charon("right", swanctl("right", pair))
    gw = rig.gateway("left", junos("left", pair, establish="immediately"
                                   if role == "initiator" else "on-traffic"))
    if role == "responder":
        r = charon.swanctl("--initiate", "--child", "net", "--timeout", "30", check=False)
        assert r.returncode == 0, r.stdout + r.stderr + _logs(gw, charon)
    assert rig.wait_ping("left", 40), "no ping through the tunnel" + _logs(gw, charon)
    return gw, charon


@pytest.mark.parametrize("role", ["initiator", "responder"])
@pytest.mark.parametrize("pair", PAIRS, ids=[p.name for p in PAIRS])
def test_tunnel_carries_ping_and_tcp_both_ways(rig, pair, role):
    gw, charon = _up(rig, pair, role)
    assert rig.ping("right").returncode == 0, _logs(gw, charon)
    for sender in ("left", "right"):
        r = rig.tcp_transfer(sender, TCP_BYTES)
        assert r.get("digest_ok") and r["received"] == TCP_BYTES, (r, _logs(gw, charon))
    st = _check_agreement(gw, charon)
    ike = st["ike"][0]
    assert ike["role"] == role and ike["nat"], ike
    for sa in st["ipsec"]:
        assert sa["port"] == 4500 and sa["packets"] > TCP_BYTES // 1500, sa
        assert sa["vpn"] == "vpn1" and sum(sa["dropped"].values()) == 0, sa
    text = gw.spu("status").stdout
    assert "UP" in text and "Total active tunnels: 1" in text, text
    assert "<131073" in text and ">131073" in text, text
    log = gw.log_text()
    assert "Traceback" not in log, log
    assert pair.swan_ike.split("-")[0][:3] in log.lower()        # the proposal is logged


def test_rekeys_under_traffic_keep_tcp(rig):
    """Child SA and IKE SA rekeys started by each side while one TCP connection runs."""
    pair = PAIRS[2]                                   # PFS: every Child rekey runs a DH
    gw, charon = _up(rig, pair, "initiator")
    first = _child_spis(gw.status())
    result = {}
    nbytes = 6_000_000
    t = threading.Thread(target=lambda: result.update(
        rig.tcp_transfer("left", nbytes, timeout=120, pace=0.04)))
    t.start()
    time.sleep(1.0)
    steps = [lambda: gw.request("rekey-child", "vpn1"),
             lambda: charon.swanctl("--rekey", "--child", "net"),
             lambda: gw.request("rekey-ike", "vpn1"),
             lambda: charon.swanctl("--rekey", "--ike", "gw")]
    for step in steps:
        step()
        time.sleep(1.0)
    t.join(150)
    assert result.get("digest_ok") and result["received"] == nbytes, (result, _logs(gw, charon))
    st = _check_agreement(gw, charon)
    assert _child_spis(st)["in"] != first["in"] and _child_spis(st)["out"] != first["out"]
    assert len(st["ipsec"]) == 2, st["ipsec"]         # old SAs are gone after the deletes
    assert charon.list_sas().count("INSTALLED") == 1, charon.list_sas()
    log = gw.log_text()
    assert log.count("rekeyed") >= 2 and "Traceback" not in log, log


def test_delete_from_either_side(rig):
    pair = PAIRS[0]
    gw, charon = _up(rig, pair, "initiator")
    gw.request("delete", "vpn1")
    assert _wait(lambda: "ESTABLISHED" not in charon.list_sas(), 10), charon.list_sas()
    assert _wait(lambda: not gw.status()["ike"] and not gw.status()["ipsec"], 10)
    gw.request("initiate", "vpn1")
    assert rig.wait_ping("left", 30), _logs(gw, charon)
    charon.swanctl("--terminate", "--ike", "gw")
    assert _wait(lambda: not gw.status()["ipsec"], 10), gw.status()
    assert "Traceback" not in gw.log_text()


def test_vanished_peer_is_detected_by_liveness_checks(rig):
    pair = PAIRS[1]
    gw, charon = _up(rig, pair, "initiator")
    charon.kill()
    # DPD interval 2 s, threshold 3: silence is noticed within a few intervals
    assert _wait(lambda: not gw.status()["ipsec"], 30), gw.log_tail()
    assert re.search(r"dead|no answer", gw.log_text(), re.I), gw.log_tail()


@pytest.mark.parametrize("side", ["pyspu", "strongswan"])
def test_wrong_psk_fails_cleanly(rig, side):
    pair = PAIRS[0]
    wrong = "not-the-right-key-at-all-0000000"
    charon = rig.charon("right", swanctl("right", pair,
                                         psk=wrong if side == "strongswan" else PSK))
    gw = rig.gateway("left", junos("left", pair, psk=wrong if side == "pyspu" else PSK))
    assert _wait(lambda: "authentication failed" in gw.log_text().lower(), 30), gw.log_tail()
    assert not gw.status()["ipsec"]
    assert "ESTABLISHED" not in charon.list_sas()
    assert "Traceback" not in gw.log_text()
    assert wrong not in gw.log_text()


def test_proposal_mismatch_fails_cleanly(rig):
    charon = rig.charon("right", swanctl("right", PAIRS[1]))
    gw = rig.gateway("left", junos("left", PAIRS[0]))
    assert _wait(lambda: "no proposal chosen" in gw.log_text().lower(), 30), gw.log_tail()
    assert not gw.status()["ipsec"]
    assert "ESTABLISHED" not in charon.list_sas()
    assert "Traceback" not in gw.log_text()
