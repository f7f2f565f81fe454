"""A thin asyncio adapter around IKEEndpoint: UDP 500 and 4500, a timer, an event queue.

    daemon = IKEDaemon(IKEEndpoint(configs, ("192.0.2.1", 500)), esp_handler=on_esp)
    await daemon.start()                    # binds 192.0.2.1:500 and :4500
    conn = daemon.connect(config, ("192.0.2.2", 500))
    event = await daemon.events.get()       # ike/events.py
    daemon.send_esp(esp_bytes, ("192.0.2.2", 4500))
    daemon.close()

A gateway whose data plane reads port 4500 in batches (ESP and IKE share it) passes
`natt_sender=` instead: the daemon then binds only port 500, sends NAT-T datagrams through
that callable, and the data plane hands it the IKE datagrams it finds with received().

RFC 3948 demultiplexing on port 4500: a 1-byte 0xFF datagram is a NAT keepalive
(dropped), one starting with the 4-byte non-ESP marker is IKE (given to the endpoint
with the marker, which tells the core it came over NAT-T), anything else is ESP and goes
to `esp_handler(data, addr)` untouched. Outgoing datagrams that start with the marker,
and NAT keepalives, leave from the 4500 socket, the rest from the 500 socket. `now` is
loop.time().
"""
from __future__ import annotations

import asyncio
from typing import Callable, Optional

from .constants import NAT_KEEPALIVE, NON_ESP_MARKER
from .endpoint import IKEEndpoint


class _Socket(asyncio.DatagramProtocol):
    def __init__(self, daemon: "IKEDaemon", natt: bool):
        self.daemon, self.natt = daemon, natt
        self.transport: Optional[asyncio.DatagramTransport] = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.daemon._received(data, addr[:2], self.natt)

    def error_received(self, exc: Exception) -> None:
        pass        # ICMP errors: IKE relies on its own retransmission and DPD


class IKEDaemon:
    def __init__(self, endpoint: IKEEndpoint, *,
                 esp_handler: Optional[Callable[[bytes, tuple], None]] = None,
                 natt_port: int = 4500,
                 natt_sender: Optional[Callable[[bytes, tuple], None]] = None):
        self.endpoint = endpoint
        self.esp_handler = esp_handler
        self.natt_port = natt_port
        self.natt_sender = natt_sender
        self.events: asyncio.Queue = asyncio.Queue()
        self._ike: Optional[_Socket] = None
        self._natt: Optional[_Socket] = None
        self._timer: Optional[asyncio.TimerHandle] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        host, port = self.endpoint.local_addr
        _, self._ike = await self._loop.create_datagram_endpoint(
            lambda: _Socket(self, False), local_addr=(host, port))
        if self.natt_sender is not None:
            return
        _, self._natt = await self._loop.create_datagram_endpoint(
            lambda: _Socket(self, True), local_addr=(host, self.natt_port))

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for sock in (self._ike, self._natt):
            if sock is not None and sock.transport is not None:
                sock.transport.close()

    @property
    def now(self) -> float:
        return self._loop.time()

    def connect(self, config, remote_addr: tuple, **kwargs):
        conn = self.endpoint.connect(config, remote_addr, self._loop.time(), **kwargs)
        self._flush()
        return conn

    def delete(self, conn) -> None:
        """Delete an IKE SA with its peer (IKESADeleted follows on `events`)."""
        conn.delete(self._loop.time())
        self._flush()

    def send_esp(self, data: bytes, addr: tuple) -> None:
        """ESP in UDP (RFC 3948) from our NAT-T port, e.g. the engine's output."""
        self._natt.transport.sendto(data, addr)

    def call(self, action) -> None:
        """Run `action(endpoint_or_connection_method...)` against the core, then send what it
        produced: `daemon.call(lambda now: conn.rekey_child("vpn1", now))`."""
        action(self._loop.time())
        self._flush()

    def received(self, data: bytes, addr: tuple, natt: bool) -> None:
        """A datagram from port 500 (natt False) or 4500 (natt True, RFC 3948 framing kept)."""
        self._received(data, addr, natt)

    # -- plumbing ---------------------------------------------------------------------------
    def _received(self, data: bytes, addr: tuple, natt: bool) -> None:
        if natt and data == NAT_KEEPALIVE:
            return
        if natt and data[:4] != NON_ESP_MARKER:
            if self.esp_handler is not None:
                self.esp_handler(data, addr)
            return
        self.endpoint.receive_datagram(data, addr, self._loop.time())
        self._flush()

    def _on_timer(self) -> None:
        self._timer = None
        self.endpoint.handle_timer(self._loop.time())
        self._flush()

    def _flush(self) -> None:
        """Send what the endpoint produced, publish its events, re-arm the timer."""
        now = self._loop.time()
        for data, addr in self.endpoint.datagrams_to_send(now):
            natt = data[:4] == NON_ESP_MARKER or data == NAT_KEEPALIVE
            if natt and self.natt_sender is not None:
                self.natt_sender(data, addr)
                continue
            sock = self._natt if natt else self._ike
            sock.transport.sendto(data, addr)
        while (event := self.endpoint.next_event()) is not None:
            self.events.put_nowait(event)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        when = self.endpoint.get_timer()
        if when is not None:
            self._timer = self._loop.call_at(when, self._on_timer)
