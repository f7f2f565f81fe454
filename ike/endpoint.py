"""IKEEndpoint: many IKE SAs behind one local address, still sans-I/O.

It routes each datagram to its IKEConnection by SPI (RFC 7296 2.1: the responder's SPI
names the SA for messages from the initiator, the initiator's for the rest), creates
responder connections for new IKE_SA_INIT requests, and defends the responder with
stateless cookies (2.6) once `cookie_threshold` half-open SAs exist:

    cookie = <version of secret> | SHA-256(Ni | IPi | SPIi | <secret>)

Configs are chosen for a new peer by address (IKEConfig.remote_addrs), then by identity
in IKE_AUTH. A connection whose IKE SA is rekeyed is found under its new SPI (and under
the old one until that SA's Delete is done: IKEConnection.local_spis). Events from every
connection come out of next_event(); each names its IKE SA.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from collections import deque
from typing import Callable, Optional, Sequence

from .config import IKEConfig
from .connection import _DEFAULT, IKEConnection
from .constants import NON_ESP_MARKER, Exchange, Flag, Notify
from .errors import ParseError
from .messages import Message, decode_header, decode_message, encode_message, split_marker
from .payloads import NoncePayload, NotifyPayload

_ZERO = bytes(8)


class CookieJar:
    """Stateless COOKIE values (2.6). The secret changes on rotate(); cookies made with the
    previous secret stay valid until the next rotation."""

    def __init__(self, random_bytes: Callable[[int], bytes] = os.urandom):
        self._random = random_bytes
        self._version = 0
        self._secrets = {0: random_bytes(32)}

    def rotate(self) -> None:
        previous = self._version
        self._version = (previous + 1) & 0xFFFFFFFF
        self._secrets = {previous: self._secrets[previous], self._version: self._random(32)}

    def _make(self, version: int, nonce: bytes, ip: str, spi_i: bytes) -> bytes:
        try:
            ip_bytes = ipaddress.ip_address(ip).packed
        except ValueError:
            ip_bytes = ip.encode()
        digest = hashlib.sha256(nonce + ip_bytes + spi_i + self._secrets[version]).digest()
        return version.to_bytes(4, "big") + digest

    def make(self, nonce: bytes, ip: str, spi_i: bytes) -> bytes:
        return self._make(self._version, nonce, ip, spi_i)

    def check(self, cookie: bytes, nonce: bytes, ip: str, spi_i: bytes) -> bool:
        if len(cookie) != 36:
            return False
        version = int.from_bytes(cookie[:4], "big")
        if version not in self._secrets:
            return False
        return hmac.compare_digest(cookie, self._make(version, nonce, ip, spi_i))


class IKEEndpoint:
    def __init__(self, configs: Sequence[IKEConfig], local_addr: tuple, *,
                 cookie_threshold: int = 50,
                 random_bytes: Callable[[int], bytes] = os.urandom):
        self.configs = list(configs)
        self.local_addr = tuple(local_addr)
        self.cookie_threshold = cookie_threshold
        self.cookies = CookieJar(random_bytes)
        self._random = random_bytes
        self._by_spi: dict[bytes, IKEConnection] = {}       # our SPI -> connection
        self._by_init: dict[tuple, IKEConnection] = {}    # (SPIi, addr) -> responder
        # (kept while the SA lives: a late IKE_SA_INIT retransmission finds its SA, 2.1)
        self._outbox: list = []
        self._events: deque = deque()

    # -- connections -------------------------------------------------------------------------
    def connect(self, config: IKEConfig, remote_addr: tuple, now: float,
                child=_DEFAULT) -> IKEConnection:
        conn = IKEConnection(config, initiator=True, local_addr=self.local_addr,
                             remote_addr=remote_addr, random_bytes=self._random)
        conn.initiate(now, child)
        self._by_spi[conn.spi] = conn
        return conn

    @property
    def connections(self) -> list[IKEConnection]:
        return self._all()

    def half_open_count(self) -> int:
        return sum(1 for c in self._all() if not c.initiator and not c.established
                   and not c.closed)

    def _all(self) -> list[IKEConnection]:
        seen, out = set(), []
        for c in list(self._by_spi.values()) + list(self._by_init.values()):
            if id(c) not in seen:
                seen.add(id(c))
                out.append(c)
        return out

    # -- datagrams -----------------------------------------------------------------------------
    def receive_datagram(self, data: bytes, addr: tuple, now: float) -> None:
        addr = tuple(addr)
        ike, natt = split_marker(bytes(data))
        try:
            spi_i, spi_r, _, exchange, flags, msgid, _ = decode_header(ike)
        except ParseError:
            return
        if flags & Flag.INITIATOR:
            if spi_r != _ZERO:
                conn = self._by_spi.get(spi_r)
            else:
                conn = self._by_init.get((spi_i, addr))
                if conn is None and exchange == Exchange.IKE_SA_INIT \
                        and not flags & Flag.RESPONSE and msgid == 0:
                    conn = self._new_responder(ike, natt, addr, spi_i, now)
        else:
            conn = self._by_spi.get(spi_i)
        if conn is not None:
            conn.receive_datagram(data, addr, now)
        self._collect()

    def _new_responder(self, ike: bytes, natt: bool, addr: tuple, spi_i: bytes,
                       now: float) -> Optional[IKEConnection]:
        configs = [c for c in self.configs if c.matches_address(addr[0])]
        if not configs:
            return None
        if self.half_open_count() >= self.cookie_threshold:
            try:
                msg = decode_message(ike)
            except ParseError:
                return None
            if not self._cookie_ok(msg, addr):
                self._send_cookie(msg, addr, natt)
                return None
        conn = IKEConnection(configs, initiator=False, local_addr=self.local_addr,
                             random_bytes=self._random)
        self._by_init[(spi_i, addr)] = conn
        return conn

    def _cookie_ok(self, msg: Message, addr: tuple) -> bool:
        nonce = msg.get(NoncePayload)
        first = msg.payloads[0] if msg.payloads else None
        return nonce is not None and isinstance(first, NotifyPayload) \
            and first.notify_type == Notify.COOKIE \
            and self.cookies.check(first.data, nonce.data, addr[0], msg.spi_i)

    def _send_cookie(self, msg: Message, addr: tuple, natt: bool) -> None:
        nonce = msg.get(NoncePayload)
        if nonce is None:
            return
        answer = Message(msg.spi_i, _ZERO, Exchange.IKE_SA_INIT, 0, Flag.RESPONSE,
                         [NotifyPayload(Notify.COOKIE,
                                        self.cookies.make(nonce.data, addr[0], msg.spi_i))])
        data = encode_message(answer)
        self._outbox.append(((NON_ESP_MARKER + data) if natt else data, addr))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, tuple]]:
        out, self._outbox = self._outbox, []
        for conn in self._all():
            out += conn.datagrams_to_send(now)
        self._collect()
        return out

    # -- time -----------------------------------------------------------------------------------
    def get_timer(self) -> Optional[float]:
        times = [t for t in (c.get_timer() for c in self._all()) if t is not None]
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        for conn in self._all():
            timer = conn.get_timer()
            if timer is not None and now >= timer:
                conn.handle_timer(now)
        self._collect()

    # -- events ---------------------------------------------------------------------------------
    def next_event(self):
        return self._events.popleft() if self._events else None

    def _collect(self) -> None:
        """Move events out of the connections; forget closed ones once drained (their last
        datagrams are still sent: datagrams_to_send runs before they are dropped)."""
        for conn in self._all():
            while (event := conn.next_event()) is not None:
                self._events.append(event)
        # SPI routing follows IKE SA rekeys (RFC 7296 2.18): every SPI a connection still
        # answers for (the new SA's, and the old one's until its Delete) routes to it
        for conn in self._all():
            for spi in conn.local_spis:
                self._by_spi.setdefault(spi, conn)
        for spi, conn in list(self._by_spi.items()):
            if not conn.closed and spi not in conn.local_spis:
                del self._by_spi[spi]
        for key, conn in list(self._by_init.items()):
            if conn.closed:
                del self._by_init[key]
                self._outbox += conn.datagrams_to_send(0.0)
        for spi, conn in list(self._by_spi.items()):
            if conn.closed:
                self._outbox += conn.datagrams_to_send(0.0)
                del self._by_spi[spi]
