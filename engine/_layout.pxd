# Numbers the Cython crypto passes share with the Python/Numba side, in one place:
# engine/ops.py op-row columns, engine/algorithms.py ids, engine/drops.py values and
# engine/sa.py protocol numbers. tests/test_ops_layout.py keeps them equal.

cdef enum:
    OP_SA = 0
    OP_AUTH_OFF = 1
    OP_AUTH_LEN = 2
    OP_IV_OFF = 3
    OP_DATA_OFF = 4
    OP_DATA_LEN = 5
    OP_ICV_OFF = 6
    OP_SEQ = 7
    OP_COLS = 8

cdef enum:
    C_NULL = 0
    C_AES_CBC = 1
    C_DES3_CBC = 2
    C_DES_CBC = 3
    C_AES_CTR = 4
    C_AES_GCM = 5
    C_AES_GMAC = 6
    C_CHACHA = 7
    A_NONE = 0
    A_MD5 = 1
    A_SHA1 = 2
    A_SHA256 = 3
    A_SHA384 = 4
    A_SHA512 = 5

cdef enum:
    DROP_AUTH_FAILED = 3
    DROP_MALFORMED = 5
    PROTO_ESP = 50      # esp_* passes skip AH rows, ah_icv skips ESP rows
    PROTO_AH = 51
