"""The gateway's local control socket: `spu status` and `spu request` talk to it.

A Unix stream socket (mode 0600: whoever may read SA state and force rekeys is root or the
gateway's user). One request per connection, one JSON object per line each way:

    -> {"cmd": "status"}
    <- {"ok": true, "status": {...}}            (ike/status.py renders it)
    -> {"cmd": "rekey-child", "name": "vpn1"}
    <- {"ok": false, "error": "no IPsec SA for vpn 'vpn1'"}

Commands are dispatched to a handler the gateway gives (a dict of name -> callable taking
the request and returning a JSON-able result or raising ControlError).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from typing import Any, Callable, Optional

log = logging.getLogger("pyspu.gateway")

MAX_REQUEST = 64 * 1024
DEFAULT_TIMEOUT = 10.0


class ControlError(Exception):
    """A one-line answer to a request that cannot be carried out."""


Handler = Callable[[dict], Any]


class ControlServer:
    def __init__(self, path: str, handlers: dict[str, Handler]):
        self.path = path
        self.handlers = handlers
        self._server: Optional[asyncio.AbstractServer] = None

    async def start(self) -> None:
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        if os.path.exists(self.path):
            if _alive(self.path):
                raise ControlError(f"{self.path}: another gateway is running")
            os.unlink(self.path)
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=self.path,
                                                           limit=MAX_REQUEST)
        finally:
            os.umask(old)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), DEFAULT_TIMEOUT)
            writer.write(json.dumps(self._answer(line)).encode() + b"\n")
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    def _answer(self, line: bytes) -> dict:
        try:
            req = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "request is not JSON"}
        if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
            return {"ok": False, "error": "request needs a 'cmd' string"}
        handler = self.handlers.get(req["cmd"])
        if handler is None:
            return {"ok": False, "error": f"unknown command {req['cmd']!r} "
                                          f"(known: {', '.join(sorted(self.handlers))})"}
        try:
            return {"ok": True, "result": handler(req)}
        except ControlError as e:
            return {"ok": False, "error": str(e)}
        except Exception as e:     # noqa: BLE001 - the gateway outlives a failed request
            log.exception("control request %r failed", req["cmd"])
            return {"ok": False, "error": f"internal error: {type(e).__name__}: {e}"}


def _alive(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def request(path: str, cmd: str, timeout: float = DEFAULT_TIMEOUT, **args) -> Any:
    """Send one request to a running gateway; returns its result or raises ControlError."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise ControlError(f"{path}: no gateway is running (start one with "
                               f"`spu gateway --config FILE`)") from None
        except PermissionError:
            raise ControlError(f"{path}: permission denied (the control socket is "
                               f"for the gateway's user)") from None
        s.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        raise ControlError(f"{path}: the gateway did not answer within {timeout:g} s") from None
    except OSError as e:
        raise ControlError(f"{path}: {e.strerror or e}") from None
    finally:
        s.close()
    try:
        answer = json.loads(data)
    except ValueError:
        raise ControlError(f"{path}: the gateway's answer is not JSON") from None
    if not answer.get("ok"):
        raise ControlError(str(answer.get("error", "request failed")))
    return answer.get("result")
