"""The gateway's packet path: TUN st0 <-> engine <-> ESP sockets, one batch at a time.

    st0 readable  -> tun.read(batch) -> Engine.encrypt -> ESP-in-UDP / raw ESP send
    4500 readable -> udp.recv(batch) -> IKE datagrams to the daemon, the rest Engine.decrypt
                  -> tun.write
    ESP readable  -> raw.recv(batch) -> Engine.decrypt -> tun.write

Each readiness callback drains its socket in whole batches (engine/netio.py, Cython loops
with the GIL released), so ESP never takes a per-packet Python path; only IKE datagrams found
on port 4500 do. The destinations of a few packets that found no outbound SA go to the
gateway once per batch (establish-tunnels on-traffic).

st0 is opened with TUN offloads (engine/_tun_offload.pyx) unless SPU_TUN_OFFLOAD=0 or the
kernel refuses them (logged): local TCP hands over 64 KiB super-segments that tun.read
splits into MTU-sized packets (the ESP on the wire is unchanged), and tun.write coalesces
decrypted in-order TCP segments back into super-segments, so both kernels' TCP stacks work
per 64 KiB instead of per segment.
"""
from __future__ import annotations

import ipaddress
import logging
import os
from typing import Callable, Optional

import numpy as np

from engine import netio
from engine.netio import NON_ESP_MARKER
from engine.batch import PacketBatch
from engine.drops import Drop
from engine.engine import Engine

log = logging.getLogger("pyspu.gateway")

#: a drop mark that only hides a packet from one send call (never reaches the counters)
HELD = 255

#: packets per batch whose destination may trigger `establish-tunnels on-traffic`
NO_POLICY_SAMPLE = 8

#: batches drained per readiness callback before yielding to the event loop (IKE, timers)
MAX_BATCHES_PER_WAKEUP = 16


class DataPlane:
    def __init__(self, engine: Engine, *, tun_name: str, mtu: int, local_ip: str,
                 batch_packets: int, on_ike: Callable[[bytes, tuple], None],
                 on_no_policy: Callable[[list], None],
                 tun_offload: bool | None = None):
        self.engine = engine
        if tun_offload is None:      # on unless SPU_TUN_OFFLOAD=0 (A/B benchmarks, old kernels)
            tun_offload = os.environ.get("SPU_TUN_OFFLOAD", "1") != "0"
        self.tun_offload = tun_offload      # TSO in / GRO out on st0 (engine/_tun_offload)
        self.tun_name, self.mtu, self.local_ip = tun_name, mtu, local_ip
        self.on_ike, self.on_no_policy = on_ike, on_no_policy
        self.out_batch = PacketBatch(batch_packets, data_bytes=batch_packets * 2048)
        self.in_batch = PacketBatch(batch_packets, data_bytes=batch_packets * 2048)
        self.tun: Optional[netio.Tun] = None
        self.udp: Optional[netio.EspUdpSocket] = None
        self.raw: Optional[netio.EspRawSocket] = None
        self.ah: Optional[netio.EspRawSocket] = None      # raw AH, IP protocol 51
        self._loop = None

    def open(self, addresses: list, routes: list) -> None:
        try:
            self.tun = netio.Tun.open(self.tun_name, mtu=self.mtu, offload=self.tun_offload)
        except netio.NetIOError as e:
            if not self.tun_offload:
                raise
            log.warning("TUN offloads refused (%s): st0 without TSO/GRO", e.strerror or e)
            self.tun = netio.Tun.open(self.tun_name, mtu=self.mtu)
        self.tun.configure([str(a) for a in addresses], [str(r) for r in routes])
        self.udp = netio.EspUdpSocket(self.local_ip, 4500)
        try:
            self.raw = netio.EspRawSocket(self.local_ip)
            # AH over IPv4 leaves with the engine's own header: the ICV covers the
            # Identification field (RFC 4302 3.3.3.1.1.1), which the kernel would choose
            self.ah = netio.EspRawSocket(self.local_ip, proto=51, hdrincl=True)
        except OSError as e:      # without raw sockets only NAT-T (UDP 4500) peers work
            log.warning("no raw ESP/AH socket (%s): ESP only in UDP 4500", e.strerror or e)

    def attach(self, loop) -> None:
        self._loop = loop
        loop.add_reader(self.tun.fileno(), self._from_tun)
        loop.add_reader(self.udp.fileno(), self._from_udp)
        if self.raw is not None:
            loop.add_reader(self.raw.fileno(), lambda: self._from_raw(self.raw))
        if self.ah is not None:
            loop.add_reader(self.ah.fileno(), lambda: self._from_raw(self.ah))

    def close(self) -> None:
        for io in (self.tun, self.udp, self.raw, self.ah):
            if io is None:
                continue
            if self._loop is not None:
                try:
                    self._loop.remove_reader(io.fileno())
                except (ValueError, OSError):
                    pass
            io.close()

    def send_natt(self, data: bytes, addr: tuple) -> None:
        """IKE (behind the non-ESP marker) and keepalives leave from the 4500 socket ESP uses
        (RFC 3948: the peer's NAT mapping is the same for both)."""
        try:
            self.udp.sock.sendto(data, addr)
        except OSError as e:       # IKE retransmits; a full buffer or no route is transient
            log.debug("NAT-T send to %s failed: %s", addr, e.strerror or e)

    # -- readiness callbacks -----------------------------------------------------------------
    def _from_tun(self) -> None:
        b = self.out_batch
        for _ in range(MAX_BATCHES_PER_WAKEUP):
            b.clear()
            n = self.tun.read(b)
            if n == 0:
                return
            self.engine.encrypt(b)
            missed = np.flatnonzero(b.drop[:n] == Drop.NO_POLICY)
            if missed.size:
                self.on_no_policy(_destinations(b, missed[:NO_POLICY_SAMPLE]))
            self._send(b, n)
            if n < b.capacity and not self.tun.pending:
                return
        if self.tun.pending and self._loop is not None:
            # the rest of a TCP super-segment waits in the TUN state, not on the fd
            self._loop.call_soon(self._from_tun)

    def _from_udp(self) -> None:
        b = self.in_batch
        for _ in range(MAX_BATCHES_PER_WAKEUP):
            b.clear()
            n, ike = self.udp.recv(b)
            for data, addr in ike:
                self.on_ike(NON_ESP_MARKER + data, addr)
            if n == 0:
                return
            self.engine.decrypt(b)
            self.tun.write(b)
            if n < b.capacity:
                return

    def _from_raw(self, raw) -> None:
        b = self.in_batch
        for _ in range(MAX_BATCHES_PER_WAKEUP):
            b.clear()
            n = raw.recv(b)
            if n == 0:
                return
            self.engine.decrypt(b)
            self.tun.write(b)
            if n < b.capacity:
                return

    def _send(self, b: PacketBatch, n: int) -> None:
        """Each engine output leaves by the socket its outer header asks for: UDP 4500
        (NAT-T SAs), raw ESP or raw AH. A batch mixing kinds is split by masking the
        others."""
        sent = b.drop[:n] == 0
        # a packet without its raw socket (or of any other protocol) goes to the UDP
        # socket, which counts it as tx_malformed: nothing is dropped uncounted
        socks = {17: self.udp, 50: self.raw, 51: self.ah}
        route = _outer_proto(b, n)
        route[~np.isin(route, [p for p, io in socks.items() if io is not None])] = 17
        kinds = [(p, socks[p]) for p in (17, 50, 51) if (sent & (route == p)).any()]
        if len(kinds) == 1:
            kinds[0][1].send(b)
            return
        saved = b.drop[:n].copy()
        for p, io in kinds:
            b.drop[:n][sent & (route != p)] = HELD
            io.send(b)
            b.drop[:n] = saved

    def counters(self) -> dict:
        out = {}
        for name, io in (("tun", self.tun), ("udp4500", self.udp), ("esp", self.raw),
                         ("ah", self.ah)):
            if io is not None:
                out[name] = io.counters()
        return out


def _outer_proto(b: PacketBatch, n: int) -> np.ndarray:
    """Per packet: the protocol the engine's outer header (IPv4 or IPv6, no extension
    headers) carries: 17 UDP, 50 ESP, 51 AH. Only rows with drop == 0 are meaningful."""
    off = b.off[:n]
    first = b.buf[off]
    v4 = (first >> 4) == 4
    return np.where(v4, b.buf[np.minimum(off + 9, b.buf.size - 1)],
                    b.buf[np.minimum(off + 6, b.buf.size - 1)])


def _destinations(b: PacketBatch, rows: np.ndarray) -> list:
    """The destination addresses of some inner packets (IPv4 or IPv6), for on-traffic."""
    out = []
    for i in rows:
        o, n = int(b.off[i]), int(b.length[i])
        version = b.buf[o] >> 4 if n else 0
        if version == 4 and n >= 20:
            out.append(ipaddress.IPv4Address(b.buf[o + 16:o + 20].tobytes()))
        elif version == 6 and n >= 40:
            out.append(ipaddress.IPv6Address(b.buf[o + 24:o + 40].tobytes()))
    return out
