# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Native crypto for the data path: per-SA contexts keyed once, one nogil pass per batch.

The engine's prepare kernels (Numba) leave an op row per live packet (engine/ops.py); the
functions here walk those rows with the GIL released once and run OpenSSL on the packet
bytes in place. Per packet only the IV, AAD, data and tag change: cipher contexts are keyed
at install time, and HMAC starts from precomputed inner/outer digest states (RFC 2104) that
are copied, not recomputed. ICVs are compared with CRYPTO_memcmp (constant time).

IVs (RFC 4303 3.2): counter modes and AEADs (CTR, GCM, GMAC, ChaCha20-Poly1305) use the
64-bit sequence number, unique per SA because sequence numbers never repeat under one key
(RFC 4106 8.1 allows any unique IV). CBC IVs must be unpredictable: each is AES-ECB of the
sequence number under a random per-SA IV key that never leaves this module.
"""
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset

from engine._libcrypto cimport *
from engine._layout cimport *   # op-row columns, algorithm ids, drop values
from engine._digest cimport digest_ctx, _digest_len, _block_len, _d_init, _d_update, _d_final

cdef struct hmac_state:
    int alg
    int digest_len
    digest_ctx inner      # hash state after absorbing key ^ ipad
    digest_ctx outer      # hash state after absorbing key ^ opad

cdef struct sa_crypto:
    int active
    int disabled                  # another backend runs this slot (set_enabled): skip its rows
    int proto                     # PROTO_ESP or PROTO_AH
    int cipher
    int auth
    int icv_len
    int iv_len
    int esn
    int outbound
    uint8_t salt[4]               # RFC 3686 nonce / RFC 4106, 4543, 7634 salt
    EVP_CIPHER_CTX *ctx           # keyed once, direction fixed at install
    EVP_CIPHER_CTX *ivgen         # outbound CBC only: AES-128-ECB under a random key
    hmac_state hmac


# ---------------------------------------------------------------------------------------
# HMAC from precomputed states
# ---------------------------------------------------------------------------------------
cdef int _hmac_setup(hmac_state *h, int alg, const uint8_t *key, size_t keylen) noexcept nogil:
    """RFC 2104: absorb (K ^ ipad) and (K ^ opad) once; keys longer than a block are hashed."""
    cdef uint8_t k[128]
    cdef uint8_t pad[128]
    cdef int bl = _block_len(alg)
    cdef int i
    cdef digest_ctx tmp
    h.alg = alg
    h.digest_len = _digest_len(alg)
    memset(k, 0, 128)
    if <int>keylen > bl:
        _d_init(alg, &tmp)
        _d_update(alg, &tmp, key, keylen)
        _d_final(alg, &tmp, k)
        OPENSSL_cleanse(&tmp, sizeof(tmp))
    elif keylen > 0:
        memcpy(k, key, keylen)
    for i in range(bl):
        pad[i] = k[i] ^ 0x36
    _d_init(alg, &h.inner)
    _d_update(alg, &h.inner, pad, bl)
    for i in range(bl):
        pad[i] = k[i] ^ 0x5c
    _d_init(alg, &h.outer)
    _d_update(alg, &h.outer, pad, bl)
    OPENSSL_cleanse(k, 128)
    OPENSSL_cleanse(pad, 128)
    return 1


cdef void _hmac(const hmac_state *h, const uint8_t *p, size_t n,
                const uint8_t *extra, size_t extra_n, uint8_t *out) noexcept nogil:
    """out = HMAC(p[:n] || extra[:extra_n]); `extra` carries the ESN high bits (RFC 4303 2.2.1)."""
    cdef digest_ctx c
    cdef uint8_t inner_md[64]
    memcpy(&c, &h.inner, sizeof(digest_ctx))
    _d_update(h.alg, &c, p, n)
    if extra_n:
        _d_update(h.alg, &c, extra, extra_n)
    _d_final(h.alg, &c, inner_md)
    memcpy(&c, &h.outer, sizeof(digest_ctx))
    _d_update(h.alg, &c, inner_md, h.digest_len)
    _d_final(h.alg, &c, out)


# ---------------------------------------------------------------------------------------
# Ciphers
# ---------------------------------------------------------------------------------------
cdef bint _providers_loaded = False


cdef _load_providers():
    """single DES lives in OpenSSL 3's legacy provider; loading it disables the implicit
    default provider, so load both explicitly, once."""
    global _providers_loaded
    if _providers_loaded:
        return
    if OSSL_PROVIDER_load(NULL, b"default") == NULL:
        raise RuntimeError("OpenSSL default provider could not be loaded")
    OSSL_PROVIDER_load(NULL, b"legacy")   # absent: DES-CBC SAs fail to install, loudly
    _providers_loaded = True


_fetched = {}   # OpenSSL algorithm name -> fetched EVP_CIPHER* (kept for the process)


cdef const EVP_CIPHER *_fetch(bytes name, bytes props) except NULL:
    cdef EVP_CIPHER *c
    cdef const char *cprops = NULL
    key = (name, props)
    if key not in _fetched:
        if props:
            cprops = props
        c = EVP_CIPHER_fetch(NULL, name, cprops)
        if c == NULL:
            raise RuntimeError(f"OpenSSL has no {name.decode()} ({props.decode() or 'default'})")
        _fetched[key] = <size_t>c
    return <const EVP_CIPHER *><size_t>_fetched[key]


_AES_BITS = {16: b"128", 24: b"192", 32: b"256"}


cdef const EVP_CIPHER *_evp_cipher(int cipher, int keylen) except NULL:
    """The EVP cipher for an engine cipher id and raw key length (salt excluded)."""
    aes = cipher in (C_AES_CBC, C_AES_CTR, C_AES_GCM, C_AES_GMAC)
    if aes and keylen not in _AES_BITS:
        raise ValueError(f"AES takes 16, 24 or 32-byte keys, not {keylen}")
    if cipher == C_AES_CBC:
        return _fetch(b"AES-" + _AES_BITS[keylen] + b"-CBC", b"")
    if cipher == C_AES_CTR:
        return _fetch(b"AES-" + _AES_BITS[keylen] + b"-CTR", b"")
    if cipher == C_AES_GCM or cipher == C_AES_GMAC:
        return _fetch(b"AES-" + _AES_BITS[keylen] + b"-GCM", b"")
    if cipher == C_DES3_CBC:
        return _fetch(b"DES-EDE3-CBC", b"")
    if cipher == C_DES_CBC:
        # single DES lives in OpenSSL 3's legacy provider
        return _fetch(b"DES-CBC", b"provider=legacy")
    if cipher == C_CHACHA:
        return _fetch(b"ChaCha20-Poly1305", b"")
    raise ValueError(f"unknown cipher id {cipher}")


cdef inline bint _is_aead(int cipher) noexcept nogil:
    return cipher == C_AES_GCM or cipher == C_AES_GMAC or cipher == C_CHACHA


cdef inline void _put_be64(uint8_t *p, uint64_t v) noexcept nogil:
    cdef int i
    for i in range(8):
        p[i] = <uint8_t>(v >> (56 - 8 * i))


cdef inline void _put_be32(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = <uint8_t>(v >> 24)
    p[1] = <uint8_t>(v >> 16)
    p[2] = <uint8_t>(v >> 8)
    p[3] = <uint8_t>v


cdef int _cipher_run(sa_crypto *sa, const uint8_t *iv, uint8_t *data, int n) noexcept nogil:
    """CBC / CTR over data[:n] in place, in the SA's fixed direction. Returns 1 on success."""
    cdef uint8_t ctr[16]
    cdef int outl = 0
    if sa.cipher == C_NULL:
        return 1
    if sa.cipher == C_AES_CTR:
        # RFC 3686 4: counter block = nonce || IV || 1
        memcpy(ctr, sa.salt, 4)
        memcpy(ctr + 4, iv, 8)
        ctr[12] = 0
        ctr[13] = 0
        ctr[14] = 0
        ctr[15] = 1
        if EVP_CipherInit_ex(sa.ctx, NULL, NULL, NULL, ctr, -1) != 1:
            return 0
    elif EVP_CipherInit_ex(sa.ctx, NULL, NULL, NULL, iv, -1) != 1:
        return 0
    if n == 0:
        return 1
    return EVP_CipherUpdate(sa.ctx, data, &outl, data, n) == 1 and outl == n


cdef int _aead_run(sa_crypto *sa, const uint8_t *iv, const uint8_t *aad1, int aad1_n,
                   const uint8_t *aad2, int aad2_n, uint8_t *data, int n,
                   uint8_t *tag, int encrypt) noexcept nogil:
    """GCM / GMAC / ChaCha20-Poly1305 with nonce = salt || iv. GMAC authenticates `data`
    as AAD (RFC 4543 3) and encrypts nothing. Returns 1 on success, 0 on a bad tag."""
    cdef uint8_t nonce[12]
    cdef int outl = 0
    memcpy(nonce, sa.salt, 4)
    memcpy(nonce + 4, iv, 8)
    if EVP_CipherInit_ex(sa.ctx, NULL, NULL, NULL, nonce, -1) != 1:
        return 0
    if aad1_n and EVP_CipherUpdate(sa.ctx, NULL, &outl, aad1, aad1_n) != 1:
        return 0
    if aad2_n and EVP_CipherUpdate(sa.ctx, NULL, &outl, aad2, aad2_n) != 1:
        return 0
    if sa.cipher == C_AES_GMAC:
        if n and EVP_CipherUpdate(sa.ctx, NULL, &outl, data, n) != 1:
            return 0
    elif n and EVP_CipherUpdate(sa.ctx, data, &outl, data, n) != 1:
        return 0
    if encrypt:
        if EVP_CipherFinal_ex(sa.ctx, data + n, &outl) != 1:
            return 0
        return EVP_CIPHER_CTX_ctrl(sa.ctx, EVP_CTRL_AEAD_GET_TAG, sa.icv_len, tag) == 1
    if EVP_CIPHER_CTX_ctrl(sa.ctx, EVP_CTRL_AEAD_SET_TAG, sa.icv_len, tag) != 1:
        return 0
    return EVP_CipherFinal_ex(sa.ctx, data + n, &outl) == 1


cdef void _sa_free(sa_crypto *sa) noexcept nogil:
    if sa.ctx != NULL:
        EVP_CIPHER_CTX_free(sa.ctx)      # cleanses the key schedule
    if sa.ivgen != NULL:
        EVP_CIPHER_CTX_free(sa.ivgen)
    OPENSSL_cleanse(sa, sizeof(sa_crypto))


# ---------------------------------------------------------------------------------------
# The per-SA table
# ---------------------------------------------------------------------------------------
cdef class CryptoTable:
    """Native crypto state of every SA slot: keyed cipher contexts, HMAC states, IV keys.

    The engine (engine/engine.py) owns one and installs a slot per SA. Removing a slot
    frees its contexts and wipes every byte of key-derived state.
    """
    cdef sa_crypto *tab
    cdef readonly int size

    def __cinit__(self, int size):
        _load_providers()
        self.tab = <sa_crypto *>calloc(size, sizeof(sa_crypto))
        if self.tab == NULL:
            raise MemoryError()
        self.size = size

    def __dealloc__(self):
        cdef int i
        if self.tab != NULL:
            for i in range(self.size):
                _sa_free(&self.tab[i])
            free(self.tab)

    def install(self, int slot, int cipher, const uint8_t[::1] cipher_key, int salt_len,
                int auth, const uint8_t[::1] auth_key, int icv_len, int iv_len,
                bint esn, bint outbound, int proto=PROTO_ESP):
        """Key one slot. cipher_key includes the trailing salt/nonce (salt_len bytes)."""
        if slot < 0 or slot >= self.size:
            raise IndexError("SA slot out of range")
        cdef sa_crypto *sa = &self.tab[slot]
        _sa_free(sa)
        cdef int keylen = cipher_key.shape[0] - salt_len
        cdef uint8_t ivkey[16]
        cdef const EVP_CIPHER *evp
        sa.proto = proto
        sa.cipher = cipher
        sa.auth = auth
        sa.icv_len = icv_len
        sa.iv_len = iv_len
        sa.esn = esn
        sa.outbound = outbound
        try:
            if salt_len:
                memcpy(sa.salt, &cipher_key[keylen], salt_len)
            if cipher != C_NULL:
                evp = _evp_cipher(cipher, keylen)
                sa.ctx = EVP_CIPHER_CTX_new()
                if sa.ctx == NULL:
                    raise MemoryError()
                if EVP_CipherInit_ex(sa.ctx, evp, NULL, &cipher_key[0], NULL, 1 if outbound else 0) != 1:
                    raise ValueError("OpenSSL refused the cipher key")
                if not _is_aead(cipher):
                    EVP_CIPHER_CTX_set_padding(sa.ctx, 0)
            if outbound and cipher in (C_AES_CBC, C_DES3_CBC, C_DES_CBC):
                if RAND_bytes(ivkey, 16) != 1:
                    raise RuntimeError("no randomness for the IV key")
                sa.ivgen = EVP_CIPHER_CTX_new()
                if sa.ivgen == NULL:
                    raise MemoryError()
                evp = _evp_cipher_ecb()
                if EVP_CipherInit_ex(sa.ivgen, evp, NULL, ivkey, NULL, 1) != 1:
                    raise RuntimeError("IV generator setup failed")
                EVP_CIPHER_CTX_set_padding(sa.ivgen, 0)
            if auth != A_NONE:
                _hmac_setup(&sa.hmac, auth, &auth_key[0] if auth_key.shape[0] else NULL,
                            auth_key.shape[0])
        except BaseException:
            _sa_free(sa)
            raise
        finally:
            OPENSSL_cleanse(ivkey, 16)
        sa.active = 1

    def remove(self, int slot):
        if 0 <= slot < self.size:
            _sa_free(&self.tab[slot])

    def set_enabled(self, int slot, bint enabled):
        """Disabled: the batch passes skip the slot's rows (another backend, engine/_mb.pyx,
        runs them). Install enables a slot; the keyed state stays as the fallback."""
        if slot < 0 or slot >= self.size or not self.tab[slot].active:
            raise KeyError(f"no SA in crypto slot {slot}")
        self.tab[slot].disabled = not enabled

    def enabled(self, int slot) -> bool:
        return 0 <= slot < self.size and self.tab[slot].active and not self.tab[slot].disabled


cdef const EVP_CIPHER *_evp_cipher_ecb() except NULL:
    return _fetch(b"AES-128-ECB", b"")


# ---------------------------------------------------------------------------------------
# Batch passes (GIL released once per batch)
# ---------------------------------------------------------------------------------------
cdef inline void _esp_aad(uint8_t *aad, const uint8_t *esp, uint64_t seq, int esn,
                          int *aad_n) noexcept nogil:
    """RFC 4106 5 / RFC 7634 2.1: AAD = SPI || seq (32 bits) or SPI || seq (64 bits, ESN)."""
    memcpy(aad, esp, 4)
    if esn:
        _put_be64(aad + 4, seq)
        aad_n[0] = 12
    else:
        memcpy(aad + 4, esp + 4, 4)
        aad_n[0] = 8


def esp_encrypt(CryptoTable table, uint8_t[::1] buf, int64_t[:, ::1] ops,
                uint8_t[::1] drop, int n):
    """Write IVs, encrypt, and write ICVs for every live row (drop == 0)."""
    cdef int i, aad_n, ok, slot
    cdef sa_crypto *sa
    cdef uint8_t *base = &buf[0]
    cdef uint8_t *esp
    cdef uint8_t *iv
    cdef uint8_t blk[16]
    cdef uint8_t aad[16]
    cdef uint8_t seq_hi[4]
    cdef uint8_t md[64]
    cdef uint64_t seq
    cdef int outl
    if n > ops.shape[0] or n > drop.shape[0]:
        raise ValueError("op list shorter than the batch")
    with nogil:
        for i in range(n):
            if drop[i]:
                continue
            slot = <int>ops[i, OP_SA]
            sa = &table.tab[slot]
            if slot < 0 or slot >= table.size or not sa.active:
                drop[i] = DROP_MALFORMED
                continue
            if sa.disabled:
                continue                  # another backend's row
            if sa.proto == PROTO_AH:
                continue                  # ah_icv's row
            seq = <uint64_t>ops[i, OP_SEQ]
            esp = base + ops[i, OP_AUTH_OFF]
            iv = base + ops[i, OP_IV_OFF]
            if sa.iv_len:
                if sa.ivgen != NULL:
                    memset(blk, 0, 8)
                    _put_be64(blk + 8, seq)
                    EVP_CipherUpdate(sa.ivgen, blk, &outl, blk, 16)
                    memcpy(iv, blk, sa.iv_len)
                else:
                    _put_be64(iv, seq)
            if _is_aead(sa.cipher):
                _esp_aad(aad, esp, seq, sa.esn, &aad_n)
                if sa.cipher == C_AES_GMAC:
                    # RFC 4543 3.3: AAD = SPI || seq [|| ESN]... then IV and payload, all clear
                    ok = _aead_run(sa, iv, aad, aad_n, iv, 8,
                                   base + ops[i, OP_DATA_OFF], <int>ops[i, OP_DATA_LEN],
                                   base + ops[i, OP_ICV_OFF], 1)
                else:
                    ok = _aead_run(sa, iv, aad, aad_n, NULL, 0,
                                   base + ops[i, OP_DATA_OFF], <int>ops[i, OP_DATA_LEN],
                                   base + ops[i, OP_ICV_OFF], 1)
            else:
                ok = _cipher_run(sa, iv, base + ops[i, OP_DATA_OFF], <int>ops[i, OP_DATA_LEN])
                if ok and sa.auth != A_NONE:
                    _put_be32(seq_hi, <uint32_t>(seq >> 32))
                    _hmac(&sa.hmac, esp, <size_t>ops[i, OP_AUTH_LEN], seq_hi,
                          4 if sa.esn else 0, md)
                    memcpy(base + ops[i, OP_ICV_OFF], md, sa.icv_len)
            if not ok:
                drop[i] = DROP_MALFORMED
    return None


def esp_decrypt(CryptoTable table, uint8_t[::1] buf, int64_t[:, ::1] ops,
                uint8_t[::1] drop, int n):
    """Verify ICVs (constant time) and decrypt every live row; bad ICV -> AUTH_FAILED."""
    cdef int i, aad_n, ok, slot
    cdef sa_crypto *sa
    cdef uint8_t *base = &buf[0]
    cdef uint8_t *esp
    cdef uint8_t *iv
    cdef uint8_t aad[16]
    cdef uint8_t seq_hi[4]
    cdef uint8_t md[64]
    cdef uint64_t seq
    if n > ops.shape[0] or n > drop.shape[0]:
        raise ValueError("op list shorter than the batch")
    with nogil:
        for i in range(n):
            if drop[i]:
                continue
            slot = <int>ops[i, OP_SA]
            sa = &table.tab[slot]
            if slot < 0 or slot >= table.size or not sa.active:
                drop[i] = DROP_MALFORMED
                continue
            if sa.disabled:
                continue                  # another backend's row
            if sa.proto == PROTO_AH:
                continue                  # ah_icv's row
            seq = <uint64_t>ops[i, OP_SEQ]
            esp = base + ops[i, OP_AUTH_OFF]
            iv = base + ops[i, OP_IV_OFF]
            if _is_aead(sa.cipher):
                _esp_aad(aad, esp, seq, sa.esn, &aad_n)
                if sa.cipher == C_AES_GMAC:
                    ok = _aead_run(sa, iv, aad, aad_n, iv, 8,
                                   base + ops[i, OP_DATA_OFF], <int>ops[i, OP_DATA_LEN],
                                   base + ops[i, OP_ICV_OFF], 0)
                else:
                    ok = _aead_run(sa, iv, aad, aad_n, NULL, 0,
                                   base + ops[i, OP_DATA_OFF], <int>ops[i, OP_DATA_LEN],
                                   base + ops[i, OP_ICV_OFF], 0)
                if not ok:
                    drop[i] = DROP_AUTH_FAILED
                continue
            if sa.auth != A_NONE:
                _put_be32(seq_hi, <uint32_t>(seq >> 32))
                _hmac(&sa.hmac, esp, <size_t>ops[i, OP_AUTH_LEN], seq_hi,
                      4 if sa.esn else 0, md)
                if CRYPTO_memcmp(md, base + ops[i, OP_ICV_OFF], sa.icv_len) != 0:
                    drop[i] = DROP_AUTH_FAILED
                    continue
            if not _cipher_run(sa, iv, base + ops[i, OP_DATA_OFF], <int>ops[i, OP_DATA_LEN]):
                drop[i] = DROP_MALFORMED
    return None


def ah_icv(CryptoTable table, uint8_t[::1] buf, int64_t[:, ::1] ops, uint8_t[::1] drop,
           uint8_t[:, ::1] icv_in, int n, bint verify):
    """AH (RFC 4302 3.3.3): HMAC over the whole packet with mutable fields and the ICV field
    already zeroed by the prepare kernel. Sign writes the ICV at OP_ICV_OFF; verify compares
    with the received ICV saved in icv_in[i] and sets AUTH_FAILED on mismatch."""
    cdef int i, slot
    cdef sa_crypto *sa
    cdef uint8_t *base = &buf[0]
    cdef uint8_t seq_hi[4]
    cdef uint8_t md[64]
    cdef uint64_t seq
    if n > ops.shape[0] or n > drop.shape[0] or n > icv_in.shape[0] or icv_in.shape[1] < 32:
        raise ValueError("op list shorter than the batch")
    with nogil:
        for i in range(n):
            if drop[i]:
                continue
            slot = <int>ops[i, OP_SA]
            sa = &table.tab[slot]
            if slot < 0 or slot >= table.size or not sa.active:
                drop[i] = DROP_MALFORMED
                continue
            if sa.disabled:
                continue                  # another backend's row
            if sa.proto != PROTO_AH:
                continue                  # esp_encrypt / esp_decrypt's row
            if sa.auth == A_NONE:
                drop[i] = DROP_MALFORMED
                continue
            seq = <uint64_t>ops[i, OP_SEQ]
            _put_be32(seq_hi, <uint32_t>(seq >> 32))
            _hmac(&sa.hmac, base + ops[i, OP_AUTH_OFF], <size_t>ops[i, OP_AUTH_LEN], seq_hi,
                  4 if sa.esn else 0, md)
            if verify:
                if CRYPTO_memcmp(md, &icv_in[i, 0], sa.icv_len) != 0:
                    drop[i] = DROP_AUTH_FAILED
            else:
                memcpy(base + ops[i, OP_ICV_OFF], md, sa.icv_len)
    return None


# ---------------------------------------------------------------------------------------
# Known-answer entry points: the same code paths, one operation at a time (tests only)
# ---------------------------------------------------------------------------------------
_AUTH_IDS = {"hmac(md5)": A_MD5, "hmac(sha1)": A_SHA1, "hmac(sha256)": A_SHA256,
             "hmac(sha384)": A_SHA384, "hmac(sha512)": A_SHA512}
_CIPHER_IDS = {"cbc(aes)": (C_AES_CBC, 0), "cbc(des3_ede)": (C_DES3_CBC, 0),
               "cbc(des)": (C_DES_CBC, 0), "rfc3686(ctr(aes))": (C_AES_CTR, 4),
               "rfc4106(gcm(aes))": (C_AES_GCM, 4), "rfc4543(gcm(aes))": (C_AES_GMAC, 4),
               "rfc7539esp(chacha20,poly1305)": (C_CHACHA, 4)}


def kat_hmac(str auth_name, bytes key, bytes data):
    """Full HMAC digest through the precomputed-state path."""
    cdef hmac_state h
    cdef uint8_t md[64]
    alg = _AUTH_IDS[auth_name]
    _hmac_setup(&h, alg, key, len(key))
    _hmac(&h, data, len(data), NULL, 0, md)
    OPENSSL_cleanse(&h, sizeof(h))
    return md[:_digest_len(alg)]


def kat_cipher(str cipher_name, bytes key, bytes iv, bytes data, bint encrypt):
    """One CBC/CTR operation through an installed slot (iv: 16/8 bytes CBC, 8 bytes CTR)."""
    cipher, salt = _CIPHER_IDS[cipher_name]
    t = CryptoTable(1)
    t.install(0, cipher, key, salt, A_NONE, b"", 0, len(iv), False, encrypt)
    out = bytearray(data)
    cdef uint8_t[::1] view = out
    cdef const uint8_t[::1] ivv = iv
    if len(out) and not _cipher_run(&t.tab[0], &ivv[0], &view[0], len(out)):
        raise ValueError("cipher operation failed (length not a block multiple?)")
    return bytes(out)


def kat_aead(str cipher_name, bytes key, bytes iv, bytes aad, bytes data, int icv_len,
             bint encrypt):
    """One AEAD operation; encrypt returns ciphertext||tag, decrypt takes it and returns the
    plaintext or raises ValueError. GMAC authenticates data after aad, encrypting nothing."""
    cipher, salt = _CIPHER_IDS[cipher_name]
    if len(iv) != 8:
        raise ValueError("ESP AEAD IVs are 8 bytes")
    t = CryptoTable(1)
    t.install(0, cipher, key, salt, A_NONE, b"", icv_len, 8, False, encrypt)
    if encrypt:
        out = bytearray(data) + bytearray(icv_len)
        n = len(data)
    else:
        if len(data) < icv_len:
            raise ValueError("shorter than the tag")
        out = bytearray(data)
        n = len(data) - icv_len
    out += b"\0"  # never an empty buffer
    cdef uint8_t[::1] view = out
    cdef const uint8_t[::1] ivv = iv
    cdef const uint8_t *aadp = aad
    ok = _aead_run(&t.tab[0], &ivv[0], aadp, len(aad), NULL, 0, &view[0], n, &view[n], encrypt)
    if not ok:
        raise ValueError("tag did not verify")
    return bytes(out[:n + icv_len]) if encrypt else bytes(out[:n])


def openssl_version() -> str:
    return OpenSSL_version(0).decode()
