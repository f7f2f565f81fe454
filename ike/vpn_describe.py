"""GatewayConfig.describe(): the short summary `spu gateway --config F --check` prints.

Names, addresses, proposals, selectors, interfaces and routes; never a key (the records'
secrets are not read here at all).
"""
from __future__ import annotations

import ipaddress

from engine.sa import SAConfig

from .config import Identity


def _id(ident: Identity | None) -> str:
    return "any" if ident is None else str(ident)


def _ts(ts) -> str:
    """A traffic selector as the prefix it was configured as (a range if it is not one)."""
    nets = list(ipaddress.summarize_address_range(ts.start_addr, ts.end_addr))
    return str(nets[0]) if len(nets) == 1 else str(ts)


def _algorithms(sa: SAConfig) -> str:
    parts = [p for p in (sa.aead, sa.enc, sa.auth) if p]
    return "/".join(parts)


def describe(cfg) -> str:
    out = [f"{cfg.filename}: {len(cfg.ike_gateways)} IKE gateway(s), {len(cfg.vpns)} "
           f"IKE vpn(s), {len(cfg.manual_vpns)} manual vpn(s)"]
    for name, gw in cfg.ike_gateways.items():
        ike = gw.ike
        local = gw.local_address or "any local address"
        nat = "no NAT-T" if not gw.nat_traversal else f"nat-keepalive {ike.nat_keepalive:g} s"
        dpd = f"dpd {ike.dpd_interval:g} s x{gw.dpd_threshold}" if ike.dpd_interval else "no dpd"
        out.append(f"gateway {name}: IKE{'v1' if gw.version == 'v1-only' else 'v2'} "
                   f"{local} -> {gw.address}, {gw.auth_method}, policy {gw.ike_policy}")
        out.append(f"  proposals: {', '.join(gw.proposals)}")
        out.append(f"  local-id {_id(ike.local_id)}, remote-id {_id(ike.remote_id)}, {dpd}, "
                   f"{nat}, lifetime {ike.lifetime_seconds} s")
    for name, vpn in cfg.vpns.items():
        pfs = f", pfs group{vpn.pfs_group}" if vpn.pfs_group else ""
        out.append(f"vpn {name}: gateway {vpn.gateway}, {vpn.bind_interface}, {vpn.protocol}, "
                   f"establish {vpn.establish}, policy {vpn.ipsec_policy}{pfs}")
        out.append(f"  proposals: {', '.join(vpn.proposals)}")
        for child in vpn.children:
            local = ",".join(_ts(t) for t in child.local_ts)
            remote = ",".join(_ts(t) for t in child.remote_ts)
            kb = f", {child.lifetime_kilobytes} KB" if child.lifetime_kilobytes else ""
            out.append(f"  child {child.name}: {local} <-> {remote}, lifetime "
                       f"{child.lifetime_seconds} s{kb}, replay window {child.replay_window}")
    for name, man in cfg.manual_vpns.items():
        out.append(f"manual vpn {name}: {man.bind_interface}, {man.protocol} spi "
                   f"0x{man.outbound.spi:x}, {man.local_address} <-> {man.remote_address}, "
                   f"{_algorithms(man.outbound)}")
    for unit, addrs in cfg.interfaces.items():
        shown = ", ".join(str(a) for a in addrs) or "unnumbered"
        out.append(f"interface st0.{unit}: {shown}")
    for net, hop in cfg.routes.items():
        out.append(f"route {net} -> {hop}")
    s = cfg.pyspu
    out.append(f"pyspu: tun {s.tun_name}, control socket {s.control_socket}, listen "
               f"{s.listen_address}, workers {s.workers}")
    if cfg.ignored:
        out.append(f"ignored: {', '.join(cfg.ignored)}")
    return "\n".join(out)
