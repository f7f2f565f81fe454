# Declarations of the parts of OpenSSL 3 libcrypto the data path uses.
# Low-level digest contexts (MD5_CTX, SHA_CTX, ...) are deprecated in OpenSSL 3 but are
# the only way to copy a precomputed HMAC inner/outer state with a memcpy instead of a
# provider dup (malloc) per packet; they run the same assembly (SHA-NI, AVX2) as EVP.
from libc.stddef cimport size_t

cdef extern from "openssl/crypto.h" nogil:
    void OPENSSL_cleanse(void *ptr, size_t len)
    int CRYPTO_memcmp(const void *a, const void *b, size_t len)
    const char *OpenSSL_version(int t)
    int OPENSSL_VERSION

cdef extern from "openssl/provider.h" nogil:
    ctypedef struct OSSL_PROVIDER:
        pass
    OSSL_PROVIDER *OSSL_PROVIDER_load(void *libctx, const char *name)

cdef extern from "openssl/rand.h" nogil:
    int RAND_bytes(unsigned char *buf, int num)

cdef extern from "openssl/evp.h" nogil:
    ctypedef struct EVP_CIPHER_CTX:
        pass
    ctypedef struct EVP_CIPHER:
        pass
    EVP_CIPHER_CTX *EVP_CIPHER_CTX_new()
    void EVP_CIPHER_CTX_free(EVP_CIPHER_CTX *ctx)
    int EVP_CipherInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *cipher, void *impl,
                          const unsigned char *key, const unsigned char *iv, int enc)
    int EVP_CipherUpdate(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl,
                         const unsigned char *inp, int inl)
    int EVP_CipherFinal_ex(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl)
    int EVP_CIPHER_CTX_set_padding(EVP_CIPHER_CTX *ctx, int pad)
    int EVP_CIPHER_CTX_ctrl(EVP_CIPHER_CTX *ctx, int type, int arg, void *ptr)
    EVP_CIPHER *EVP_CIPHER_fetch(void *libctx, const char *algorithm, const char *properties)
    void EVP_CIPHER_free(EVP_CIPHER *cipher)
    int EVP_CTRL_AEAD_SET_TAG
    int EVP_CTRL_AEAD_GET_TAG
    int EVP_CTRL_AEAD_SET_IVLEN

cdef extern from "openssl/md5.h" nogil:
    ctypedef struct MD5_CTX:
        pass
    int MD5_Init(MD5_CTX *c)
    int MD5_Update(MD5_CTX *c, const void *data, size_t len)
    int MD5_Final(unsigned char *md, MD5_CTX *c)

cdef extern from "openssl/sha.h" nogil:
    ctypedef struct SHA_CTX:
        pass
    ctypedef struct SHA256_CTX:
        pass
    ctypedef struct SHA512_CTX:
        pass
    int SHA1_Init(SHA_CTX *c)
    int SHA1_Update(SHA_CTX *c, const void *data, size_t len)
    int SHA1_Final(unsigned char *md, SHA_CTX *c)
    int SHA256_Init(SHA256_CTX *c)
    int SHA256_Update(SHA256_CTX *c, const void *data, size_t len)
    int SHA256_Final(unsigned char *md, SHA256_CTX *c)
    int SHA384_Init(SHA512_CTX *c)
    int SHA384_Update(SHA512_CTX *c, const void *data, size_t len)
    int SHA384_Final(unsigned char *md, SHA512_CTX *c)
    int SHA512_Init(SHA512_CTX *c)
    int SHA512_Update(SHA512_CTX *c, const void *data, size_t len)
    int SHA512_Final(unsigned char *md, SHA512_CTX *c)
