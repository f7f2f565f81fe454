"""Manual-key VPNs (`security ipsec vpn NAME manual`) -> the engine's two SAConfigs.

Junos manual SAs use one SPI in both directions and the same keys; pyspu installs an
inbound SA (peer -> us) and an outbound one (us -> peer), tunnel mode. Key lengths are
checked against what the Junos algorithm name requires, with the line of the key.
"""
from __future__ import annotations

from engine.sa import MODE_TUNNEL, PROTO_AH, PROTO_ESP, SAConfig

from .junos_algorithms import MANUAL_AUTHENTICATION, MANUAL_ENCRYPTION
from .vpn_schema import Ctx, Section


def _key(ctx: Ctx, sec: Section, table: dict) -> tuple:
    """(algorithm spec, key bytes) of an `authentication { }` / `encryption { }` block."""
    for kw in ("algorithm", "key"):
        if kw not in sec.leaves:
            raise ctx.error(sec.line, f"{sec.path}: missing {kw}")
    name = sec.get("algorithm")
    spec = table.get(name)
    if spec is None:
        shown = name if len(name) <= 40 else name[:37] + "..."
        raise ctx.error(sec.line_of("algorithm"), f"{sec.path}: algorithm {shown!r} is not "
                        f"one of {' | '.join(table)}")
    key = sec.get("key")
    if len(key) != spec.key_len:
        salt = " including the 4-byte salt" if spec.icv_bits else ""
        raise ctx.error(sec.line_of("key"), f"{sec.path}: {name} needs a {spec.key_len}-byte "
                        f"key{salt}, this one has {len(key)} bytes")
    return spec, key


def manual_sas(ctx: Ctx, man: Section, local, remote, replay_window: int
               ) -> tuple[SAConfig, SAConfig]:
    """(inbound, outbound) for one `manual { }` block whose required leaves are present."""
    if local.version != remote.version:
        raise ctx.error(man.line_of("gateway"), f"{man.path}: local and remote addresses are "
                        "of different families")
    protocol, spi = man.get("protocol"), man.get("spi")
    auth_sec, enc_sec = man.section("authentication"), man.section("encryption")
    fields: dict = {}
    if protocol == "ah":
        if enc_sec is not None:
            raise ctx.error(enc_sec.line, f"{man.path}: AH has no encryption")
        if auth_sec is None:
            raise ctx.error(man.line, f"{man.path}: AH needs authentication {{ }}")
    if enc_sec is not None:
        cipher, key = _key(ctx, enc_sec, MANUAL_ENCRYPTION)
        if cipher.icv_bits:
            if auth_sec is not None:
                raise ctx.error(auth_sec.line, f"{man.path}: {enc_sec.get('algorithm')} is "
                                "its own integrity; remove authentication { }")
            fields.update(aead=cipher.name, aead_key=key, icv_bits=cipher.icv_bits)
        else:
            fields.update(enc=cipher.name, enc_key=key)
    elif protocol == "esp":
        fields.update(enc="ecb(cipher_null)")
    if auth_sec is not None:
        auth, key = _key(ctx, auth_sec, MANUAL_AUTHENTICATION)
        fields.update(auth=auth.name, auth_key=key, icv_bits=auth.icv_bits)
    elif "aead" not in fields:
        raise ctx.error(man.line, f"{man.path}: ESP without authentication {{ }} is refused "
                        "(no integrity)")
    proto = PROTO_AH if protocol == "ah" else PROTO_ESP
    inbound = SAConfig(remote, local, proto, spi, MODE_TUNNEL, replay_window, **fields)
    outbound = SAConfig(local, remote, proto, spi, MODE_TUNNEL, replay_window, **fields)
    return inbound, outbound
