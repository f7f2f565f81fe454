"""Traffic selectors (RFC 7296 2.9, 3.13): narrowing, and the engine's view of the result.

The engine's SAConfig carries one Selector (a source prefix, a destination prefix, an IP
protocol and at most one port per side), so a Child SA here covers one TSi/TSr pair that
such a Selector can express exactly. The responder narrows (2.9) to the first such pair
inside both the initiator's proposal and its own policy; the initiator checks that what
comes back lies inside what it proposed. Never widened: a selector that cannot be
expressed exactly is narrowed further (first CIDR block of a range, first port of a port
range), which 2.9 allows the responder to do.
"""
from __future__ import annotations

import ipaddress
from typing import Optional, Sequence

from engine.sa import Selector

from .payloads import TrafficSelector

_PORT_PROTOS = (6, 17)       # the engine matches ports for TCP and UDP only
ANY_PORTS = (0, 65535)


def intersect(a: TrafficSelector, b: TrafficSelector) -> Optional[TrafficSelector]:
    """The selector matching exactly what both match, or None."""
    if a.start_addr.version != b.start_addr.version:
        return None
    lo, hi = max(a.start_addr, b.start_addr), min(a.end_addr, b.end_addr)
    if lo > hi:
        return None
    if a.ip_proto and b.ip_proto and a.ip_proto != b.ip_proto:
        return None
    proto = a.ip_proto or b.ip_proto
    plo, phi = max(a.start_port, b.start_port), min(a.end_port, b.end_port)
    if plo > phi:
        return None
    return TrafficSelector(lo, hi, proto, plo, phi)


def contains(outer: TrafficSelector, inner: TrafficSelector) -> bool:
    return intersect(outer, inner) == inner


def _exact(ts: TrafficSelector) -> Optional[TrafficSelector]:
    """The largest sub-selector the engine can express, taken from the start of ts."""
    if ts.start_addr > ts.end_addr or ts.start_port > ts.end_port:
        return None
    net = next(ipaddress.summarize_address_range(ts.start_addr, ts.end_addr))
    ports = (ts.start_port, ts.end_port)
    if ports != ANY_PORTS:
        if ts.ip_proto not in _PORT_PROTOS:
            return None                      # no way to express a port range for "any"
        ports = (ts.start_port, ts.start_port)
    return TrafficSelector(net.network_address, net.broadcast_address, ts.ip_proto, *ports)


def narrow(proposed: Sequence[TrafficSelector],
           policy: Sequence[TrafficSelector]) -> Optional[TrafficSelector]:
    """Responder side (2.9): the first expressible selector inside both."""
    for p in proposed:
        for q in policy:
            x = intersect(p, q)
            if x is not None and (e := _exact(x)) is not None:
                return e
    return None


def narrow_pair(tsi: Sequence[TrafficSelector], tsr: Sequence[TrafficSelector],
                remote_policy: Sequence[TrafficSelector],
                local_policy: Sequence[TrafficSelector]
                ) -> Optional[tuple[TrafficSelector, TrafficSelector]]:
    """Responder: (TSi, TSr) narrowed to our remote and local selectors, or None."""
    i = narrow(tsi, remote_policy)
    r = narrow(tsr, local_policy)
    if i is None or r is None or not compatible(i, r):
        return None
    return i, r


def compatible(tsi: TrafficSelector, tsr: TrafficSelector) -> bool:
    """One engine Selector can hold the pair: same family, no conflicting protocols."""
    return tsi.start_addr.version == tsr.start_addr.version and not (
        tsi.ip_proto and tsr.ip_proto and tsi.ip_proto != tsr.ip_proto)


def accept_narrowed(proposed: Sequence[TrafficSelector],
                    returned: Sequence[TrafficSelector]) -> Optional[TrafficSelector]:
    """Initiator side: the one returned selector, if it lies inside what we proposed and
    the engine can express it exactly."""
    if len(returned) != 1:
        return None
    ts = returned[0]
    if _exact(ts) != ts or not any(contains(p, ts) for p in proposed):
        return None
    return ts


def to_selector(src: TrafficSelector, dst: TrafficSelector) -> Selector:
    """The engine Selector for packets from `src` to `dst` (both exact, see _exact)."""
    proto = src.ip_proto or dst.ip_proto

    def net(ts: TrafficSelector):
        return next(ipaddress.summarize_address_range(ts.start_addr, ts.end_addr))

    def port(ts: TrafficSelector) -> Optional[int]:
        return None if (ts.start_port, ts.end_port) == ANY_PORTS else ts.start_port

    return Selector(net(src), net(dst), proto, port(src), port(dst))
