"""Junos `$9$` secrets: the reversible encoding `show configuration` prints keys in.

An SRX shows `pre-shared-key ascii-text "$9$..."` and manual keys the same way; pasting that
must work. `$9$` is an obfuscation with public constants, not encryption (there is no key):
after the magic, one start character chooses how many filler characters follow it; then
each byte of the secret is spelt by 2-4 characters whose distances in a 65-character
alphabet are the digits of the byte in a position-dependent mixed radix.
"""
from __future__ import annotations

MAGIC = "$9$"

# The alphabet, in four groups; the group of the start character says how many filler
# characters follow it (3 for the first group ... 0 for the last).
_GROUPS = ("QzF3n6/9CAtpu0O", "B1IREhcSyrleKvMW8LXx", "7N-dVbwsY2g4oaJZGUDj", "iHkq.mPf5T")
_ALPHABET = "".join(_GROUPS)
_INDEX = {c: i for i, c in enumerate(_ALPHABET)}
_FILLER = {c: 3 - g for g, group in enumerate(_GROUPS) for c in group}
# Digit weights of byte k are _WEIGHTS[k % 7]: one character per weight.
_WEIGHTS = ((1, 4, 32), (1, 16, 32), (1, 8, 32), (1, 64), (1, 32), (1, 4, 16, 128),
            (1, 32, 64))


def is_encoded(text: str) -> bool:
    return text.startswith(MAGIC)


def decode(text: str) -> bytes:
    """The secret behind a `$9$` string. ValueError (never showing the text) if malformed."""
    body = text[len(MAGIC):] if is_encoded(text) else ""
    if not body or any(c not in _INDEX for c in body):
        raise ValueError("not a valid $9$ value")
    prev = body[0]
    pos = 1 + _FILLER[prev]
    out = bytearray()
    while pos < len(body):
        weights = _WEIGHTS[len(out) % len(_WEIGHTS)]
        chunk = body[pos:pos + len(weights)]
        if len(chunk) != len(weights):
            raise ValueError("not a valid $9$ value (truncated)")
        value = 0
        for c, w in zip(chunk, weights):
            value += ((_INDEX[c] - _INDEX[prev]) % len(_ALPHABET) - 1) * w
            prev = c
        out.append(value % 256)
        pos += len(weights)
    if not out:
        raise ValueError("not a valid $9$ value (empty)")
    return bytes(out)
