"""Requests for exchanges this core does not carry out yet.

CREATE_CHILD_SA (RFC 7296 1.3: rekeying, additional Child SAs) is later work; until then
a request is refused with NO_ADDITIONAL_SAS, which 1.3 names for a responder that will
not create more Child SAs on this IKE SA. The IKE SA itself stays up.
"""
from __future__ import annotations

from ..constants import Exchange, Notify
from ..errors import ProtocolError
from ..messages import Message
from .base import Status, Task


class CreateChildResponder(Task):
    exchange = Exchange.CREATE_CHILD_SA

    def process(self, msg: Message) -> Status:
        raise ProtocolError(Notify.NO_ADDITIONAL_SAS, "CREATE_CHILD_SA is not implemented")

    def build(self, msg: Message) -> Status:
        return Status.SUCCESS
