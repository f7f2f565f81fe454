"""ESN across 2^32 inside one batch: packets are numbered as if processed one at a time.

The contract's own example (`flag esn replay-oseq 0xfffffff0`) encrypted and then decrypted
with the same SA line puts the receiver's window at 0 while the sender crosses 2^32 within
a handful of packets. RFC 4303 Appendix A infers each packet's high bits from the window
as it stands when that packet arrives; processing the whole capture as one batch must give
the same answer as processing it packet by packet (CONTRACT-SPU.md: file order).
"""
import ipaddress
import struct

import pytest

from engine.batch import PacketBatch
from engine.drops import Drop
from engine.engine import Engine
from engine.sa import MODE_TUNNEL, PROTO_AH, PROTO_ESP, SAConfig

A = ipaddress.ip_address


def inner(k: int) -> bytes:
    body = struct.pack("!HHHH", 1000 + k, 9, 8 + 16, 0) + bytes(16)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), k, 0, 64, 17, 0,
                      bytes([10, 1, 0, 1]), bytes([10, 2, 0, 1]))
    s = sum(struct.unpack("!10H", hdr))
    s = (s & 0xFFFF) + (s >> 16)
    return hdr[:10] + struct.pack("!H", ~s & 0xFFFF) + hdr[12:] + body


SAS = {
    "esp-cbc-sha1": dict(proto=PROTO_ESP, enc="cbc(aes)", enc_key=bytes(range(16)),
                         auth="hmac(sha1)", auth_key=bytes(range(20)), icv_bits=96),
    "esp-gcm": dict(proto=PROTO_ESP, aead="rfc4106(gcm(aes))", aead_key=bytes(range(20)),
                    icv_bits=128),
    "ah-sha256": dict(proto=PROTO_AH, auth="hmac(sha256)", auth_key=bytes(range(32)),
                      icv_bits=128),
}


@pytest.mark.parametrize("name", sorted(SAS))
@pytest.mark.parametrize("backend", ["openssl", "auto"])
def test_one_batch_across_2_32_equals_packet_by_packet(name, backend):
    common = dict(src=A("192.0.2.1"), dst=A("192.0.2.2"), spi=0x1001, mode=MODE_TUNNEL,
                  esn=True, replay_window=64, **SAS[name])
    out = Engine(backend=backend)
    out.install(SAConfig(oseq=0xFFFFFFF0, **common), "out")
    packets = [inner(k) for k in range(40)]        # sequence numbers 2^32-15 .. 2^32+24
    b = PacketBatch.from_packets(packets)
    out.encrypt(b)
    assert list(b.drop[:40]) == [0] * 40
    protected = b.packets()

    whole = Engine(backend=backend)
    whole.install(SAConfig(**common), "in")        # replay-seq 0: the window starts at 0
    batch = PacketBatch.from_packets(protected)
    whole.decrypt(batch)

    single = Engine(backend=backend)
    single.install(SAConfig(**common), "in")
    one_by_one = []
    for p in protected:
        b1 = PacketBatch.from_packets([p])
        single.decrypt(b1)
        one_by_one.append((int(b1.drop[0]), b1.packet(0) if b1.drop[0] == 0 else None))

    assert [d for d, _ in one_by_one] == [0] * 40
    assert [int(d) for d in batch.drop[:40]] == [d for d, _ in one_by_one]
    assert batch.packets() == packets
    assert whole.stats() == single.stats()


def test_a_replayed_old_packet_after_the_wrap_is_still_caught():
    common = dict(src=A("192.0.2.1"), dst=A("192.0.2.2"), spi=0x1001, mode=MODE_TUNNEL,
                  esn=True, replay_window=64, **SAS["esp-gcm"])
    out = Engine()
    out.install(SAConfig(oseq=0xFFFFFFF0, **common), "out")
    b = PacketBatch.from_packets([inner(k) for k in range(40)])
    out.encrypt(b)
    protected = b.packets()
    eng = Engine()
    eng.install(SAConfig(**common), "in")
    batch = PacketBatch.from_packets(protected + [protected[3], protected[30]])
    eng.decrypt(batch)
    assert list(batch.drop[:40]) == [0] * 40
    # seq 2^32-12 is 36 behind the edge (inside the window, seen); 2^32+15 was seen
    assert list(batch.drop[40:42]) == [Drop.REPLAY, Drop.REPLAY]
