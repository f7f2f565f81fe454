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
the NAT-T socket (4500), the rest on the IKE socket (500); receive_datagram() takes
either kind as it arrived. A
responder is created with initiator=False and fed the first IKE_SA_INIT (ike/endpoint.py
does that, and the COOKIE defence that must happen before any state exists).
Malformed input never raises: it is dropped or answered with the right notify.

Rekeying and lifetimes (RFC 7296 1.3, 2.8, 2.18; ike/tasks/create_child.py, rekey_ike.py):

    conn.create_child(child_config, now)    another Child SA on this IKE SA
    conn.rekey_child(name_or_spi_in, now)   rekey a Child SA now (ChildSARekeyed follows)
    conn.rekey_ike(now)                     rekey the IKE SA now (IKESARekeyed follows)
    conn.child_bytes(name_or_spi_in, nbytes_total, now)
                                            the gateway's byte count of a Child SA (in + out,
                                            Engine.sa_stats(h)["bytes"] of both SAs), for
                                            kilobyte lifetimes: soft limit -> rekey, hard ->
                                            delete
Lifetimes (ChildConfig.lifetime_seconds, IKEConfig.lifetime_seconds) run through
get_timer()/handle_timer(): a rekey at the randomized soft limit (ike/lifetimes.py), a
delete at the hard one. The IKEConnection stays the one object across an IKE SA rekey:
after IKESARekeyed its `spi`/`spis` are the new IKE SA's and `initiator` says whether we
initiated the rekey (the rekey's initiator is the new SA's original initiator, 2.2);
datagrams of the old SA, until its Delete is done, still go to receive_datagram().
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Optional, Sequence, Union

from .config import ChildConfig, IKEConfig
from .constants import NAT_KEEPALIVE, NON_ESP_MARKER, Exchange, Flag
from .errors import ParseError
from .events import IKESADeleted
from .ike_sa import IKESA, ChildSA, State
from .lifetimes import times
from .messages import Message, decode_header, decode_message, encode_message, split_marker
from .payloads import NotifyPayload
from .tasks.base import Task
from .tasks.ike_auth import IkeAuthInitiator, IkeAuthResponder
from .tasks.ike_init import IkeInitInitiator, IkeInitResponder
from .tasks.create_child import CreateChild, CreateChildResponder, delete_child
from .tasks.informational import DeleteChild, DeleteIKE, Liveness
from .tasks.manager import TaskManager
from .tasks.rekey_ike import InformationalDuringRekey, RekeyIKE

_ZERO_SPI = bytes(8)
_DEFAULT = object()
log = logging.getLogger("ike")


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
        self._tasks = self._manager(self._sa)
        # every live IKE SA of this connection, the current one first: after a rekey the
        # replaced SA stays until its Delete is done (2.18), and in a rekey collision the
        # peer's new SA waits here until the nonces decide (2.8.2)
        self._all: list[tuple[IKESA, TaskManager]] = [(self._sa, self._tasks)]
        self._retire_deadline: dict[int, float] = {}     # id(IKESA) -> quiet close time
        self._started: Optional[float] = None
        self._keepalive_at: Optional[float] = None     # next RFC 3948 keepalive, if behind NAT

    # -- read-only views -------------------------------------------------------------------
    @property
    def spi(self) -> bytes:
        """Our IKE SPI (the name of this IKE SA in events); zero until chosen. It changes
        when the IKE SA is rekeyed (IKESARekeyed names the old and the new one)."""
        return self._sa.our_spi

    @property
    def local_spis(self) -> list[bytes]:
        """Our SPIs of every IKE SA this connection still answers for (the current one
        first; a rekeyed one until its Delete is done): ike/endpoint.py routes by them."""
        return [sa.our_spi for sa, _ in self._all
                if sa.state != State.CLOSED and sa.our_spi != _ZERO_SPI]

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
        self._set_now(now)
        child = self._sa.children.get(spi_in.to_bytes(4, "big"))
        if self._sa.state == State.ESTABLISHED and child is not None and not child.deleting:
            child.deleting = True
            self._tasks.queue_task(DeleteChild(self._sa, [child.spi_in]), now)
        self._after(now)

    def create_child(self, child: ChildConfig, now: float) -> None:
        """Negotiate another Child SA on this IKE SA with CREATE_CHILD_SA (1.3.1);
        ChildSAEstablished (or ChildSAFailed / NoProposalChosen) follows."""
        self._set_now(now)
        if self._sa.state != State.ESTABLISHED:
            raise RuntimeError("create_child() needs an established IKE SA")
        self._tasks.queue_task(CreateChild(self._sa, child), now)
        self._after(now)

    def rekey_child(self, name_or_spi: Union[str, int], now: float) -> bool:
        """Rekey a Child SA now (1.3.3), named by its config name or its inbound SPI.
        False if there is no such Child SA or it is already being rekeyed or deleted."""
        self._set_now(now)
        child = self.find_child(name_or_spi)
        started = child is not None and self._sa.state == State.ESTABLISHED \
            and self._start_child_rekey(child, now, "operator")
        self._after(now)
        return started

    def rekey_ike(self, now: float) -> bool:
        """Rekey the IKE SA now (1.3.2, 2.18). False if not established or already rekeying."""
        self._set_now(now)
        started = self._start_ike_rekey(now, "operator")
        self._after(now)
        return started

    def child_bytes(self, name_or_spi: Union[str, int], nbytes_total: int, now: float) -> None:
        """The gateway's byte count for a Child SA (inbound + outbound SA totals). Past the
        soft kilobyte limit a rekey starts, past the hard one the SA is deleted (2.8)."""
        self._set_now(now)
        child = self.find_child(name_or_spi)
        if child is not None and self._sa.state == State.ESTABLISHED:
            child.bytes_seen = max(child.bytes_seen, int(nbytes_total))
            self._check_child(child, now)
        self._after(now)

    def find_child(self, name_or_spi: Union[str, int]) -> Optional[ChildSA]:
        """A Child SA by inbound SPI, or by name (the newest one that is not replaced)."""
        if isinstance(name_or_spi, int):
            return self._sa.children.get(name_or_spi.to_bytes(4, "big"))
        found = [c for c in self._sa.children.values()
                 if c.name == name_or_spi and not c.replaced and not c.deleting]
        return found[-1] if found else None

    def check_liveness(self, now: float) -> None:
        """Send an empty INFORMATIONAL now (RFC 7296 2.4); PeerDead if it goes unanswered."""
        if self._sa.state == State.ESTABLISHED:
            self._tasks.queue_task(Liveness(self._sa), now)

    # -- lifetimes (2.8) -----------------------------------------------------------------------
    def _start_child_rekey(self, child: ChildSA, now: float, why: str) -> bool:
        if child.rekeying or child.replaced or child.deleting or child.config is None:
            return False
        log.info("Child SA %s %08x_i: rekey (%s)", child.name,
                 int.from_bytes(child.spi_in, "big"), why)
        child.rekey_at = None
        self._tasks.queue_task(CreateChild(self._sa, child.config, child), now)
        return True

    def _start_ike_rekey(self, now: float, why: str) -> bool:
        sa = self._sa
        if sa.state != State.ESTABLISHED or sa.rekeying or sa.retired:
            return False
        log.info("IKE SA %s: rekey (%s)", sa.our_spi.hex(), why)
        sa.rekeying = True
        sa.rekey_at = None
        self._tasks.queue_task(RekeyIKE(sa), now)
        return True

    def _check_child(self, child: ChildSA, now: float) -> None:
        if child.deleting:
            return
        hard = (child.expire_at is not None and now >= child.expire_at) or \
            (child.hard_bytes and child.bytes_seen >= child.hard_bytes)
        if hard:
            log.info("Child SA %s %08x_i: hard lifetime reached, deleting", child.name,
                     int.from_bytes(child.spi_in, "big"))
            delete_child(self._sa, child)
            self._tasks.initiate(now)
            return
        soft = (child.rekey_at is not None and now >= child.rekey_at) or \
            (child.soft_bytes and child.bytes_seen >= child.soft_bytes)
        if soft:
            self._start_child_rekey(child, now, "soft lifetime")

    def _lifetime_timer(self) -> Optional[float]:
        sa = self._sa
        if sa.state != State.ESTABLISHED:
            return None
        times_ = [sa.expire_at, None if sa.rekeying else sa.rekey_at]
        for c in sa.children.values():
            if not c.deleting:
                times_.append(c.expire_at)
                if not (c.rekeying or c.replaced):
                    times_.append(c.rekey_at)
        times_ += [self._retire_deadline.get(id(other)) for other, _ in self._all
                   if other is not sa and other.state != State.CLOSED]
        times_ = [t for t in times_ if t is not None]
        return min(times_) if times_ else None

    def _lifetimes(self, now: float) -> None:
        sa = self._sa
        for other, _ in self._all:
            deadline = self._retire_deadline.get(id(other))
            if other is not sa and deadline is not None and now >= deadline \
                    and other.state != State.CLOSED:
                other.discard()     # the peer never deleted the SA it replaced: drop it
        if sa.state != State.ESTABLISHED:
            return
        if sa.expire_at is not None and now >= sa.expire_at:
            log.info("IKE SA %s: hard lifetime reached, deleting", sa.our_spi.hex())
            self._tasks.queue_task(DeleteIKE(sa), now)
            sa.expire_at = None
            return
        if sa.rekey_at is not None and now >= sa.rekey_at:
            self._start_ike_rekey(now, "soft lifetime")
        for child in list(sa.children.values()):
            self._check_child(child, now)

    # -- datagrams ------------------------------------------------------------------------------
    def receive_datagram(self, data: bytes, addr: tuple, now: float) -> None:
        sa = self._sa
        self._set_now(now)
        if self.closed:
            return
        ike, natt = split_marker(bytes(data))
        try:
            msg = decode_message(ike)
        except ParseError as err:
            self._malformed(ike, err, tuple(addr), natt)
            self._after(now)
            return
        target = next(((s, t) for s, t in self._all if s.state != State.CLOSED
                       and self._ours(s, msg)), None)
        if target is None:
            return
        sa, tasks = target
        if sa.state == State.CREATED and not sa.initiator and sa.spi_i == _ZERO_SPI:
            sa.spi_i, sa.remote_addr = msg.spi_i, tuple(addr)
            self._started = now
        tasks.receive(msg, tuple(addr), natt, now)
        self._after(now)

    @staticmethod
    def _ours(sa: IKESA, msg: Message) -> bool:
        """Does msg belong to the IKE SA `sa`, in a direction that makes sense?"""
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
        out = []
        for _, tasks in self._all:
            out += tasks.outbox
            tasks.outbox = []
        self._drop_closed()
        return out

    # -- time ----------------------------------------------------------------------------------
    def get_timer(self) -> Optional[float]:
        sa, cfg = self._sa, self._sa.config
        if sa.state == State.CLOSED:
            return None
        times = [tasks.timer() for other, tasks in self._all if other.state != State.CLOSED]
        times.append(self._lifetime_timer())
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
        self._set_now(now)
        sa, cfg = self._sa, self._sa.config
        if sa.state == State.CLOSED:
            return
        for other, tasks in list(self._all):
            if other.state != State.CLOSED:
                tasks.handle_timer(now)
        self._lifetimes(now)
        self._follow()
        sa = self._sa
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
        self._after(now)

    # -- events --------------------------------------------------------------------------------
    def next_event(self):
        # one queue shared by every IKE SA of this connection (IKESA.successor)
        return self._sa.events.popleft() if self._sa.events else None

    # -- internals -----------------------------------------------------------------------------
    def _manager(self, sa: IKESA) -> TaskManager:
        tasks: TaskManager = None

        def responder(msg: Message) -> Optional[Task]:
            return self._responder_task(sa, tasks, msg)
        tasks = TaskManager(sa, responder)
        return tasks

    def _responder_task(self, sa: IKESA, tasks: TaskManager, msg: Message) -> Optional[Task]:
        state = sa.state
        if msg.exchange == Exchange.IKE_SA_INIT and state == State.CREATED and not sa.initiator:
            return IkeInitResponder(sa)
        if msg.exchange == Exchange.IKE_AUTH and state == State.INIT_DONE and not sa.initiator:
            return IkeAuthResponder(sa)
        if msg.exchange == Exchange.INFORMATIONAL and state in (State.ESTABLISHED,
                                                                State.DELETING):
            return InformationalDuringRekey(sa, tasks.active)
        if msg.exchange == Exchange.CREATE_CHILD_SA and state in (State.ESTABLISHED,
                                                                  State.DELETING):
            return CreateChildResponder(sa, tasks.active)     # refuses when DELETING
        return None

    def _set_now(self, now: float) -> None:
        for sa, _ in self._all:
            sa.now = now

    def _after(self, now: float) -> None:
        """After every input: take on IKE SAs made by rekeys, follow a hand-over to a new
        current SA, stamp lifetimes, send what was queued, tidy up."""
        self._follow()
        for sa, tasks in self._all:
            if sa.state == State.ESTABLISHED and not sa.lifetime_set:
                sa.lifetime_set = True
                sa.rekey_at, sa.expire_at = times(now, sa.config.lifetime_seconds,
                                                  sa.random_bytes)
            if sa.state != State.CLOSED and (sa.pending or tasks.queue):
                tasks.initiate(now)
        self._cleanup()

    def _follow(self) -> None:
        changed = True
        while changed:
            changed = False
            for sa, tasks in list(self._all):
                for new in sa.spawned:
                    new_tasks = self._manager(new)
                    new_tasks.last_heard = tasks.last_heard
                    self._all.append((new, new_tasks))
                    changed = True
                sa.spawned = []
            current, tasks = self._sa, self._tasks
            if current.retired and current.replaced_by is not None:
                new = current.replaced_by
                new_tasks = next(t for s, t in self._all if s is new)
                for task in tasks.take_queue():
                    task.sa = new                   # not built yet: it runs on the new SA
                    new_tasks.queue.append(task)
                self._sa, self._tasks = new, new_tasks
                self._retire_deadline.pop(id(new), None)   # it was a collision's candidate
                self._all.sort(key=lambda pair: pair[0] is not new)
                changed = True
        # a replaced SA we do not delete ourselves closes quietly if the peer never does
        limit = sum(self._sa.config.retransmit.delay(n)
                    for n in range(self._sa.config.retransmit.tries + 1))
        for sa, tasks in self._all:
            if sa is not self._sa and id(sa) not in self._retire_deadline:
                self._retire_deadline[id(sa)] = sa.now + limit

    def _drop_closed(self) -> None:
        """Forget replaced IKE SAs once closed and their last datagrams are out."""
        keep = []
        for sa, tasks in self._all:
            if sa is self._sa or sa.state != State.CLOSED or tasks.outbox:
                keep.append((sa, tasks))
            else:
                self._retire_deadline.pop(id(sa), None)
        self._all = keep

    def _cleanup(self) -> None:
        for other, _ in self._all:
            if other.state == State.CLOSED:
                other.forget_secrets()
        self._drop_closed()
        sa = self._sa
        if sa.state == State.CLOSED:
            self._keepalive_at = None
        elif self._keepalive_at is None and sa.state == State.ESTABLISHED and sa.nat_local \
                and sa.floated and sa.config.nat_keepalive > 0 \
                and self._tasks.last_heard is not None:
            self._keepalive_at = self._tasks.last_heard + sa.config.nat_keepalive
