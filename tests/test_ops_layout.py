"""The op-list column numbers are written twice (engine/ops.py for Numba, a cdef enum in
engine/_crypto.pyx for Cython); this test keeps them equal, and the same for the
algorithm ids and drop reasons the .pyx repeats."""
import re
from pathlib import Path

from engine import ops
from engine.algorithms import Auth, Cipher
from engine.drops import Drop

PYX = (Path(__file__).resolve().parent.parent / "engine" / "_crypto.pyx").read_text()


def _enum_value(name: str) -> int:
    m = re.search(rf"^\s+{name} = (\d+)$", PYX, re.M)
    assert m, f"{name} not in _crypto.pyx"
    return int(m.group(1))


def test_op_columns_match():
    for name in ("OP_SA", "OP_AUTH_OFF", "OP_AUTH_LEN", "OP_IV_OFF", "OP_DATA_OFF",
                 "OP_DATA_LEN", "OP_ICV_OFF", "OP_SEQ", "OP_COLS"):
        assert _enum_value(name) == getattr(ops, name), name


def test_algorithm_ids_match():
    pairs = {"C_NULL": Cipher.NULL, "C_AES_CBC": Cipher.AES_CBC, "C_DES3_CBC": Cipher.DES3_CBC,
             "C_DES_CBC": Cipher.DES_CBC, "C_AES_CTR": Cipher.AES_CTR,
             "C_AES_GCM": Cipher.AES_GCM, "C_AES_GMAC": Cipher.AES_GMAC,
             "C_CHACHA": Cipher.CHACHA20_POLY1305, "A_NONE": Auth.NONE, "A_MD5": Auth.HMAC_MD5,
             "A_SHA1": Auth.HMAC_SHA1, "A_SHA256": Auth.HMAC_SHA256,
             "A_SHA384": Auth.HMAC_SHA384, "A_SHA512": Auth.HMAC_SHA512}
    for name, value in pairs.items():
        assert _enum_value(name) == int(value), name


def test_drop_values_match():
    assert _enum_value("DROP_AUTH_FAILED") == Drop.AUTH_FAILED
    assert _enum_value("DROP_MALFORMED") == Drop.MALFORMED
