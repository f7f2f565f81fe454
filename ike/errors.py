"""The IKE core's exceptions. Each has one meaning and one handling rule.

- ParseError: bytes that are not a well-formed IKEv2 message or payload (RFC 7296 3).
  The parser raises nothing else, whatever the input (tests/test_ike_messages.py fuzzes it).
- IntegrityError: an SK payload whose ICV or decryption fails. RFC 7296 2.21: such
  messages are dropped silently (they may be forged); never answered.
- ProtocolError: a well-formed message that must be refused with a notify (for example
  NO_PROPOSAL_CHOSEN); tasks raise it and the task manager turns it into the response.
"""
from __future__ import annotations

from .constants import Notify, notify_name


class ParseError(ValueError):
    """Malformed IKE data. `notify` is the error type to answer with, when answering is
    allowed (INVALID_SYNTAX, or UNSUPPORTED_CRITICAL_PAYLOAD / INVALID_MAJOR_VERSION);
    `data` is that notify's data (the payload type for UNSUPPORTED_CRITICAL_PAYLOAD)."""

    def __init__(self, message: str, notify: int = Notify.INVALID_SYNTAX, data: bytes = b""):
        super().__init__(message)
        self.notify = notify
        self.data = data


class IntegrityError(Exception):
    """An SK payload failed its integrity check or could not be decrypted."""


class ProtocolError(Exception):
    """Refuse the current request (or abandon the current exchange) with `notify`."""

    def __init__(self, notify: int, message: str = "", data: bytes = b""):
        super().__init__(message or notify_name(notify))
        self.notify = notify
        self.data = data
