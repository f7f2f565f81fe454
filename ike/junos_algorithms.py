"""Junos algorithm names (CONFIG.md) -> ike/proposals.py keywords and engine/algorithms.py names.

IKE and IKE-keyed ESP proposals become strongSwan-style proposal strings that
ike/proposals.parse_proposal reads; manual-key SAs become the engine's Linux names with the
key lengths Junos requires. Every Junos name of CONFIG.md is in exactly one of these tables
(tests/test_vpn_config.py checks each one against parse_proposal / the engine).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

# --- IKE (security ike proposal) ----------------------------------------------------------

#: None: the name is Junos's, but IKE here cannot run it (ike/crypto.ike_encr_spec).
IKE_ENCRYPTION: dict[str, Optional[str]] = {
    "des-cbc": "des", "3des-cbc": "3des",
    "aes-128-cbc": "aes128", "aes-192-cbc": "aes192", "aes-256-cbc": "aes256",
    "aes-128-gcm": "aes128gcm16", "aes-256-gcm": "aes256gcm16",
}
IKE_AEAD = ("aes-128-gcm", "aes-256-gcm")

#: IKE authentication-algorithm: the integrity and the PRF of the same hash; with GCM only
#: the PRF (CONFIG.md).
IKE_AUTHENTICATION = {"md5": "md5", "sha1": "sha1", "sha-256": "sha256", "sha-384": "sha384",
                      "sha-512": "sha512"}

#: The PRF of a GCM proposal without authentication-algorithm: SHA-256 for AES-128 and
#: SHA-384 for AES-256, the pairing of the Suite B GCM suites (RFC 6379).
IKE_AEAD_DEFAULT_PRF = {"aes-128-gcm": "sha-256", "aes-256-gcm": "sha-384"}

#: dh-group / PFS `keys` -> (IANA Transform Type 4 number, proposal keyword).
DH_GROUPS: dict[str, tuple[int, str]] = {
    "group1": (1, "modp768"), "group2": (2, "modp1024"), "group5": (5, "modp1536"),
    "group14": (14, "modp2048"), "group15": (15, "modp3072"), "group16": (16, "modp4096"),
    "group19": (19, "ecp256"), "group20": (20, "ecp384"), "group21": (21, "ecp521"),
    "group31": (31, "curve25519"),
}

IKE_AUTH_METHODS = ("pre-shared-keys", "rsa-signatures", "ecdsa-signatures-256",
                    "ecdsa-signatures-384")

# --- IPsec (security ipsec proposal, vpn manual) ------------------------------------------

ESP_ENCRYPTION = {
    "des-cbc": "des", "3des-cbc": "3des",
    "aes-128-cbc": "aes128", "aes-192-cbc": "aes192", "aes-256-cbc": "aes256",
    "aes-128-gcm": "aes128gcm16", "aes-192-gcm": "aes192gcm16", "aes-256-gcm": "aes256gcm16",
    "chacha20-poly1305": "chacha20poly1305",
}
ESP_AEAD = ("aes-128-gcm", "aes-192-gcm", "aes-256-gcm", "chacha20-poly1305")

IPSEC_AUTHENTICATION = {"hmac-md5-96": "md5", "hmac-sha1-96": "sha1",
                        "hmac-sha-256-128": "sha256", "hmac-sha-384-192": "sha384",
                        "hmac-sha-512-256": "sha512"}


class EngineCipher(NamedTuple):
    name: str          # engine/algorithms.CIPHERS key
    key_len: int       # bytes Junos's key must have, salt/nonce included
    icv_bits: int      # AEAD ICV; 0 for a plain cipher


class EngineAuth(NamedTuple):
    name: str          # engine/algorithms.AUTHS key
    key_len: int       # bytes: the hash's output length (RFC 2403/2404/4868 keys)
    icv_bits: int      # the RFC truncation the Junos name states


#: Manual-key encryption: AEAD keys carry the 4-byte salt (RFC 4106 8.1, RFC 7634 2).
MANUAL_ENCRYPTION = {
    "des-cbc": EngineCipher("cbc(des)", 8, 0),
    "3des-cbc": EngineCipher("cbc(des3_ede)", 24, 0),
    "aes-128-cbc": EngineCipher("cbc(aes)", 16, 0),
    "aes-192-cbc": EngineCipher("cbc(aes)", 24, 0),
    "aes-256-cbc": EngineCipher("cbc(aes)", 32, 0),
    "aes-128-gcm": EngineCipher("rfc4106(gcm(aes))", 20, 128),
    "aes-192-gcm": EngineCipher("rfc4106(gcm(aes))", 28, 128),
    "aes-256-gcm": EngineCipher("rfc4106(gcm(aes))", 36, 128),
    "chacha20-poly1305": EngineCipher("rfc7539esp(chacha20,poly1305)", 36, 128),
}

MANUAL_AUTHENTICATION = {
    "hmac-md5-96": EngineAuth("hmac(md5)", 16, 96),
    "hmac-sha1-96": EngineAuth("hmac(sha1)", 20, 96),
    "hmac-sha-256-128": EngineAuth("hmac(sha256)", 32, 128),
    "hmac-sha-384-192": EngineAuth("hmac(sha384)", 48, 192),
    "hmac-sha-512-256": EngineAuth("hmac(sha512)", 64, 256),
}


def ike_proposal_text(encryption: str, authentication: Optional[str], dh_group: str) -> str:
    """The parse_proposal string of one Junos IKE proposal. ValueError says what is wrong
    (the caller adds the line)."""
    encr = IKE_ENCRYPTION[encryption]
    if encr is None:
        raise ValueError(f"encryption-algorithm {encryption} is not supported for IKE "
                         "(use 3des-cbc, aes-*-cbc or aes-*-gcm)")
    dh = DH_GROUPS[dh_group][1]
    if encryption in IKE_AEAD:
        prf = IKE_AUTHENTICATION[authentication or IKE_AEAD_DEFAULT_PRF[encryption]]
        return f"{encr}-prf{prf}-{dh}"
    if authentication is None:
        raise ValueError(f"authentication-algorithm is required with {encryption}")
    return f"{encr}-{IKE_AUTHENTICATION[authentication]}-{dh}"


def esp_proposal_text(encryption: Optional[str], authentication: Optional[str],
                      pfs_group: Optional[str]) -> str:
    """The parse_proposal string of one Junos ESP proposal, the PFS group appended."""
    if encryption in ESP_AEAD:
        if authentication is not None:
            raise ValueError(f"authentication-algorithm with {encryption}: an AEAD cipher "
                             "is its own integrity")
        words = [ESP_ENCRYPTION[encryption]]
    else:
        if authentication is None:
            raise ValueError("ESP needs authentication-algorithm unless the cipher is "
                             "AES-GCM or ChaCha20-Poly1305")
        words = [ESP_ENCRYPTION[encryption] if encryption else "null",
                 IPSEC_AUTHENTICATION[authentication]]
    if pfs_group is not None:
        words.append(DH_GROUPS[pfs_group][1])
    return "-".join(words)


def ah_proposal_text(authentication: Optional[str], pfs_group: Optional[str]) -> str:
    """The parse_proposal string (Protocol.AH) of one Junos AH proposal, the PFS group
    appended: integrity only (RFC 7296 3.3.3)."""
    if authentication is None:
        raise ValueError("AH needs authentication-algorithm")
    words = [IPSEC_AUTHENTICATION[authentication]]
    if pfs_group is not None:
        words.append(DH_GROUPS[pfs_group][1])
    return "-".join(words)
