# Declarations of the parts of Intel's multi-buffer crypto library (intel-ipsec-mb >= 1.3,
# /usr/include/intel-ipsec-mb.h) that engine/_mb.pyx uses.
#
# The IMB_* "functions" are macros over the function pointers of an initialised IMB_MGR
# (init_mb_mgr_auto picks the SSE / AVX / AVX2 / AVX-512 code paths). Only the job fields
# the ESP pass sets are declared; the anonymous unions of IMB_JOB are flattened the way C
# accesses them (job.src, job.dst, ...), and `u` carries the per-algorithm fields.
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stddef cimport size_t

cdef extern from "intel-ipsec-mb.h" nogil:
    const char *IMB_VERSION_STR
    int IMB_VERSION_NUM
    int IMB_MAX_BURST_SIZE
    int IMB_MAX_JOBS

    ctypedef enum IMB_ARCH:
        IMB_ARCH_NONE
        IMB_ARCH_NOAESNI
        IMB_ARCH_SSE
        IMB_ARCH_AVX
        IMB_ARCH_AVX2
        IMB_ARCH_AVX512

    ctypedef enum IMB_STATUS:
        IMB_STATUS_BEING_PROCESSED
        IMB_STATUS_COMPLETED_CIPHER
        IMB_STATUS_COMPLETED_AUTH
        IMB_STATUS_COMPLETED
        IMB_STATUS_INVALID_ARGS
        IMB_STATUS_INTERNAL_ERROR
        IMB_STATUS_ERROR

    ctypedef enum IMB_CIPHER_MODE:
        IMB_CIPHER_CBC
        IMB_CIPHER_CNTR
        IMB_CIPHER_NULL
        IMB_CIPHER_GCM
        IMB_CIPHER_DES
        IMB_CIPHER_DES3
        IMB_CIPHER_ECB
        IMB_CIPHER_CHACHA20_POLY1305

    ctypedef enum IMB_CIPHER_DIRECTION:
        IMB_DIR_ENCRYPT
        IMB_DIR_DECRYPT

    ctypedef enum IMB_HASH_ALG:
        IMB_AUTH_HMAC_SHA_1
        IMB_AUTH_HMAC_SHA_256
        IMB_AUTH_HMAC_SHA_384
        IMB_AUTH_HMAC_SHA_512
        IMB_AUTH_MD5
        IMB_AUTH_NULL
        IMB_AUTH_AES_GMAC
        IMB_AUTH_CHACHA20_POLY1305

    ctypedef enum IMB_CHAIN_ORDER:
        IMB_ORDER_CIPHER_HASH
        IMB_ORDER_HASH_CIPHER

    uint64_t IMB_FEATURE_SHANI
    uint64_t IMB_FEATURE_AESNI
    uint64_t IMB_FEATURE_VAES
    uint64_t IMB_FEATURE_VPCLMULQDQ
    uint64_t IMB_FEATURE_AVX512_SKX
    uint64_t IMB_FEATURE_SAFE_DATA
    uint64_t IMB_FEATURE_SAFE_PARAM

    # struct gcm_key_data: expanded AES key + GHASH key powers, 64-byte aligned
    cdef struct gcm_key_data:
        pass

    cdef struct _HMAC_specific_fields:
        const uint8_t *_hashed_auth_key_xor_ipad    # hash state after (K ^ ipad)
        const uint8_t *_hashed_auth_key_xor_opad    # hash state after (K ^ opad)

    cdef struct _AES_GCM_specific_fields:
        const void *aad
        uint64_t aad_len_in_bytes

    cdef struct _CHACHA20_POLY1305_specific_fields:
        const void *aad
        uint64_t aad_len_in_bytes

    ctypedef union imb_job_u:
        _HMAC_specific_fields HMAC
        _AES_GCM_specific_fields GCM
        _CHACHA20_POLY1305_specific_fields CHACHA20_POLY1305

    ctypedef struct IMB_JOB:
        const void *enc_keys
        const void *dec_keys
        uint64_t key_len_in_bytes
        const uint8_t *src              # cipher input starts at src + cipher offset
        uint8_t *dst                    # cipher output starts at dst (no offset)
        uint64_t cipher_start_src_offset_in_bytes
        uint64_t msg_len_to_cipher_in_bytes
        uint64_t hash_start_src_offset_in_bytes
        uint64_t msg_len_to_hash_in_bytes
        const uint8_t *iv
        uint64_t iv_len_in_bytes
        uint8_t *auth_tag_output
        uint64_t auth_tag_output_len_in_bytes
        imb_job_u u
        IMB_STATUS status
        IMB_CIPHER_MODE cipher_mode
        IMB_CIPHER_DIRECTION cipher_direction
        IMB_HASH_ALG hash_alg
        IMB_CHAIN_ORDER chain_order
        void *user_data
        void *user_data2

    ctypedef struct IMB_MGR:
        uint64_t flags
        uint64_t features
        uint32_t used_arch
        int imb_errno

    IMB_MGR *alloc_mb_mgr(uint64_t flags)
    void free_mb_mgr(IMB_MGR *ptr)
    void init_mb_mgr_auto(IMB_MGR *state, IMB_ARCH *arch)
    const char *imb_get_version_str()
    int imb_get_errno(IMB_MGR *mgr)
    const char *imb_get_strerror(int errnum)
    void imb_clear_mem(void *mem, size_t size)

    # job API: one job, parameters checked (the install-time self-test); IMB_FLUSH_JOB
    # completes and returns the oldest job in the ring (the batch pass drains with it)
    IMB_JOB *IMB_GET_NEXT_JOB(IMB_MGR *mgr)
    IMB_JOB *IMB_SUBMIT_JOB(IMB_MGR *mgr)
    IMB_JOB *IMB_FLUSH_JOB(IMB_MGR *mgr)

    # burst API (1.3), the batch path: jobs[] in = to submit, out = completed, in order
    uint32_t IMB_GET_NEXT_BURST(IMB_MGR *mgr, uint32_t n_jobs, IMB_JOB **jobs)
    uint32_t IMB_SUBMIT_BURST_NOCHECK(IMB_MGR *mgr, uint32_t n_jobs, IMB_JOB **jobs)

    # key setup, once per SA
    void IMB_AES_KEYEXP_128(IMB_MGR *mgr, const void *key, void *enc_exp, void *dec_exp)
    void IMB_AES_KEYEXP_192(IMB_MGR *mgr, const void *key, void *enc_exp, void *dec_exp)
    void IMB_AES_KEYEXP_256(IMB_MGR *mgr, const void *key, void *enc_exp, void *dec_exp)
    int IMB_DES_KEYSCHED(IMB_MGR *mgr, uint64_t *exp_key, const void *key)
    void IMB_AES128_GCM_PRE(IMB_MGR *mgr, const void *key, gcm_key_data *exp_key)
    void IMB_AES192_GCM_PRE(IMB_MGR *mgr, const void *key, gcm_key_data *exp_key)
    void IMB_AES256_GCM_PRE(IMB_MGR *mgr, const void *key, gcm_key_data *exp_key)
    # one compression-function call from the initial state: the HMAC ipad/opad states
    void IMB_MD5_ONE_BLOCK(IMB_MGR *mgr, const void *src, void *tag)
    void IMB_SHA1_ONE_BLOCK(IMB_MGR *mgr, const void *src, void *tag)
    void IMB_SHA256_ONE_BLOCK(IMB_MGR *mgr, const void *src, void *tag)
    void IMB_SHA384_ONE_BLOCK(IMB_MGR *mgr, const void *src, void *tag)
    void IMB_SHA512_ONE_BLOCK(IMB_MGR *mgr, const void *src, void *tag)

    # out = in ^ AES-128(iv)[:len], len <= 16: one AES block (the CBC IV generator)
    void IMB_AES128_CFB_ONE(IMB_MGR *mgr, void *dst, const void *src, const void *iv,
                            const void *exp_key, uint64_t length)
