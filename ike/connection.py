"""IKEConnection: one IKEv2 SA as a sans-I/O object (like aioquic's QuicConnection).

    conn = IKEConnection(config, initiator=True, local_addr=("192.0.2.1", 500),
                         remote_addr=("192.0.2.2", 500))
    conn.initiate(now)
    for data, addr in conn.datagrams_to_send(now): sock.sendto(data, addr)
    conn.receive_datagram(data, addr, now)          # every datagram from the peer
    conn.handle_timer(now) when now >= conn.get_timer()
    while (event := conn.next_event()) is not None: ...   # ike/events.py

It never opens a socket, reads a clock or touches the engine. Datagrams carry their RFC 3948
framing: those that start with the non-ESP marker, and 1-byte NAT keepalives, belong on
the NAT-T socket (4500), the rest on the IKE socket (500); receive_datagram() takes either kind as it arrived. A
responder is created with initiator=False and fed the first IKE_SA_INIT (ike/endpoint.py
does that, and the COOKIE defence that must happen before any state exists).
Malformed input never raises: it is dropped or answered with the right notify.
"""
from __future__ import annotations

import os
from typing import Callable, Optional, Sequence, Union

from .config import ChildConfig, IKEConfig
from .constants import NAT_KEEPALIVE, NON_ESP_MARKER, Exchange, Flag
from .errors import ParseError
from .events import IKESADeleted
from .ike_sa import IKESA, ChildSA, State
from .messages import Message, decode_header, decode_message, encode_message, split_marker
from .payloads import NotifyPayload
from .tasks.base import Task
from .tasks.ike_auth import IkeAuthInitiator, IkeAuthResponder
from .tasks.ike_init import IkeInitInitiator, IkeInitResponder
from .tasks.informational import DeleteChild, DeleteIKE, InformationalResponder, Liveness
from .tasks.manager import TaskManager
from .tasks.unsupported import CreateChildResponder

_ZERO_SPI = bytes(8)
_DEFAULT = object()


class IKEConnection:
    def __init__(self, config: Union[IKEConfig, Sequence[IKEConfig]], *, initiator: bool,
                 local_addr: tuple, remote_addr: Optional[tuple] = None,
                 random_bytes: Callable[[int], bytes] = os.urandom):
        configs = [config] if isinstance(config, IKEConfig) else list(config)
        if not configs:
            raise ValueError("at least one IKEConfig is needed")
        if initiator and remote_addr is None:
            raise ValueError("an initiator needs the peer's address")
        self._sa = IKESA(configs, initiator, tuple(local_addr),
                         tuple(remote_addr) if remote_addr else None, random_bytes)
        self._tasks = TaskManager(self._sa, self._responder_task)
        self._started: Optional[float] = None
        self._keepalive_at: Optional[float] = None     # next RFC 3948 keepalive, if behind NAT

    # -- read-only views -------------------------------------------------------------------
    @property
    def spi(self) -> bytes:
        """Our IKE SPI (the name of this IKE SA in events); zero until chosen."""
        return self._sa.our_spi

    @property
    def spis(self) -> tuple[bytes, bytes]:
        return self._sa.spi_i, self._sa.spi_r

    @property
    def state(self) -> State:
        return self._sa.state

    @property
    def established(self) -> bool:
        return self._sa.state == State.ESTABLISHED

    @property
    def closed(self) -> bool:
        return self._sa.state == State.CLOSED

    @property
    def initiator(self) -> bool:
        return self._sa.initiator

    @property
    def remote_addr(self) -> Optional[tuple]:
        return self._sa.remote_addr

    @property
    def children(self) -> list[ChildSA]:
        return list(self._sa.children.values())

    @property
    def nat_detected(self) -> tuple[bool, bool]:
        """(we are behind a NAT, the peer is)."""
        return self._sa.nat_local, self._sa.nat_remote

    # -- commands -----------------------------------------------------------------------------
    def initiate(self, now: float, child: Optional[ChildConfig] = _DEFAULT) -> None:
        """Start IKE_SA_INIT and IKE_AUTH with a first Child SA (the config's first one
        unless `child` says otherwise; None for none)."""
        sa = self._sa
        if not sa.initiator or sa.state != State.CREATED or self._started is not None:
            raise RuntimeError("initiate() is for a fresh initiator connection")
        if child is _DEFAULT:
            child = sa.config.children[0] if sa.config.children else None
        self._started = now
        self._tasks.queue_task(IkeInitInitiator(sa), now)
        self._tasks.queue.append(IkeAuthInitiator(sa, child))

    def delete(self, now: float) -> None:
        """Delete the IKE SA (and its Child SAs) with the peer; IKESADeleted follows."""
        sa = self._sa
        if sa.state == State.ESTABLISHED:
            self._tasks.queue_task(DeleteIKE(sa), now)
        elif sa.state != State.CLOSED and sa.state != State.DELETING:
            self._tasks.queue.clear()
            sa.terminate(IKESADeleted(sa.our_spi, "closed before it was established", False))
            self._cleanup()

    def delete_child(self, spi_in: int, now: float) -> None:
        """Delete the Child SA whose inbound SPI is `spi_in`; ChildSADeleted follows."""
        key = spi_in.to_bytes(4, "big")
        if self._sa.state == State.ESTABLISHED and key in self._sa.children:
            self._tasks.queue_task(DeleteChild(self._sa, [key]), now)

    def check_liveness(self, now: float) -> None:
        """Send an empty INFORMATIONAL now (RFC 7296 2.4); PeerDead if it goes unanswered."""
        if self._sa.state == State.ESTABLISHED:
            self._tasks.queue_task(Liveness(self._sa), now)

    # -- datagrams ------------------------------------------------------------------------------
    def receive_datagram(self, data: bytes, addr: tuple, now: float) -> None:
        sa = self._sa
        if sa.state == State.CLOSED:
            return
        ike, natt = split_marker(bytes(data))
        try:
            msg = decode_message(ike)
        except ParseError as err:
            self._malformed(ike, err, tuple(addr), natt)
            self._cleanup()
            return
        if not self._ours(msg):
            return
        if sa.state == State.CREATED and not sa.initiator and sa.spi_i == _ZERO_SPI:
            sa.spi_i, sa.remote_addr = msg.spi_i, tuple(addr)
            self._started = now
        self._tasks.receive(msg, tuple(addr), natt, now)
        self._cleanup()

    def _ours(self, msg: Message) -> bool:
        """Does msg belong to this IKE SA, in a direction that makes sense?"""
        sa = self._sa
        if msg.from_initiator == sa.initiator:
            return False            # our own message reflected back, or a confused peer
        init = msg.exchange == Exchange.IKE_SA_INIT
        if not sa.initiator and sa.spi_i == _ZERO_SPI:      # fresh responder
            return init and not msg.is_response and msg.message_id == 0 \
                and msg.spi_r == _ZERO_SPI
        if msg.spi_i != sa.spi_i:
            return False
        if msg.spi_r == sa.spi_r:
            return True
        if sa.initiator:            # the IKE_SA_INIT answer brings SPIr (or 0 on errors)
            return init and msg.is_response and sa.state == State.CREATED
        return init and not msg.is_response and msg.spi_r == _ZERO_SPI   # retransmission

    def _malformed(self, data: bytes, err: ParseError, addr: tuple, natt: bool) -> None:
        """2.21.1: a fresh responder answers a malformed IKE_SA_INIT request with the error
        notify; anything else malformed is dropped (it cannot be authenticated)."""
        sa = self._sa
        if sa.initiator or sa.state != State.CREATED:
            return
        try:
            spi_i, spi_r, _, exchange, flags, msgid, _ = decode_header(data)
        except ParseError:
            return
        if exchange != Exchange.IKE_SA_INIT or flags & Flag.RESPONSE or msgid != 0 \
                or spi_r != _ZERO_SPI or not flags & Flag.INITIATOR:
            return
        if sa.spi_i not in (_ZERO_SPI, spi_i):
            return
        answer = Message(spi_i, _ZERO_SPI, Exchange.IKE_SA_INIT, 0, Flag.RESPONSE,
                         [NotifyPayload(err.notify, err.data)])
        data = encode_message(answer)
        self._tasks.outbox.append(((NON_ESP_MARKER + data) if natt else data, addr))
        sa.spi_i = spi_i
        sa.discard()

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, tuple]]:
        out, self._tasks.outbox = self._tasks.outbox, []
        return out

    # -- time ----------------------------------------------------------------------------------
    def get_timer(self) -> Optional[float]:
        sa, cfg = self._sa, self._sa.config
        if sa.state == State.CLOSED:
            return None
        times = [self._tasks.timer()]
        if not sa.initiator and sa.state in (State.CREATED, State.INIT_DONE) \
                and self._started is not None:
            times.append(self._started + cfg.half_open_timeout)
        if sa.state == State.ESTABLISHED and cfg.dpd_interval > 0 and self._tasks.idle \
                and self._tasks.last_heard is not None:
            times.append(self._tasks.last_heard + cfg.dpd_interval)
        times.append(self._keepalive_at)
        times = [t for t in times if t is not None]
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        sa, cfg = self._sa, self._sa.config
        if sa.state == State.CLOSED:
            return
        self._tasks.handle_timer(now)
        if not sa.initiator and sa.state in (State.CREATED, State.INIT_DONE) \
                and self._started is not None and now >= self._started + cfg.half_open_timeout:
            sa.discard()                            # never established: no event
        if sa.state == State.ESTABLISHED and cfg.dpd_interval > 0 and self._tasks.idle \
                and self._tasks.last_heard is not None \
                and now >= self._tasks.last_heard + cfg.dpd_interval:
            self._tasks.queue_task(Liveness(sa), now)
        if self._keepalive_at is not None and now >= self._keepalive_at:
            # RFC 3948 4: one 0xFF byte from the NAT-T port keeps the NAT mapping alive
            self._tasks.outbox.append((NAT_KEEPALIVE, sa.remote_addr))
            self._keepalive_at = now + cfg.nat_keepalive
        self._cleanup()

    # -- events --------------------------------------------------------------------------------
    def next_event(self):
        return self._sa.events.popleft() if self._sa.events else None

    # -- internals -----------------------------------------------------------------------------
    def _responder_task(self, msg: Message) -> Optional[Task]:
        sa, state = self._sa, self._sa.state
        if msg.exchange == Exchange.IKE_SA_INIT and state == State.CREATED and not sa.initiator:
            return IkeInitResponder(sa)
        if msg.exchange == Exchange.IKE_AUTH and state == State.INIT_DONE and not sa.initiator:
            return IkeAuthResponder(sa)
        if msg.exchange == Exchange.INFORMATIONAL and state in (State.ESTABLISHED,
                                                                State.DELETING):
            return InformationalResponder(sa)
        if msg.exchange == Exchange.CREATE_CHILD_SA and state == State.ESTABLISHED:
            return CreateChildResponder(sa)
        return None

    def _cleanup(self) -> None:
        sa = self._sa
        if sa.state == State.CLOSED:
            sa.forget_secrets()
            self._keepalive_at = None
        elif self._keepalive_at is None and sa.state == State.ESTABLISHED and sa.nat_local \
                and sa.floated and sa.config.nat_keepalive > 0 \
                and self._tasks.last_heard is not None:
            self._keepalive_at = self._tasks.last_heard + sa.config.nat_keepalive
