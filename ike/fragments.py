"""IKEv2 message fragmentation (RFC 7383).

    encode_datagrams(msg, protector, fragment_size=..., ...) -> [bytes, ...]
    open_fragment(msg, protector)                         -> (number, total, first, plain)
    Reassembler.add(key, number, total, first, plain, now) -> (first, plaintext) or None

Once both sides sent IKEV2_FRAGMENTATION_SUPPORTED in IKE_SA_INIT (2.3), a protected
message whose datagram would exceed `fragment_size` (the whole IP datagram, as charon's
fragment_size counts it) is sent as Total Fragments messages, each an SKF payload holding
a slice of the SK payload's plaintext, encrypted and integrity-protected on its own (2.5).
All fragments share the message ID and are retransmitted together (2.6.3).

Receiving (2.6): each fragment is authenticated before it is kept; duplicates are ignored;
a set with a larger Total Fragments replaces a smaller one (the sender shrank its
fragments, 2.5.2), a smaller one is ignored; sets are bounded in count, in total size and
in time (an incomplete set expires). Keys are the caller's: (message ID, is_response).
"""
from __future__ import annotations

import ipaddress
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Optional

from .constants import GENERIC_HEADER_LEN, HEADER_LEN, IKEV2_VERSION, PayloadType
from .errors import IntegrityError, ParseError
from .messages import Message, SKProtector, encode_chain, encode_message
from .payloads import EncryptedFragmentPayload, ReassembledPayload

#: Most fragments in one message we accept (charon: max_packet 10000 at ~560-byte minimum
#: fragments is under 20; RFC 7383 sets no number).
MAX_FRAGMENTS = 64
#: Most plaintext bytes a reassembled message may hold (a UDP datagram's worth).
MAX_REASSEMBLED = 65535
_HEADER = struct.Struct("!8s8sBBBBII")
_SKF_HEADER = GENERIC_HEADER_LEN + 4          # generic header + Fragment Number + Total
_UDP, _IPV4, _IPV6, _MARKER = 8, 20, 40, 4


def _ip_overhead(host: Optional[str]) -> int:
    try:
        return _IPV6 if ipaddress.ip_address(host or "").version == 6 else _IPV4
    except ValueError:
        return _IPV4


def _max_chunk(protector: SKProtector, room: int) -> int:
    """The largest plaintext slice whose sealed SKF payload fits `room` bytes."""
    n = room
    while n > 0 and protector.sealed_len(n) > room:
        n -= 1
    return n


def fragment_message(msg: Message, protector: SKProtector, room: int) -> list[bytes]:
    """msg's payloads as SKF fragments, each message at most `room` bytes (2.5)."""
    first, chain = encode_chain(list(msg.payloads))
    chunk = _max_chunk(protector, room - HEADER_LEN - _SKF_HEADER)
    if chunk < 1:
        raise ValueError(f"fragment size leaves no room for data ({room} bytes)")
    pieces = [chain[i:i + chunk] for i in range(0, len(chain), chunk)] or [b""]
    if len(pieces) > MAX_FRAGMENTS:
        raise ValueError(f"message needs {len(pieces)} fragments (limit {MAX_FRAGMENTS})")
    out = []
    for number, piece in enumerate(pieces, 1):
        sealed_len = protector.sealed_len(len(piece))
        total_len = HEADER_LEN + _SKF_HEADER + sealed_len
        prefix = _HEADER.pack(msg.spi_i, msg.spi_r, PayloadType.SKF, IKEV2_VERSION,
                              msg.exchange, msg.flags, msg.message_id, total_len) + \
            struct.pack("!BBHHH", first if number == 1 else PayloadType.NONE, 0,
                        _SKF_HEADER + sealed_len, number, len(pieces))
        out.append(prefix + protector.seal(prefix, piece))
    msg.raw = out[0]
    return out


def encode_datagrams(msg: Message, protector: Optional[SKProtector], *, fragment: bool,
                     fragment_size: int = 1280, remote_host: Optional[str] = None,
                     natt: bool = False) -> list[bytes]:
    """The IKE message(s) for msg (without the non-ESP marker): one unless fragmentation
    was negotiated and the datagram would exceed `fragment_size` (IP + UDP + marker
    included)."""
    if protector is None or not fragment:
        return [encode_message(msg, protector)]
    room = fragment_size - _ip_overhead(remote_host) - _UDP - (_MARKER if natt else 0)
    _, chain = encode_chain(list(msg.payloads))
    if HEADER_LEN + GENERIC_HEADER_LEN + protector.sealed_len(len(chain)) <= room:
        return [encode_message(msg, protector)]
    return fragment_message(msg, protector, room)


def open_fragment(msg: Message, protector: SKProtector) -> tuple[int, int, int, bytes]:
    """Authenticate and decrypt one SKF message: (number, total, first inner payload type,
    plaintext slice). Raises IntegrityError (drop it silently) or ParseError."""
    skf = msg.sk
    if not isinstance(skf, EncryptedFragmentPayload):
        raise ParseError("not an SKF message")
    plain = protector.open(msg.raw[:skf.offset + skf.header_len], skf.body)
    return skf.number, skf.total, skf.first_inner, plain


@dataclass
class _Set:
    total: int
    started: float
    first_inner: int = PayloadType.NONE
    parts: dict = field(default_factory=dict)
    size: int = 0


class Reassembler:
    """Fragment sets by key, bounded: at most `max_sets` sets, `max_fragments` per set,
    `max_size` plaintext bytes per set, `timeout` seconds from a set's first fragment."""

    def __init__(self, *, max_fragments: int = MAX_FRAGMENTS, max_size: int = MAX_REASSEMBLED,
                 timeout: float = 30.0, max_sets: int = 2):
        self.max_fragments, self.max_size = max_fragments, max_size
        self.timeout, self.max_sets = timeout, max_sets
        self._sets: dict = {}
        self._done: deque = deque(maxlen=8)    # keys completed lately: late copies ignored
        self.dropped = 0            # fragments refused by a limit (for counters/tests)

    def __len__(self) -> int:
        return len(self._sets)

    def expire(self, now: float) -> None:
        for key in [k for k, s in self._sets.items() if now - s.started > self.timeout]:
            del self._sets[key]

    def discard(self, key) -> None:
        self._sets.pop(key, None)

    def add(self, key, number: int, total: int, first_inner: int, plaintext: bytes,
            now: float) -> Optional[tuple[int, bytes]]:
        """Keep one authenticated fragment. Returns (first inner payload type, the whole
        plaintext) when the set is complete, else None."""
        self.expire(now)
        if key in self._done:
            return None
        if not 1 <= number <= total or total > self.max_fragments:
            self.dropped += 1
            return None
        current = self._sets.get(key)
        if current is not None and total != current.total:
            if total < current.total:       # 2.6.2: an older, larger fragment size
                self.dropped += 1
                return None
            current = None                  # the sender re-fragmented smaller: start over
        if current is None:
            if key not in self._sets and len(self._sets) >= self.max_sets:
                self.dropped += 1
                return None
            current = self._sets[key] = _Set(total, now)
        if number in current.parts:
            return None                     # duplicate
        if current.size + len(plaintext) > self.max_size:
            del self._sets[key]
            self.dropped += 1
            return None
        current.parts[number] = plaintext
        current.size += len(plaintext)
        if number == 1:
            current.first_inner = first_inner
        if len(current.parts) < current.total:
            return None
        del self._sets[key]
        self._done.append(key)
        return current.first_inner, b"".join(current.parts[i] for i in range(1, total + 1))


def reassembled(msg: Message, first_inner: int, plaintext: bytes) -> Message:
    """A Message standing for the whole fragmented one; open_message() parses it."""
    return Message(msg.spi_i, msg.spi_r, msg.exchange, msg.message_id, msg.flags,
                   [ReassembledPayload(first_inner, b"", HEADER_LEN, plaintext)], msg.raw,
                   PayloadType.SK, msg.source)


def defragment(reassembler: Reassembler, protector: Optional[SKProtector], msg: Message,
               now: float) -> Optional[Message]:
    """Feed one SKF message; the reassembled Message once its set is complete. Fragments
    that fail authentication or parsing are dropped (RFC 7383 2.6.2, RFC 7296 2.21)."""
    if protector is None:
        return None
    try:
        number, total, first, plain = open_fragment(msg, protector)
    except (IntegrityError, ParseError):
        return None
    done = reassembler.add((msg.message_id, msg.is_response), number, total, first, plain,
                           now)
    if done is None:
        return None
    return reassembled(msg, *done)
