"""INFORMATIONAL (RFC 7296 1.4): Delete, liveness checks, error notifies.

    HDR, SK {[N,] [D,] ...}  -->
                             <--  HDR, SK {[N,] [D,] ...}

- Deleting the IKE SA (1.4.1): D(IKE); the answer is empty; both sides close it, and its
  Child SAs with it.
- Deleting Child SAs (1.4.1): D(ESP or AH, SPIs of our inbound SAs); the peer answers with
  the SPIs of its inbound SAs of the same pairs, one Delete payload per protocol (3.11).
- Liveness / DPD (2.4): an empty request; any authentic answer proves the peer alive.
- AUTHENTICATION_FAILED from an initiator whose check of the responder failed (2.21.2):
  sent once, not waited for.
"""
from __future__ import annotations

from ..constants import Exchange, Notify, Protocol
from ..events import AuthenticationFailed, ChildSADeleted, IKESADeleted
from ..ike_sa import IKESA, State
from ..messages import Message
from ..payloads import DeletePayload, NotifyPayload
from .base import Status, Task
from .child_sa import find_by_outbound, ike_protocol


def _u32(spi: bytes) -> int:
    return int.from_bytes(spi, "big")


def _deletes(spis_by_protocol: dict) -> list[DeletePayload]:
    """One Delete payload per Child SA protocol, ESP first (3.11: one protocol each)."""
    return [DeletePayload(proto, tuple(spis)) for proto, spis in
            sorted(spis_by_protocol.items(), key=lambda kv: kv[0] != Protocol.ESP) if spis]


class DeleteIKE(Task):
    exchange = Exchange.INFORMATIONAL

    def build(self, msg: Message) -> Status:
        self.sa.state = State.DELETING
        msg.payloads.append(DeletePayload(Protocol.IKE))
        return Status.SUCCESS

    def process(self, msg: Message) -> Status:
        self.sa.terminate(IKESADeleted(self.sa.our_spi, "deleted", False))
        return Status.DESTROY


class DeleteChild(Task):
    exchange = Exchange.INFORMATIONAL

    """Delete our inbound SPIs `spis_in`. Their protocol is the recorded Child SA's, else
    `protocol` (an SA the peer made but we never recorded: a refused or redundant one)."""

    def __init__(self, sa: IKESA, spis_in: list[bytes], protocol: int = Protocol.ESP):
        super().__init__(sa)
        self.spis_in = list(spis_in)
        self.protocol = protocol

    def build(self, msg: Message) -> Status:
        by_protocol: dict = {}
        for spi in self.spis_in:
            child = self.sa.children.get(spi)
            proto = ike_protocol(child) if child is not None else self.protocol
            by_protocol.setdefault(proto, []).append(spi)
        msg.payloads += _deletes(by_protocol)
        return Status.SUCCESS

    def process(self, msg: Message) -> Status:
        # Whatever the peer answers, these SAs are gone on our side (1.4.1).
        for spi in self.spis_in:
            child = self.sa.children.pop(spi, None)
            if child is not None:
                self.sa.emit(ChildSADeleted(self.sa.our_spi, child.name, _u32(child.spi_in),
                                            _u32(child.spi_out), False))
        return Status.SUCCESS


class Liveness(Task):
    """An empty INFORMATIONAL request (2.4)."""
    exchange = Exchange.INFORMATIONAL

    def build(self, msg: Message) -> Status:
        return Status.SUCCESS

    def process(self, msg: Message) -> Status:
        return Status.SUCCESS


class NotifyError(Task):
    """A one-way error notify (sent with TaskManager.send_and_forget)."""
    exchange = Exchange.INFORMATIONAL

    def __init__(self, sa: IKESA, notify: int):
        super().__init__(sa)
        self.notify = notify

    def build(self, msg: Message) -> Status:
        msg.payloads.append(NotifyPayload(self.notify))
        return Status.SUCCESS

    def process(self, msg: Message) -> Status:
        return Status.SUCCESS


class InformationalResponder(Task):
    exchange = Exchange.INFORMATIONAL

    def __init__(self, sa: IKESA):
        super().__init__(sa)
        self.delete_ike = False
        self.auth_failed = False
        self.children = []

    def process(self, msg: Message) -> Status:
        for d in msg.all(DeletePayload):
            if d.protocol == Protocol.IKE:
                self.delete_ike = True
            elif d.protocol in (Protocol.ESP, Protocol.AH):
                for spi in d.spis:             # the peer's inbound = our outbound SPIs
                    child = find_by_outbound(self.sa, spi)
                    if child is not None and child not in self.children \
                            and ike_protocol(child) == d.protocol:
                        self.children.append(child)
        self.auth_failed = msg.notify(Notify.AUTHENTICATION_FAILED) is not None
        return Status.SUCCESS

    def build(self, msg: Message) -> Status:
        sa = self.sa
        if self.auth_failed:
            sa.terminate(AuthenticationFailed(sa.our_spi, "peer sent AUTHENTICATION_FAILED",
                                              True))
            return Status.DESTROY
        if self.delete_ike:
            sa.terminate(IKESADeleted(sa.our_spi, "deleted by peer", True))
            return Status.DESTROY
        if self.children:
            for child in self.children:
                sa.children.pop(child.spi_in, None)
                sa.emit(ChildSADeleted(sa.our_spi, child.name, _u32(child.spi_in),
                                       _u32(child.spi_out), True))
            by_protocol: dict = {}
            for c in self.children:
                by_protocol.setdefault(ike_protocol(c), []).append(c.spi_in)
            msg.payloads += _deletes(by_protocol)
        return Status.SUCCESS
