"""`spu gateway`, `spu status`, `spu request`: the VPN gateway's commands (engine/cli.py
registers them; the heavy imports wait until a command runs).

    spu gateway --config FILE [--check] [--control-socket PATH] [--backend B] [--log-level L]
    spu status [ike|ipsec] [--json] [--socket PATH]
    spu request initiate|rekey-child|rekey-ike|delete VPN [--socket PATH]
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys

from engine.cli import CliError as GatewayCliError   # one-line errors, printed by spu

DEFAULT_CONTROL_SOCKET = "/run/pyspu/gateway.sock"


def add_commands(sub) -> None:
    g = sub.add_parser("gateway", help="run a VPN gateway from a Junos security configuration",
                       description="Run the IKEv2 VPN gateway: reads the Junos `security ike` / "
                       "`security ipsec` configuration (curly-brace or set form), brings up a "
                       "TUN device for the cleartext side and ESP (in UDP 4500, or raw) on the "
                       "protected side.")
    g.add_argument("--config", required=True, metavar="FILE")
    g.add_argument("--check", action="store_true",
                   help="only read and check the configuration, print a summary")
    g.add_argument("--control-socket", metavar="PATH",
                   help="where `spu status` finds the gateway (default: the configuration's "
                        f"pyspu control-socket, else {DEFAULT_CONTROL_SOCKET})")
    g.add_argument("--backend", choices=("auto", "openssl", "ipsec-mb"), default="auto",
                   help="native crypto for the SAs (default auto)")
    g.add_argument("--log-level", default="info",
                   choices=("debug", "info", "warning", "error"))
    g.set_defaults(func=_cmd_gateway)

    s = sub.add_parser("status", help="show the running gateway's IKE and IPsec SAs",
                       description="Like Junos `show security ike security-associations` and "
                       "`show security ipsec security-associations`, with per-SA counters.")
    s.add_argument("what", nargs="?", choices=("all", "ike", "ipsec"), default="all")
    s.add_argument("--json", action="store_true", help="the raw status object as JSON")
    s.add_argument("--socket", default=DEFAULT_CONTROL_SOCKET, metavar="PATH")
    s.set_defaults(func=_cmd_status)

    r = sub.add_parser("request", help="ask the running gateway to act on a vpn",
                       description="initiate: bring a vpn up; rekey-child: rekey its IPsec SAs; "
                       "rekey-ike: rekey its IKE SA; delete: delete its IKE SA (and IPsec SAs).")
    r.add_argument("action", choices=("initiate", "rekey-child", "rekey-ike", "delete"))
    r.add_argument("vpn")
    r.add_argument("--socket", default=DEFAULT_CONTROL_SOCKET, metavar="PATH")
    r.set_defaults(func=_cmd_request)


def _load(path: str):
    from .vpn_config import ConfigError, load_gateway_config
    try:
        return load_gateway_config(path)
    except ConfigError as e:
        raise GatewayCliError(str(e)) from None


def _cmd_gateway(args) -> int:
    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    config = _load(args.config)
    if args.check:
        print(config.describe())
        return 0
    import asyncio

    from .control import ControlError
    from .gateway import Gateway
    gw = Gateway(config, backend=args.backend, control_socket=args.control_socket)

    async def main():
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, gw.stop)
        await gw.run()
    try:
        asyncio.run(main())
    except ControlError as e:
        raise GatewayCliError(str(e)) from None
    return 0


def _cmd_status(args) -> int:
    from .control import ControlError, request
    from .status import render, render_ike, render_ipsec
    try:
        status = request(args.socket, "status")
    except ControlError as e:
        raise GatewayCliError(str(e)) from None
    if args.json:
        json.dump(status, sys.stdout, indent=2, sort_keys=True)
        print()
    else:
        print({"all": render, "ike": render_ike, "ipsec": render_ipsec}[args.what](status),
              end="")
    return 0


def _cmd_request(args) -> int:
    from .control import ControlError, request
    try:
        print(request(args.socket, args.action, name=args.vpn))
    except ControlError as e:
        raise GatewayCliError(str(e)) from None
    return 0


def parser_for_tests() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spu")
    add_commands(p.add_subparsers(dest="command", required=True))
    return p
