"""The op list: what the prepare kernels hand to the native crypto pass, per packet.

`ops` is an int64 array [capacity, OP_COLS]. The Numba prepare kernels fill a row for every
packet that is still alive (batch.drop == 0); the Cython pass (engine/_crypto.pyx, which
repeats these numbers in a `cdef enum` checked by tests/test_ops_layout.py) reads them.
Offsets are absolute indices into batch.buf.
"""
OP_SA = 0         # SA slot
OP_AUTH_OFF = 1   # start of the integrity-protected region (ESP header; AH: IP header)
OP_AUTH_LEN = 2   # its length (ESP: header + IV + ciphertext; AH: the whole packet)
OP_IV_OFF = 3     # where the per-packet IV lives (ESP header + 8; AH: the AH header)
OP_DATA_OFF = 4   # first byte to encrypt/decrypt (AH: first byte after the AH header)
OP_DATA_LEN = 5   # bytes to encrypt/decrypt (payload + padding + 2-byte trailer; AH: payload)
OP_ICV_OFF = 6    # where the ICV is (ESP: after the ciphertext; AH: inside the AH header)
OP_SEQ = 7        # full 64-bit sequence number (ESN high bits included), as int64 bits
OP_COLS = 8
