"""`spu gateway` / `spu status` / `spu request` as a user meets them: one-line errors, exit
status 1, never a traceback; `--check` prints what the configuration says."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.rig import Rig, missing_requirements
from bench.tunnel_configs import PAIRS, junos

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "ike" / "examples"


def spu(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=str(REPO),
                          env=dict(os.environ, PYTHONPATH=str(REPO)))


def _one_line_error(r: subprocess.CompletedProcess, *words: str) -> None:
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("spu: error:")]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_check_prints_both_syntaxes_alike():
    curly = spu("gateway", "--config", str(EXAMPLES / "gateway-psk.conf"), "--check")
    sets = spu("gateway", "--config", str(EXAMPLES / "gateway-psk.set"), "--check")
    assert curly.returncode == 0 and sets.returncode == 0, (curly.stderr, sets.stderr)
    body = lambda out: out.split("\n", 1)[1]            # noqa: E731 - first line names the file
    assert body(curly.stdout) == body(sets.stdout)
    assert "gateway" in curly.stdout and "vpn" in curly.stdout


def test_check_never_prints_secrets(tmp_path):
    conf = tmp_path / "gw.conf"
    conf.write_text(junos("left", PAIRS[0], psk="very-secret-psk-value-123456"))
    r = spu("gateway", "--config", str(conf), "--check")
    assert r.returncode == 0, r.stderr
    assert "very-secret-psk-value-123456" not in r.stdout + r.stderr


def test_config_error_names_the_line(tmp_path):
    conf = tmp_path / "gw.conf"
    conf.write_text("security {\n  ike {\n    proposal p1 {\n      dh-grop group14;\n"
                    "    }\n  }\n}\n")
    _one_line_error(spu("gateway", "--config", str(conf)), "gw.conf:4:", "dh-grop")


def test_missing_config_file():
    _one_line_error(spu("gateway", "--config", "/nonexistent/gw.conf"), "/nonexistent/gw.conf")


@pytest.mark.parametrize("cmd", [("status",), ("status", "--json"), ("request", "initiate", "v")])
def test_commands_without_a_gateway(tmp_path, cmd):
    _one_line_error(spu(*cmd, "--socket", str(tmp_path / "none.sock")), "no gateway is running")


def test_gateway_on_an_address_it_does_not_have():
    """The configuration names a local address the namespace lacks: a clear error, and the
    control socket is not left behind."""
    missing = missing_requirements(need_strongswan=False)
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(missing)
        pytest.skip(missing)
    with Rig() as rig:
        conf = rig.dir / "gw.conf"
        conf.write_text(junos("left", PAIRS[0]).replace("local-address 10.200.0.1",
                                                        "local-address 10.200.0.9"))
        sock = rig.dir / "gw.sock"
        r = rig.run("left", sys.executable, "-m", "engine.cli", "gateway", "--config", str(conf),
                    "--control-socket", str(sock), timeout=120)
        _one_line_error(r, "10.200.0.9")
        assert not sock.exists()
