"""The gateway's packet I/O endpoints: a TUN device, an ESP-in-UDP socket, a raw ESP socket.

Each endpoint moves whole PacketBatches through the compiled functions of engine/_netio.pyx
(one GIL release per batch, recvmmsg/sendmmsg on sockets) and is meant for asyncio:

    tun = Tun.open("st0", mtu=1400); tun.configure(["10.1.0.1/24"], ["10.2.0.0/24"])
    udp = EspUdpSocket("192.0.2.1")              # port 4500, RFC 3948
    loop.add_reader(tun.fileno(), on_tun)        # tun.read(b); eng.encrypt(b); udp.send(b)
    loop.add_reader(udp.fileno(), on_udp)        # got = udp.recv(b); eng.decrypt(b); tun.write(b)
                                                 # got.ike -> the IKE daemon (bytes, (ip, port))

Only the IKE datagrams that arrive on port 4500 (non-ESP marker, RFC 3948 2.2) take a
per-packet Python path, since they are not ESP. `counters()` is what `spu status` shows.
"""
from __future__ import annotations

import errno as _errno
import fcntl
import ipaddress
import os
import shutil
import socket
import struct
import subprocess
from typing import Iterable, NamedTuple

import numpy as np

from . import _netio, _tun_offload
from .batch import PacketBatch

# Linux <linux/if_tun.h>, <linux/sockios.h>, <asm-generic/socket.h>
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_MULTI_QUEUE = 0x0100
IFF_VNET_HDR = 0x4000
TUNSETOFFLOAD = 0x400454D0      # _IOW('T', 208, unsigned int)
TUNSETVNETHDRSZ = 0x400454D8    # _IOW('T', 216, int)
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
VNET_HDR_LEN = 10               # struct virtio_net_hdr (<linux/virtio_net.h>)
SIOCSIFMTU = 0x8922
IFNAMSIZ = 16
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33

NAT_T_PORT = 4500          # RFC 3948
NON_ESP_MARKER = b"\x00\x00\x00\x00"   # RFC 3948 2.2: an IKE message follows
NAT_KEEPALIVE = b"\xff"                # RFC 3948 2.3
UDP_SEGMENT = 103          # linux/udp.h: UDP GSO segment size
SOCKET_BUFFER = 4 << 20    # bytes; bursts of a few thousand full-size packets


class NetIOError(OSError):
    """A device or socket could not be set up; the message says what to do."""


class Received(NamedTuple):
    """What one EspUdpSocket.recv call produced."""
    packets: int                                  # ESP packets appended to the batch
    ike: list[tuple[bytes, tuple[str, int]]]      # IKE messages (marker removed), senders


def _errno_dict(stats: np.ndarray, base: int) -> dict[str, int]:
    out = {}
    for e in np.flatnonzero(stats[base:base + 256]):
        out[_errno.errorcode.get(int(e), str(int(e)))] = int(stats[base + e])
    return out


def _peer_tuple(row: np.ndarray, family: int) -> tuple[str, int]:
    raw = row.tobytes()
    ip = socket.inet_ntop(family, raw[:4] if family == socket.AF_INET else raw[:16])
    return ip, (raw[16] << 8) | raw[17]


class _Endpoint:
    """Shared by all endpoints: the fd, the counter vector, close()."""

    def __init__(self) -> None:
        self.stats = np.zeros(_netio.STATS_SIZE, np.uint64)
        self._closed = False

    def fileno(self) -> int:
        raise NotImplementedError

    def counters(self) -> dict:
        """{"rx_packets": n, ..., "tx_errno": {"EAGAIN": n}, "rx_errno": {...}}."""
        d: dict = {name: int(self.stats[i]) for i, name in enumerate(_netio.COUNTERS)}
        d["tx_errno"] = _errno_dict(self.stats, _netio.TX_ERRNO_BASE)
        d["rx_errno"] = _errno_dict(self.stats, _netio.RX_ERRNO_BASE)
        return d

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------------------
# TUN
# ---------------------------------------------------------------------------------------
class Tun(_Endpoint):
    """A layer-3 TUN device (IFF_TUN | IFF_NO_PI): every read/write is one IP packet.

    With offload (IFF_VNET_HDR, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) the kernel hands
    over TCP super-segments of up to 64 KiB, which read() splits into MTU-sized packets,
    and write() coalesces in-order TCP segments back into super-segments
    (engine/_tun_offload.pyx): the batch holds ordinary IP packets either way."""

    def __init__(self, fd: int, name: str, mtu: int, offload: bool = False):
        super().__init__()
        self.fd = fd
        self.name = name
        self.mtu = mtu
        self.offload = offload
        self.tso = _tun_offload.TsoState() if offload else None
        self.gro = offload

    @classmethod
    def open(cls, name: str = "st0", mtu: int = 1400, multi_queue: bool = False,
             offload: bool = False) -> "Tun":
        """Create (or attach to) TUN device `name`, nonblocking, and set its MTU. offload:
        open it with virtio-net headers and TCP segmentation / checksum offload; a kernel
        that refuses raises NetIOError (the caller may retry without)."""
        if not 0 < len(name.encode()) < IFNAMSIZ:
            raise ValueError(f"TUN name must be 1..{IFNAMSIZ - 1} bytes")
        if not 68 <= mtu <= 65535:
            raise ValueError("MTU must be 68..65535 (RFC 791 minimum)")
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NetIOError(_errno.ENOENT, "no /dev/net/tun: load the tun module "
                             "(modprobe tun) or create the node (mknod /dev/net/tun c 10 200)")
        except PermissionError:
            raise NetIOError(_errno.EACCES, "cannot open /dev/net/tun: run as root "
                             "(CAP_NET_ADMIN)")
        flags = (IFF_TUN | IFF_NO_PI | (IFF_MULTI_QUEUE if multi_queue else 0)
                 | (IFF_VNET_HDR if offload else 0))
        try:
            ifr = fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), flags))
            real = ifr[:IFNAMSIZ].rstrip(b"\0").decode()
            if offload:
                try:
                    fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_LEN))
                    fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
                except OSError as e:
                    raise OSError(e.errno, f"TUN offloads (TSO/checksum): {e.strerror}") \
                        from None
            _set_mtu(real, mtu)
        except OSError as e:
            os.close(fd)
            if e.errno in (_errno.EPERM, _errno.EACCES):
                raise NetIOError(e.errno, f"creating TUN device {name!r} needs root "
                                 "(CAP_NET_ADMIN)") from None
            raise NetIOError(e.errno, f"TUN device {name!r}: {e.strerror}") from None
        return cls(fd, real, mtu, offload)

    def configure(self, addresses: Iterable[str] = (), routes: Iterable[str] = ()) -> None:
        """Bring the device up, add `addresses` ("10.1.0.1/24", "fd00::1/64") and route
        `routes` ("10.2.0.0/24") into it, with iproute2 in the caller's network namespace."""
        cmds = [["link", "set", "dev", self.name, "up"]]
        for a in addresses:
            ipaddress.ip_interface(a)   # ValueError before any command runs
            cmds.append(["addr", "replace", a, "dev", self.name]
                        + (["nodad"] if ":" in a else []))
        for r in routes:
            ipaddress.ip_network(r, strict=False)
            cmds.append(["route", "replace", r, "dev", self.name])
        _ip(cmds)

    def fileno(self) -> int:
        return self.fd

    def read(self, batch: PacketBatch, max_packets: int = 0) -> int:
        """Append the packets waiting on the device (until EAGAIN or the batch is full).
        With offload, check `pending` afterwards: a super-segment cut short by a full
        batch is continued by the next read even if the fd is not readable."""
        if self.tso is not None:
            return _tun_offload.tun_read_offload(self.fd, batch, self.stats, self.tso,
                                                 self.mtu, max_packets)
        return _netio.tun_read(self.fd, batch, self.stats, self.mtu, max_packets)

    @property
    def pending(self) -> bool:
        return self.tso is not None and self.tso.pending

    def write(self, batch: PacketBatch) -> int:
        """Write every packet with drop == 0; returns how many the kernel took. With
        offload, runs of in-order TCP segments are coalesced (their first header is
        rewritten in the batch)."""
        if self.tso is not None:
            return _tun_offload.tun_write_offload(self.fd, batch, self.stats,
                                                  self.tso.offload_stats, self.gro)
        return _netio.tun_write(self.fd, batch, self.stats)

    def counters(self) -> dict:
        d = super().counters()
        if self.tso is not None:
            d["offload"] = {name: int(v) for name, v in
                            zip(_tun_offload.OFFLOAD_COUNTERS, self.tso.offload_stats)}
        return d

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self.fd)


def _set_mtu(name: str, mtu: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s.fileno(), SIOCSIFMTU, struct.pack("16si20x", name.encode(), mtu))


def _ip(cmds: list[list[str]]) -> None:
    ip = shutil.which("ip")
    if ip is None:
        raise NetIOError(_errno.ENOENT, "iproute2 (`ip`) is not installed")
    for c in cmds:
        r = subprocess.run([ip, *c], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            msg = r.stderr.strip() or f"exit status {r.returncode}"
            hint = " (needs root)" if "Operation not permitted" in msg else ""
            raise NetIOError(_errno.EINVAL, f"ip {' '.join(c)}: {msg}{hint}")


# ---------------------------------------------------------------------------------------
# sockets
# ---------------------------------------------------------------------------------------
def _packed(local_ip: str) -> tuple[int, bytes]:
    addr = ipaddress.ip_address(local_ip)
    if addr.is_unspecified:
        # the synthetic outer header needs the real destination the SA is keyed on
        raise ValueError("bind to a specific local address, not the wildcard")
    return (socket.AF_INET if addr.version == 4 else socket.AF_INET6), addr.packed


def _udp_gso_supported(sock: socket.socket) -> bool:
    """Linux >= 4.18 knows UDP_SEGMENT (reading it is harmless)."""
    try:
        sock.getsockopt(socket.IPPROTO_UDP, UDP_SEGMENT)
        return True
    except OSError:
        return False


def _buffers(sock: socket.socket, size: int) -> None:
    """Big socket buffers: FORCE beyond net.core.[rw]mem_max as root, else the plain knob."""
    for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, plain, size)


class _Socket(_Endpoint):
    def __init__(self, sock: socket.socket, family: int, packed: bytes, max_len: int):
        super().__init__()
        self.sock = sock
        self.family = family
        self.local = packed
        self.max_len = max_len
        self.meta = _netio.RxMeta(256, 256)

    def fileno(self) -> int:
        return self.sock.fileno()

    def _meta_for(self, batch: PacketBatch):
        if self.meta.peer.shape[0] < batch.capacity:
            # room for as many IKE messages as datagrams: rx_ctl_overflow cannot happen here
            self.meta = _netio.RxMeta(batch.capacity, batch.capacity)
        return self.meta

    def peer(self, i: int) -> tuple[str, int]:
        """Sender (ip, port) of packet i of the batch last received into."""
        return _peer_tuple(self.meta.peer[i], self.family)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.sock.close()


class EspUdpSocket(_Socket):
    """ESP-in-UDP (RFC 3948) on `local_ip`:`port`, shared with IKE's port-4500 traffic.

    The synthetic outer header names `local_ip` and `port` as destination: Engine.decrypt
    finds the SA by that address and accepts the packet only if `port` is an installed
    SA's encap destination port (kernels_esp.prepare_decrypt)."""

    def __init__(self, local_ip: str, port: int = NAT_T_PORT, *, max_len: int = 2048,
                 buffer_bytes: int = SOCKET_BUFFER, gso: bool = True):
        """gso: send runs of equal-size datagrams to one peer as one UDP_SEGMENT message
        (where the kernel has UDP GSO); the wire carries the same datagrams either way."""
        family, packed = _packed(local_ip)
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVTCLASS, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
            _buffers(sock, buffer_bytes)
            sock.bind((local_ip, port))
            sock.setblocking(False)
        except OSError as e:
            sock.close()
            raise NetIOError(e.errno, f"UDP socket {local_ip}:{port}: {e.strerror}") from None
        super().__init__(sock, family, packed, max_len)
        self.port = sock.getsockname()[1]
        self.gso = gso and _udp_gso_supported(sock)

    def recv(self, batch: PacketBatch, max_packets: int = 0) -> Received:
        """One recvmmsg: ESP datagrams appended to `batch` with synthetic outer IP + UDP
        headers (ready for Engine.decrypt); IKE messages returned; keepalives counted."""
        meta = self._meta_for(batch)
        n = _netio.udp_recv(self.sock.fileno(), batch, self.local, self.port, meta,
                            self.stats, self.max_len, max_packets)
        ike = []
        for k in range(meta.n_ctl):
            o, ln = int(meta.ctl[k, 0]), int(meta.ctl[k, 1])
            ike.append((batch.buf[o:o + ln].tobytes(),
                        _peer_tuple(meta.ctl_peer[k], self.family)))
        return Received(n, ike)

    def send(self, batch: PacketBatch) -> int:
        """sendmmsg every engine output with drop == 0 to its outer dst address and port."""
        return _netio.udp_send(self.sock.fileno(), batch, self.stats, self.family, True,
                               self.gso)

    def send_ike(self, message: bytes, addr: tuple[str, int]) -> None:
        """An IKE message on port 4500: behind the non-ESP marker (RFC 3948 2.2)."""
        self.sock.sendto(NON_ESP_MARKER + message, addr)

    def send_keepalive(self, addr: tuple[str, int]) -> None:
        self.sock.sendto(NAT_KEEPALIVE, addr)


class EspRawSocket(_Socket):
    """Raw IP protocol 50 (ESP without NAT-T) on `local_ip`; needs root (CAP_NET_RAW)."""

    def __init__(self, local_ip: str, proto: int = 50, *, max_len: int = 2048,
                 buffer_bytes: int = SOCKET_BUFFER, hdrincl: bool = False):
        family, packed = _packed(local_ip)
        try:
            sock = socket.socket(family, socket.SOCK_RAW, proto)
        except PermissionError:
            raise NetIOError(_errno.EPERM, "raw ESP sockets need root (CAP_NET_RAW)") from None
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVTCLASS, 1)
            _buffers(sock, buffer_bytes)
            if hdrincl and family == socket.AF_INET:
                # send the engine's IPv4 header as it is (AH: the ICV covers its ID)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
            sock.bind((local_ip, 0))
            sock.setblocking(False)
        except OSError as e:
            sock.close()
            raise NetIOError(e.errno, f"raw socket {local_ip} proto {proto}: "
                             f"{e.strerror}") from None
        super().__init__(sock, family, packed, max_len)
        self.proto = proto
        self.hdrincl = hdrincl and family == socket.AF_INET

    def recv(self, batch: PacketBatch, max_packets: int = 0) -> int:
        """One recvmmsg: whole IP packets appended to `batch` (IPv6 header synthesized)."""
        return _netio.esp_raw_recv(self.sock.fileno(), batch, self.local,
                                   self._meta_for(batch), self.stats, self.proto,
                                   self.max_len, max_packets)

    def send(self, batch: PacketBatch) -> int:
        """sendmmsg the ESP part of every engine output with drop == 0 to its outer dst."""
        return _netio.esp_raw_send(self.sock.fileno(), batch, self.stats, self.family,
                                   self.proto, True, self.hdrincl)
