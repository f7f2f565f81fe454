"""The task contract (strongSwan's task.h, STYLE.md 2).

An initiator task builds a request, then processes the response. A responder task
processes a request, then builds the response. Both return a Status:

    SUCCESS    exchange done, the IKE SA carries on
    NEED_MORE  initiator only: build and send the request again, same message ID
               (IKE_SA_INIT after COOKIE or INVALID_KE_PAYLOAD, RFC 7296 2.6, 1.2)
    FAILED     the IKE SA ends (the task has already emitted the terminal event, or the
               manager emits IKESADeleted)
    DESTROY    the IKE SA ends as intended (a Delete of the IKE SA)

A responder's process() may raise ProtocolError: the response becomes that notify alone;
when the exchange is `fatal` (IKE_SA_INIT, IKE_AUTH), the IKE SA ends too. An initiator's
process() may raise ParseError for a response it cannot use.
"""
from __future__ import annotations

from enum import Enum
from typing import ClassVar, Optional

from ..ike_sa import IKESA
from ..messages import Message


class Status(Enum):
    SUCCESS = "success"
    NEED_MORE = "need-more"
    FAILED = "failed"
    DESTROY = "destroy"


class Task:
    exchange: ClassVar[int]
    fatal: ClassVar[bool] = False      # a refused request ends the IKE SA

    def __init__(self, sa: IKESA):
        self.sa = sa
        #: an initiator task that FAILED may leave one request to send without waiting
        #: for its answer (RFC 7296 2.21.2: AUTHENTICATION_FAILED from the initiator).
        self.followup: Optional["Task"] = None

    def build(self, msg: Message) -> Status:
        raise NotImplementedError

    def process(self, msg: Message) -> Status:
        raise NotImplementedError
