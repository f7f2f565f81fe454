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

Optional arguments: "cert" {"cert", "key", "ca", "method"} (PEM files: certificate
authentication, ike/certs.py), "local_id" / "remote_id" ("dn:C=CH, O=..", "fqdn:name",
"cert" for our certificate's subject; default: the addresses), "rfc7427": false (classic
signature AUTH methods instead of RFC 7427), and "expect": "failure":
then the first failure event is printed as {"step": "failed", "event": ..., ...} and, if
the IKE SA is up (a refused Child SA), the delete follows as above. Log lines of the core
(ike.auth ...) go to stderr. "commands": true reads rekey/ping/delete commands from stdin
after the first ping instead (see commands()).
"""
from __future__ import annotations

import asyncio
import json
import logging
import sys

from engine.engine import Engine
from ike.certs import Credentials
from ike.config import ChildConfig, IKEConfig, Identity
from ike.daemon import IKEDaemon
from ike.endpoint import IKEEndpoint
from ike.events import (AuthenticationFailed, ChildSADeleted, ChildSAEstablished,
                        ChildSAFailed, IKESADeleted, IKESAEstablished, NoProposalChosen,
                        PeerDead)

from ike_packets import icmp_echo, run, udp_payload, udp_wrap


def say(**obj) -> None:
    print(json.dumps(obj), flush=True)


async def next_event(daemon: IKEDaemon, kinds, timeout: float):
    while True:
        event = await asyncio.wait_for(daemon.events.get(), timeout)
        if isinstance(event, kinds):
            return event
        if type(event).__name__ not in ("IKESAEstablished", "ChildSAEstablished",
                                        "ChildSADeleted", "ChildSARekeyed", "IKESARekeyed"):
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


FAILURES = (AuthenticationFailed, NoProposalChosen, ChildSAFailed, IKESADeleted, PeerDead)


def identity(text: str, default: str, creds) -> Identity:
    if not text:
        return Identity.inet(default)
    kind, _, value = text.partition(":")
    if kind == "cert":
        return Identity.from_certificate(creds)
    return {"dn": Identity.distinguished_name, "fqdn": Identity.hostname,
            "inet": Identity.inet}[kind](value)


async def expect_failure(daemon: IKEDaemon, initiator: bool) -> None:
    """Report the first failure event; if the IKE SA survived it, finish with a delete."""
    established = False
    while True:
        event = await asyncio.wait_for(daemon.events.get(), 30)
        if isinstance(event, IKESAEstablished):
            established = True
        if isinstance(event, FAILURES):
            break
    say(step="failed", event=type(event).__name__, reason=getattr(event, "reason", ""),
        by_peer=getattr(event, "by_peer", None), child=getattr(event, "child", None),
        established=established)
    if established and not isinstance(event, (IKESADeleted, AuthenticationFailed, PeerDead)):
        if initiator:
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            daemon.delete(daemon.endpoint.connections[0])
        gone = await next_event(daemon, IKESADeleted, 15)
        say(step="deleted", reason=gone.reason, by_peer=gone.by_peer)


async def commands(daemon: IKEDaemon, esp_in: asyncio.Queue, child, args: dict) -> None:
    """With "commands": true, after the first ping: one command per stdin line, one JSON
    answer each (RFC 7296 1.3 rekeying, driven by tests/test_ike_strongswan.py):
      rekey-child / rekey-ike       pyspu starts the rekey; waits for it to complete
      expect-child / expect-ike     waits for the rekey charon started
      ping                          an ICMP echo through the latest Child SA
      delete                        deletes the IKE SA (then {"step": "deleted"})"""
    from ike.events import ChildSARekeyed, IKESARekeyed
    loop = asyncio.get_running_loop()
    conn = daemon.endpoint.connections[0]
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if line in ("rekey-child", "expect-child"):
            if line == "rekey-child":
                daemon.call(lambda now: conn.rekey_child("net", now))
            new = await next_event(daemon, ChildSARekeyed, 20)
            gone = await next_event(daemon, ChildSADeleted, 20)
            assert gone.spi_in == new.old_spi_in, (gone, new)
            child = new
            say(step="child-rekeyed", spi_in=f"{new.spi_in:08x}", spi_out=f"{new.spi_out:08x}",
                old_spi_in=f"{new.old_spi_in:08x}", old_spi_out=f"{new.old_spi_out:08x}",
                pfs_group=int(new.pfs_group), proposal=new.proposal,
                outbound_ready=new.outbound_ready, ike_sa=new.ike_sa.hex())
        elif line in ("rekey-ike", "expect-ike"):
            if line == "rekey-ike":
                daemon.call(conn.rekey_ike)
            new = await next_event(daemon, IKESARekeyed, 20)
            for _ in range(100):           # until the old IKE SA's Delete is done
                if conn.local_spis == [conn.spi]:
                    break
                await asyncio.sleep(0.05)
            say(step="ike-rekeyed", old=new.ike_sa.hex(), new=new.new_spi.hex(),
                spi_i=new.spi_i.hex(), spi_r=new.spi_r.hex(), proposal=new.proposal,
                by_peer=new.by_peer, old_gone=conn.local_spis == [conn.spi])
        elif line == "ping":
            await ping(daemon, esp_in, child, args)
        elif line == "delete":
            daemon.delete(conn)
            gone = await next_event(daemon, IKESADeleted, 15)
            say(step="deleted", reason=gone.reason, by_peer=gone.by_peer)
            return
        else:
            raise AssertionError(f"unknown command {line!r}")


async def main(args: dict) -> None:
    initiator = args["role"] == "initiator"
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="pyspu %(name)s %(levelname)s %(message)s")
    creds, method = None, "psk"
    if args.get("cert"):
        c = args["cert"]
        creds = Credentials.from_files(c["cert"], c["key"], c["ca"])
        method = c["method"]
    cfg = IKEConfig(
        local_id=identity(args.get("local_id", ""), args["local"], creds),
        remote_id=identity(args.get("remote_id", ""), args["remote"], creds),
        psk=args.get("psk", "").encode(), proposals=tuple(args["ike"]),
        credentials=creds, auth_method=method,
        signature_hash_algorithms=args.get("rfc7427", True),
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
        if args.get("expect") == "failure":
            await expect_failure(daemon, initiator)
            return
        ike = await next_event(daemon, IKESAEstablished, 20)
        child = await next_event(daemon, ChildSAEstablished, 5)
        say(step="established", spi_i=ike.spi_i.hex(), spi_r=ike.spi_r.hex(),
            proposal=ike.proposal, nat_local=ike.nat_local, nat_remote=ike.nat_remote,
            child_spi_in=f"{child.spi_in:08x}", child_spi_out=f"{child.spi_out:08x}",
            child_proposal=child.proposal,
            encap=[child.outbound.encap_sport, child.outbound.encap_dport],
            local_ts=str(child.local_ts), remote_ts=str(child.remote_ts))
        await ping(daemon, esp_in, child, args)
        if args.get("commands"):
            await commands(daemon, esp_in, child, args)
            return
        if initiator:
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            daemon.delete(daemon.endpoint.connections[0])
        gone = await next_event(daemon, IKESADeleted, 15)
        say(step="deleted", reason=gone.reason, by_peer=gone.by_peer)
    finally:
        daemon.close()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))     # a failure exits non-zero with a traceback
