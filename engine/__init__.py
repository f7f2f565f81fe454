"""pyspu: a batched IPsec engine.

Importing the package points Numba's on-disk cache at a directory keyed by a hash of the
engine's sources. Numba's own `cache=True` check looks only at the file of the kernel being
loaded, so after an edit to a helper module (kernels_ip.py, replay.py) a caller's cached
machine code would otherwise keep running the old helper.
"""
from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path


def _key_numba_cache() -> None:
    if "NUMBA_CACHE_DIR" in os.environ or "numba" in sys.modules:
        return   # the user chose a cache, or Numba already read its configuration
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).resolve().parent.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    os.environ["NUMBA_CACHE_DIR"] = os.path.join(base, "pyspu", "numba-" + digest.hexdigest()[:16])


_key_numba_cache()
