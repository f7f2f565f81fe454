# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The Intel multi-buffer crypto backend: the ESP crypto pass as library jobs.

Same contract as engine/_crypto.pyx (the OpenSSL backend) over the same op rows
(engine/ops.py) and drop array, for the SAs installed here; rows of other SAs are left to
the next backend. Per SA, once at install: AES key schedules (IMB_AES_KEYEXP_*), GCM key
data (IMB_AES*_GCM_PRE), DES key schedules, and the HMAC inner/outer hash states
(RFC 2104: one compression of K ^ ipad / K ^ opad, IMB_*_ONE_BLOCK). Per batch: every live
row becomes one job (cipher and HMAC chained in one job, or an AEAD job), submitted to the
library's job manager 128 at a time with the 1.3 burst API (IMB_GET_NEXT_BURST /
IMB_SUBMIT_BURST_NOCHECK) with the GIL released once; the manager runs several buffers side
by side in SIMD lanes and hands jobs back in submission order.

The batch path submits unchecked: every job field that is fixed per SA (algorithms, key and
IV lengths, tag lengths, key pointers) went once through the library's checked submit at
install (_selftest), and the per-row lengths are checked here (_row_ok; the prepare kernels
already drop misaligned packets). That saves ~12 ns per packet.

The library writes ICVs at their full digest length only (or the RFC 2404/4868 truncation),
while Linux allows any truncation from 32 bits, so HMAC tags go to a per-row scratch and the
SA's ICV length is copied or compared from there. ICVs are compared with CRYPTO_memcmp
(constant time).

ESN (RFC 4303 2.2.1): the high 32 bits of the sequence number are hashed after the
ciphertext, but a job hashes one contiguous range. Encrypt writes them where the ICV goes
(the ICV then overwrites them); decrypt first saves the received ICV to the row scratch.

IVs follow _crypto.pyx exactly: counter modes and AEADs use the 64-bit sequence number
(so both backends produce the same ciphertext for the same packet and sequence number);
CBC IVs are AES-128(0^64 || seq) under a random per-SA IV key that never leaves this module.

One IMB_MGR per process, set up at import by init_mb_mgr_auto (the widest SIMD the CPU has);
a lock serialises passes from different threads, since the manager holds in-flight jobs.
"""
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t, uintptr_t
from libc.stdlib cimport free
from libc.string cimport memcpy, memset
from posix.stdlib cimport posix_memalign
from cpython.pythread cimport (PyThread_acquire_lock, PyThread_allocate_lock,
                               PyThread_release_lock, PyThread_type_lock, WAIT_LOCK)

from engine._ipsecmb cimport *
from engine._layout cimport *   # op-row columns, algorithm ids, drop values
from engine._libcrypto cimport CRYPTO_memcmp, RAND_bytes
from engine._digest cimport digest_ctx, _digest_len, _block_len, _d_init, _d_update, _d_final

cdef extern from *:
    """
    #include <intel-ipsec-mb.h>
    #define PYSPU_A16 __attribute__((aligned(16)))
    /* One SA's key-derived state: everything a job points at. The library wants AES
       schedules 16-byte aligned and gcm_key_data 64-byte aligned (its header says so). */
    typedef struct {
        struct gcm_key_data gcm;                 /* AES-GCM / GMAC */
        uint8_t enc_keys[16 * 15] PYSPU_A16;     /* AES encrypt schedule (CBC, CTR) */
        uint8_t dec_keys[16 * 15] PYSPU_A16;     /* AES decrypt schedule (CBC) */
        uint8_t iv_keys[16 * 11] PYSPU_A16;      /* AES-128 schedule of the CBC IV key */
        uint8_t ipad[64] PYSPU_A16;              /* hash state after K ^ ipad */
        uint8_t opad[64] PYSPU_A16;              /* hash state after K ^ opad */
        uint64_t des_ks[3][16] PYSPU_A16;        /* DES / 3DES key schedules */
        uint8_t chacha_key[32] PYSPU_A16;
        const void *des_ptrs[3];                 /* 3DES: the job takes 3 schedule pointers */
        uint8_t salt[4];                         /* RFC 3686 nonce / RFC 4106, 4543, 7634 salt */
        int active, cipher, auth, icv_len, iv_len, esn, outbound, key_len, digest_len;
        int imb_cipher, imb_hash;
    } pyspu_mb_sa;

    /* Per-row scratch for one batch: what jobs point at until they complete. */
    typedef struct {
        uint8_t nonce[16];      /* salt || IV: GCM / ChaCha nonce, CTR counter block */
        uint8_t aad[16];        /* SPI || 64-bit ESN (ESN AEAD AAD) */
        uint8_t tag[64];        /* computed tag: full HMAC digest, AEAD tag on decrypt */
        uint8_t icv[64];        /* received ICV, saved before the ESN bits overwrite it */
    } pyspu_mb_row;
    """
    ctypedef struct mb_sa "pyspu_mb_sa":
        gcm_key_data gcm
        uint8_t enc_keys[240]
        uint8_t dec_keys[240]
        uint8_t iv_keys[176]
        uint8_t ipad[64]
        uint8_t opad[64]
        uint64_t des_ks[3][16]
        uint8_t chacha_key[32]
        const void *des_ptrs[3]
        uint8_t salt[4]
        int active, cipher, auth, icv_len, iv_len, esn, outbound, key_len, digest_len
        int imb_cipher, imb_hash

    ctypedef struct mb_row "pyspu_mb_row":
        uint8_t nonce[16]
        uint8_t aad[16]
        uint8_t tag[64]
        uint8_t icv[64]

# ---------------------------------------------------------------------------------------
# The process's manager
# ---------------------------------------------------------------------------------------
cdef IMB_MGR *_mgr = NULL
cdef IMB_ARCH _arch = IMB_ARCH_NONE
cdef PyThread_type_lock _lock = NULL

_ARCH_NAMES = {IMB_ARCH_NOAESNI: "no-aesni", IMB_ARCH_SSE: "sse", IMB_ARCH_AVX: "avx",
               IMB_ARCH_AVX2: "avx2", IMB_ARCH_AVX512: "avx512"}


cdef _init_manager():
    global _mgr, _arch, _lock
    _mgr = alloc_mb_mgr(0)
    if _mgr == NULL:
        raise ImportError("ipsec-mb: alloc_mb_mgr failed")
    init_mb_mgr_auto(_mgr, &_arch)
    if imb_get_errno(_mgr) != 0 or _arch == IMB_ARCH_NONE:
        raise ImportError(f"ipsec-mb: init_mb_mgr_auto failed: "
                          f"{imb_get_strerror(imb_get_errno(_mgr)).decode()}")
    _lock = PyThread_allocate_lock()
    if _lock == NULL:
        raise ImportError("ipsec-mb: no lock")


_init_manager()


def library_version() -> str:
    return imb_get_version_str().decode()


def arch() -> str:
    """The code path init_mb_mgr_auto chose: "avx512", "avx2", "avx", "sse" or "no-aesni"."""
    return _ARCH_NAMES.get(_arch, f"arch {<int>_arch}")


def features() -> list:
    """CPU features the library detected and uses (a subset worth reporting)."""
    names = [("aesni", IMB_FEATURE_AESNI), ("vaes", IMB_FEATURE_VAES),
             ("vpclmulqdq", IMB_FEATURE_VPCLMULQDQ), ("sha-ni", IMB_FEATURE_SHANI),
             ("avx512", IMB_FEATURE_AVX512_SKX), ("safe-data", IMB_FEATURE_SAFE_DATA),
             ("safe-param", IMB_FEATURE_SAFE_PARAM)]
    return [n for n, bit in names if (_mgr.features & bit) == bit]


def version() -> str:
    """The backend label: "ipsec-mb 1.3.0 (avx512)"."""
    return f"ipsec-mb {library_version()} ({arch()})"


# ---------------------------------------------------------------------------------------
# What this backend runs (the registry's probe, engine/backends.py)
# ---------------------------------------------------------------------------------------
def supports(int cipher, int auth, int icv_len, bint esn, int proto=PROTO_ESP) -> bool:
    """True if this backend runs an SA with these transforms (ESP only; AH stays OpenSSL).

    HMAC (any truncation Linux allows) chained with NULL, AES-CBC, 3DES/DES-CBC or AES-CTR;
    AES-GCM (ICV 8/12/16); ChaCha20-Poly1305; GMAC without ESN (its authenticated data
    SPI || ESN || IV || payload is not contiguous in the packet, and a job takes one range).
    """
    if proto != PROTO_ESP:
        return False
    if cipher in (C_NULL, C_AES_CBC, C_DES3_CBC, C_DES_CBC, C_AES_CTR):
        if auth == A_NONE:
            return cipher != C_NULL and icv_len == 0     # NULL + NULL: nothing to run
        return A_MD5 <= auth <= A_SHA512 and 4 <= icv_len <= _digest_len(auth)
    if auth != A_NONE:
        return False
    if cipher == C_AES_GCM:
        return icv_len in (8, 12, 16)
    if cipher == C_CHACHA:
        return icv_len == 16
    if cipher == C_AES_GMAC:
        return icv_len == 16 and not esn
    return False


# ---------------------------------------------------------------------------------------
# Key setup (control path)
# ---------------------------------------------------------------------------------------
cdef void _hmac_states(mb_sa *sa, int auth, const uint8_t *key, size_t keylen) noexcept nogil:
    """RFC 2104: the hash states after one block of K ^ ipad and of K ^ opad; keys longer
    than a block are hashed first (standard digest, via libcrypto)."""
    cdef uint8_t k[128]
    cdef uint8_t pad[128]
    cdef int bl = _block_len(auth)
    cdef int i
    cdef digest_ctx c
    memset(k, 0, 128)
    if <int>keylen > bl:
        _d_init(auth, &c)
        _d_update(auth, &c, key, keylen)
        _d_final(auth, &c, k)
        imb_clear_mem(&c, sizeof(c))
    elif keylen > 0:
        memcpy(k, key, keylen)
    for i in range(bl):
        pad[i] = k[i] ^ 0x36
    _one_block(auth, pad, sa.ipad)
    for i in range(bl):
        pad[i] = k[i] ^ 0x5c
    _one_block(auth, pad, sa.opad)
    imb_clear_mem(k, 128)
    imb_clear_mem(pad, 128)


cdef void _one_block(int auth, const uint8_t *block, uint8_t *state) noexcept nogil:
    if auth == A_MD5:
        IMB_MD5_ONE_BLOCK(_mgr, block, state)
    elif auth == A_SHA1:
        IMB_SHA1_ONE_BLOCK(_mgr, block, state)
    elif auth == A_SHA256:
        IMB_SHA256_ONE_BLOCK(_mgr, block, state)
    elif auth == A_SHA384:
        IMB_SHA384_ONE_BLOCK(_mgr, block, state)
    else:
        IMB_SHA512_ONE_BLOCK(_mgr, block, state)


cdef int _imb_hash(int auth) noexcept nogil:
    if auth == A_MD5:
        return IMB_AUTH_MD5
    if auth == A_SHA1:
        return IMB_AUTH_HMAC_SHA_1
    if auth == A_SHA256:
        return IMB_AUTH_HMAC_SHA_256
    if auth == A_SHA384:
        return IMB_AUTH_HMAC_SHA_384
    if auth == A_SHA512:
        return IMB_AUTH_HMAC_SHA_512
    return IMB_AUTH_NULL


cdef void _aes_keyexp(const uint8_t *key, int keylen, uint8_t *enc, uint8_t *dec) noexcept nogil:
    if keylen == 16:
        IMB_AES_KEYEXP_128(_mgr, key, enc, dec)
    elif keylen == 24:
        IMB_AES_KEYEXP_192(_mgr, key, enc, dec)
    else:
        IMB_AES_KEYEXP_256(_mgr, key, enc, dec)


# ---------------------------------------------------------------------------------------
# The per-SA table
# ---------------------------------------------------------------------------------------
cdef class MBTable:
    """Key-derived state of the SA slots this backend runs (mirrors _crypto.CryptoTable).

    Records live in one aligned block allocated at construction; remove() wipes a record
    (imb_clear_mem) and it stays zero until the slot is installed again.
    """
    cdef mb_sa *tab
    cdef readonly int size
    cdef mb_row *rows          # per-batch scratch, grown to the largest batch seen
    cdef int nrows

    def __cinit__(self, int size):
        cdef void *p = NULL
        if size <= 0:
            raise ValueError("size must be positive")
        if posix_memalign(&p, 64, <size_t>size * sizeof(mb_sa)) != 0:
            raise MemoryError()
        memset(p, 0, <size_t>size * sizeof(mb_sa))
        self.tab = <mb_sa *>p
        self.size = size
        self.rows = NULL
        self.nrows = 0

    def __dealloc__(self):
        if self.tab != NULL:
            imb_clear_mem(self.tab, <size_t>self.size * sizeof(mb_sa))
            free(self.tab)
        if self.rows != NULL:
            imb_clear_mem(self.rows, <size_t>self.nrows * sizeof(mb_row))
            free(self.rows)

    def install(self, int slot, int cipher, const uint8_t[::1] cipher_key, int salt_len,
                int auth, const uint8_t[::1] auth_key, int icv_len, int iv_len,
                bint esn, bint outbound, int proto=PROTO_ESP):
        """Key one slot (same arguments as CryptoTable.install). ValueError if this backend
        does not run the transforms (see supports())."""
        if slot < 0 or slot >= self.size:
            raise IndexError("SA slot out of range")
        if not supports(cipher, auth, icv_len, esn, proto):
            raise ValueError(f"ipsec-mb does not run cipher {cipher} / auth {auth} "
                             f"(ICV {icv_len}, esn {bool(esn)}, proto {proto})")
        cdef int keylen = cipher_key.shape[0] - salt_len
        if keylen < 0 or salt_len > 4:
            raise ValueError("bad cipher key length")
        if cipher in (C_AES_CBC, C_AES_CTR, C_AES_GCM, C_AES_GMAC) and keylen not in (16, 24, 32):
            raise ValueError(f"AES takes 16, 24 or 32-byte keys, not {keylen}")
        if (cipher == C_DES3_CBC and keylen != 24) or (cipher == C_DES_CBC and keylen != 8) \
                or (cipher == C_CHACHA and keylen != 32):
            raise ValueError(f"bad key length {keylen} for cipher {cipher}")
        if iv_len != {C_NULL: 0, C_AES_CBC: 16, C_DES3_CBC: 8, C_DES_CBC: 8}.get(cipher, 8):
            raise ValueError(f"bad IV length {iv_len} for cipher {cipher}")
        cdef mb_sa *sa = &self.tab[slot]
        cdef uint8_t ivkey[16]
        cdef uint8_t scratch[240]
        cdef const uint8_t *k = &cipher_key[0] if cipher_key.shape[0] else NULL
        cdef int d
        cdef int status
        imb_clear_mem(sa, sizeof(mb_sa))
        sa.cipher = cipher
        sa.auth = auth
        sa.icv_len = icv_len
        sa.iv_len = iv_len
        sa.esn = esn
        sa.outbound = outbound
        sa.key_len = keylen
        sa.digest_len = _digest_len(auth)
        sa.imb_hash = _imb_hash(auth)
        if salt_len:
            memcpy(sa.salt, k + keylen, salt_len)
        if cipher == C_NULL:
            sa.imb_cipher = IMB_CIPHER_NULL
        elif cipher == C_AES_CBC or cipher == C_AES_CTR:
            sa.imb_cipher = IMB_CIPHER_CBC if cipher == C_AES_CBC else IMB_CIPHER_CNTR
            _aes_keyexp(k, keylen, sa.enc_keys, sa.dec_keys)
        elif cipher == C_DES3_CBC or cipher == C_DES_CBC:
            sa.imb_cipher = IMB_CIPHER_DES3 if cipher == C_DES3_CBC else IMB_CIPHER_DES
            for d in range(keylen // 8):
                IMB_DES_KEYSCHED(_mgr, sa.des_ks[d], k + 8 * d)
                sa.des_ptrs[d] = sa.des_ks[d]
        elif cipher == C_AES_GCM or cipher == C_AES_GMAC:
            sa.imb_cipher = IMB_CIPHER_GCM
            sa.imb_hash = IMB_AUTH_AES_GMAC
            if keylen == 16:
                IMB_AES128_GCM_PRE(_mgr, k, &sa.gcm)
            elif keylen == 24:
                IMB_AES192_GCM_PRE(_mgr, k, &sa.gcm)
            else:
                IMB_AES256_GCM_PRE(_mgr, k, &sa.gcm)
        elif cipher == C_CHACHA:
            sa.imb_cipher = IMB_CIPHER_CHACHA20_POLY1305
            sa.imb_hash = IMB_AUTH_CHACHA20_POLY1305
            memcpy(sa.chacha_key, k, 32)
        if outbound and cipher in (C_AES_CBC, C_DES3_CBC, C_DES_CBC):
            if RAND_bytes(ivkey, 16) != 1:
                imb_clear_mem(sa, sizeof(mb_sa))
                raise RuntimeError("no randomness for the IV key")
            IMB_AES_KEYEXP_128(_mgr, ivkey, sa.iv_keys, scratch)
            imb_clear_mem(ivkey, 16)
            imb_clear_mem(scratch, 240)
        if auth != A_NONE:
            _hmac_states(sa, auth, &auth_key[0] if auth_key.shape[0] else NULL,
                         auth_key.shape[0])
        with nogil:
            PyThread_acquire_lock(_lock, WAIT_LOCK)
            status = _selftest(sa, outbound)
            PyThread_release_lock(_lock)
        if status != IMB_STATUS_COMPLETED:
            imb_clear_mem(sa, sizeof(mb_sa))
            raise ValueError(f"ipsec-mb refused the SA's job parameters (status {status}: "
                             f"{imb_get_strerror(imb_get_errno(_mgr)).decode()})")
        sa.active = 1

    def remove(self, int slot):
        """Wipe every byte of the slot's key-derived state."""
        if 0 <= slot < self.size:
            imb_clear_mem(&self.tab[slot], sizeof(mb_sa))

    def installed(self, int slot) -> bool:
        return 0 <= slot < self.size and self.tab[slot].active != 0

    def _state(self, int slot) -> bytes:
        """A copy of the slot's raw record (tests: it must be all zero after remove)."""
        if slot < 0 or slot >= self.size:
            raise IndexError("SA slot out of range")
        return (<char *>&self.tab[slot])[:sizeof(mb_sa)]

    cdef int _reserve(self, int n) except -1:
        cdef void *p = NULL
        if n <= self.nrows:
            return 0
        if posix_memalign(&p, 64, <size_t>n * sizeof(mb_row)) != 0:
            raise MemoryError()
        memset(p, 0, <size_t>n * sizeof(mb_row))
        if self.rows != NULL:
            imb_clear_mem(self.rows, <size_t>self.nrows * sizeof(mb_row))
            free(self.rows)
        self.rows = <mb_row *>p
        self.nrows = n
        return 0


# ---------------------------------------------------------------------------------------
# The batch pass (GIL released once; the manager's lock held for the whole batch)
# ---------------------------------------------------------------------------------------
cdef inline void _put_be64(uint8_t *p, uint64_t v) noexcept nogil:
    cdef int i
    for i in range(8):
        p[i] = <uint8_t>(v >> (56 - 8 * i))


cdef inline void _put_be32(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = <uint8_t>(v >> 24)
    p[1] = <uint8_t>(v >> 16)
    p[2] = <uint8_t>(v >> 8)
    p[3] = <uint8_t>v


cdef uint8_t ZERO16[16]      # static storage: zero-initialised


cdef inline void _fill(IMB_JOB *job, mb_sa *sa, uint8_t *base, const int64_t *op,
                       mb_row *row, bint enc) noexcept nogil:
    """Turn one op row into one job. Writes the IV (encrypt) and, with ESN and HMAC, the
    high sequence bits at the ICV position (after saving the received ICV on decrypt)."""
    cdef uint64_t seq = <uint64_t>op[OP_SEQ]
    cdef uint8_t *esp = base + op[OP_AUTH_OFF]
    cdef uint8_t *iv = base + op[OP_IV_OFF]
    cdef uint8_t *data = base + op[OP_DATA_OFF]
    cdef uint8_t *icv = base + op[OP_ICV_OFF]
    cdef uint64_t dlen = <uint64_t>op[OP_DATA_LEN]
    cdef const uint8_t *aad = esp           # SPI || 32-bit seq, as it is in the packet
    cdef uint64_t aad_len = 8
    cdef uint8_t blk[16]
    job.cipher_mode = <IMB_CIPHER_MODE>sa.imb_cipher
    job.hash_alg = <IMB_HASH_ALG>sa.imb_hash
    if enc:
        job.cipher_direction = IMB_DIR_ENCRYPT
        job.chain_order = IMB_ORDER_CIPHER_HASH
    else:
        job.cipher_direction = IMB_DIR_DECRYPT
        job.chain_order = IMB_ORDER_HASH_CIPHER
    if sa.cipher == C_AES_GCM or sa.cipher == C_AES_GMAC or sa.cipher == C_CHACHA:
        if enc:
            _put_be64(iv, seq)
        memcpy(row.nonce, sa.salt, 4)
        memcpy(row.nonce + 4, iv, 8)
        job.iv = row.nonce
        job.iv_len_in_bytes = 12
        job.src = data
        job.dst = data
        job.cipher_start_src_offset_in_bytes = 0
        job.hash_start_src_offset_in_bytes = 0
        job.auth_tag_output = icv if enc else row.tag
        job.auth_tag_output_len_in_bytes = sa.icv_len
        if sa.cipher == C_CHACHA:
            job.enc_keys = sa.chacha_key
            job.dec_keys = sa.chacha_key
            job.key_len_in_bytes = 32
        else:
            job.enc_keys = &sa.gcm
            job.dec_keys = &sa.gcm
            job.key_len_in_bytes = sa.key_len
        if sa.cipher == C_AES_GMAC:
            # RFC 4543 3: SPI || seq || IV || payload, all authenticated, nothing encrypted
            job.msg_len_to_cipher_in_bytes = 0
            job.msg_len_to_hash_in_bytes = 0
            job.u.GCM.aad = esp
            job.u.GCM.aad_len_in_bytes = <uint64_t>op[OP_AUTH_LEN]
            return
        job.msg_len_to_cipher_in_bytes = dlen
        job.msg_len_to_hash_in_bytes = dlen
        # RFC 4106 5 / RFC 7634 2.1: AAD = SPI || seq (32 bits), or SPI || ESN (64 bits)
        if sa.esn:
            memcpy(row.aad, esp, 4)
            _put_be64(row.aad + 4, seq)
            aad = row.aad
            aad_len = 12
        if sa.cipher == C_CHACHA:
            job.u.CHACHA20_POLY1305.aad = aad
            job.u.CHACHA20_POLY1305.aad_len_in_bytes = aad_len
        else:
            job.u.GCM.aad = aad
            job.u.GCM.aad_len_in_bytes = aad_len
        return
    # cipher (NULL / CBC / CTR) chained with HMAC over ESP header || IV || ciphertext
    job.src = esp
    job.dst = data
    job.cipher_start_src_offset_in_bytes = <uint64_t>(op[OP_DATA_OFF] - op[OP_AUTH_OFF])
    job.msg_len_to_cipher_in_bytes = dlen
    if sa.cipher == C_AES_CBC or sa.cipher == C_AES_CTR:
        job.enc_keys = sa.enc_keys
        job.dec_keys = sa.dec_keys
        job.key_len_in_bytes = sa.key_len
    elif sa.cipher == C_DES3_CBC:
        job.enc_keys = sa.des_ptrs
        job.dec_keys = sa.des_ptrs
        job.key_len_in_bytes = 24
    elif sa.cipher == C_DES_CBC:
        job.enc_keys = sa.des_ks[0]
        job.dec_keys = sa.des_ks[0]
        job.key_len_in_bytes = 8
    else:
        job.enc_keys = NULL
        job.dec_keys = NULL
        job.key_len_in_bytes = 0
        job.msg_len_to_cipher_in_bytes = 0
    if sa.cipher == C_AES_CTR:
        if enc:
            _put_be64(iv, seq)
        memcpy(row.nonce, sa.salt, 4)       # RFC 3686 4: nonce || IV || 1 (library adds 1)
        memcpy(row.nonce + 4, iv, 8)
        job.iv = row.nonce
        job.iv_len_in_bytes = 12
    elif sa.iv_len:
        if enc:
            memset(blk, 0, 8)
            _put_be64(blk + 8, seq)
            IMB_AES128_CFB_ONE(_mgr, iv, ZERO16, blk, sa.iv_keys, sa.iv_len)
        job.iv = iv
        job.iv_len_in_bytes = sa.iv_len
    else:
        job.iv = NULL
        job.iv_len_in_bytes = 0
    job.hash_start_src_offset_in_bytes = 0
    if sa.auth == A_NONE:
        job.msg_len_to_hash_in_bytes = 0
        job.auth_tag_output = NULL
        job.auth_tag_output_len_in_bytes = 0
        return
    job.msg_len_to_hash_in_bytes = <uint64_t>op[OP_AUTH_LEN]
    if sa.esn:
        if not enc:
            memcpy(row.icv, icv, sa.icv_len)
        _put_be32(icv, <uint32_t>(seq >> 32))
        job.msg_len_to_hash_in_bytes += 4
    job.u.HMAC._hashed_auth_key_xor_ipad = sa.ipad
    job.u.HMAC._hashed_auth_key_xor_opad = sa.opad
    job.auth_tag_output = row.tag
    job.auth_tag_output_len_in_bytes = sa.digest_len


cdef inline void _retire(IMB_JOB *job, MBTable t, uint8_t *base, const int64_t *ops,
                         uint8_t *drop, bint enc) noexcept nogil:
    """A completed job: write (encrypt) or check (decrypt) the ICV, set drop reasons."""
    cdef int i = <int><uintptr_t>job.user_data
    cdef const int64_t *op = ops + <size_t>i * OP_COLS
    cdef mb_sa *sa = &t.tab[op[OP_SA]]
    cdef mb_row *row = &t.rows[i]
    cdef uint8_t *icv = base + op[OP_ICV_OFF]
    cdef bint aead = sa.cipher == C_AES_GCM or sa.cipher == C_AES_GMAC or sa.cipher == C_CHACHA
    cdef bint ok = job.status == IMB_STATUS_COMPLETED
    if enc:
        if not ok:
            drop[i] = DROP_MALFORMED
        elif not aead and sa.auth != A_NONE:
            memcpy(icv, row.tag, sa.icv_len)
        return
    if aead:
        if not ok:
            drop[i] = DROP_MALFORMED
        elif CRYPTO_memcmp(row.tag, icv, sa.icv_len) != 0:
            drop[i] = DROP_AUTH_FAILED
        return
    if sa.auth == A_NONE:
        if not ok:
            drop[i] = DROP_MALFORMED
        return
    if sa.esn:
        memcpy(icv, row.icv, sa.icv_len)      # the received ICV back in place
    if not ok:
        drop[i] = DROP_MALFORMED
    elif CRYPTO_memcmp(row.tag, icv, sa.icv_len) != 0:
        drop[i] = DROP_AUTH_FAILED


cdef enum:
    BURST = 128             # IMB_MAX_BURST_SIZE: jobs per IMB_GET_NEXT_BURST / SUBMIT_BURST
    MAX_IN_FLIGHT = 255     # IMB_MAX_JOBS - 1: never fill the manager's ring to the last slot


cdef inline bint _row_ok(mb_sa *sa, const int64_t *op) noexcept nogil:
    """The per-row job fields the unchecked submit trusts: cipher lengths whole blocks.
    (Everything else a job carries is fixed per SA and was checked at install, through the
    checked submit; the prepare kernels already drop misaligned packets as MALFORMED.)"""
    cdef int64_t dlen = op[OP_DATA_LEN]
    if dlen <= 0 or op[OP_AUTH_LEN] <= 0:
        return False
    if sa.cipher == C_AES_CBC:
        return dlen % 16 == 0
    if sa.cipher == C_DES3_CBC or sa.cipher == C_DES_CBC:
        return dlen % 8 == 0
    return True


cdef int _pass(MBTable t, uint8_t *base, const int64_t *ops, uint8_t *drop, int n,
               bint enc) noexcept nogil:
    """Every live row of an installed SA becomes one job, up to BURST jobs per submit;
    completed jobs come back in submission order and are retired at once. Returns the
    number of jobs.

    The manager's ring holds IMB_MAX_JOBS (256) jobs; a ring filled to the last slot would
    read as empty (next == earliest), so the pass keeps at most MAX_IN_FLIGHT jobs in it,
    completing the oldest before it asks for more. It drains with IMB_FLUSH_JOB, not
    IMB_FLUSH_BURST: in 1.3 a second IMB_FLUSH_BURST over a wrapped ring handed back jobs
    whose HMAC had not been computed (wrong ICVs on batches over ~240 packets; caught by
    tests/test_mb_backend.py::test_large_batch_wraps_the_job_queue)."""
    cdef IMB_MGR *m = _mgr
    cdef IMB_JOB *jobs[BURST]
    cdef IMB_JOB *job
    cdef const int64_t *op
    cdef int64_t slot
    cdef mb_sa *sa
    cdef int i = 0, k, j, want, total = 0, in_flight = 0
    cdef uint32_t avail, done
    while i < n:
        want = MAX_IN_FLIGHT - in_flight
        if want > BURST:
            want = BURST
        avail = IMB_GET_NEXT_BURST(m, <uint32_t>want, jobs) if want > 0 else 0
        if avail == 0:                      # ring (nearly) full: complete the oldest jobs
            for j in range(BURST):
                job = IMB_FLUSH_JOB(m)
                if job == NULL:
                    in_flight = 0           # nothing left queued
                    break
                in_flight -= 1
                _retire(job, t, base, ops, drop, enc)
            continue
        k = 0
        while i < n and k < <int>avail:
            if drop[i] == 0:
                op = ops + <size_t>i * OP_COLS
                slot = op[OP_SA]
                if 0 <= slot < t.size and t.tab[slot].active:   # else another backend's
                    sa = &t.tab[slot]
                    if _row_ok(sa, op):
                        _fill(jobs[k], sa, base, op, &t.rows[i], enc)
                        jobs[k].user_data = <void *><uintptr_t>i
                        k += 1
                    else:
                        drop[i] = DROP_MALFORMED
            i += 1
        if k:
            total += k
            in_flight += k
            done = IMB_SUBMIT_BURST_NOCHECK(m, k, jobs)
            in_flight -= <int>done
            for j in range(<int>done):
                _retire(jobs[j], t, base, ops, drop, enc)
    job = IMB_FLUSH_JOB(m)
    while job != NULL:
        _retire(job, t, base, ops, drop, enc)
        job = IMB_FLUSH_JOB(m)
    return total


cdef int _selftest(mb_sa *sa, bint enc) noexcept nogil:
    """One job with the SA's fixed fields over a dummy 32-byte payload, through the
    library's checked submit: the install-time proof that the unchecked batch path gets
    valid key, IV, tag and algorithm parameters. Returns the job status."""
    cdef uint8_t buf[256]
    cdef int64_t op[OP_COLS]
    cdef mb_row row
    cdef IMB_JOB *job
    cdef IMB_STATUS status = IMB_STATUS_ERROR
    memset(buf, 0, 256)
    op[OP_SA] = 0
    op[OP_AUTH_OFF] = 0
    op[OP_AUTH_LEN] = 8 + sa.iv_len + 32
    op[OP_IV_OFF] = 8
    op[OP_DATA_OFF] = 8 + sa.iv_len
    op[OP_DATA_LEN] = 32
    op[OP_ICV_OFF] = 8 + sa.iv_len + 32
    op[OP_SEQ] = 1
    job = IMB_GET_NEXT_JOB(_mgr)
    _fill(job, sa, buf, op, &row, enc)
    job = IMB_SUBMIT_JOB(_mgr)
    while job == NULL:
        job = IMB_FLUSH_JOB(_mgr)
        if job == NULL:
            break
    if job != NULL:
        status = job.status
    while IMB_FLUSH_JOB(_mgr) != NULL:
        pass
    imb_clear_mem(buf, 256)
    imb_clear_mem(&row, sizeof(row))
    return status


cdef int _run(MBTable table, uint8_t[::1] buf, int64_t[:, ::1] ops, uint8_t[::1] drop,
              int n, bint enc) except -1:
    if n <= 0:
        return 0
    if n > ops.shape[0] or n > drop.shape[0] or ops.shape[1] != OP_COLS:
        raise ValueError("op list shorter than the batch")
    table._reserve(n)
    cdef uint8_t *base = &buf[0]
    cdef const int64_t *o = &ops[0, 0]
    cdef uint8_t *d = &drop[0]
    with nogil:
        PyThread_acquire_lock(_lock, WAIT_LOCK)
        _pass(table, base, o, d, n, enc)
        PyThread_release_lock(_lock)
    return 0


def esp_encrypt(MBTable table, uint8_t[::1] buf, int64_t[:, ::1] ops, uint8_t[::1] drop,
                int n):
    """Write IVs, encrypt and write ICVs for the live rows of this table's SAs."""
    _run(table, buf, ops, drop, n, True)


def esp_decrypt(MBTable table, uint8_t[::1] buf, int64_t[:, ::1] ops, uint8_t[::1] drop,
                int n):
    """Verify ICVs (constant time) and decrypt the live rows of this table's SAs; a bad ICV
    sets AUTH_FAILED (the row may have been deciphered anyway: it is dropped)."""
    _run(table, buf, ops, drop, n, False)
