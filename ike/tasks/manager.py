"""The task manager of one IKE SA: message IDs, a window of one, retransmission, and the
cached last response (RFC 7296 2.1-2.3).

- Our requests carry message IDs 0, 1, 2, ... in order; one is in flight at a time (a
  window of one: we never send SET_WINDOW_SIZE). It is retransmitted, the same bytes to
  the same address, at sent + timeout * base**n until answered or out of tries; then the
  peer is dead (2.4).
- Requests from the peer must carry the next expected message ID. One carrying the
  previous ID is a retransmission: the cached response goes out again, unprocessed.
- SK protection happens here (every exchange except IKE_SA_INIT); a request that fails
  its integrity check is dropped unanswered (2.21), an authenticated one that is
  malformed is answered with INVALID_SYNTAX.
- Responses go back to the address and port the request came from, framed as it was
  (with the RFC 3948 non-ESP marker when it had one); our requests go to the SA's
  current remote address, with the marker once the SA has moved to the NAT-T port.
Time only enters as the `now` arguments.
"""
from __future__ import annotations

from collections import deque
from typing import Callable, Optional

from ..constants import NON_ESP_MARKER, Exchange, Flag, Notify
from ..errors import IntegrityError, ParseError, ProtocolError
from ..events import IKESADeleted, PeerDead
from ..ike_sa import IKESA, State
from ..fragments import Reassembler, defragment, encode_datagrams
from ..messages import Message, open_message
from ..payloads import EncryptedFragmentPayload, NotifyPayload
from .base import Status, Task
from .informational import DeleteIKE

Datagram = tuple   # (bytes, (host, port))
_KNOWN = tuple(Exchange)


class TaskManager:
    def __init__(self, sa: IKESA, make_responder: Callable[[Message], Optional[Task]]):
        self.sa = sa
        self.make_responder = make_responder
        self.queue: deque[Task] = deque()
        self.outbox: list[Datagram] = []
        self.active: Optional[Task] = None
        self._request: Optional[list] = None          # framed request (fragments) in flight
        self._msgid_out = 0                           # ID of our next/current request
        self._msgid_in = 0                            # ID we expect on the peer's next request
        self._cached: Optional[list] = None           # our response to request _msgid_in - 1
        self._tries = 0
        self._deadline: Optional[float] = None
        self.last_heard: Optional[float] = None       # last authentic message from the peer
        # RFC 7383: one request and one response may be arriving in fragments
        self._fragments = Reassembler(timeout=sa.config.fragment_timeout)

    # -- our requests --------------------------------------------------------------------------
    @property
    def idle(self) -> bool:
        return self.active is None and not self.queue

    def queue_task(self, task: Task, now: float) -> None:
        self.queue.append(task)
        self.initiate(now)

    def initiate(self, now: float) -> None:
        if self.sa.pending:
            self.queue.extend(self.sa.pending)
            self.sa.pending.clear()
        while self.active is None and self.queue and self.sa.state != State.CLOSED:
            task = self.queue.popleft()
            if self.sa.retired and not isinstance(task, DeleteIKE):
                # replaced by a rekeyed IKE SA (2.18): only its Delete goes out on it;
                # ike/connection.py moves the rest to the new SA
                self.queue.appendleft(task)
                return
            obsolete = getattr(task, "obsolete", None)
            if obsolete is not None and obsolete():
                continue            # e.g. a rekey of a Child SA that is gone meanwhile
            self.active = task
            self._send_request(now)

    def take_queue(self) -> list[Task]:
        """The queued requests other than deletes of this SA (for the IKE SA that replaces
        it, 2.18)."""
        keep, moved = deque(), []
        for task in list(self.queue) + self.sa.pending:
            (keep if isinstance(task, DeleteIKE) else moved).append(task)
        self.queue, self.sa.pending = keep, []
        return moved

    def _send_request(self, now: float) -> None:
        task, sa = self.active, self.sa
        flags = Flag.INITIATOR if sa.initiator else 0
        msg = Message(sa.spi_i, sa.spi_r, task.exchange, self._msgid_out, flags)
        task.build(msg)
        protect = None if task.exchange == Exchange.IKE_SA_INIT else sa.protect_out
        datas = self._encode(msg, protect, sa.floated)
        if task.exchange == Exchange.IKE_SA_INIT:
            sa.init_request = datas[0]
        # a list: all fragments of a request go out, and are retransmitted, together
        self._request = [(NON_ESP_MARKER + d if sa.floated else d, sa.remote_addr)
                         for d in datas]
        self.outbox += self._request
        self._tries = 0
        self._deadline = now + sa.config.retransmit.delay(0)

    def _encode(self, msg: Message, protect, natt: bool) -> list[bytes]:
        """One message, or its RFC 7383 fragments once both sides announced support."""
        sa = self.sa
        return encode_datagrams(msg, protect, natt=natt,
                                fragment=sa.peer_fragmentation and sa.config.fragmentation,
                                fragment_size=sa.config.fragment_size,
                                remote_host=sa.remote_addr[0] if sa.remote_addr else None)

    def _finish_request(self, now: float) -> None:
        self.active = None
        self._request = None
        self._deadline = None
        self._msgid_out = (self._msgid_out + 1) & 0xFFFFFFFF
        self.initiate(now)

    def send_and_forget(self, task: Task, now: float) -> None:
        """One last request whose answer we will not wait for (2.21.2)."""
        self.active = task
        self._send_request(now)
        self.active, self._request, self._deadline = None, None, None

    # -- timers ----------------------------------------------------------------------------
    def timer(self) -> Optional[float]:
        return self._deadline

    def handle_timer(self, now: float) -> None:
        if self._deadline is None or now < self._deadline or self._request is None:
            return
        policy = self.sa.config.retransmit
        if self._tries >= policy.tries:
            exchange = self.active.exchange
            self.active, self._request, self._deadline = None, None, None
            self.queue.clear()
            self.sa.terminate(PeerDead(self.sa.our_spi, exchange))
            return
        self._tries += 1
        self.outbox += self._request
        self._deadline = now + policy.delay(self._tries)

    # -- incoming ----------------------------------------------------------------------------
    def receive(self, msg: Message, addr, natt: bool, now: float) -> None:
        if self.sa.state == State.CLOSED:
            return
        msg.source = addr
        if isinstance(msg.sk, EncryptedFragmentPayload):
            msg = self._defragment(msg, now)
            if msg is None:
                return
        if msg.is_response:
            self._on_response(msg, addr, natt, now)
        else:
            self._on_request(msg, addr, natt, now)
        self.initiate(now)

    def _defragment(self, msg: Message, now: float) -> Optional[Message]:
        """RFC 7383 2.6: keep authentic fragments of the response we wait for or of the
        next request; the whole message once complete. Fragment 1 of the previous
        request passes as is: it alone makes us resend the cached response (2.6.2)."""
        self._fragments.expire(now)
        if msg.is_response:
            if self.active is None or msg.message_id != self._msgid_out \
                    or msg.exchange != self.active.exchange:
                return None
        elif msg.message_id != self._msgid_in:
            previous = self._cached is not None and \
                msg.message_id == (self._msgid_in - 1) & 0xFFFFFFFF
            return msg if previous and msg.sk.number == 1 else None
        return defragment(self._fragments, self.sa.protect_in, msg, now)

    def _authentic(self, addr, natt: bool, now: float) -> None:
        """An authenticated message arrived: note the time (DPD) and, behind a NAT, follow
        the peer's address and port (2.23)."""
        self.last_heard = now
        sa = self.sa
        if natt and not sa.floated:
            sa.floated = True
            sa.local_port = sa.config.nat_t_port
        if sa.nat and addr != sa.remote_addr:
            sa.remote_addr = addr

    def _on_response(self, msg: Message, addr, natt: bool, now: float) -> None:
        task = self.active
        if task is None or msg.message_id != self._msgid_out or msg.exchange != task.exchange:
            return
        if task.exchange != Exchange.IKE_SA_INIT:
            try:
                msg = open_message(msg, self.sa.protect_in)
            except IntegrityError:
                return
            except ParseError as err:
                self._abandon(f"malformed {Exchange(task.exchange).name} response: {err}", now)
                return
            self._authentic(addr, natt, now)
        try:
            status = task.process(msg)
        except (ParseError, ProtocolError) as err:
            if task.exchange == Exchange.IKE_SA_INIT:
                return          # unauthenticated and possibly forged: keep waiting (2.21.1)
            self._abandon(f"unusable {Exchange(task.exchange).name} response: {err}", now)
            return
        if task.exchange == Exchange.IKE_SA_INIT:
            self.last_heard = now
        if status == Status.NEED_MORE:
            self._send_request(now)
        elif status == Status.SUCCESS:
            self._finish_request(now)
        else:
            self._finish_request_closing(task, status, now)

    def _finish_request_closing(self, task: Task, status: Status, now: float) -> None:
        self.active, self._request, self._deadline = None, None, None
        self._msgid_out = (self._msgid_out + 1) & 0xFFFFFFFF
        self.queue.clear()
        if task.followup is not None:
            self.send_and_forget(task.followup, now)
        if self.sa.state != State.CLOSED:
            reason = "deleted" if status == Status.DESTROY else \
                f"{Exchange(task.exchange).name} failed"
            self.sa.terminate(IKESADeleted(self.sa.our_spi, reason, False))

    def _abandon(self, reason: str, now: float) -> None:
        self.active, self._request, self._deadline = None, None, None
        self.queue.clear()
        self.sa.terminate(IKESADeleted(self.sa.our_spi, reason, False))

    def _on_request(self, msg: Message, addr, natt: bool, now: float) -> None:
        sa = self.sa
        if self._cached is not None and msg.message_id == (self._msgid_in - 1) & 0xFFFFFFFF:
            self.outbox += [(d, addr) for d, _ in self._cached]   # retransmission (2.1)
            return
        if msg.message_id != self._msgid_in:
            return
        protected = msg.exchange != Exchange.IKE_SA_INIT
        refusal: Optional[ProtocolError] = None
        if protected:
            if sa.protect_in is None or msg.sk is None:
                return
            try:
                msg = open_message(msg, sa.protect_in)
            except IntegrityError:
                return
            except ParseError as err:       # authentic but malformed: INVALID_SYNTAX & co
                refusal = ProtocolError(err.notify, str(err), err.data)
            self._authentic(addr, natt, now)
        task = self.make_responder(msg) if refusal is None else None
        if task is None and refusal is None:
            if not protected or msg.exchange not in _KNOWN:
                return          # unauthenticated, or an exchange type we do not know
            # authentic, but not an exchange this SA takes now: refuse it, keep the SA
            refusal = ProtocolError(Notify.INVALID_SYNTAX, "unexpected exchange")
        flags = Flag.RESPONSE | (Flag.INITIATOR if sa.initiator else 0)
        response = Message(sa.spi_i, sa.spi_r, msg.exchange, msg.message_id, flags)
        status, refusal = self._run_responder(task, msg, response, refusal)
        datas = self._encode(response, sa.protect_out if protected else None, natt)
        if msg.exchange == Exchange.IKE_SA_INIT and refusal is None:
            sa.init_response = datas[0]
            self.last_heard = now
        self._cached = [(NON_ESP_MARKER + d if natt else d, addr) for d in datas]
        self.outbox += self._cached
        self._msgid_in = (self._msgid_in + 1) & 0xFFFFFFFF
        if refusal is not None and msg.exchange == Exchange.IKE_SA_INIT:
            sa.discard()                   # a stateless refusal (COOKIE, INVALID_KE, ...)
        if status in (Status.FAILED, Status.DESTROY):
            if sa.state != State.CLOSED:
                reason = "deleted by peer" if status == Status.DESTROY else \
                    f"{Exchange(msg.exchange).name} refused: {refusal}"
                sa.terminate(IKESADeleted(sa.our_spi, reason, status == Status.DESTROY))
            self.queue.clear()
            self.active, self._request, self._deadline = None, None, None

    def _run_responder(self, task: Optional[Task], msg: Message, response: Message,
                       refusal: Optional[ProtocolError]):
        """process() then build(); a ProtocolError (or an earlier refusal) makes the
        response that notify alone. Returns (status, refusal)."""
        status = Status.SUCCESS
        if refusal is None:
            try:
                status = task.process(msg)
                response.spi_r = self.sa.spi_r     # IKE_SA_INIT: just chosen by process()
                status = _worse(status, task.build(response))
            except ProtocolError as err:
                refusal = err
        if refusal is not None:
            response.payloads = [NotifyPayload(refusal.notify, refusal.data)]
            if msg.exchange == Exchange.IKE_SA_INIT:
                response.spi_r = bytes(8)          # stateless error answer (2.6, 1.2)
            fatal = task.fatal if task is not None else \
                msg.exchange == Exchange.IKE_AUTH and self.sa.state == State.INIT_DONE
            status = Status.FAILED if fatal else Status.SUCCESS
        return status, refusal


def _worse(a: Status, b: Status) -> Status:
    order = [Status.SUCCESS, Status.NEED_MORE, Status.DESTROY, Status.FAILED]
    return a if order.index(a) >= order.index(b) else b

