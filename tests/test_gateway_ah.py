"""`spu gateway` on both ends with an AH vpn (RFC 4302): `protocol ah;` with
`authentication-algorithm hmac-sha-256-128;` and no encryption, keyed by IKEv2 with PFS.

Two pyspu gateways in the bench/rig.py namespaces, no NAT between them: IKE negotiates AH
Child SAs, the engines carry the kernels' ping and TCP both ways as raw AH (IP protocol
51), and `spu status` shows AH SAs. A rekey under traffic keeps AH and the connection.
strongSwan cannot be the peer: its userland IPsec (libipsec) has no AH.

Without root the tests are skipped locally and fail under CI=true.
"""
from __future__ import annotations

import threading
import time


from bench.tunnel_configs import Pair, junos
from gateway_helpers import logs as _logs, rig_fixture, wait_until as _wait

#: IKE as PAIRS[0]; the IPsec proposal is AH HMAC-SHA-256-128 with PFS (group 19)
AH_PAIR = Pair("ah-sha256-pfs", "aes-128-cbc", "sha-256", "group14", "", "hmac-sha-256-128",
               "group19", "", "")


rig = rig_fixture(need_strongswan=False)


def _spis(st: dict) -> dict:
    return {s["direction"]: s["spi"] for s in st["ipsec"]}


def test_ah_vpn_pyspu_to_pyspu(rig):
    left = rig.gateway("left", junos("left", AH_PAIR, establish="immediately",
                                     ipsec_protocol="ah"))
    right = rig.gateway("right", junos("right", AH_PAIR, establish="on-traffic",
                                       ipsec_protocol="ah"))
    assert rig.wait_ping("left", 40), (
        f"no ping through the AH tunnel; left io {sorted(left.status()['io'])} (AH needs a "
        "raw IP protocol 51 socket in ike/dataplane.py)" + _logs(left, right))
    assert rig.ping("right").returncode == 0, _logs(left, right)
    for sender in ("left", "right"):
        r = rig.tcp_transfer(sender, 3_000_000)
        assert r.get("digest_ok") and r["received"] == 3_000_000, (r, _logs(left, right))
    a, b = left.status(), right.status()
    assert _spis(a)["in"] == _spis(b)["out"] and _spis(a)["out"] == _spis(b)["in"]
    for st in (a, b):
        assert not st["ike"][0]["nat"], st["ike"]
        assert len(st["ipsec"]) == 2, st["ipsec"]
        for sa in st["ipsec"]:
            assert sa["protocol"] == "ah" and sa["algorithm"] == "AH:none/sha256", sa
            assert sa["port"] is None and sa["packets"] > 1000, sa      # raw AH, no UDP
            assert sum(sa["dropped"].values()) == 0, sa
        io = st["io"]
        assert io.get("ah", {}).get("rx_packets", 0) > 1000, \
            f"no AH through a raw protocol-51 socket (ike/dataplane.py): {io}"
        assert io["esp"]["rx_packets"] == 0, io
    text = left.spu("status").stdout
    assert "AH:none/sha256" in text, text
    # a rekey under TCP keeps AH, with new SPIs
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(
        rig.tcp_transfer("right", 2_000_000, timeout=120, pace=0.02)))
    t.start()
    time.sleep(1.0)
    left.request("rekey-child", "vpn1")
    t.join(150)
    assert result.get("digest_ok") and result["received"] == 2_000_000, \
        (result, _logs(left, right))
    assert _wait(lambda: len(left.status()["ipsec"]) == 2 and
                 set(_spis(left.status()).values()).isdisjoint(_spis(a).values()), 20), \
        (left.status()["ipsec"], _logs(left))
    after = left.status()
    assert all(sa["protocol"] == "ah" for sa in after["ipsec"]), after["ipsec"]
    assert rig.ping("left").returncode == 0
    for g in (left, right):
        log = g.log_text()
        assert "Traceback" not in log and "PFS group 19" in log, g.log_tail()
