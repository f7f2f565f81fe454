"""Batched packet I/O (engine/netio.py, engine/_netio.pyx) against the kernel's own IP stack.

Everything runs in two network namespaces this module creates (tests/netns_harness.py),
joined by a veth pair with addresses it assigns. The oracles are nobody's code here:
- the kernel: `ping` from a namespace through a TUN device answered by tun_read/tun_write,
  kernel UDP sockets sending into / receiving from the TUN, raw IP delivery of protocol 50;
- scapy: parses what udp_recv synthesized, builds the packets written into the TUN, and
  its IPsec layer (SecurityAssociation with nat_t_header) encrypts ESP-in-UDP that the
  engine must decrypt after udp_recv, and decrypts what the engine sent with udp_send.
Deadlines only bound waiting for packets to cross the veth; nothing asserts timing.
"""
from __future__ import annotations

import ipaddress
import os
import select
import socket
import subprocess
import time

import numpy as np
import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw

from engine import _netio
from engine.batch import HEADROOM, PacketBatch
from engine.drops import Drop
from engine.engine import Engine
from engine.netio import EspRawSocket, EspUdpSocket, NetIOError, Tun
from engine.sa import MODE_TUNNEL, PROTO_ESP, SAConfig, Selector

import netns_harness as nh
from oracle import key, scapy_sa

ip = ipaddress.ip_address
net = ipaddress.ip_network
WAIT = 10.0          # seconds: an upper bound for packets to cross the veth, never asserted


pair = nh.pair_fixture("nio")


def _quiet_tun(ns: nh.Netns, tun: Tun) -> None:
    """No IPv6 autoconfiguration chatter (router solicitations, MLD) on a test TUN."""
    nh.sh(*ns.exec("sysctl", "-qw", f"net.ipv6.conf.{tun.name}.disable_ipv6=1"))


def _tunnel_end(ns: nh.Netns, name: str, host_cidr: str, far_net: str, outer: str):
    """In ns: a TUN with its address and a route to the far side's network, and the
    ESP-in-UDP socket on the outer address."""
    with ns.enter():
        tun = Tun.open(name, mtu=1400)
        _quiet_tun(ns, tun)
        tun.configure([host_cidr], [far_net])
        return tun, EspUdpSocket(outer)


def _recv_datagrams(sock, want: int) -> list[bytes]:
    """Up to `want` datagrams from a nonblocking socket, waiting at most WAIT seconds."""
    got = []
    deadline = time.monotonic() + WAIT
    while len(got) < want and time.monotonic() < deadline:
        select.select([sock], [], [], 0.2)
        try:
            got.append(sock.recv(65535))
        except BlockingIOError:
            pass
    return got


def _fill(read, fd: int, batch: PacketBatch, want: int) -> None:
    """Call read(batch) whenever fd is readable until batch holds `want` packets."""
    deadline = time.monotonic() + WAIT
    while batch.count < want and time.monotonic() < deadline:
        select.select([fd], [], [], 0.2)
        read(batch)


def _sa(spi: int, outer: int, encap: bool, src_net: str, dst_net: str) -> SAConfig:
    a, b = (nh.A4, nh.B4) if outer == 4 else (nh.A6, nh.B6)
    return SAConfig(src=ip(a), dst=ip(b), proto=PROTO_ESP, spi=spi, mode=MODE_TUNNEL,
                    aead="rfc4106(gcm(aes))", aead_key=key(20, spi & 0xFF), icv_bits=128,
                    encap_sport=4500 if encap else None, encap_dport=4500 if encap else None,
                    sel=Selector(net(src_net), net(dst_net)))


def _reverse(cfg: SAConfig, spi: int) -> SAConfig:
    sel = Selector(cfg.sel.dst, cfg.sel.src)
    return SAConfig(src=cfg.dst, dst=cfg.src, proto=PROTO_ESP, spi=spi, mode=MODE_TUNNEL,
                    aead=cfg.aead, aead_key=key(20, spi & 0xFF), icv_bits=128,
                    encap_sport=cfg.encap_sport, encap_dport=cfg.encap_dport, sel=sel)


def _udp4(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    return bytes(IP(src=src, dst=dst, id=7) / UDP(sport=sport, dport=dport) / Raw(payload))


# ---------------------------------------------------------------------------------------
# TUN
# ---------------------------------------------------------------------------------------
def test_ping_answered_through_tun(pair):
    """The namespace kernel's ping goes into the TUN; we answer from batches; ping succeeds."""
    with pair.a.enter():
        tun = Tun.open("nping0", mtu=1400)
        _quiet_tun(pair.a, tun)
        tun.configure(["10.77.0.1/24"])
        ping = subprocess.Popen(pair.a.exec("ping", "-c", "4", "-i", "0.2", "-W", "3", "-s",
                                            "300", "10.77.0.2"),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        requests = []
        rx, tx = PacketBatch(32), PacketBatch(32)
        deadline = time.monotonic() + WAIT
        while ping.poll() is None and time.monotonic() < deadline:
            select.select([tun.fileno()], [], [], 0.2)
            rx.clear()
            tx.clear()
            tun.read(rx)
            for pkt in rx.packets():
                req = IP(pkt)
                if ICMP not in req or req[ICMP].type != 8:
                    continue
                requests.append(req)
                tx.add(bytes(IP(src=req.dst, dst=req.src, id=req.id)
                             / ICMP(type=0, id=req[ICMP].id, seq=req[ICMP].seq)
                             / req[ICMP].payload))
            if tx.count:
                assert tun.write(tx) == tx.count
        out = ping.communicate(timeout=WAIT)[0]
    finally:
        if ping.poll() is None:
            ping.kill()
        tun.close()
    assert ping.returncode == 0, out
    assert "4 received" in out, out
    assert len(requests) == 4
    for req in requests:      # what tun_read delivered is the kernel's packet, intact
        assert req.src == "10.77.0.1" and req.dst == "10.77.0.2"
        assert len(req[ICMP].payload) == 300
        chk = req[ICMP].chksum
        del req[ICMP].chksum
        assert IP(bytes(req))[ICMP].chksum == chk


def test_tun_read_batch_slots_like_add(pair):
    """Many packets in one tun_read, laid out exactly as PacketBatch.add lays them out."""
    with pair.a.enter():
        tun = Tun.open("nrd0", mtu=1400)
        _quiet_tun(pair.a, tun)
        tun.configure(["10.78.0.1/24"])
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        payloads = [bytes([k]) * (1 + 97 * k) for k in range(12)]
        for p in payloads:
            s.sendto(p, ("10.78.0.9", 9999))
        got = PacketBatch(64)
        _fill(tun.read, tun.fileno(), got, len(payloads))
        assert got.count == len(payloads)
        seen = [IP(p) for p in got.packets()]
        assert [bytes(x[UDP].payload) for x in seen] == payloads
        assert all(x.dst == "10.78.0.9" and x[UDP].dport == 9999 for x in seen)
        ref = PacketBatch.from_packets(got.packets(), capacity=64)
        n = got.count
        for name in ("off", "length", "slot_start", "slot_end"):
            assert np.array_equal(getattr(got, name)[:n], getattr(ref, name)[:n]), name
        assert got.used == ref.used
        assert not got.drop[:n].any() and (got.sa[:n] == -1).all()
        c = tun.counters()
        assert c["rx_packets"] == n and c["rx_bytes"] == sum(got.length[:n])
    finally:
        s.close()
        tun.close()


def test_tun_write_batch_reaches_kernel_socket(pair):
    """tun_write: every live packet reaches a kernel UDP socket; drops and junk are not
    written, and the kernel's refusal of a non-IP packet is counted by errno."""
    with pair.a.enter():
        tun = Tun.open("nwr0", mtu=1400)
        _quiet_tun(pair.a, tun)
        tun.configure(["10.79.0.1/24"])
        r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        r.bind(("10.79.0.1", 7777))
        r.setblocking(False)
    try:
        payloads = [b"w%03d" % k * (k + 1) for k in range(10)]
        b = PacketBatch(16)
        for p in payloads:
            b.add(_udp4("10.79.0.5", "10.79.0.1", 1234, 7777, p))
        b.add(_udp4("10.79.0.5", "10.79.0.1", 1234, 7777, b"dropped"))
        b.drop[b.count - 1] = Drop.NO_POLICY
        b.add(b"\x00" * 40)          # not IP: the kernel says EINVAL
        assert tun.write(b) == len(payloads)
        assert _recv_datagrams(r, len(payloads)) == payloads
        c = tun.counters()
        assert c["tx_packets"] == len(payloads)
        assert c["tx_errors"] == 1 and c["tx_errno"] == {"EINVAL": 1}
    finally:
        r.close()
        tun.close()


def test_tun_read_truncation_counted(pair):
    """A packet longer than max_len is counted, not added, and nothing past its slot is
    written; the packets around it are read normally."""
    with pair.a.enter():
        tun = Tun.open("ntr0", mtu=1400)
        _quiet_tun(pair.a, tun)
        tun.configure(["10.80.0.1/24"])
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for size in (20, 600, 30):
            s.sendto(b"t" * size, ("10.80.0.9", 9))
        b = PacketBatch(8)
        b.buf[:] = 0xAA
        stats = np.zeros(_netio.STATS_SIZE, np.uint64)
        max_len = 200
        deadline = time.monotonic() + WAIT
        while b.count < 2 and time.monotonic() < deadline:
            select.select([tun.fileno()], [], [], 0.2)
            _netio.tun_read(tun.fileno(), b, stats, max_len)
        assert b.count == 2
        assert [len(IP(p)[UDP].payload) for p in b.packets()] == [20, 30]
        assert stats[_netio.COUNTERS.index("rx_truncated")] == 1
        # the truncated packet was read where packet 1 now starts: exactly max_len + 1
        # bytes landed there (the spare byte shows the truncation), nothing after them
        edge = int(b.slot_start[1]) + HEADROOM + max_len + 1
        assert b.buf[edge - 1] == ord("t")
        assert (b.buf[edge:] == 0xAA).all()
    finally:
        s.close()
        tun.close()


def test_tun_open_errors_are_clear():
    with pytest.raises(ValueError):
        Tun.open("x" * 20)
    with pytest.raises(ValueError):
        Tun.open("ok0", mtu=10)
    if os.geteuid() == 0:
        return
    with pytest.raises(NetIOError, match="root"):      # pragma: no cover (we run as root)
        Tun.open("nperm0")


# ---------------------------------------------------------------------------------------
# ESP-in-UDP
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("outer", [4, 6])
def test_esp_in_udp_tun_to_tun(pair, outer):
    """ns A: kernel socket -> TUN -> tun_read -> Engine.encrypt -> udp_send;
    ns B: udp_recv -> Engine.decrypt -> tun_write -> kernel socket. Byte-identical."""
    la, lb = (nh.A4, nh.B4) if outer == 4 else (nh.A6, nh.B6)
    na, nb = f"10.{81 + outer}.1.0/24", f"10.{81 + outer}.2.0/24"
    host_a, host_b = f"10.{81 + outer}.1.1", f"10.{81 + outer}.2.1"
    cfg = _sa(0x5000 + outer, outer, True, na, nb)
    eng_a, eng_b = Engine(), Engine()
    eng_a.install(cfg, "out")
    eng_b.install(cfg, "in")
    tun_a, udp_a = _tunnel_end(pair.a, f"nea{outer}", f"{host_a}/24", nb, la)
    tun_b, udp_b = _tunnel_end(pair.b, f"neb{outer}", f"{host_b}/24", na, lb)
    with pair.a.enter():
        src = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        src.bind((host_a, 0))
    with pair.b.enter():
        dst = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        dst.bind((host_b, 6000))
        dst.setblocking(False)
    try:
        payloads = [os.urandom(1 + 131 * k) for k in range(10)]
        for p in payloads:
            src.sendto(p, (host_b, 6000))
        ba = PacketBatch(64)
        _fill(tun_a.read, tun_a.fileno(), ba, len(payloads))
        assert ba.count == len(payloads)
        inner = ba.packets()
        eng_a.encrypt(ba)
        assert not ba.drop[:ba.count].any()
        assert udp_a.send(ba) == len(payloads)

        bb = PacketBatch(64)
        ike = []
        _fill(lambda b: ike.extend(udp_b.recv(b).ike), udp_b.fileno(), bb, len(payloads))
        assert ike == [] and bb.count == len(payloads)
        assert [udp_b.peer(i) for i in range(bb.count)] == [(la, 4500)] * bb.count
        eng_b.decrypt(bb)
        assert [Drop(int(d)) for d in bb.drop[:bb.count]] == [Drop.NONE] * bb.count
        assert bb.packets() == inner
        assert tun_b.write(bb) == len(payloads)
        assert _recv_datagrams(dst, len(payloads)) == payloads
        assert udp_a.counters()["tx_packets"] == len(payloads)
        assert udp_b.counters()["rx_packets"] == len(payloads)
        assert eng_b.sa_stats(0)["packets"] == len(payloads)
    finally:
        for x in (src, dst, udp_a, udp_b, tun_a, tun_b):
            x.close()


@pytest.mark.parametrize("outer", [4, 6])
def test_udp_recv_demux_and_synthetic_header(pair, outer):
    """IKE (non-ESP marker) and NAT keepalives never enter the batch; ESP datagrams get an
    outer header that scapy parses to the real sender, our address and ports."""
    la, lb = (nh.A4, nh.B4) if outer == 4 else (nh.A6, nh.B6)
    with pair.a.enter():
        udp_a = EspUdpSocket(la)
        tos = socket.socket(socket.AF_INET if outer == 4 else socket.AF_INET6,
                            socket.SOCK_DGRAM)
        tos.bind((la, 4600))
        if outer == 4:
            tos.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0xB9)       # DSCP 46, ECT(1)
        else:
            tos.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, 0xB9)
    with pair.b.enter():
        udp_b = EspUdpSocket(lb)
    try:
        esp1 = b"\x00\x00\x10\x01" + b"\x00\x00\x00\x01" + b"E" * 40
        esp2 = b"\x00\x00\x10\x02" + b"\x00\x00\x00\x07" + b"F" * 9
        udp_a.send_ike(b"ike-sa-init", (lb, 4500))
        udp_a.sock.sendto(esp1, (lb, 4500))
        udp_a.send_keepalive((lb, 4500))
        udp_a.send_ike(b"ike-auth", (lb, 4500))
        tos.sendto(esp2, (lb, 4500))
        b = PacketBatch(16)
        ike = []
        deadline = time.monotonic() + WAIT
        while (b.count < 2 or len(ike) < 2) and time.monotonic() < deadline:
            select.select([udp_b.fileno()], [], [], 0.2)
            ike.extend(udp_b.recv(b).ike)
        assert ike == [(b"ike-sa-init", (la, 4500)), (b"ike-auth", (la, 4500))]
        assert b.count == 2
        c = udp_b.counters()
        assert (c["rx_ike"], c["rx_keepalive"], c["rx_packets"]) == (2, 1, 2)
        cls = IP if outer == 4 else IPv6
        for i, (esp, sport, tc) in enumerate(((esp1, 4500, 0), (esp2, 4600, 0xB9))):
            pkt = cls(b.packet(i))
            assert pkt.src == la and pkt.dst == lb
            assert pkt[UDP].sport == sport and pkt[UDP].dport == 4500
            assert pkt[UDP].len == 8 + len(esp) and bytes(pkt[UDP].payload) == esp
            assert udp_b.peer(i) == (la, sport)
            assert b.off[i] + b.length[i] == b.slot_start[i] + HEADROOM + len(esp)
            if outer == 4:
                assert pkt.len == 28 + len(esp) and pkt.proto == 17 and pkt.tos == tc
                chk = pkt.chksum
                del pkt.chksum
                assert IP(bytes(pkt)).chksum == chk
            else:
                assert pkt.plen == 8 + len(esp) and pkt.nh == 17 and pkt.tc == tc
        eng = Engine()                      # no SA: counted, no exception
        eng.decrypt(b)
        assert [Drop(int(d)) for d in b.drop[:2]] == [Drop.NO_SA] * 2
    finally:
        for x in (tos, udp_a, udp_b):
            x.close()


def test_udp_recv_truncation_and_full_batch(pair):
    """A datagram longer than max_len is counted and skipped without writing past its
    slot; a batch with no room receives nothing and loses nothing."""
    with pair.a.enter():
        udp_a = EspUdpSocket(nh.A4, 4501)
    with pair.b.enter():
        udp_b = EspUdpSocket(nh.B4, 4501, max_len=256)
    try:
        sizes = [100, 1000, 200, 257, 256]
        for k, size in enumerate(sizes):
            udp_a.sock.sendto(bytes([0x10 + k]) * size, (nh.B4, 4501))
        b = PacketBatch(16)
        b.buf[:] = 0xAA
        deadline = time.monotonic() + WAIT
        while b.count < 3 and time.monotonic() < deadline:
            select.select([udp_b.fileno()], [], [], 0.2)
            udp_b.recv(b)
        assert [len(p) - 28 for p in b.packets()] == [100, 200, 256]
        assert [p[28] for p in b.packets()] == [0x10, 0x12, 0x14]
        assert udp_b.counters()["rx_truncated"] == 2
        # nothing written beyond the reserved slots, and within a truncated datagram's
        # slot nothing beyond max_len + 1 bytes of payload
        assert (b.buf[b.used:] == 0xAA).all()
        for i in range(b.count):
            end = b.slot_start[i] + HEADROOM + 257
            assert (b.buf[end:b.slot_end[i]] == 0xAA).all()

        full = PacketBatch(1)
        full.add(b"x")
        udp_a.sock.sendto(b"\x00\x00\x10\x01later", (nh.B4, 4501))
        select.select([udp_b.fileno()], [], [], WAIT)
        assert udp_b.recv(full) == (0, [])
        later = PacketBatch(4)
        assert udp_b.recv(later).packets == 1 and later.packet(0)[28:] == b"\x00\x00\x10\x01later"
    finally:
        udp_a.close()
        udp_b.close()


def test_udp_send_counts_malformed_and_errors(pair):
    """Engine outputs whose headers do not parse are counted, not sent; a kernel refusal
    (no route) is counted by errno; the good packet in between is sent."""
    with pair.a.enter():
        udp_a = EspUdpSocket(nh.A4, 4502)
    with pair.b.enter():
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind((nh.B4, 4502))
        sink.setblocking(False)
    try:
        good = bytes(IP(src=nh.A4, dst=nh.B4) / UDP(sport=4502, dport=4502) / Raw(b"ESP!" * 5))
        noroute = bytes(IP(src=nh.A4, dst="203.0.113.9") / UDP(sport=4502, dport=4500)
                        / Raw(b"x" * 12))
        longudp = bytearray(good)
        longudp[24:26] = (200).to_bytes(2, "big")       # UDP length past the IP packet
        b = PacketBatch(8)
        b.add(os.urandom(3))                             # too short for any header
        b.add(bytes(IPv6(src=nh.A6, dst=nh.B6) / UDP() / Raw(b"v6")))   # wrong family
        b.add(bytes(IP(src=nh.A4, dst=nh.B4) / Raw(b"\x00" * 20)))      # proto 0, not UDP
        b.add(bytes(longudp))
        b.add(noroute)
        b.add(good)
        assert udp_a.send(b) == 1
        select.select([sink], [], [], WAIT)
        assert sink.recv(2048) == b"ESP!" * 5
        c = udp_a.counters()
        assert c["tx_malformed"] == 4 and c["tx_packets"] == 1
        assert c["tx_errors"] == 1 and c["tx_errno"] == {"ENETUNREACH": 1}
        with pytest.raises(OSError):
            _netio.udp_send(-1, b, udp_a.stats)         # a bad fd is the caller's bug
    finally:
        sink.close()
        udp_a.close()


@pytest.mark.parametrize("gso", [True, False])
def test_udp_send_gso_groups_arrive_as_the_same_datagrams(pair, gso):
    """UDP GSO (UDP_SEGMENT): runs of equal-size datagrams to one peer leave as one message
    and arrive as the same datagrams, in order; a shorter one ends a run, another
    destination or TOS starts a new one. Without gso every datagram is its own message."""
    with pair.a.enter():
        udp_a = EspUdpSocket(nh.A4, 4503, gso=gso)
    sinks = []
    with pair.b.enter():
        for port in (4503, 4504):
            k = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            k.bind((nh.B4, port))
            k.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            k.setblocking(False)
            sinks.append(k)
    try:
        assert udp_a.gso == gso
        plan = ([(4503, 0, 1200)] * 70 + [(4503, 0, 300)] + [(4503, 0, 1200)] * 3
                + [(4504, 0, 1200)] * 2 + [(4503, 0x20, 1200)] * 2 + [(4503, 0, 900)])
        b = PacketBatch(len(plan), data_bytes=len(plan) * 1400)
        want = {4503: [], 4504: []}
        for k, (port, tos, size) in enumerate(plan):
            payload = k.to_bytes(2, "big") + bytes((k * 31 + j) & 0xFF for j in range(size - 2))
            b.add(bytes(IP(src=nh.A4, dst=nh.B4, tos=tos) / UDP(sport=4503, dport=port)
                        / Raw(payload)))
            want[port].append(payload)
        assert udp_a.send(b) == len(plan)
        got = {4503: [], 4504: []}
        deadline = time.monotonic() + WAIT
        while (len(got[4503]) < len(want[4503]) or len(got[4504]) < len(want[4504])) \
                and time.monotonic() < deadline:
            select.select(sinks, [], [], 0.2)
            for port, k in zip((4503, 4504), sinks):
                try:
                    while True:
                        got[port].append(k.recv(4096))
                except BlockingIOError:
                    pass
        assert got == want
        c = udp_a.counters()
        assert c["tx_packets"] == len(plan) and c["tx_errors"] == 0
    finally:
        for k in sinks:
            k.close()
        udp_a.close()


def test_scapy_esp_in_udp_decrypts_and_engine_output_opens_in_scapy(pair):
    """scapy's IPsec layer (nat_t_header) encrypts; udp_recv + Engine.decrypt recover the
    packet. The engine encrypts; udp_send; scapy decrypts what a plain socket received."""
    cfg = _sa(0x6001, 4, True, "10.91.1.0/24", "10.91.2.0/24")
    back = _reverse(cfg, 0x6002)
    eng_b = Engine()
    eng_b.install(cfg, "in")
    eng_b.install(back, "out")
    with pair.a.enter():
        plain_a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        plain_a.bind((nh.A4, 4500))
        plain_a.setblocking(False)
    with pair.b.enter():
        udp_b = EspUdpSocket(nh.B4)
    try:
        sa = scapy_sa(cfg)
        inner = [IP(src="10.91.1.1", dst="10.91.2.1") / UDP(sport=5, dport=6)
                 / Raw(os.urandom(n)) for n in (0, 17, 1000)]
        for p in inner:
            enc = sa.encrypt(p)
            assert enc[UDP].dport == 4500
            plain_a.sendto(bytes(enc[UDP].payload), (nh.B4, 4500))
        b = PacketBatch(8)
        _fill(udp_b.recv, udp_b.fileno(), b, len(inner))
        eng_b.decrypt(b)
        assert [Drop(int(d)) for d in b.drop[:b.count]] == [Drop.NONE] * len(inner)
        assert b.packets() == [bytes(p) for p in inner]

        out = PacketBatch.from_packets([bytes(IP(src="10.91.2.1", dst="10.91.1.1")
                                              / UDP(sport=6, dport=5) / Raw(b"reply"))])
        eng_b.encrypt(out)
        assert udp_b.send(out) == 1
        select.select([plain_a], [], [], WAIT)
        data, frm = plain_a.recvfrom(4096)
        assert frm == (nh.B4, 4500)
        wire = IP(bytes(IP(src=nh.B4, dst=nh.A4) / UDP(sport=4500, dport=4500) / Raw(data)))
        opened = scapy_sa(back).decrypt(wire)
        assert bytes(opened) == bytes(IP(src="10.91.2.1", dst="10.91.1.1")
                                      / UDP(sport=6, dport=5) / Raw(b"reply"))
    finally:
        plain_a.close()
        udp_b.close()


# ---------------------------------------------------------------------------------------
# raw ESP (IP protocol 50)
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("outer", [4, 6])
def test_raw_esp_both_ways(pair, outer):
    """Engine A -> esp_raw_send -> kernel IP -> esp_raw_recv -> Engine B, and back."""
    la, lb = (nh.A4, nh.B4) if outer == 4 else (nh.A6, nh.B6)
    ab = _sa(0x7000 + outer, outer, False, "10.92.1.0/24", "10.92.2.0/24")
    ba = _reverse(ab, 0x7100 + outer)
    eng_a, eng_b = Engine(), Engine()
    eng_a.install(ab, "out")
    eng_a.install(ba, "in")
    eng_b.install(ab, "in")
    eng_b.install(ba, "out")
    with pair.a.enter():
        raw_a = EspRawSocket(la)
    with pair.b.enter():
        raw_b = EspRawSocket(lb)
    try:
        for eng_tx, tx, eng_rx, rx, s, d, sender in (
                (eng_a, raw_a, eng_b, raw_b, "10.92.1.1", "10.92.2.1", la),
                (eng_b, raw_b, eng_a, raw_a, "10.92.2.1", "10.92.1.1", lb)):
            inner = [_udp4(s, d, 1000 + k, 2000, os.urandom(40 * k)) for k in range(8)]
            out = PacketBatch.from_packets(inner)
            eng_tx.encrypt(out)
            assert not out.drop[:out.count].any()
            assert tx.send(out) == len(inner)
            got = PacketBatch(16)
            _fill(rx.recv, rx.fileno(), got, len(inner))
            assert got.count == len(inner)
            for i in range(got.count):
                wire = (IP if outer == 4 else IPv6)(got.packet(i))
                assert wire.src == sender and (wire.proto if outer == 4 else wire.nh) == 50
                assert rx.peer(i)[0] == sender
            eng_rx.decrypt(got)
            assert [Drop(int(x)) for x in got.drop[:got.count]] == [Drop.NONE] * len(inner)
            assert got.packets() == inner
            assert tx.counters()["tx_packets"] == len(inner)
    finally:
        raw_a.close()
        raw_b.close()


def test_raw_send_counts_wrong_protocol(pair):
    with pair.a.enter():
        raw_a = EspRawSocket(nh.A4)
    try:
        b = PacketBatch.from_packets([_udp4(nh.A4, nh.B4, 1, 2, b"not esp"), b"\x45"])
        assert raw_a.send(b) == 0
        assert raw_a.counters()["tx_malformed"] == 2
    finally:
        raw_a.close()


@pytest.mark.parametrize("outer", [4, 6])
def test_udp_send_carries_outer_tos(pair, outer):
    """The engine's outer DSCP/ECN (RFC 6040 copy of the inner ECN) reaches the wire only
    because udp_send passes it as IP_TOS / IPV6_TCLASS ancillary data: B's kernel reports
    it (IP_RECVTOS) into the synthetic header; without set_tos it is 0."""
    la, lb = (nh.A4, nh.B4) if outer == 4 else (nh.A6, nh.B6)
    cfg = _sa(0x8000 + outer, outer, True, "10.93.1.0/24", "10.93.2.0/24")
    eng_a, eng_b = Engine(), Engine()
    eng_a.install(cfg, "out")
    eng_b.install(cfg, "in")
    with pair.a.enter():
        udp_a = EspUdpSocket(la)
    with pair.b.enter():
        udp_b = EspUdpSocket(lb)
    try:
        inner = bytes(IP(src="10.93.1.1", dst="10.93.2.1", tos=0xB9) / UDP(sport=1, dport=2)
                      / Raw(b"ecn"))
        seen = []
        for set_tos in (True, False):
            out = PacketBatch.from_packets([inner])
            eng_a.encrypt(out)
            wire = out.packet(0)
            sent_tos = wire[1] if outer == 4 else ((wire[0] & 0x0F) << 4) | (wire[1] >> 4)
            assert sent_tos == 0xB9
            family = socket.AF_INET if outer == 4 else socket.AF_INET6
            assert _netio.udp_send(udp_a.fileno(), out, udp_a.stats, family, set_tos) == 1
            got = PacketBatch(4)
            _fill(udp_b.recv, udp_b.fileno(), got, 1)
            assert got.count == 1
            pkt = (IP if outer == 4 else IPv6)(got.packet(0))
            seen.append(pkt.tos if outer == 4 else pkt.tc)
            eng_b.decrypt(got)
            assert got.passed() == [inner], (set_tos, Drop(int(got.drop[0])))
        assert seen == [0xB9, 0]
    finally:
        udp_a.close()
        udp_b.close()


def test_bad_arguments_are_clear_errors():
    """Caller mistakes raise at the boundary (ValueError / OSError), before any nogil loop."""
    b = PacketBatch(4)
    stats = np.zeros(_netio.STATS_SIZE, np.uint64)
    meta = _netio.RxMeta(4)
    with pytest.raises(ValueError):
        _netio.tun_read(0, b, np.zeros(3, np.uint64))          # stats too small
    with pytest.raises(ValueError):
        _netio.udp_recv(0, b, b"\x01\x02\x03", 4500, meta, stats)   # not an address
    with pytest.raises(ValueError):
        _netio.udp_recv(0, PacketBatch(8), b"\x7f\x00\x00\x01", 4500, meta, stats)  # meta < cap
    with pytest.raises(ValueError):
        _netio.udp_send(0, b, stats, family=12345)
    b.count = 99                                                # corrupted batch
    with pytest.raises(ValueError):
        _netio.tun_write(0, b, stats)
    b.count = 0
    b.add(b"\x45" + bytes(27))
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    for call in (lambda: _netio.tun_read(r, PacketBatch(4), stats),
                 lambda: _netio.tun_write(w, b, stats),
                 lambda: _netio.esp_raw_recv(r, PacketBatch(4), b"\x7f\x00\x00\x01", meta,
                                             stats)):
        with pytest.raises(OSError):
            call()                                              # closed fd: EBADF


def test_kernel_ping_through_tunnel_both_ways(pair):
    """The namespace kernels ping each other's TUN address through two Engines: requests
    and replies both go TUN -> encrypt -> udp_send -> udp_recv -> decrypt -> TUN."""
    ab = _sa(0x9001, 4, True, "10.94.1.0/24", "10.94.2.0/24")
    ba = _reverse(ab, 0x9002)
    eng_a, eng_b = Engine(), Engine()
    eng_a.install(ab, "out")
    eng_a.install(ba, "in")
    eng_b.install(ab, "in")
    eng_b.install(ba, "out")
    with pair.a.enter():
        tun_a = Tun.open("npa0", mtu=1400)
        _quiet_tun(pair.a, tun_a)
        tun_a.configure(["10.94.1.1/24"], ["10.94.2.0/24"])
        udp_a = EspUdpSocket(nh.A4)
        ping = subprocess.Popen(pair.a.exec("ping", "-c", "3", "-i", "0.2", "-W", "3", "-s",
                                            "1000", "-I", "10.94.1.1", "10.94.2.1"),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with pair.b.enter():
        tun_b = Tun.open("npb0", mtu=1400)
        _quiet_tun(pair.b, tun_b)
        tun_b.configure(["10.94.2.1/24"], ["10.94.1.0/24"])
        udp_b = EspUdpSocket(nh.B4)
    # (tun, engine, udp) per side: TUN traffic is encrypted out of udp, udp traffic is
    # decrypted into the TUN
    sides = {}
    for tun, eng, udp in ((tun_a, eng_a, udp_a), (tun_b, eng_b, udp_b)):
        sides[tun.fileno()] = ("tun", tun, eng, udp)
        sides[udp.fileno()] = ("udp", tun, eng, udp)
    b = PacketBatch(64)
    try:
        deadline = time.monotonic() + WAIT
        while ping.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select(list(sides), [], [], 0.2)
            for fd in ready:
                kind, tun, eng, udp = sides[fd]
                b.clear()
                if kind == "tun":
                    if tun.read(b):
                        eng.encrypt(b)
                        udp.send(b)
                else:
                    if udp.recv(b).packets:
                        eng.decrypt(b)
                        tun.write(b)
        out = ping.communicate(timeout=WAIT)[0]
    finally:
        if ping.poll() is None:
            ping.kill()
        for x in (udp_a, udp_b, tun_a, tun_b):
            x.close()
    assert ping.returncode == 0 and "3 received" in out, out
    assert eng_a.sa_stats(1)["packets"] >= 3 and eng_b.sa_stats(0)["packets"] >= 3


def test_ike_beyond_ctl_capacity_is_counted(pair):
    """More IKE messages in one call than RxMeta.ctl holds: the extra ones are counted as
    rx_ctl_overflow, the ESP datagram after them still lands in the batch."""
    with pair.a.enter():
        udp_a = EspUdpSocket(nh.A4, 4504)
    with pair.b.enter():
        udp_b = EspUdpSocket(nh.B4, 4504)
    try:
        for m in (b"one", b"two", b"three"):
            udp_a.send_ike(m, (nh.B4, 4504))
        udp_a.sock.sendto(b"\x00\x00\x20\x01" + bytes(20), (nh.B4, 4504))
        meta = _netio.RxMeta(8, ctl_capacity=2)
        b = PacketBatch(8)
        stats = np.zeros(_netio.STATS_SIZE, np.uint64)
        per_call = []
        deadline = time.monotonic() + WAIT
        while b.count < 1 and time.monotonic() < deadline:
            select.select([udp_b.fileno()], [], [], 0.2)
            _netio.udp_recv(udp_b.fileno(), b, udp_b.local, 4504, meta, stats)
            per_call.append(meta.n_ctl)
        c = dict(zip(_netio.COUNTERS, (int(x) for x in stats)))
        assert b.count == 1 and max(per_call) <= 2
        assert sum(per_call) + c["rx_ctl_overflow"] == 3 and c["rx_ike"] == sum(per_call)
        if len([n for n in per_call if n]) == 1:    # all four arrived for one recvmmsg
            assert c["rx_ctl_overflow"] == 1
    finally:
        udp_a.close()
        udp_b.close()
