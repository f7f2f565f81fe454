"""Crypto backends: which native library runs an SA's ESP crypto (VPP vnet/crypto style).

Each backend registers with a priority and a probe over an SA's transforms; per SA, the
highest-priority backend whose probe accepts it runs it. OpenSSL (engine/_crypto.pyx) is
always present, runs everything (ESP and AH) and is the fallback; Intel's multi-buffer
library (engine/_mb.pyx) wins where it runs the SA's transforms, if it was built.

    Engine(backend="auto")        # ipsec-mb where it can, OpenSSL for the rest (default)
    Engine(backend="openssl")     # OpenSSL only
    Engine(backend="ipsec-mb")    # ipsec-mb only: an error if it is not built, and an SA
                                  # it cannot run is refused at install
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Callable, Optional

from . import _crypto

CHOICES = ("auto", "openssl", "ipsec-mb")

#: probe(cipher_id, auth_id, icv_len, esn, proto) -> True if the backend runs that SA
Probe = Callable[[int, int, int, bool, int], bool]


@dataclass(frozen=True)
class Backend:
    name: str           # "openssl", "ipsec-mb"
    priority: int       # higher wins
    label: str          # what ran: "openssl 3.0.19", "ipsec-mb 1.3.0 (avx512)"
    probe: Probe


def _openssl_label() -> str:
    parts = _crypto.openssl_version().split()       # "OpenSSL 3.0.19 27 Jan 2026"
    return f"openssl {parts[1] if len(parts) > 1 else parts[0]}"


OPENSSL = Backend("openssl", 0, _openssl_label(), lambda c, a, i, e, p: True)

def _load_mb():
    """engine._mb, built only where intel-ipsec-mb.h was found: (module, None) or
    (None, why not)."""
    if importlib.util.find_spec(f"{__package__}._mb") is None:
        return None, "not built"
    try:
        return importlib.import_module(f"{__package__}._mb"), None
    except ImportError as exc:          # e.g. libIPSec_MB.so missing at run time
        return None, f"does not load: {exc}"


_mb, MB_MISSING = _load_mb()

IPSEC_MB: Optional[Backend] = (
    Backend("ipsec-mb", 100, _mb.version(), _mb.supports) if _mb is not None else None)

#: every available backend, best first
REGISTRY: list[Backend] = sorted([b for b in (OPENSSL, IPSEC_MB) if b is not None],
                                 key=lambda b: -b.priority)


#: the multi-buffer batch passes (None when not built)
mb_encrypt = _mb.esp_encrypt if _mb is not None else None
mb_decrypt = _mb.esp_decrypt if _mb is not None else None


def mb_table(size: int):
    """A new engine._mb.MBTable (only when IPSEC_MB is available)."""
    if _mb is None:
        raise RuntimeError(f"ipsec-mb: {MB_MISSING}")
    return _mb.MBTable(size)


def backends_for(choice: str) -> list[Backend]:
    """The backends an engine built with `backend=choice` may use, best first."""
    if choice == "auto":
        return list(REGISTRY)
    if choice == "openssl":
        return [OPENSSL]
    if choice == "ipsec-mb":
        if IPSEC_MB is None:
            raise RuntimeError(f"crypto backend 'ipsec-mb' is not available ({MB_MISSING}); "
                               f"install libipsec-mb-dev and rebuild, or use backend='auto'")
        return [IPSEC_MB]
    raise ValueError(f"unknown crypto backend {choice!r} (one of {', '.join(CHOICES)})")


def select(backends: list[Backend], cipher: int, auth: int, icv_len: int, esn: bool,
           proto: int) -> Backend:
    """The first (best) backend that runs the SA; ValueError if none does."""
    for b in backends:
        if b.probe(cipher, auth, icv_len, esn, proto):
            return b
    names = ", ".join(b.name for b in backends)
    raise ValueError(f"crypto backend {names} does not run this SA (cipher {cipher}, auth "
                     f"{auth}, ICV {icv_len} bytes, esn {esn}, proto {proto}); "
                     f"use backend='auto'")


def describe(choice: str) -> str:
    """One line for reports: the backends `choice` uses, best first, and any missing."""
    if choice == "openssl":
        return OPENSSL.label
    if choice == "ipsec-mb":
        return backends_for(choice)[0].label
    text = " + ".join(b.label for b in backends_for(choice))
    return text if IPSEC_MB is not None else f"{text} (ipsec-mb: {MB_MISSING})"
