"""Throughput through a real tunnel with iperf3, in one run, on the two-namespace rig:

    pyspu-to-pyspu, pyspu-to-strongSwan, strongSwan-to-strongSwan (libipsec userspace ESP)
    and the same veth without IPsec, for reference.

    python -m bench.tunnel_bench [--pair aes128-sha1-modp2048] [--seconds 10] [--repeats 3]
                                 [--json FILE]

TCP (one stream) and UDP (1400-byte IP datagrams: 1372 bytes of payload, so they fit st0's
MTU of 1400 without fragmenting; unlimited send rate; what arrives counts),
each from the left namespace's inner host to the right one's; medians over repeats. The
machine's 2 cores carry both gateways, iperf3 and the kernels, so only ratios measured in
the same run mean anything. Needs root, strongSwan, iperf3.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from . import tunnel_configs as configs
from .rig import INNER_HOST, Rig, missing_requirements

SETUPS = ("plain", "strongswan-strongswan", "pyspu-strongswan", "pyspu-pyspu",
          "pyspu-pyspu-udp")   # the last: `pyspu { force-udp-encapsulation; }` on both


def _iperf(rig: Rig, seconds: float, udp: bool) -> float:
    """Mbit/s received by the right side's iperf3 server."""
    server = rig.popen("right", "iperf3", "-s", "-1", "-B", INNER_HOST["right"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    args = ["iperf3", "-c", INNER_HOST["right"], "-B", INNER_HOST["left"], "-t", str(seconds),
            "-J"]
    if udp:
        args += ["-u", "-l", "1372", "-b", "0"]
    r = rig.run("left", *args, timeout=seconds + 60)
    server.wait(30)
    data = json.loads(r.stdout)
    if "error" in data:
        raise RuntimeError(f"iperf3: {data['error']}")
    # the receiver's view (iperf3 reports it to the client): what crossed the tunnel
    return data["end"]["sum_received"]["bits_per_second"] / 1e6


def _setup(rig: Rig, setup: str, pair) -> list:
    left_pyspu = setup.startswith("pyspu")
    right_pyspu = setup.startswith("pyspu-pyspu")
    encap = setup.endswith("-udp")
    started = []
    if setup == "plain":
        for side in ("left", "right"):
            rig.inner_on_lo(side)
        rig.run("left", "ip", "route", "add", "10.202.0.0/24", "via", "10.200.0.2", check=True)
        rig.run("right", "ip", "route", "add", "10.201.0.0/24", "via", "10.200.0.1",
                check=True)
        return started
    if right_pyspu:
        started.append(rig.gateway("right", configs.junos(
            "right", pair, establish="on-traffic", force_udp_encapsulation=encap)))
    else:
        started.append(rig.charon("right", configs.swanctl("right", pair)))
    if left_pyspu:
        started.append(rig.gateway("left", configs.junos("left", pair,
                                                         force_udp_encapsulation=encap)))
    else:
        c = rig.charon("left", configs.swanctl("left", pair))
        c.swanctl("--initiate", "--child", "net", "--timeout", "30")
        started.append(c)
    if not rig.wait_ping("left", 40):
        raise RuntimeError(f"{setup}: the tunnel did not come up")
    return started


def run(pair_name: str, seconds: float, repeats: int, setups=SETUPS,
        protos=("tcp", "udp1400")) -> dict:
    pair = next(p for p in configs.PAIRS if p.name == pair_name)
    results = {}
    for setup in setups:
        for udp in (False, True):
            if ("udp1400" if udp else "tcp") not in protos:
                continue
            samples = []
            for _ in range(repeats):
                with Rig() as rig:
                    _setup(rig, setup, pair)
                    samples.append(_iperf(rig, seconds, udp))
            key = f"{setup} {'udp1400' if udp else 'tcp'}"
            results[key] = {"median_mbit_s": round(statistics.median(samples), 1),
                            "samples": [round(s, 1) for s in samples]}
            print(f"{key:34s} {results[key]['median_mbit_s']:9.1f} Mbit/s  {samples}",
                  file=sys.stderr)
    for proto in ("tcp", "udp1400"):
        if f"strongswan-strongswan {proto}" not in results:
            continue
        base = results[f"strongswan-strongswan {proto}"]["median_mbit_s"] or float("nan")
        for setup in ("pyspu-pyspu", "pyspu-pyspu-udp", "pyspu-strongswan"):
            if f"{setup} {proto}" not in results:
                continue
            results[f"{setup} {proto}"]["vs_strongswan"] = round(
                results[f"{setup} {proto}"]["median_mbit_s"] / base, 2)
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.tunnel_bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", default="aes128-sha1-modp2048",
                    choices=[p.name for p in configs.PAIRS])
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--setups", default=",".join(SETUPS),
                    help=f"comma-separated subset of {', '.join(SETUPS)}")
    ap.add_argument("--protos", default="tcp,udp1400", help="comma-separated: tcp, udp1400")
    args = ap.parse_args(argv)
    protos = tuple(p for p in args.protos.split(",") if p)
    if not protos or set(protos) - {"tcp", "udp1400"}:
        ap.error("--protos: choose from tcp, udp1400")
    setups = tuple(s for s in args.setups.split(",") if s)
    unknown = [s for s in setups if s not in SETUPS]
    if unknown or not setups:
        ap.error(f"--setups: unknown {unknown}; choose from {', '.join(SETUPS)}")
    missing = missing_requirements(need_strongswan=True, need=("iperf3",))
    if missing:
        print(f"tunnel_bench: {missing}", file=sys.stderr)
        return 1
    results = run(args.pair, args.seconds, args.repeats, setups, protos)
    print(f"{'setup':34s} {'Mbit/s':>9s} {'x strongSwan':>13s}")
    for key, r in results.items():
        ratio = r.get("vs_strongswan")
        print(f"{key:34s} {r['median_mbit_s']:9.1f} {'' if ratio is None else ratio:>13}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"pair": args.pair, "seconds": args.seconds, "repeats": args.repeats,
                       "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
