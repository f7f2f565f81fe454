"""The pyspu side of tests/test_ike_strongswan.py, run inside its network namespace.

    python ike_interop_peer.py '{"role": "initiator", "local": "10.200.0.1", ...}'

Runs ike/daemon.py around the sans-I/O core and prints one JSON line per step on stdout:
  {"step": "listening"}                 (responder only) the sockets are bound
  {"step": "established", ...}          SPIs, proposals, NAT, encapsulation, selectors
  {"step": "esp", "reply": true, ...}   an ICMP echo through the Child SA and its answer,
                                        both carried by pyspu's engine
then, as initiator, waits for a line on stdin and deletes the IKE SA; as responder, waits
for the peer's delete. Either way it ends with {"step": "deleted", ...}. A failure ends it
with a traceback on stderr (the test shows it). Keys are never printed.
"""
from __future__ import annotations

import asyncio
import json
import sys

from engine.engine import Engine
from ike.config import ChildConfig, IKEConfig, Identity
from ike.daemon import IKEDaemon
from ike.endpoint import IKEEndpoint
from ike.events import ChildSADeleted, ChildSAEstablished, IKESADeleted, IKESAEstablished

from ike_packets import icmp_echo, run, udp_payload, udp_wrap


def say(**obj) -> None:
    print(json.dumps(obj), flush=True)


async def next_event(daemon: IKEDaemon, kinds, timeout: float):
    while True:
        event = await asyncio.wait_for(daemon.events.get(), timeout)
        if isinstance(event, kinds):
            return event
        if not isinstance(event, (IKESAEstablished, ChildSAEstablished, ChildSADeleted)):
            raise AssertionError(f"unexpected event {event}")


async def ping(daemon: IKEDaemon, esp_in: asyncio.Queue, child: ChildSAEstablished,
               args: dict) -> None:
    """An ICMP echo out through the engine, the reply back in through it."""
    engine = Engine()
    engine.install(child.inbound, "in")
    engine.install(child.outbound, "out")
    reply, drops = None, []
    for seq in range(1, 6):
        (packet,), (drop,) = run(engine, [icmp_echo(args["ping_src"], args["ping_dst"], seq)],
                                 True)
        assert drop == 0, f"engine dropped the echo request: {drop}"
        esp, _, dport = udp_payload(packet)
        daemon.send_esp(esp, (args["remote"], dport))
        try:
            data, addr = await asyncio.wait_for(esp_in.get(), 2)
        except asyncio.TimeoutError:
            continue
        outer = udp_wrap(data, addr[0], args["local"], addr[1], child.outbound.encap_sport)
        (inner,), (drop,) = run(engine, [outer], False)
        drops.append(drop)
        if drop == 0:
            reply = inner
            break
    ok = reply is not None and reply[9] == 1 and reply[20] == 0 and \
        reply[12:16] == bytes(map(int, args["ping_dst"].split(".")))
    say(step="esp", reply=ok, drops=drops, stats=engine.stats())


async def main(args: dict) -> None:
    initiator = args["role"] == "initiator"
    cfg = IKEConfig(
        local_id=Identity.inet(args["local"]), remote_id=Identity.inet(args["remote"]),
        psk=args["psk"].encode(), proposals=tuple(args["ike"]),
        remote_addrs=(args["remote"] + "/32",),
        children=(ChildConfig(name="net", proposals=tuple(args["esp"]),
                              local_ts=(args["local_ts"],), remote_ts=(args["remote_ts"],)),))
    esp_in: asyncio.Queue = asyncio.Queue()
    daemon = IKEDaemon(IKEEndpoint([cfg], (args["local"], 500)),
                       esp_handler=lambda data, addr: esp_in.put_nowait((data, addr)))
    await daemon.start()
    try:
        if initiator:
            daemon.connect(cfg, (args["remote"], 500))
        else:
            say(step="listening")
        ike = await next_event(daemon, IKESAEstablished, 20)
        child = await next_event(daemon, ChildSAEstablished, 5)
        say(step="established", spi_i=ike.spi_i.hex(), spi_r=ike.spi_r.hex(),
            proposal=ike.proposal, nat_local=ike.nat_local, nat_remote=ike.nat_remote,
            child_spi_in=f"{child.spi_in:08x}", child_spi_out=f"{child.spi_out:08x}",
            child_proposal=child.proposal,
            encap=[child.outbound.encap_sport, child.outbound.encap_dport],
            local_ts=str(child.local_ts), remote_ts=str(child.remote_ts))
        await ping(daemon, esp_in, child, args)
        if initiator:
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            daemon.delete(daemon.endpoint.connections[0])
        gone = await next_event(daemon, IKESADeleted, 15)
        say(step="deleted", reason=gone.reason, by_peer=gone.by_peer)
    finally:
        daemon.close()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))     # a failure exits non-zero with a traceback
