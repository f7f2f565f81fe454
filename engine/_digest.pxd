# The hash behind each HMAC (MD5, SHA-1, SHA-2) through libcrypto's low-level digests:
# lengths, and init/update/final on one union of contexts. Shared by the OpenSSL backend
# (engine/_crypto.pyx: precomputed HMAC states) and the multi-buffer one (engine/_mb.pyx:
# keys longer than a block are hashed first, RFC 2104).
from libc.stdint cimport uint8_t

from engine._layout cimport A_MD5, A_SHA1, A_SHA256, A_SHA384, A_SHA512
from engine._libcrypto cimport (MD5_CTX, MD5_Final, MD5_Init, MD5_Update, SHA256_CTX,
                                SHA256_Final, SHA256_Init, SHA256_Update, SHA384_Final,
                                SHA384_Init, SHA512_CTX, SHA512_Final, SHA512_Init,
                                SHA512_Update, SHA_CTX, SHA1_Final, SHA1_Init, SHA1_Update)


cdef union digest_ctx:
    MD5_CTX md5
    SHA_CTX sha1
    SHA256_CTX sha256
    SHA512_CTX sha512


cdef inline int _digest_len(int alg) noexcept nogil:
    if alg == A_MD5:
        return 16
    if alg == A_SHA1:
        return 20
    if alg == A_SHA256:
        return 32
    if alg == A_SHA384:
        return 48
    if alg == A_SHA512:
        return 64
    return 0


cdef inline int _block_len(int alg) noexcept nogil:
    if alg == A_SHA384 or alg == A_SHA512:
        return 128
    return 64


cdef inline void _d_init(int alg, digest_ctx *c) noexcept nogil:
    if alg == A_MD5:
        MD5_Init(&c.md5)
    elif alg == A_SHA1:
        SHA1_Init(&c.sha1)
    elif alg == A_SHA256:
        SHA256_Init(&c.sha256)
    elif alg == A_SHA384:
        SHA384_Init(&c.sha512)
    else:
        SHA512_Init(&c.sha512)


cdef inline void _d_update(int alg, digest_ctx *c, const uint8_t *p, size_t n) noexcept nogil:
    if alg == A_SHA1:
        SHA1_Update(&c.sha1, p, n)
    elif alg == A_SHA256:
        SHA256_Update(&c.sha256, p, n)
    elif alg == A_MD5:
        MD5_Update(&c.md5, p, n)
    else:
        SHA512_Update(&c.sha512, p, n)   # SHA-384 shares SHA-512's update


cdef inline void _d_final(int alg, digest_ctx *c, uint8_t *out) noexcept nogil:
    if alg == A_SHA1:
        SHA1_Final(out, &c.sha1)
    elif alg == A_SHA256:
        SHA256_Final(out, &c.sha256)
    elif alg == A_MD5:
        MD5_Final(out, &c.md5)
    elif alg == A_SHA384:
        SHA384_Final(out, &c.sha512)
    else:
        SHA512_Final(out, &c.sha512)
