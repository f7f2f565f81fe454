"""Drop reasons: one enum feeds every counter array, the stats JSON and `spu status`.

A packet that leaves the data path without being written is counted under exactly one
reason (VPP's foreach_ipsec_sa_err). Value 0 means "not dropped". The numeric values are
the indices used by the Numba and Cython kernels, so never renumber them.
"""
from __future__ import annotations

from enum import IntEnum


class Drop(IntEnum):
    NONE = 0
    NO_POLICY = 1        # encrypt: no outbound SA selector matched
    NO_SA = 2            # decrypt: no inbound SA for (SPI, dst, proto), or not IPsec at all
    AUTH_FAILED = 3      # ICV / AEAD tag did not verify
    REPLAY = 4           # sequence number outside or already seen in the window
    MALFORMED = 5        # structurally impossible packet (see CONTRACT-SPU.md)
    POLICY_MISMATCH = 6  # decrypted inner packet outside the SA's selector
    SEQ_EXHAUSTED = 7    # outbound sequence space used up; the SA stops sending
    KEEPALIVE = 8        # RFC 3948 NAT keepalive (one 0xFF byte)
    DUMMY = 9            # RFC 4303 next header 59 (TFC dummy packet)


N_DROPS = len(Drop)

#: Names as they appear in --stats-json and `spu status` (every reason but NONE).
DROP_NAMES = [d.name.lower() for d in Drop if d is not Drop.NONE]


def drop_dict(counts) -> dict[str, int]:
    """Map a counter vector indexed by Drop to {"no_sa": n, ...} (all reasons present)."""
    return {d.name.lower(): int(counts[d]) for d in Drop if d is not Drop.NONE}
