"""`spu status`: the gateway's SAs as Junos shows them, from the JSON the gateway answers.

    show security ike security-associations   -> render_ike(status)
    show security ipsec security-associations -> render_ipsec(status)

The status object (Gateway.status(), also what `spu status --json` prints) is plain JSON:
    {"ike": [{index, state, initiator_spi, responder_spi, mode, remote_address, remote_port,
              role, gateway, local_identity, remote_identity, proposal, nat, established_s}],
     "ipsec": [{id, vpn, direction, spi, protocol, algorithm, proposal, lifetime_s,
                lifetime_kb, port, gateway, packets, bytes, dropped, backend}],
     "engine": Engine.stats(), "io": per-socket counters, "backend": str}
`lifetime_s` / `lifetime_kb` are what is left before the hard limit (None: unlimited).
"""
from __future__ import annotations

from typing import Optional

from engine.sa import SAConfig

# Linux crypto names (engine/algorithms.py) -> the words Junos prints.
_CIPHER_WORDS = {"cbc(aes)": "aes-cbc", "cbc(des3_ede)": "3des-cbc", "cbc(des)": "des-cbc",
                 "rfc3686(ctr(aes))": "aes-ctr", "rfc4106(gcm(aes))": "aes-gcm",
                 "rfc4543(gcm(aes))": "aes-gmac", "ecb(cipher_null)": "null",
                 "rfc7539esp(chacha20,poly1305)": "chacha20-poly1305"}
_AUTH_WORDS = {"hmac(md5)": "md5", "hmac(sha1)": "sha1", "hmac(sha256)": "sha256",
               "hmac(sha384)": "sha384", "hmac(sha512)": "sha512", "digest_null": "None"}


def algorithm(cfg: SAConfig) -> str:
    """"ESP:aes-gcm-128/None", "ESP:aes-cbc-256/sha256", "AH:none/sha1" (Junos' column)."""
    proto = "AH" if cfg.proto == 51 else "ESP"
    name, key = (cfg.aead, cfg.aead_key) if cfg.aead else (cfg.enc, cfg.enc_key)
    if name is None:
        cipher = "none"
    else:
        word = _CIPHER_WORDS.get(name, name)
        salt = 4 if name.startswith(("rfc4106", "rfc4543", "rfc3686", "rfc7539")) else 0
        bits = (len(key) - salt) * 8
        cipher = f"{word}-{bits}" if word.startswith("aes") else word
    auth = _AUTH_WORDS.get(cfg.auth, cfg.auth) if cfg.auth else "None"
    return f"{proto}:{cipher}/{auth}"


def _life(seconds: Optional[int], kb: Optional[int]) -> str:
    s = "unlim" if seconds is None else str(max(0, int(seconds)))
    k = "unlim" if kb is None else str(max(0, int(kb)))
    return f"{s}/ {k}"


def render_ike(status: dict) -> str:
    rows = [("Index", "State", "Initiator cookie", "Responder cookie", "Mode",
             "Remote Address")]
    for sa in status.get("ike", []):
        rows.append((str(sa["index"]), sa["state"], sa["initiator_spi"], sa["responder_spi"],
                     sa["mode"], sa["remote_address"]))
    out = _table(rows)
    if len(rows) == 1:
        out = "No IKE security associations\n"
    details = []
    for sa in status.get("ike", []):
        details.append(
            f"  {sa['index']}: gateway {sa.get('gateway') or '-'}, {sa['role']}, "
            f"local {sa.get('local_identity') or '-'}, remote {sa.get('remote_identity') or '-'}, "
            f"{sa.get('proposal') or '-'}, port {sa.get('remote_port')}"
            + (", NAT-T" if sa.get("nat") else ""))
    return out + ("\n".join(details) + "\n" if details else "")


def render_ipsec(status: dict) -> str:
    sas = status.get("ipsec", [])
    tunnels = {sa["id"] for sa in sas}
    head = f"  Total active tunnels: {len(tunnels)}     Total Ipsec sas: {len(sas) // 2}\n"
    rows = [("ID", "Algorithm", "SPI", "Life:sec/kb", "Port", "Gateway", "VPN",
             "Packets", "Bytes", "Dropped")]
    for sa in sas:
        mark = "<" if sa["direction"] == "in" else ">"
        dropped = sum(sa.get("dropped", {}).values())
        rows.append((f"{mark}{sa['id']}", sa["algorithm"], sa["spi"],
                     _life(sa.get("lifetime_s"), sa.get("lifetime_kb")),
                     str(sa["port"]) if sa.get("port") else "-", sa["gateway"], sa["vpn"],
                     str(sa["packets"]), str(sa["bytes"]), str(dropped)))
    return head + _table(rows)


def render(status: dict) -> str:
    engine = status.get("engine", {})
    tail = (f"\nEngine: {status.get('backend', '?')}; packets in {engine.get('packets_in', 0)}, "
            f"out {engine.get('packets_out', 0)}, dropped "
            + (", ".join(f"{k} {v}" for k, v in engine.get("dropped", {}).items() if v)
               or "none") + "\n")
    return render_ike(status) + "\n" + render_ipsec(status) + tail


def _table(rows: list[tuple]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() + "\n"
                   for r in rows)
