"""IKEv2 cryptography: known answers where published, independent oracles elsewhere.

- DH: RFC 5903 8.1 (ECP-256) and 8.2 (ECP-384) including the KE payload encoding x | y;
  RFC 7748 6.1 (X25519); MODP primes recomputed from their defining formula (RFC 2409 6,
  RFC 3526) and checked for primality; invalid peer values refused (RFC 6989, RFC 8031 2.3).
- PRF: RFC 4231 / RFC 2202 HMAC vectors; prf+ against cryptography's HKDF-Expand, which is
  the same construction (RFC 5869 2.3 vs RFC 7296 2.13) written by someone else.
- Key derivation (RFC 7296 2.14, 2.17): lengths and order, recomputed by hand from prf+.
- SK payload: AES-GCM against cryptography's AESGCM with the RFC 5282 nonce and AAD rules;
  AES-CBC/3DES + HMAC recomputed independently; tampering caught.
- AUTH (2.15) recomputed from the definition.
The end-to-end proof that these agree with another implementation is
tests/test_ike_strongswan.py.
"""
from __future__ import annotations

import hashlib
import hmac
import itertools

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from ike.constants import DHGroup, Encr, Integ, Prf
from ike.crypto import (KEY_PAD, AeadProtector, CbcHmacProtector, derive_child_keys,
                        derive_ike_keys, ike_encr_spec, nat_detection_hash, prf, prf_len,
                        prf_plus, psk_auth, signed_octets)
from ike.dh import MODP_PRIMES, ke_length, new_dh
from ike.errors import IntegrityError, ProtocolError

h = bytes.fromhex

# --- DH --------------------------------------------------------------------------------------

# RFC 5903 8.1 (256-bit random ECP group) and 8.2 (384-bit)
ECP_VECTORS = {
    DHGroup.ECP_256: dict(
        i="C88F01F510D9AC3F70A292DAA2316DE544E9AAB8AFE84049C62A9C57862D1433",
        gix="DAD0B65394221CF9B051E1FECA5787D098DFE637FC90B9EF945D0C3772581180",
        giy="5271A0461CDB8252D61F1C456FA3E59AB1F45B33ACCF5F58389E0577B8990BB3",
        r="C6EF9C5D78AE012A011164ACB397CE2088685D8F06BF9BE0B283AB46476BEE53",
        grx="D12DFB5289C8D4F81208B70270398C342296970A0BCCB74C736FC7554494BF63",
        gry="56FBF3CA366CC23E8157854C13C58D6AAC23F046ADA30F8353E74F33039872AB",
        girx="D6840F6B42F6EDAFD13116E0E12565202FEF8E9ECE7DCE03812464D04B9442DE"),
    DHGroup.ECP_384: dict(
        i="099F3C7034D4A2C699884D73A375A67F7624EF7C6B3C0F160647B67414DCE655"
          "E35B538041E649EE3FAEF896783AB194",
        gix="667842D7D180AC2CDE6F74F37551F55755C7645C20EF73E31634FE72B4C55EE6"
            "DE3AC808ACB4BDB4C88732AEE95F41AA",
        giy="9482ED1FC0EEB9CAFC4984625CCFC23F65032149E0E144ADA024181535A0F38E"
            "EB9FCFF3C2C947DAE69B4C634573A81C",
        r="41CB0779B4BDB85D47846725FBEC3C9430FAB46CC8DC5060855CC9BDA0AA2942"
          "E0308312916B8ED2960E4BD55A7448FC",
        grx="E558DBEF53EECDE3D3FCCFC1AEA08A89A987475D12FD950D83CFA41732BC509D"
            "0D1AC43A0336DEF96FDA41D0774A3571",
        gry="DCFBEC7AACF3196472169E838430367F66EEBE3C6E70C416DD5F0C68759DD1FF"
            "F83FA40142209DFF5EAAD96DB9E6386C",
        girx="11187331C279962D93D604243FD592CB9D0A926F422E47187521287E7156C5C4"
             "D603135569B9E9D09CF5D4A270F59746"),
}


@pytest.mark.parametrize("group", list(ECP_VECTORS))
def test_ecp_rfc5903(group):
    v = ECP_VECTORS[group]
    i = new_dh(group, int(v["i"], 16))
    r = new_dh(group, int(v["r"], 16))
    # RFC 5903 8: the KE payload data is gix | giy without a point-format octet
    assert i.public_bytes() == h(v["gix"] + v["giy"])
    assert r.public_bytes() == h(v["grx"] + v["gry"])
    assert i.shared_secret(r.public_bytes()) == h(v["girx"])
    assert r.shared_secret(i.public_bytes()) == h(v["girx"])


def test_x25519_rfc7748():
    """RFC 7748 6.1, as used by RFC 8031."""
    a = new_dh(DHGroup.CURVE25519,
               h("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"))
    b = new_dh(DHGroup.CURVE25519,
               h("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"))
    assert a.public_bytes() == h("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    assert b.public_bytes() == h("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    shared = h("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
    assert a.shared_secret(b.public_bytes()) == shared == b.shared_secret(a.public_bytes())


def _pi_fixed(bits: int) -> int:
    """floor(pi * 2^bits) by Machin's formula, in integers."""
    guard = 64
    one = 1 << (bits + guard)

    def atan_inv(x: int) -> int:
        total, term, n, sign = 0, one // x, 1, 1
        while term:
            total += sign * (term // n)
            term //= x * x
            n += 2
            sign = -sign
        return total
    return (16 * atan_inv(5) - 4 * atan_inv(239)) >> guard


# RFC 2409 6.1/6.2 and RFC 3526 2-5: p = 2^n - 2^(n-64) - 1 + 2^64 * ([2^(n-130) pi] + k)
MODP_FORMULA = {1: (768, 149686), 2: (1024, 129093), 5: (1536, 741804), 14: (2048, 124476),
                15: (3072, 1690314), 16: (4096, 240904)}


@pytest.mark.parametrize("group", sorted(MODP_FORMULA))
def test_modp_primes_from_their_definition(group):
    n, k = MODP_FORMULA[group]
    p = 2 ** n - 2 ** (n - 64) - 1 + 2 ** 64 * (_pi_fixed(n - 130) + k)
    assert MODP_PRIMES[group] == p
    for base in (2, 3, 5, 7):                      # Fermat probable-prime test
        assert pow(base, p - 1, p) == 1
    assert ke_length(group) == n // 8


@pytest.mark.parametrize("group", [1, 2, 5, 14, 15, 16, 19, 20, 21, 31])
def test_dh_round_trip(group):
    a, b = new_dh(group), new_dh(group)
    assert len(a.public_bytes()) == ke_length(group)
    assert a.shared_secret(b.public_bytes()) == b.shared_secret(a.public_bytes())


def test_modp_shared_secret_padded():
    """2.14: g^ir is zero-padded to the length of the modulus (a peer value of 2 and a
    private exponent of 1 give 2, two bytes short of nothing)."""
    dh = new_dh(14, 1)
    peer = (2).to_bytes(256, "big")
    assert dh.shared_secret(peer) == peer


@pytest.mark.parametrize("group,bad", [
    (14, bytes(256)), (14, (1).to_bytes(256, "big")),
    (14, (MODP_PRIMES[14] - 1).to_bytes(256, "big")), (14, b"\x02" * 255),
    (19, bytes(64)), (19, b"\x01" * 64), (19, b"\x01" * 63),
    (31, bytes(32)), (31, b"\x01" * 31),
])
def test_dh_rejects_invalid_peer_values(group, bad):
    with pytest.raises(ProtocolError):
        new_dh(group).shared_secret(bad)


# --- PRF and prf+ ----------------------------------------------------------------------------

def test_prf_hmac_vectors():
    """RFC 4231 test case 2 and RFC 2202 test case 2 ("Jefe")."""
    data = b"what do ya want for nothing?"
    assert prf(Prf.HMAC_SHA2_256, b"Jefe", data) == h(
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    assert prf(Prf.HMAC_SHA1, b"Jefe", data) == h("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79")
    assert prf(Prf.HMAC_MD5, b"Jefe", data) == h("750c783e6ab0b503eaa86e310a5db738")
    assert prf_len(Prf.HMAC_SHA2_384) == 48 and prf_len(Prf.HMAC_SHA2_512) == 64


@pytest.mark.parametrize("prf_id,hash_cls", [(Prf.HMAC_SHA1, hashes.SHA1),
                                             (Prf.HMAC_SHA2_256, hashes.SHA256),
                                             (Prf.HMAC_SHA2_384, hashes.SHA384),
                                             (Prf.HMAC_SHA2_512, hashes.SHA512),
                                             (Prf.HMAC_MD5, hashes.MD5)])
@pytest.mark.parametrize("length", [1, 20, 64, 200, 999])
def test_prf_plus_is_hkdf_expand(prf_id, hash_cls, length):
    """prf+ (RFC 7296 2.13) and HKDF-Expand (RFC 5869 2.3) are the same construction."""
    key, seed = b"K" * 37, b"seed" * 9
    oracle = HKDFExpand(hash_cls(), length, seed).derive(key)
    assert prf_plus(prf_id, key, seed, length) == oracle


def test_prf_plus_limit():
    with pytest.raises(ValueError):
        prf_plus(Prf.HMAC_SHA1, b"k", b"s", 255 * 20 + 1)


# --- key derivation ----------------------------------------------------------------------------

def test_ike_key_derivation_order():
    """2.14: SKEYSEED = prf(Ni | Nr, g^ir); then SK_d | SK_ai | SK_ar | SK_ei | SK_er |
    SK_pi | SK_pr from prf+(SKEYSEED, Ni | Nr | SPIi | SPIr)."""
    ni, nr, gir = b"i" * 32, b"r" * 32, b"g" * 256
    spi_i, spi_r = b"I" * 8, b"R" * 8
    encr = ike_encr_spec(Encr.AES_CBC, 256)
    keys = derive_ike_keys(Prf.HMAC_SHA2_256, encr, Integ.HMAC_SHA1_96, ni, nr, gir,
                           spi_i, spi_r)
    seed = hmac.new(ni + nr, gir, "sha256").digest()
    km = HKDFExpand(hashes.SHA256(), 32 * 3 + 20 * 2 + 32 * 2,
                    ni + nr + spi_i + spi_r).derive(seed)
    sizes = [32, 20, 20, 32, 32, 32, 32]
    parts = [km[sum(sizes[:n]):sum(sizes[:n + 1])] for n in range(7)]
    assert [keys.sk_d, keys.sk_ai, keys.sk_ar, keys.sk_ei, keys.sk_er, keys.sk_pi,
            keys.sk_pr] == parts
    assert keys.sk_d.hex() not in repr(keys) and "sk_d" not in repr(keys)


def test_ike_keys_gcm_include_salt():
    """RFC 5282 7.1: SK_ei/SK_er of AES-GCM carry a 4-byte salt after the key; no SK_a."""
    encr = ike_encr_spec(Encr.AES_GCM_16, 128)
    keys = derive_ike_keys(Prf.HMAC_SHA2_256, encr, None, b"i" * 16, b"r" * 16, b"g",
                           b"I" * 8, b"R" * 8)
    assert len(keys.sk_ei) == len(keys.sk_er) == 20 and keys.sk_ai == keys.sk_ar == b""


def test_child_keymat_order():
    """2.17: KEYMAT = prf+(SK_d, Ni | Nr): encryption key then integrity key for
    initiator->responder, then the same for responder->initiator."""
    sk_d, ni, nr = b"d" * 32, b"i" * 32, b"r" * 32
    keys = derive_child_keys(Prf.HMAC_SHA2_256, sk_d, ni, nr, 16, 20)
    km = prf_plus(Prf.HMAC_SHA2_256, sk_d, ni + nr, 72)
    assert (keys.encr_i, keys.integ_i, keys.encr_r, keys.integ_r) == \
        (km[:16], km[16:36], km[36:52], km[52:])
    gcm = derive_child_keys(Prf.HMAC_SHA2_256, sk_d, ni, nr, 36, 0)  # AES-256-GCM + salt
    assert gcm.encr_i == km[:36] and gcm.integ_i == b"" and len(gcm.encr_r) == 36
    pfs = derive_child_keys(Prf.HMAC_SHA2_256, sk_d, ni, nr, 16, 20, b"G" * 32)
    assert pfs.encr_i == prf_plus(Prf.HMAC_SHA2_256, sk_d, b"G" * 32 + ni + nr, 16)


# --- AUTH and NAT detection -------------------------------------------------------------------

def test_psk_auth_definition():
    """2.15: AUTH = prf(prf(PSK, "Key Pad for IKEv2"), RealMessage | Nonce | prf(SK_p, ID))."""
    assert KEY_PAD == b"Key Pad for IKEv2" and len(KEY_PAD) == 17
    msg, nonce, sk_p, idb, psk = b"M" * 300, b"N" * 32, b"P" * 32, b"\x01\0\0\0\xc0\0\2\1", b"s"
    octets = signed_octets(Prf.HMAC_SHA2_256, msg, nonce, sk_p, idb)
    assert octets == msg + nonce + hmac.new(sk_p, idb, "sha256").digest()
    inner = hmac.new(psk, KEY_PAD, "sha256").digest()
    assert psk_auth(Prf.HMAC_SHA2_256, psk, octets) == hmac.new(inner, octets, "sha256").digest()


def test_nat_detection_hash():
    """2.23: SHA-1(SPIi | SPIr | IP | Port)."""
    got = nat_detection_hash(b"I" * 8, bytes(8), bytes([192, 0, 2, 1]), 500)
    assert got == hashlib.sha1(b"I" * 8 + bytes(8) + bytes([192, 0, 2, 1]) + b"\x01\xf4").digest()


# --- SK payload ----------------------------------------------------------------------------

PREFIX = b"H" * 28 + b"\x23\x00\x00\x50"          # IKE header + SK generic header


@pytest.mark.parametrize("bits,encr", list(itertools.product(
    (128, 256), (Encr.AES_GCM_16, Encr.AES_GCM_12, Encr.AES_GCM_8))))
def test_sk_gcm_matches_independent_aesgcm(bits, encr):
    """RFC 5282: nonce = salt | IV, AAD = header through SK header, ICV 8/12/16."""
    spec = ike_encr_spec(encr, bits)
    key = bytes(range(bits // 8 + 4))
    p = AeadProtector(spec, key)
    plain = b"payload chain" * 5
    body = p.seal(PREFIX, plain)
    assert len(body) == p.sealed_len(len(plain))
    iv, ct = body[:8], body[8:]
    # cryptography's AESGCM always makes a 16-byte tag; compare the ciphertext and the
    # tag's prefix, which is what a truncated GCM ICV is
    full = AESGCM(key[:-4]).encrypt(key[-4:] + iv, plain + b"\x00", PREFIX)
    assert ct[:-spec.icv_len] == full[:-16] and ct[-spec.icv_len:] == full[-16:][:spec.icv_len]
    assert p.open(PREFIX, body) == plain
    for pos in (0, 9, len(body) - 1):
        bad = bytearray(body)
        bad[pos] ^= 0x80
        with pytest.raises(IntegrityError):
            p.open(PREFIX, bytes(bad))
    with pytest.raises(IntegrityError):
        p.open(b"X" + PREFIX[1:], body)                 # the header is authenticated


@pytest.mark.parametrize("encr,bits,integ,hname,akey_len,icv", [
    (Encr.AES_CBC, 128, Integ.HMAC_SHA1_96, "sha1", 20, 12),
    (Encr.AES_CBC, 192, Integ.HMAC_SHA2_384_192, "sha384", 48, 24),
    (Encr.AES_CBC, 256, Integ.HMAC_SHA2_512_256, "sha512", 64, 32),
    (Encr.AES_CBC, 256, Integ.HMAC_SHA2_256_128, "sha256", 32, 16),
    (Encr.DES3, None, Integ.HMAC_MD5_96, "md5", 16, 12),
])
def test_sk_cbc_hmac_matches_definition(encr, bits, integ, hname, akey_len, icv):
    """3.14: IV | E(payloads | padding | pad length) | ICV, ICV = HMAC over the whole
    message up to the ICV, truncated."""
    spec = ike_encr_spec(encr, bits)
    ekey, akey = bytes(range(spec.key_len)), b"A" * akey_len
    p = CbcHmacProtector(spec, ekey, integ, akey)
    for n in (0, 1, 15, 16, 17, 100):
        plain = bytes(range(n))
        body = p.seal(PREFIX, plain)
        assert len(body) == p.sealed_len(n) and (len(body) - spec.iv_len - icv) % spec.block == 0
        assert body[-icv:] == hmac.new(akey, PREFIX + body[:-icv], hname).digest()[:icv]
        if encr == Encr.AES_CBC:
            dec = Cipher(algorithms.AES(ekey), modes.CBC(body[:16])).decryptor()
            padded = dec.update(body[16:-icv]) + dec.finalize()
            assert padded[:n] == plain and padded[-1] == len(padded) - n - 1
        assert p.open(PREFIX, body) == plain
    bad = bytearray(body)
    bad[20] ^= 1
    with pytest.raises(IntegrityError):
        p.open(PREFIX, bytes(bad))
    with pytest.raises(IntegrityError):
        p.open(PREFIX, body[:-1])


def test_chacha20_poly1305_sk_round_trip():
    spec = ike_encr_spec(Encr.CHACHA20_POLY1305, None)
    p = AeadProtector(spec, b"c" * 36)
    body = p.seal(PREFIX, b"inner")
    assert p.open(PREFIX, body) == b"inner"
    assert p.seal(PREFIX, b"inner")[:8] != body[:8]       # a fresh IV per message


def test_unusable_sk_ciphers_refused():
    for encr, bits in ((Encr.AES_CBC, 100), (Encr.NULL, None), (Encr.AES_CTR, 128),
                       (Encr.NULL_AUTH_AES_GMAC, 128)):
        with pytest.raises(ValueError):
            ike_encr_spec(encr, bits)
