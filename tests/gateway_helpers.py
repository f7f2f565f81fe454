"""What the gateway test files share: the two-namespace rig as a fixture, waiting for a
condition, and readable logs of the gateways and charons when an assertion fails."""
from __future__ import annotations

import os
import time

import pytest

from bench.rig import Rig, missing_requirements


def rig_fixture(need_strongswan: bool, name: str = "rig"):
    """A fixture called `name` giving a fresh bench/rig.py Rig: skipped locally without
    root (or strongSwan when needed), a failure under CI=true, where the bootstrap
    installs everything."""
    @pytest.fixture(name=name)
    def rig():
        missing = missing_requirements(need_strongswan=need_strongswan)
        if missing:
            if os.environ.get("CI") == "true":
                pytest.fail(f"gateway tests cannot run under CI: {missing}")
            pytest.skip(missing)
        with Rig() as r:
            yield r
    return rig


def wait_until(predicate, within: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def tail(p, n: int = 60) -> str:
    """The end of a gateway's or charon's log without Numba's compiler chatter."""
    text = p.log_text() if hasattr(p, "log_text") else p.log_tail(400)
    lines = [ln for ln in text.splitlines() if "numba" not in ln and not ln.startswith(" ")]
    return "\n".join(lines[-n:])


def logs(*procs) -> str:
    return "".join(f"\n--- {type(p).__name__} {p.side} ---\n{tail(p)}" for p in procs)
