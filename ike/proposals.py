"""SA proposals (RFC 7296 2.7, 3.3): names, selection, and what a selected one means.

Proposals are written the way strongSwan's `proposals =` / `esp_proposals =` spell them
(keywords joined by '-'; several keywords of one transform type are alternatives):

    parse_proposal("aes128-sha256-modp2048", Protocol.IKE)
    parse_proposal("aes256gcm16-prfsha384-ecp384", Protocol.IKE)
    parse_proposal("aes128gcm16", Protocol.ESP)          # ESN transform "no ESN" implied
    parse_proposal("aes128-sha1-esn", Protocol.ESP)
    parse_proposal("sha256-modp2048", Protocol.AH)       # AH: integrity (+ PFS group, ESN)

In an IKE proposal an integrity keyword without an explicit `prf...` also names the PRF of
the same hash; with an AEAD cipher it names only the PRF (as strongSwan reads it). The
mapping from Junos proposal statements (CONFIG.md) to these records is the gateway's job.

select_proposal() is the responder's choice (3.3.6): our configured order first, one
transform of each type taken from both sides' alternatives; unknown transform attributes
make a transform unselectable.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from .constants import DHGroup, ESN, Encr, Integ, Prf, Protocol, TransformType
from .crypto import INTEG, PRF_HASH, EncrSpec, ike_encr_spec
from .dh import SUPPORTED_GROUPS
from .payloads import Proposal, Transform

T = TransformType

# --- keyword tables ------------------------------------------------------------------------

_INTEG_NAMES = {"md5": Integ.HMAC_MD5_96, "sha1": Integ.HMAC_SHA1_96, "sha": Integ.HMAC_SHA1_96,
                "sha256": Integ.HMAC_SHA2_256_128, "sha2_256": Integ.HMAC_SHA2_256_128,
                "sha384": Integ.HMAC_SHA2_384_192, "sha2_384": Integ.HMAC_SHA2_384_192,
                "sha512": Integ.HMAC_SHA2_512_256, "sha2_512": Integ.HMAC_SHA2_512_256}
_PRF_NAMES = {"prfmd5": Prf.HMAC_MD5, "prfsha1": Prf.HMAC_SHA1, "prfsha256": Prf.HMAC_SHA2_256,
              "prfsha384": Prf.HMAC_SHA2_384, "prfsha512": Prf.HMAC_SHA2_512}
_PRF_OF_INTEG = {Integ.HMAC_MD5_96: Prf.HMAC_MD5, Integ.HMAC_SHA1_96: Prf.HMAC_SHA1,
                 Integ.HMAC_SHA2_256_128: Prf.HMAC_SHA2_256,
                 Integ.HMAC_SHA2_384_192: Prf.HMAC_SHA2_384,
                 Integ.HMAC_SHA2_512_256: Prf.HMAC_SHA2_512}
_DH_NAMES = {"modp768": DHGroup.MODP_768, "modp1024": DHGroup.MODP_1024,
             "modp1536": DHGroup.MODP_1536, "modp2048": DHGroup.MODP_2048,
             "modp3072": DHGroup.MODP_3072, "modp4096": DHGroup.MODP_4096,
             "ecp256": DHGroup.ECP_256, "ecp384": DHGroup.ECP_384, "ecp521": DHGroup.ECP_521,
             "curve25519": DHGroup.CURVE25519, "x25519": DHGroup.CURVE25519}
_GCM = {"8": Encr.AES_GCM_8, "64": Encr.AES_GCM_8, "12": Encr.AES_GCM_12,
        "96": Encr.AES_GCM_12, "16": Encr.AES_GCM_16, "128": Encr.AES_GCM_16, "": Encr.AES_GCM_16}
_AEADS = (Encr.AES_GCM_8, Encr.AES_GCM_12, Encr.AES_GCM_16, Encr.NULL_AUTH_AES_GMAC,
          Encr.CHACHA20_POLY1305)
_AES_RE = re.compile(r"aes(128|192|256)?(ctr|gcm(8|12|16|64|96|128)?|gmac)?")


def _encr(word: str) -> Optional[Transform]:
    m = _AES_RE.fullmatch(word)
    if m:
        bits = int(m.group(1) or 128)
        mode = m.group(2) or ""
        if mode == "":
            return Transform(T.ENCR, Encr.AES_CBC, bits)
        if mode == "ctr":
            return Transform(T.ENCR, Encr.AES_CTR, bits)
        if mode == "gmac":
            return Transform(T.ENCR, Encr.NULL_AUTH_AES_GMAC, bits)
        return Transform(T.ENCR, _GCM[m.group(3) or ""], bits)
    return {"3des": Transform(T.ENCR, Encr.DES3), "des": Transform(T.ENCR, Encr.DES),
            "null": Transform(T.ENCR, Encr.NULL),
            "chacha20poly1305": Transform(T.ENCR, Encr.CHACHA20_POLY1305)}.get(word)


def parse_proposal(text: str, protocol: int) -> Proposal:
    """One proposal from its strongSwan-style name. ValueError names the bad keyword."""
    encrs, integs, prfs, dhs, esns = [], [], [], [], []
    for word in text.strip().lower().split("-"):
        if (t := _encr(word)) is not None:
            encrs.append(t)
        elif word in _INTEG_NAMES:
            integs.append(Transform(T.INTEG, _INTEG_NAMES[word]))
        elif word in _PRF_NAMES:
            prfs.append(Transform(T.PRF, _PRF_NAMES[word]))
        elif word in _DH_NAMES:
            dhs.append(Transform(T.DH, _DH_NAMES[word]))
        elif word in ("esn", "noesn"):
            esns.append(Transform(T.ESN, ESN.YES if word == "esn" else ESN.NO))
        else:
            raise ValueError(f"proposal {text!r}: unknown keyword {word!r}")
    if protocol == Protocol.AH:
        return _ah_proposal(text, encrs, integs, prfs, dhs, esns)
    if not encrs:
        raise ValueError(f"proposal {text!r}: no encryption algorithm")
    aead = {t.id in _AEADS for t in encrs}
    if len(aead) > 1:
        raise ValueError(f"proposal {text!r}: mixes AEAD and non-AEAD ciphers")
    is_aead = aead.pop()
    if protocol == Protocol.IKE:
        if esns:
            raise ValueError(f"proposal {text!r}: ESN is an ESP/AH transform")
        if not prfs:
            prfs = [Transform(T.PRF, _PRF_OF_INTEG[t.id]) for t in integs]
        if is_aead:
            integs = []
        if not prfs:
            raise ValueError(f"proposal {text!r}: no PRF (name one, e.g. prfsha256)")
        if not integs and not is_aead:
            raise ValueError(f"proposal {text!r}: no integrity algorithm")
        if not dhs:
            raise ValueError(f"proposal {text!r}: no Diffie-Hellman group")
        for t in encrs:
            ike_encr_spec(t.id, t.key_length)           # ValueError if IKE cannot use it
    elif protocol == Protocol.ESP:
        if prfs:
            raise ValueError(f"proposal {text!r}: a PRF is an IKE transform")
        if is_aead and integs:
            raise ValueError(f"proposal {text!r}: AEAD ciphers take no integrity algorithm")
        if not is_aead and not integs:
            raise ValueError(f"proposal {text!r}: ESP without integrity is refused")
        esns = esns or [Transform(T.ESN, ESN.NO)]
    else:
        raise ValueError("only IKE, ESP and AH proposals are supported")
    _check_groups(text, dhs)
    transforms = _dedupe(encrs + prfs + integs + dhs + esns)
    return Proposal(0, protocol, b"", tuple(transforms))


def _check_groups(text: str, dhs: list[Transform]) -> None:
    for t in dhs:
        if t.id not in SUPPORTED_GROUPS:
            raise ValueError(f"proposal {text!r}: DH group {t.id} unsupported")


def _ah_proposal(text: str, encrs: list, integs: list, prfs: list, dhs: list,
                 esns: list) -> Proposal:
    """RFC 7296 3.3.3: AH takes INTEG (mandatory), optional DH (PFS in CREATE_CHILD_SA)
    and ESN; no ENCR and no PRF."""
    if encrs:
        raise ValueError(f"proposal {text!r}: AH has no encryption algorithm")
    if prfs:
        raise ValueError(f"proposal {text!r}: a PRF is an IKE transform")
    if not integs:
        raise ValueError(f"proposal {text!r}: AH needs an integrity algorithm")
    _check_groups(text, dhs)
    esns = esns or [Transform(T.ESN, ESN.NO)]
    return Proposal(0, Protocol.AH, b"", tuple(_dedupe(integs + dhs + esns)))


def _dedupe(ts: list[Transform]) -> list[Transform]:
    out: list[Transform] = []
    for t in ts:
        if t not in out:
            out.append(t)
    return out


def parse_proposals(texts: Iterable[str], protocol: int) -> tuple[Proposal, ...]:
    return tuple(parse_proposal(t, protocol) for t in texts)


def numbered(proposals: Sequence[Proposal], spi: bytes = b"") -> tuple[Proposal, ...]:
    """The proposals as sent in an SA payload: numbered 1, 2, ... carrying `spi` (3.3.1)."""
    return tuple(Proposal(i + 1, p.protocol, spi, p.transforms) for i, p in enumerate(proposals))


def describe(p: Proposal) -> str:
    """A readable name for a selected proposal, e.g. 'AES_CBC_128/HMAC_SHA1_96/MODP_2048'."""
    names = []
    for t in p.transforms:
        enum = {T.ENCR: Encr, T.PRF: Prf, T.INTEG: Integ, T.DH: DHGroup, T.ESN: ESN}.get(t.type)
        try:
            name = enum(t.id).name if enum else str(t.id)
        except ValueError:
            name = str(t.id)
        if t.type == T.PRF:
            name = "PRF_" + name
        if t.type == T.ESN:
            name = "ESN" if t.id == ESN.YES else "NO_ESN"
        names.append(f"{name}_{t.key_length}" if t.key_length else name)
    return "/".join(names)


# --- selection (3.3.6) ---------------------------------------------------------------------

def _by_type(p: Proposal, drop_dh: bool) -> dict[int, list[Transform]]:
    out: dict[int, list[Transform]] = {}
    for t in p.transforms:
        if t.type == T.INTEG and t.id == Integ.NONE:
            continue          # "no integrity" with an AEAD: the same as no INTEG transform
        if drop_dh and t.type == T.DH:
            continue
        out.setdefault(t.type, []).append(t)
    if p.protocol in (Protocol.ESP, Protocol.AH) and T.ESN not in out:
        out[T.ESN] = [Transform(T.ESN, ESN.NO)]
    return out


def _match(ours: Proposal, theirs: Proposal, drop_dh: bool,
           dh_group: Optional[int]) -> Optional[tuple[Transform, ...]]:
    if ours.protocol != theirs.protocol:
        return None
    mine, peer = _by_type(ours, drop_dh), _by_type(theirs, drop_dh)
    if set(mine) != set(peer):
        return None
    chosen = []
    for ttype, alternatives in mine.items():
        offered = [t for t in peer[ttype] if not t.unknown_attrs]
        pick = None
        for t in alternatives:
            if ttype == T.DH and dh_group is not None and t.id != dh_group:
                continue
            if any((o.id, o.key_length) == (t.id, t.key_length) for o in offered):
                pick = t
                break
        if pick is None:
            return None
        chosen.append(pick)
    return tuple(chosen)


def select_proposal(ours: Sequence[Proposal], theirs: Sequence[Proposal], *,
                    drop_dh: bool = False, prefer_dh: Optional[int] = None
                    ) -> Optional[Proposal]:
    """The responder's choice: the first of our proposals (in our order) that matches one
    of theirs, as a proposal with one transform per type, numbered and carrying the SPI of
    the peer's proposal it answers. With `prefer_dh`, a choice using that DH group (the one
    the initiator's KE payload already carries) wins over an earlier one that does not.
    `drop_dh` ignores DH transforms (IKE_AUTH's Child SA has no KE, RFC 7296 1.2)."""
    passes = [prefer_dh, None] if prefer_dh is not None else [None]
    for group in passes:
        for mine in ours:
            for peer in theirs:
                picked = _match(mine, peer, drop_dh, group)
                if picked is not None:
                    # No ESN transform in the answer if the peer sent none (3.3.3).
                    if not any(t.type == T.ESN for t in peer.transforms):
                        picked = tuple(t for t in picked if t.type != T.ESN)
                    return Proposal(peer.num, peer.protocol, peer.spi, picked)
    return None


def accept_selected(ours: Sequence[Proposal], chosen: Proposal, *,
                    drop_dh: bool = False) -> bool:
    """The initiator's check of the responder's answer: exactly one transform per type,
    and a combination one of our proposals offered."""
    per_type = _by_type(chosen, drop_dh)
    if any(len(v) != 1 for v in per_type.values()):
        return False
    picked = select_proposal(ours, [chosen], drop_dh=drop_dh)
    return picked is not None and set(_by_type(picked, drop_dh)) == set(per_type) and all(
        _by_type(picked, drop_dh)[k] == v for k, v in per_type.items())


def dh_groups(proposals: Sequence[Proposal]) -> list[int]:
    """All DH groups offered, in preference order (first proposal's first group first)."""
    out: list[int] = []
    for p in proposals:
        for t in p.transforms:
            if t.type == T.DH and t.id not in out:
                out.append(t.id)
    return out


def transform(p: Proposal, ttype: int) -> Optional[Transform]:
    for t in p.transforms:
        if t.type == ttype:
            return t
    return None


# --- what a selected proposal means ---------------------------------------------------------

@dataclass(frozen=True)
class IKEAlgorithms:
    encr: EncrSpec
    integ: Optional[int]
    prf: int
    dh: int


def ike_algorithms(p: Proposal) -> IKEAlgorithms:
    """ValueError if the selected IKE proposal is incomplete or unusable."""
    encr, prf, dh = transform(p, T.ENCR), transform(p, T.PRF), transform(p, T.DH)
    integ = transform(p, T.INTEG)
    if encr is None or prf is None or dh is None:
        raise ValueError("IKE proposal lacks ENCR, PRF or DH")
    spec = ike_encr_spec(encr.id, encr.key_length)
    if spec.aead == (integ is not None and integ.id != Integ.NONE):
        raise ValueError("IKE proposal: AEAD with INTEG, or a plain cipher without")
    if integ is not None and integ.id not in INTEG:
        raise ValueError(f"IKE integrity {integ.id} not supported")
    if prf.id not in PRF_HASH:
        raise ValueError(f"PRF {prf.id} not supported")
    if dh.id not in SUPPORTED_GROUPS:
        raise ValueError(f"DH group {dh.id} not supported")
    return IKEAlgorithms(spec, integ.id if integ is not None and integ.id else None,
                         prf.id, dh.id)


@dataclass(frozen=True)
class ESPAlgorithms:
    """A selected ESP proposal in the engine's terms (engine/algorithms.py names)."""
    enc: Optional[str]         # Linux name for enc, or None for an AEAD
    enc_key_len: int           # bytes of the enc or aead key, including any salt/nonce
    auth: Optional[str]
    auth_key_len: int
    aead: Optional[str]
    icv_bits: int
    esn: bool


_ESP_ENCR = {Encr.AES_CBC: ("cbc(aes)", 0), Encr.AES_CTR: ("rfc3686(ctr(aes))", 4)}
_ESP_AEAD = {Encr.AES_GCM_8: 64, Encr.AES_GCM_12: 96, Encr.AES_GCM_16: 128}
_ESP_INTEG = {Integ.HMAC_MD5_96: ("hmac(md5)", 16, 96), Integ.HMAC_SHA1_96: ("hmac(sha1)", 20, 96),
              Integ.HMAC_SHA2_256_128: ("hmac(sha256)", 32, 128),
              Integ.HMAC_SHA2_384_192: ("hmac(sha384)", 48, 192),
              Integ.HMAC_SHA2_512_256: ("hmac(sha512)", 64, 256)}


def esp_algorithms(p: Proposal) -> ESPAlgorithms:
    """ValueError if the engine cannot run the selected ESP proposal."""
    encr, integ, esn = transform(p, T.ENCR), transform(p, T.INTEG), transform(p, T.ESN)
    if encr is None:
        raise ValueError("ESP proposal lacks ENCR")
    bits = encr.key_length
    use_esn = esn is not None and esn.id == ESN.YES
    if encr.id in _ESP_AEAD or encr.id in (Encr.NULL_AUTH_AES_GMAC, Encr.CHACHA20_POLY1305):
        if integ is not None and integ.id != Integ.NONE:
            raise ValueError("ESP AEAD with an integrity transform")
        if encr.id == Encr.CHACHA20_POLY1305:
            if bits not in (None, 256):
                raise ValueError("ChaCha20-Poly1305 takes a 256-bit key")
            return ESPAlgorithms(None, 36, None, 0, "rfc7539esp(chacha20,poly1305)", 128,
                                 use_esn)
        if bits not in (128, 192, 256):
            raise ValueError(f"AES key length {bits} invalid")
        name = "rfc4543(gcm(aes))" if encr.id == Encr.NULL_AUTH_AES_GMAC else "rfc4106(gcm(aes))"
        return ESPAlgorithms(None, bits // 8 + 4, None, 0, name, _ESP_AEAD.get(encr.id, 128),
                             use_esn)
    if integ is None or integ.id not in _ESP_INTEG:
        raise ValueError("ESP proposal needs a supported integrity algorithm")
    auth, auth_len, icv = _ESP_INTEG[integ.id]
    if encr.id in _ESP_ENCR:
        if bits not in (128, 192, 256):
            raise ValueError(f"AES key length {bits} invalid")
        name, salt = _ESP_ENCR[encr.id]
        return ESPAlgorithms(name, bits // 8 + salt, auth, auth_len, None, icv, use_esn)
    fixed = {Encr.DES3: ("cbc(des3_ede)", 24), Encr.DES: ("cbc(des)", 8),
             Encr.NULL: ("ecb(cipher_null)", 0)}
    if encr.id in fixed and bits is None:
        name, klen = fixed[encr.id]
        return ESPAlgorithms(name, klen, auth, auth_len, None, icv, use_esn)
    raise ValueError(f"ESP encryption {encr.id} ({bits} bits) not supported")


def ah_algorithms(p: Proposal) -> ESPAlgorithms:
    """A selected AH proposal (RFC 4302) in the engine's terms: integrity only, so `enc`
    and `aead` are None and enc_key_len 0 (2.17: AH takes only integrity keys).
    ValueError if the engine cannot run it."""
    if transform(p, T.ENCR) is not None:
        raise ValueError("AH proposal with an ENCR transform (RFC 7296 3.3.3)")
    integ, esn = transform(p, T.INTEG), transform(p, T.ESN)
    if integ is None or integ.id not in _ESP_INTEG:
        raise ValueError("AH proposal needs a supported integrity algorithm")
    auth, auth_len, icv = _ESP_INTEG[integ.id]
    use_esn = esn is not None and esn.id == ESN.YES
    return ESPAlgorithms(None, 0, auth, auth_len, None, icv, use_esn)


def child_algorithms(p: Proposal) -> ESPAlgorithms:
    """esp_algorithms or ah_algorithms, by the proposal's protocol."""
    if p.protocol == Protocol.AH:
        return ah_algorithms(p)
    if p.protocol != Protocol.ESP:
        raise ValueError(f"Child SA protocol {p.protocol} is neither ESP nor AH")
    return esp_algorithms(p)


def esp_keymat_lengths(alg: ESPAlgorithms) -> tuple[int, int]:
    """(encryption key bytes, integrity key bytes) per direction for 2.17's KEYMAT."""
    return (alg.enc_key_len, alg.auth_key_len)
