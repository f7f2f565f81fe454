"""IKEEndpoint (many IKE SAs behind one address, COOKIE defence, config choice) and the
asyncio adapter's RFC 3948 demultiplexing, without sockets: a fake transport records what
the daemon would send. (The daemon on real sockets is exercised by
tests/test_ike_strongswan.py, inside network namespaces.)"""
from __future__ import annotations

import asyncio

from ike.config import ChildConfig, IKEConfig, Identity
from ike.connection import IKEConnection
from ike.daemon import IKEDaemon
from ike.endpoint import CookieJar, IKEEndpoint
from ike.events import AuthenticationFailed, ChildSAEstablished, IKESADeleted, IKESAEstablished

from ike_harness import PSK, R_IP, configs, of

CHILD = ChildConfig("net", ("aes128gcm16",), ("10.0.0.0/8",), ("10.0.0.0/8",))


def _responder(remote_id=None, psk=PSK, remote_addrs=(), name="net"):
    return IKEConfig(local_id=Identity.inet(R_IP), remote_id=remote_id, psk=psk,
                     proposals=("aes128-sha256-x25519",), remote_addrs=remote_addrs,
                     children=(ChildConfig(name, ("aes128gcm16",), ("10.0.0.0/8",),
                                           ("10.0.0.0/8",)),))


def _initiator(ip: str, psk=PSK, local_id=None):
    cfg = IKEConfig(local_id=local_id or Identity.inet(ip), remote_id=Identity.inet(R_IP),
                    psk=psk, proposals=("aes128-sha256-x25519",), children=(CHILD,))
    return IKEConnection(cfg, initiator=True, local_addr=(ip, 500), remote_addr=(R_IP, 500))


def _exchange(endpoint: IKEEndpoint, initiators: list, now: float = 0.0) -> list:
    """Run the initiators against the endpoint until quiet; the endpoint's events."""
    events = []
    for _ in range(20):
        moved = False
        for conn in initiators:
            ip = conn._sa.local_addr[0]
            for data, _ in conn.datagrams_to_send(now):
                port = 4500 if data[:4] == b"\0\0\0\0" else 500
                endpoint.receive_datagram(data, (ip, port), now)
                moved = True
        for data, addr in endpoint.datagrams_to_send(now):
            for conn in initiators:
                if conn._sa.local_addr[0] == addr[0]:
                    conn.receive_datagram(data, (R_IP, addr[1]), now)
            moved = True
        while (e := endpoint.next_event()) is not None:
            events.append(e)
        if not moved:
            return events
    raise AssertionError("never quiet")


def test_many_peers_one_endpoint():
    endpoint = IKEEndpoint([_responder()], (R_IP, 500))
    peers = [_initiator(f"192.0.2.{n}") for n in (10, 11, 12)]
    for p in peers:
        p.initiate(0.0)
    events = _exchange(endpoint, peers)
    ups = of(events, IKESAEstablished)
    assert len(ups) == 3 and len({e.ike_sa for e in ups}) == 3
    assert {e.remote_id for e in ups} == {"192.0.2.10", "192.0.2.11", "192.0.2.12"}
    assert len(of(events, ChildSAEstablished)) == 3
    assert all(p.established for p in peers) and len(endpoint.connections) == 3
    # a late retransmission of an IKE_SA_INIT creates no second SA (RFC 7296 2.1)
    endpoint.receive_datagram(peers[0]._sa.init_request, ("192.0.2.10", 500), 0.0)
    assert len(endpoint.connections) == 3 and not endpoint.datagrams_to_send(0.0)
    peers[1].delete(0.0)
    events = _exchange(endpoint, peers)
    assert [e.by_peer for e in of(events, IKESADeleted)] == [True]
    assert len(endpoint.connections) == 2          # closed SAs are forgotten


def test_config_chosen_by_address_then_identity():
    west = _responder(remote_id=Identity.hostname("west.example"), psk=b"west secret")
    east = _responder(remote_id=Identity.hostname("east.example"), psk=b"east secret")
    other = _responder(psk=b"never used", remote_addrs=("203.0.113.0/24",))
    endpoint = IKEEndpoint([other, west, east], (R_IP, 500))
    a = _initiator("192.0.2.20", b"east secret", Identity.hostname("east.example"))
    b = _initiator("192.0.2.21", b"west secret", Identity.hostname("west.example"))
    c = _initiator("192.0.2.22", b"west secret", Identity.hostname("east.example"))
    for p in (a, b, c):
        p.initiate(0.0)
    events = _exchange(endpoint, [a, b, c])
    assert a.established and b.established and not c.established
    assert {e.remote_id for e in of(events, IKESAEstablished)} == {"east.example",
                                                                  "west.example"}
    (failed,) = of(events, AuthenticationFailed)
    assert "east.example" in failed.reason


def test_stateless_refusals_leave_no_trace():
    """A COOKIE challenge creates nothing; an INVALID_KE_PAYLOAD refusal emits no event."""
    ci, cr = configs(("aes128-sha256-ecp256", "aes128-sha256-modp2048"),
                     ike_r=("aes128-sha256-modp2048",))
    endpoint = IKEEndpoint([cr], (R_IP, 500))
    conn = IKEConnection(ci, initiator=True, local_addr=("192.0.2.1", 500),
                         remote_addr=(R_IP, 500))
    conn.initiate(0.0)
    (request, _), = conn.datagrams_to_send(0.0)
    endpoint.receive_datagram(request, ("192.0.2.1", 500), 0.0)
    (answer, _), = endpoint.datagrams_to_send(0.0)
    assert endpoint.next_event() is None and not endpoint.connections
    assert endpoint.half_open_count() == 0


def test_cookie_secret_rotation():
    jar = CookieJar()
    cookie = jar.make(b"n" * 32, "192.0.2.1", b"S" * 8)
    assert jar.check(cookie, b"n" * 32, "192.0.2.1", b"S" * 8)
    assert not jar.check(cookie, b"n" * 32, "192.0.2.9", b"S" * 8)     # bound to the address
    assert not jar.check(cookie, b"m" * 32, "192.0.2.1", b"S" * 8)     # ... and the nonce
    jar.rotate()
    assert jar.check(cookie, b"n" * 32, "192.0.2.1", b"S" * 8)         # previous secret: ok
    jar.rotate()
    assert not jar.check(cookie, b"n" * 32, "192.0.2.1", b"S" * 8)     # two back: expired
    assert not jar.check(b"short", b"n" * 32, "192.0.2.1", b"S" * 8)


class _FakeTransport:
    def __init__(self):
        self.sent = []

    def sendto(self, data, addr):
        self.sent.append((data, addr))

    def close(self):
        pass


class _FakeSocket:
    def __init__(self):
        self.transport = _FakeTransport()


def test_daemon_demultiplexes_port_4500():
    """RFC 3948: keepalives dropped, non-ESP marker -> IKE, anything else -> ESP handler;
    outgoing IKE with the marker leaves from 4500, without it from 500."""
    async def scenario():
        ci, cr = configs(("aes128-sha256-x25519",), ("aes128gcm16",))
        esp = []
        daemon = IKEDaemon(IKEEndpoint([cr], (R_IP, 500)),
                           esp_handler=lambda data, addr: esp.append((data, addr)))
        daemon._loop = asyncio.get_running_loop()
        daemon._ike, daemon._natt = _FakeSocket(), _FakeSocket()
        peer = IKEConnection(ci, initiator=True, local_addr=("192.168.7.2", 500),
                             remote_addr=(R_IP, 500))
        peer.initiate(0.0)
        (init, _), = peer.datagrams_to_send(0.0)
        daemon._received(init, ("198.51.100.7", 40500), False)        # behind a NAT
        assert daemon._timer is not None                              # half-open timeout
        (answer, addr), = daemon._ike.transport.sent
        assert answer[:4] != b"\0\0\0\0" and addr == ("198.51.100.7", 40500)
        peer.receive_datagram(answer, (R_IP, 500), 0.0)
        (auth, _), = peer.datagrams_to_send(0.0)
        assert auth[:4] == b"\0\0\0\0"                                 # floated to 4500
        daemon._received(auth, ("198.51.100.7", 44500), True)
        (answer, addr), = daemon._natt.transport.sent
        assert answer[:4] == b"\0\0\0\0" and addr == ("198.51.100.7", 44500)
        daemon._received(b"\xff", ("198.51.100.7", 44500), True)      # NAT keepalive
        daemon._received(b"\x12\x34\x56\x78" + bytes(40), ("198.51.100.7", 44500), True)
        assert [d[:4] for d, _ in esp] == [b"\x12\x34\x56\x78"]
        events = []
        while not daemon.events.empty():
            events.append(daemon.events.get_nowait())
        assert of(events, IKESAEstablished) and of(events, ChildSAEstablished)
        daemon.send_esp(b"esp!", ("198.51.100.7", 44500))
        assert daemon._natt.transport.sent[-1] == (b"esp!", ("198.51.100.7", 44500))
        # established, no DPD: only the lifetimes are due, the first one the Child SA's
        # rekey at 80-90% of its 3600 s (ike/lifetimes.py)
        due = daemon.endpoint.get_timer() - daemon.now
        assert daemon._timer is not None and 2880 - 5 <= due <= 3240
        daemon.close()

    asyncio.run(scenario())
