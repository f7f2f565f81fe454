"""`spu gateway`: the IKE control plane, the engine and the network, in one process.

    GatewayConfig (ike/vpn_config.py, from the Junos configuration)
        -> IKEEndpoint + IKEDaemon (UDP 500; NAT-T datagrams through the data plane)
        -> Engine (every SA, installed only through its public API)
        -> DataPlane (TUN st0 <-> ESP in UDP 4500 / raw ESP, in batches)
        -> ControlServer (`spu status`, `spu request ...`)

The gateway is the consumer of the IKE core's events (ike/events.py): a new Child SA is
installed inbound first, then outbound; a rekeyed one is make-before-break (new inbound,
new outbound, switch, old outbound removed; the old inbound goes when its Delete
completes); deleted and dead ones are removed. Per-SA byte counts go back to the core once
a second for kilobyte lifetimes. Logs name proposals, identities and SPIs, never keys.
"""
from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import time
from dataclasses import dataclass, field
from typing import Optional

from engine.batch import PacketBatch
from engine.engine import Engine
from engine.sa import SAConfig

from . import events as ev
from .config import Retransmit
from .control import ControlError, ControlServer
from .daemon import IKEDaemon
from .dataplane import DataPlane
from .endpoint import IKEEndpoint
from .status import algorithm

log = logging.getLogger("pyspu.gateway")

TICK_SECONDS = 0.2          # kilobyte lifetime accounting and re-initiation checks
RETRY_SECONDS = 5.0         # re-initiate an `establish-tunnels immediately` VPN after failure
MAX_SAS = 4096


@dataclass
class Tunnel:
    """One Child SA pair installed in the engine (an IKE one or a manual one)."""
    id: int
    vpn: str
    gateway: str                    # peer address
    spi_in: int
    spi_out: int
    h_in: int
    h_out: Optional[int]            # None once a rekey switched traffic to a successor
    cfg_in: SAConfig
    cfg_out: SAConfig
    proposal: str
    installed: float
    lifetime_s: int = 0
    lifetime_kb: int = 0
    ike_sa: Optional[bytes] = None  # None for manual keys
    child: str = ""                 # its ChildConfig's name (one per traffic selector)


@dataclass
class IKEInfo:
    gateway: str
    established: float
    event: ev.IKESAEstablished


@dataclass
class VPNState:
    name: str
    gateway: str                    # IKE gateway name
    children: tuple                 # ChildConfig
    immediate: bool
    conn: object = None             # IKEConnection carrying it
    retry_at: float = 0.0
    tunnels: list = field(default_factory=list)


class Gateway:
    def __init__(self, config, *, backend: str = "auto", control_socket: Optional[str] = None,
                 batch_packets: int = 256, mtu: int = 1400):
        self.config = config
        self.settings = config.pyspu
        self.control_path = control_socket or self.settings.control_socket
        self.engine = Engine(max_sas=MAX_SAS, backend=backend)
        self.batch_packets = batch_packets
        self.mtu = mtu
        self.tunnels: dict[int, Tunnel] = {}        # by inbound SPI
        self.ike: dict[bytes, IKEInfo] = {}         # by our IKE SPI
        self.vpns: dict[str, VPNState] = {}
        self._child_vpn: dict[str, str] = {}        # ChildConfig name -> vpn name
        self._next_id = 131073                      # Junos numbers tunnels from here
        self._stop = asyncio.Event()
        self.daemon: Optional[IKEDaemon] = None
        self.dataplane: Optional[DataPlane] = None
        self.control: Optional[ControlServer] = None
        self._gw_configs = {}
        for name, vpn in config.vpns.items():
            self.vpns[name] = VPNState(name, vpn.gateway, tuple(vpn.children),
                                       vpn.establish == "immediately")
            for child in vpn.children:
                self._child_vpn[child.name] = name

    # -- life cycle --------------------------------------------------------------------------
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._check_supported()
        local_ip = self._local_ip()
        self._warm_up()
        self.dataplane = DataPlane(self.engine, tun_name=self.settings.tun_name, mtu=self.mtu,
                                   local_ip=local_ip, batch_packets=self.batch_packets,
                                   on_ike=self._ike_from_natt, on_no_policy=self._on_traffic)
        self.dataplane.open(addresses=[a for prefixes in self.config.interfaces.values()
                                       for a in prefixes],
                            routes=list(self.config.routes))
        for name, manual in self.config.manual_vpns.items():
            self._install_manual(name, manual, loop.time())
        configs = [self._ike_config(name) for name in self.config.ike_gateways]
        endpoint = IKEEndpoint(configs, (local_ip, 500))
        self.daemon = IKEDaemon(endpoint, natt_sender=self.dataplane.send_natt)
        await self.daemon.start()
        self.dataplane.attach(loop)
        self.control = ControlServer(self.control_path, self._handlers())
        await self.control.start()
        log.info("gateway up on %s: %d IKE gateway(s), %d vpn(s), %d manual vpn(s); crypto %s",
                 local_ip, len(configs), len(self.vpns), len(self.config.manual_vpns),
                 self.engine.backend())
        tasks = [asyncio.ensure_future(self._events()), asyncio.ensure_future(self._ticker())]
        try:
            await self._stop.wait()
        finally:
            for t in tasks:
                t.cancel()
            self._shutdown()

    def _warm_up(self) -> None:
        """Load (or compile) the engine's kernels before IKE starts: a first compile inside
        the event loop would stall it long enough for peers to give up on us."""
        scratch = Engine(max_sas=1)       # its own counters: status shows only real traffic
        batch = PacketBatch(1)
        batch.add(bytes(20))              # not a valid packet: dropped, kernels loaded
        scratch.encrypt(batch)
        batch.drop[:] = 0
        scratch.decrypt(batch)

    def stop(self) -> None:
        self._stop.set()

    def _shutdown(self) -> None:
        if self.daemon is not None:
            for conn in self.daemon.endpoint.connections:
                if conn.established:
                    self.daemon.call(conn.delete)
        if self.control is not None:
            self.control.close()
        if self.dataplane is not None:
            self.dataplane.close()
        if self.daemon is not None:
            self.daemon.close()
        for t in list(self.tunnels.values()):
            self._remove(t)
        log.info("gateway stopped")

    def _local_ip(self) -> str:
        """The address IKE and ESP use: `pyspu { listen-address }`, else the one local
        address the gateways (and manual VPNs) name."""
        listen = ipaddress.ip_address(self.settings.listen_address)
        if not listen.is_unspecified:
            return str(listen)
        named = {str(g.local_address) for g in self.config.ike_gateways.values()
                 if g.local_address is not None}
        named |= {str(m.local_address) for m in self.config.manual_vpns.values()}
        if len(named) != 1:
            raise ControlError("say which local address to use: one `local-address` for all "
                               "gateways, or `pyspu { listen-address ADDR; }`"
                               + (f" (found {', '.join(sorted(named))})" if named else ""))
        return named.pop()

    def _check_supported(self) -> None:
        for name, gw in self.config.ike_gateways.items():
            if gw.version == "v1-only":
                raise ControlError(f"gateway {name}: IKEv1 (version v1-only) is not supported yet")

    def _ike_config(self, name: str):
        """The gateway's IKEConfig, carrying every Child config of the VPNs bound to it (the
        responder chooses among them by traffic selectors) and accepting only its address."""
        gw = self.config.ike_gateways[name]
        children = tuple(c for v in self.vpns.values() if v.gateway == name for c in v.children)
        changes = {"children": children or gw.ike.children, "remote_addrs": (str(gw.address),),
                   "force_encap": self.settings.force_udp_encapsulation}
        if gw.ike.dpd_interval:
            # Junos DPD: `threshold` unanswered checks, `interval` apart, mean a dead peer.
            # The core declares a peer dead when a request's retransmissions run out, so
            # the schedule follows DPD (with a gentle back-off) instead of charon's 165 s.
            changes["retransmit"] = Retransmit(timeout=gw.ike.dpd_interval, base=1.5,
                                               tries=max(1, gw.dpd_threshold - 1))
        cfg = dataclasses.replace(gw.ike, **changes)
        self._gw_configs[name] = cfg
        return cfg

    # -- IKE events -> engine ----------------------------------------------------------------
    async def _events(self) -> None:
        while True:
            event = await self.daemon.events.get()
            try:
                self._on_event(event)
            except Exception:      # noqa: BLE001 - one bad event must not stop the gateway
                log.exception("could not apply %s", type(event).__name__)

    def _on_event(self, event) -> None:
        now = self.daemon.now
        if isinstance(event, ev.IKESAEstablished):
            gw = self._gateway_for(event.remote_addr[0])
            self.ike[event.ike_sa] = IKEInfo(gw or "?", now, event)
            conn = self._conn_by_spi(event.ike_sa)
            for v in self.vpns.values():          # a responder's IKE SA carries our VPNs too
                if v.gateway == gw and v.conn is None:
                    v.conn = conn
            log.info("IKE SA %s/%s up with %s (gateway %s): local %s, remote %s, %s%s",
                     event.spi_i.hex(), event.spi_r.hex(), event.remote_addr[0], gw,
                     event.local_id, event.remote_id, event.proposal,
                     ", NAT-T" if (event.nat_local or event.nat_remote) else "")
            self._bring_up_more_children(event.ike_sa, now)
        elif isinstance(event, ev.ChildSAEstablished):
            self._install_child(event, now)
        elif isinstance(event, ev.ChildSARekeyed):
            self._install_child(event, now, replaces=event.old_spi_in,
                                switch_out=event.outbound_ready)
        elif isinstance(event, ev.ChildSADeleted):
            t = self.tunnels.get(event.spi_in)
            if t is not None:
                self._child_deleted(t, event.by_peer)
        elif isinstance(event, ev.IKESARekeyed):
            self._ike_rekeyed(event)
        elif isinstance(event, (ev.IKESADeleted, ev.PeerDead)):
            why = getattr(event, "reason", None) or "peer dead (no answer to liveness checks)"
            log.info("IKE SA %s gone: %s", event.ike_sa.hex(), why)
            self.ike.pop(event.ike_sa, None)
            for t in [t for t in self.tunnels.values() if t.ike_sa == event.ike_sa]:
                self._remove(t)
            for v in self.vpns.values():
                if v.conn is not None and v.conn.spi == event.ike_sa:
                    v.conn, v.retry_at = None, now + RETRY_SECONDS
        elif isinstance(event, ev.AuthenticationFailed):
            log.warning("IKE SA %s: authentication failed%s: %s", event.ike_sa.hex(),
                        " (peer says)" if event.by_peer else "", event.reason)
            self._retry_later(event.ike_sa, now)
        elif isinstance(event, ev.NoProposalChosen):
            what = f"vpn child {event.name}" if event.child else "IKE SA"
            log.warning("IKE SA %s: no proposal chosen for %s%s", event.ike_sa.hex(), what,
                        " (peer says)" if event.by_peer else "")
            self._retry_later(event.ike_sa, now)
        elif isinstance(event, ev.ChildSAFailed):
            log.warning("IKE SA %s: child %s refused (notify %d%s)", event.ike_sa.hex(),
                        event.name, event.notify, ", by peer" if event.by_peer else "")

    def _ike_rekeyed(self, event: ev.IKESARekeyed) -> None:
        old, new = event.ike_sa, event.new_spi
        info = self.ike.pop(old, None)
        if info is not None:
            info.event = dataclasses.replace(info.event, ike_sa=new, spi_i=event.spi_i,
                                             spi_r=event.spi_r, proposal=event.proposal)
            self.ike[new] = info
        for t in self.tunnels.values():
            if t.ike_sa == old:
                t.ike_sa = new
        log.info("IKE SA %s rekeyed%s, now %s/%s, %s", old.hex(),
                 " by peer" if event.by_peer else "", event.spi_i.hex(), event.spi_r.hex(),
                 event.proposal)

    def _retry_later(self, ike_sa: bytes, now: float) -> None:
        for v in self.vpns.values():
            if v.conn is not None and v.conn.spi == ike_sa:
                v.conn, v.retry_at = None, now + RETRY_SECONDS

    def _gateway_for(self, ip: str) -> Optional[str]:
        for name, gw in self.config.ike_gateways.items():
            if str(gw.address) == ip:
                return name
        return None

    def _install_child(self, event, now: float, replaces: Optional[int] = None,
                       switch_out: bool = True) -> None:
        """Inbound first; outbound now (ours) or when the old SA's Delete comes (a rekey
        the peer started, RFC 7296 2.8). A rekeyed SA keeps its tunnel's ID, as Junos does."""
        vpn = self._child_vpn.get(event.name, event.name)
        h_in = self.engine.install(event.inbound, "in")
        child_cfg = self._child_config(event.name)
        old = self.tunnels.get(replaces) if replaces is not None else None
        t = Tunnel(old.id if old else self._new_id(), vpn, str(event.outbound.dst),
                   event.spi_in, event.spi_out, h_in, None, event.inbound, event.outbound,
                   event.proposal, now,
                   child_cfg.lifetime_seconds if child_cfg else 0,
                   child_cfg.lifetime_kilobytes if child_cfg else 0, event.ike_sa,
                   child=event.name)
        self.tunnels[event.spi_in] = t
        if vpn in self.vpns:
            self.vpns[vpn].tunnels.append(event.spi_in)
        if switch_out:
            self._switch_out(t)
        encap = (f", ESP in UDP {event.outbound.encap_sport}->{event.outbound.encap_dport}"
                 if event.outbound.encap_dport else "")
        pfs = getattr(event, "pfs_group", 0)
        log.info("IPsec SA %s vpn %s: in %08x out %08x, %s%s, %s <=> %s%s%s",
                 "rekeyed" if old else "up", vpn, event.spi_in, event.spi_out, event.proposal,
                 f", PFS group {pfs}" if pfs else "", event.local_ts, event.remote_ts, encap,
                 f" (replaces {old.spi_in:08x}/{old.spi_out:08x})" if old else "")

    def _switch_out(self, t: Tunnel) -> None:
        """Send on `t` from now on: install its outbound SA, then retire every other outbound
        SA of the same tunnel (the one it replaces, or a collision's loser)."""
        t.h_out = self.engine.install(t.cfg_out, "out")
        for other in self.tunnels.values():
            if other is not t and other.id == t.id and other.h_out is not None:
                self.engine.remove(other.h_out)
                other.h_out = None

    def _child_deleted(self, t: Tunnel, by_peer: bool) -> None:
        log.info("IPsec SA %08x/%08x of vpn %s deleted%s", t.spi_in, t.spi_out, t.vpn,
                 " by peer" if by_peer else "")
        if t.h_out is not None:
            # a successor waiting for this Delete to start sending takes over first
            waiting = [x for x in self.tunnels.values()
                       if x is not t and x.id == t.id and x.h_out is None]
            if waiting:
                self._switch_out(max(waiting, key=lambda x: x.installed))
        self._remove(t)

    def _child_config(self, name: str):
        for v in self.vpns.values():
            for c in v.children:
                if c.name == name:
                    return c
        return None

    def _install_manual(self, name: str, manual, now: float) -> None:
        h_in = self.engine.install(manual.inbound, "in")
        h_out = self.engine.install(manual.outbound, "out")
        t = Tunnel(self._new_id(), name, str(manual.outbound.dst), manual.inbound.spi,
                   manual.outbound.spi, h_in, h_out, manual.inbound, manual.outbound,
                   "manual", now)
        self.tunnels[manual.inbound.spi] = t
        log.info("manual vpn %s: SPI in %08x out %08x, %s, peer %s", name, t.spi_in, t.spi_out,
                 algorithm(manual.outbound), manual.outbound.dst)

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def _remove(self, t: Tunnel) -> None:
        self.tunnels.pop(t.spi_in, None)
        for h in (t.h_in, t.h_out):
            if h is not None and h in self.engine.handles():
                self.engine.remove(h)
        v = self.vpns.get(t.vpn)
        if v is not None and t.spi_in in v.tunnels:
            v.tunnels.remove(t.spi_in)

    # -- bringing tunnels up -----------------------------------------------------------------
    def _initiate(self, vpn: VPNState, now: float) -> None:
        """A new IKE SA with the VPN's first Child SA in IKE_AUTH, or, over an IKE SA already
        up with its gateway (either role), CREATE_CHILD_SA for each of its Child SAs."""
        gw = self.config.ike_gateways[vpn.gateway]
        vpn.retry_at = now + RETRY_SECONDS       # no second request while this one runs
        existing = self._conn_to(vpn.gateway)
        if existing is not None and existing.established:
            vpn.conn = existing
            log.info("vpn %s: new Child SA(s) over IKE SA %s", vpn.name, existing.spi.hex())
            for child in self._missing_children(vpn):
                self.daemon.call(lambda t, c=child: existing.create_child(c, t))
            return
        cfg = self._gw_configs[vpn.gateway]
        log.info("initiating vpn %s to %s", vpn.name, gw.address)
        vpn.conn = self.daemon.connect(cfg, (str(gw.address), 500), child=vpn.children[0])

    def _conn_to(self, gateway: str):
        """The IKE SA with a gateway's address that is up (else one being negotiated)."""
        address = str(self.config.ike_gateways[gateway].address)
        live = [c for c in self.daemon.endpoint.connections
                if c.remote_addr and c.remote_addr[0] == address and not c.closed]
        return next((c for c in live if c.established), live[0] if live else None)

    def _bring_up_more_children(self, ike_sa: bytes, now: float) -> None:
        """After IKE_AUTH: the first child came with it; the others of the same gateway
        (more traffic selectors, more VPNs) follow as CREATE_CHILD_SA exchanges."""
        conn = self._conn_by_spi(ike_sa)
        if conn is None or not conn.initiator:
            return
        names = {c.name for c in conn.children}
        for v in self.vpns.values():
            if v.conn is conn:
                for child in v.children:
                    if child.name not in names and child is not v.children[0]:
                        self.daemon.call(lambda t, c=child: conn.create_child(c, t))

    def _on_traffic(self, destinations: list) -> None:
        """Outbound packets found no SA: bring up the VPNs whose remote traffic selectors
        cover their destinations (`establish-tunnels on-traffic`)."""
        now = self.daemon.now
        for v in self.vpns.values():
            if any(_covers(c.remote_ts, d) for c in v.children for d in destinations) \
                    and self._wants_initiation(v, now):
                self._initiate(v, now)

    def _missing_children(self, v: VPNState) -> list:
        """The VPN's Child configs (traffic selectors) without an installed SA: all of them
        when it is down, one when the peer deleted (or a lifetime ended) only that one."""
        up = {self.tunnels[s].child for s in v.tunnels if s in self.tunnels}
        return [c for c in v.children if c.name not in up]

    def _wants_initiation(self, v: VPNState, now: float) -> bool:
        """A Child SA missing, not backing off, and no IKE SA with its gateway still
        negotiating (an established one gets CREATE_CHILD_SA for the missing ones, e.g.
        after a hard lifetime ran out or the peer deleted one of several selectors)."""
        if not self._missing_children(v) or now < v.retry_at:
            return False
        conn = self._conn_to(v.gateway)
        return conn is None or conn.established

    def _conn_by_spi(self, spi: bytes):
        return next((c for c in self.daemon.endpoint.connections if c.spi == spi), None)

    def _ike_from_natt(self, data: bytes, addr: tuple) -> None:
        self.daemon.received(data, addr, True)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            now = self.daemon.now
            for v in self.vpns.values():
                if v.immediate and self._wants_initiation(v, now):
                    self._initiate(v, now)
            self._report_bytes(now)

    def _report_bytes(self, now: float) -> None:
        """Kilobyte lifetimes: the core counts nothing itself (sans-I/O); tell it."""
        for t in self.tunnels.values():
            if t.ike_sa is None or not t.lifetime_kb:
                continue
            conn = self._conn_by_spi(t.ike_sa)
            if conn is None:
                continue
            total = self._bytes(t)
            self.daemon.call(lambda n, c=conn, t=t, b=total: c.child_bytes(t.spi_in, b, n))

    def _bytes(self, t: Tunnel) -> int:
        total = int(self.engine.sa_stats(t.h_in)["bytes"])
        if t.h_out is not None:
            total += int(self.engine.sa_stats(t.h_out)["bytes"])
        return total

    # -- control socket ----------------------------------------------------------------------
    def _handlers(self) -> dict:
        return {"status": lambda req: self.status(),
                "initiate": self._req_initiate,
                "rekey-child": self._req_rekey_child,
                "rekey-ike": self._req_rekey_ike,
                "delete": self._req_delete}

    def _vpn(self, req: dict) -> VPNState:
        name = req.get("name")
        if name not in self.vpns:
            raise ControlError(f"no IKE vpn named {name!r} (known: "
                               f"{', '.join(sorted(self.vpns)) or 'none'})")
        return self.vpns[name]

    def _req_initiate(self, req: dict):
        v = self._vpn(req)
        if not self._missing_children(v):
            return f"vpn {v.name} is up"
        self._initiate(v, self.daemon.now)
        return f"initiating vpn {v.name}"

    def _req_rekey_child(self, req: dict):
        v = self._vpn(req)
        live = [self.tunnels[s] for s in v.tunnels if s in self.tunnels
                and self.tunnels[s].h_out is not None]
        conn = v.conn or self._conn_of(live)
        if not live or conn is None:
            raise ControlError(f"vpn {v.name} has no IPsec SA to rekey")
        for t in live:
            self.daemon.call(lambda n, s=t.spi_in: conn.rekey_child(s, n))
        return f"rekeying {len(live)} IPsec SA(s) of vpn {v.name}"

    def _req_rekey_ike(self, req: dict):
        v = self._vpn(req)
        conn = self._conn_of([self.tunnels[s] for s in v.tunnels if s in self.tunnels])
        if conn is None:
            raise ControlError(f"vpn {v.name} has no IKE SA to rekey")
        self.daemon.call(conn.rekey_ike)
        return f"rekeying the IKE SA of vpn {v.name}"

    def _req_delete(self, req: dict):
        v = self._vpn(req)
        conn = self._conn_of([self.tunnels[s] for s in v.tunnels if s in self.tunnels])
        if conn is None:
            raise ControlError(f"vpn {v.name} has no IKE SA")
        v.immediate = False            # an operator's delete is not undone by the ticker
        self.daemon.call(conn.delete)
        return f"deleting the IKE SA of vpn {v.name}"

    def _conn_of(self, tunnels: list):
        spis = {t.ike_sa for t in tunnels if t.ike_sa is not None}
        for c in self.daemon.endpoint.connections:
            if c.spi in spis and c.established:
                return c
        return None

    def status(self) -> dict:
        now = self.daemon.now if self.daemon else 0.0
        ike = []
        for c in self.daemon.endpoint.connections if self.daemon else []:
            spi_i, spi_r = c.spis
            info = self.ike.get(c.spi)
            e = info.event if info else None
            ike.append({
                "index": int.from_bytes(c.spi[:4], "big") & 0x7FFFFFFF,
                "state": "UP" if c.established else c.state.value.upper(),
                "initiator_spi": spi_i.hex(), "responder_spi": spi_r.hex(), "mode": "IKEv2",
                "remote_address": c.remote_addr[0] if c.remote_addr else "-",
                "remote_port": c.remote_addr[1] if c.remote_addr else None,
                "role": "initiator" if c.initiator else "responder",
                "gateway": info.gateway if info else None,
                "local_identity": e.local_id if e else None,
                "remote_identity": e.remote_id if e else None,
                "proposal": e.proposal if e else None,
                "nat": bool(e and (e.nat_local or e.nat_remote)),
                "established_s": round(now - info.established, 1) if info else None})
        ipsec = []
        for t in sorted(self.tunnels.values(), key=lambda t: t.id):
            left_s = (t.lifetime_s - (now - t.installed)) if t.lifetime_s else None
            left_kb = (t.lifetime_kb - self._bytes(t) // 1024) if t.lifetime_kb else None
            for direction, h, spi, cfg in (("in", t.h_in, t.spi_in, t.cfg_in),
                                           ("out", t.h_out, t.spi_out, t.cfg_out)):
                if h is None:
                    continue
                st = self.engine.sa_stats(h)
                ipsec.append({
                    "id": t.id, "vpn": t.vpn, "direction": direction, "spi": f"{spi:08x}",
                    "protocol": "ah" if cfg.proto == 51 else "esp",
                    "algorithm": algorithm(cfg), "proposal": t.proposal,
                    "lifetime_s": None if left_s is None else int(left_s),
                    "lifetime_kb": left_kb, "port": cfg.encap_dport or cfg.encap_sport,
                    "gateway": t.gateway, "packets": st["packets"], "bytes": st["bytes"],
                    "dropped": st["dropped"], "backend": self.engine.backend_of(h)})
        return {"ike": ike, "ipsec": ipsec, "engine": self.engine.stats(),
                "io": self.dataplane.counters() if self.dataplane else {},
                "backend": self.engine.backend(), "time": time.time()}


def _covers(selectors, address) -> bool:
    return any(ts.start_addr.version == address.version and ts.start_addr <= address <=
               ts.end_addr for ts in selectors)
