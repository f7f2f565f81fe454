"""Two in-memory IKE peers for the tests: datagrams move by hand, time is a number.

    pair = Pair(initiator_config, responder_config)          # or nat=True
    pair.start()
    pair.run()                  # deliver until both sides are quiet
    pair.events_i, pair.events_r

With nat=True the initiator sits behind a NAT: it believes it is 192.168.7.2, the
responder sees it as 198.51.100.7 on translated ports (500 -> 40500, 4500 -> 44500).
`drop` decides per datagram whether the network loses it; `tap` sees every datagram.
"""
from __future__ import annotations

from typing import Callable, Optional

from ike.config import ChildConfig, IKEConfig, Identity
from ike.connection import IKEConnection
from ike.endpoint import IKEEndpoint

from ike_packets import udp_payload, udp_wrap

I_IP, R_IP = "192.0.2.1", "192.0.2.2"
NAT_INSIDE, NAT_OUTSIDE = "192.168.7.2", "198.51.100.7"
NAT_PORTS = {500: 40500, 4500: 44500}
PSK = b"in-memory test psk, not a secret"


def configs(ike=("aes128-sha1-modp2048",), esp=("aes128-sha1",), *, psk_i=PSK, psk_r=PSK,
            ts_i=(("10.1.0.0/16",), ("10.2.0.0/16",)),
            ts_r=(("10.2.0.0/16",), ("10.1.0.0/16",)), ike_r=None, esp_r=None,
            i_ip=I_IP, id_i=None, id_r=None, expect_r=None, **extra):
    """A matching (initiator, responder) config pair; keyword overrides for mismatches."""
    id_i = id_i or Identity.inet(i_ip)
    id_r = id_r or Identity.inet(R_IP)
    ci = IKEConfig(local_id=id_i, remote_id=expect_r or id_r, psk=psk_i, proposals=ike,
                   children=(ChildConfig("net", esp, *ts_i),), **extra)
    cr = IKEConfig(local_id=id_r, remote_id=id_i, psk=psk_r, proposals=ike_r or ike,
                   children=(ChildConfig("net", esp_r or esp, *ts_r),), **extra)
    return ci, cr


class Pair:
    def __init__(self, cfg_i: IKEConfig, cfg_r, *, nat: bool = False,
                 endpoint: Optional[IKEEndpoint] = None, ips: tuple = (I_IP, R_IP)):
        self.nat = nat
        self.outer_i, self.r_ip = ips
        self.i_ip = NAT_INSIDE if nat else self.outer_i
        self.now = 0.0
        self.i = IKEConnection(cfg_i, initiator=True, local_addr=(self.i_ip, 500),
                               remote_addr=(self.r_ip, 500))
        self.endpoint = endpoint
        self.r = None if endpoint is not None else \
            IKEConnection(cfg_r, initiator=False, local_addr=(self.r_ip, 500))
        self.events_i: list = []
        self.events_r: list = []
        self.sent_i: list[bytes] = []    # every datagram the initiator sent, in order
        self.sent_r: list[bytes] = []
        self.drop: Callable[[str, bytes], bool] = lambda direction, data: False

    # -- the network --------------------------------------------------------------------------
    @property
    def responder(self):
        return self.endpoint if self.endpoint is not None else self.r

    def i_source(self, port: int) -> tuple:
        """Where the initiator's datagrams appear to come from, at the responder."""
        return (NAT_OUTSIDE, NAT_PORTS[port]) if self.nat else (self.outer_i, port)

    def _i_port(self, data: bytes) -> int:
        return 4500 if data[:4] == b"\0\0\0\0" else 500

    def start(self) -> None:
        self.i.initiate(self.now)

    def step(self) -> bool:
        moved = False
        for data, addr in self.i.datagrams_to_send(self.now):
            self.sent_i.append(data)
            assert addr[0] == self.r_ip
            if not self.drop("i->r", data):
                self.responder.receive_datagram(data, self.i_source(self._i_port(data)), self.now)
            moved = True
        for data, addr in self.responder.datagrams_to_send(self.now):
            self.sent_r.append(data)
            expected = self.i_source(self._i_port(data))
            assert tuple(addr) == expected, (addr, expected)
            if not self.drop("r->i", data):
                self.i.receive_datagram(data, (self.r_ip, self._i_port(data)), self.now)
            moved = True
        self._collect()
        return moved

    def run(self, limit: int = 50) -> None:
        for _ in range(limit):
            if not self.step():
                return
        raise AssertionError("the peers never went quiet")

    def advance(self, seconds: float) -> None:
        """Move time on and fire whatever timers are due, then deliver."""
        self.now += seconds
        for side in (self.i, self.responder):
            timer = side.get_timer()
            if timer is not None and self.now >= timer:
                side.handle_timer(self.now)
        self.run()

    def _collect(self) -> None:
        while (e := self.i.next_event()) is not None:
            self.events_i.append(e)
        while (e := self.responder.next_event()) is not None:
            self.events_r.append(e)

    # -- ESP through the NAT, for engine round trips ----------------------------------------
    def nat_out(self, packet: bytes) -> bytes:
        """An ESP-in-UDP packet from the initiator, as the NAT forwards it."""
        payload, sport, dport = udp_payload(packet)
        return udp_wrap(payload, NAT_OUTSIDE, R_IP, NAT_PORTS[sport], dport)

    def nat_in(self, packet: bytes) -> bytes:
        payload, sport, dport = udp_payload(packet)
        inside = {v: k for k, v in NAT_PORTS.items()}[dport]
        return udp_wrap(payload, R_IP, NAT_INSIDE, sport, inside)


def of(events: list, cls) -> list:
    return [e for e in events if isinstance(e, cls)]


__all__ = ["Pair", "configs", "of", "ChildConfig", "Identity", "I_IP", "R_IP", "PSK"]
