"""The op-list column numbers are written twice (engine/ops.py for Numba, cdef enums in
engine/_layout.pxd, cimported by _crypto.pyx and _mb.pyx); this test keeps them equal, and
the same for the algorithm ids and drop reasons the .pxd repeats."""
import re
from pathlib import Path

import pytest

from engine import ops
from engine.algorithms import Auth, Cipher
from engine.drops import Drop

ENGINE = Path(__file__).resolve().parent.parent / "engine"


@pytest.fixture(params=["_layout.pxd"])
def enum_value(request):
    """name -> value of a `cdef enum` member in the shared .pxd."""
    text = (ENGINE / request.param).read_text()

    def value(name: str) -> int:
        m = re.search(rf"^\s+{name} = (\d+)$", text, re.M)
        assert m, f"{name} not in {request.param}"
        return int(m.group(1))
    return value


def test_op_columns_match(enum_value):
    for name in ("OP_SA", "OP_AUTH_OFF", "OP_AUTH_LEN", "OP_IV_OFF", "OP_DATA_OFF",
                 "OP_DATA_LEN", "OP_ICV_OFF", "OP_SEQ", "OP_COLS"):
        assert enum_value(name) == getattr(ops, name), name


def test_algorithm_ids_match(enum_value):
    pairs = {"C_NULL": Cipher.NULL, "C_AES_CBC": Cipher.AES_CBC, "C_DES3_CBC": Cipher.DES3_CBC,
             "C_DES_CBC": Cipher.DES_CBC, "C_AES_CTR": Cipher.AES_CTR,
             "C_AES_GCM": Cipher.AES_GCM, "C_AES_GMAC": Cipher.AES_GMAC,
             "C_CHACHA": Cipher.CHACHA20_POLY1305, "A_NONE": Auth.NONE, "A_MD5": Auth.HMAC_MD5,
             "A_SHA1": Auth.HMAC_SHA1, "A_SHA256": Auth.HMAC_SHA256,
             "A_SHA384": Auth.HMAC_SHA384, "A_SHA512": Auth.HMAC_SHA512}
    for name, value in pairs.items():
        assert enum_value(name) == int(value), name


def test_drop_values_match(enum_value):
    assert enum_value("DROP_AUTH_FAILED") == Drop.AUTH_FAILED
    assert enum_value("DROP_MALFORMED") == Drop.MALFORMED
