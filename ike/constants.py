"""IKEv2 protocol numbers (RFC 7296 section 3 and the IANA "IKEv2 Parameters" registry).

Spec constants only; tuning values (timeouts, limits) live in ike/config.py.
"""
from __future__ import annotations

from enum import IntEnum

IKE_PORT = 500            # RFC 7296 2.
NAT_T_PORT = 4500         # RFC 7296 2.23, RFC 3948
NON_ESP_MARKER = b"\x00\x00\x00\x00"   # RFC 3948 2.2: prefix of IKE messages on port 4500
NAT_KEEPALIVE = b"\xff"   # RFC 3948 2.3

IKEV2_VERSION = 0x20      # major 2, minor 0 (RFC 7296 3.1)
HEADER_LEN = 28           # RFC 7296 3.1
GENERIC_HEADER_LEN = 4    # RFC 7296 3.2
MIN_NONCE = 16            # RFC 7296 3.9
MAX_NONCE = 256
MAX_COOKIE = 64           # RFC 7296 2.6


class Exchange(IntEnum):
    """RFC 7296 3.1 Exchange Type."""
    IKE_SA_INIT = 34
    IKE_AUTH = 35
    CREATE_CHILD_SA = 36
    INFORMATIONAL = 37


class Flag:
    """RFC 7296 3.1 header flags."""
    INITIATOR = 0x08    # set by the original initiator of the IKE SA
    VERSION = 0x10
    RESPONSE = 0x20


class PayloadType(IntEnum):
    """RFC 7296 3.2 Next Payload values (and RFC 7383 SKF)."""
    NONE = 0
    SA = 33
    KE = 34
    IDi = 35
    IDr = 36
    CERT = 37
    CERTREQ = 38
    AUTH = 39
    NONCE = 40
    NOTIFY = 41
    DELETE = 42
    VENDOR = 43
    TSi = 44
    TSr = 45
    SK = 46
    CP = 47
    EAP = 48
    SKF = 53


class Protocol(IntEnum):
    """RFC 7296 3.3.1 Protocol ID (also used in N and D payloads)."""
    NONE = 0
    IKE = 1
    AH = 2
    ESP = 3


class TransformType(IntEnum):
    """RFC 7296 3.3.2."""
    ENCR = 1
    PRF = 2
    INTEG = 3
    DH = 4
    ESN = 5


class Encr(IntEnum):
    """Transform Type 1 IDs (RFC 7296 3.3.2, RFC 5282, RFC 4106, RFC 4543, RFC 7634)."""
    DES = 2
    DES3 = 3
    NULL = 11
    AES_CBC = 12
    AES_CTR = 13
    AES_GCM_8 = 18
    AES_GCM_12 = 19
    AES_GCM_16 = 20
    NULL_AUTH_AES_GMAC = 21
    CHACHA20_POLY1305 = 28


class Prf(IntEnum):
    """Transform Type 2 IDs (RFC 7296 3.3.2, RFC 4868)."""
    HMAC_MD5 = 1
    HMAC_SHA1 = 2
    AES128_XCBC = 4
    HMAC_SHA2_256 = 5
    HMAC_SHA2_384 = 6
    HMAC_SHA2_512 = 7


class Integ(IntEnum):
    """Transform Type 3 IDs (RFC 7296 3.3.2, RFC 4868)."""
    NONE = 0
    HMAC_MD5_96 = 1
    HMAC_SHA1_96 = 2
    AES_XCBC_96 = 5
    HMAC_SHA2_256_128 = 12
    HMAC_SHA2_384_192 = 13
    HMAC_SHA2_512_256 = 14


class DHGroup(IntEnum):
    """Transform Type 4 IDs (RFC 7296 3.3.2, RFC 3526, RFC 5903, RFC 8031)."""
    NONE = 0
    MODP_768 = 1
    MODP_1024 = 2
    MODP_1536 = 5
    MODP_2048 = 14
    MODP_3072 = 15
    MODP_4096 = 16
    ECP_256 = 19
    ECP_384 = 20
    ECP_521 = 21
    CURVE25519 = 31


class ESN(IntEnum):
    """Transform Type 5 IDs (RFC 7296 3.3.2)."""
    NO = 0
    YES = 1


ATTR_KEY_LENGTH = 14      # RFC 7296 3.3.5 (the only attribute defined for IKEv2)
ATTR_FORMAT_TV = 0x8000   # AF bit: fixed 2-byte value


class IDType(IntEnum):
    """RFC 7296 3.5."""
    IPV4_ADDR = 1
    FQDN = 2
    RFC822_ADDR = 3
    IPV6_ADDR = 5
    DER_ASN1_DN = 9
    DER_ASN1_GN = 10
    KEY_ID = 11


class AuthMethod(IntEnum):
    """RFC 7296 3.8 (and RFC 7427 for 14)."""
    RSA_SIG = 1
    SHARED_KEY_MIC = 2
    DSS_SIG = 3
    ECDSA_256 = 9
    ECDSA_384 = 10
    ECDSA_521 = 11
    DIGITAL_SIGNATURE = 14


#: RFC 7296 3.6 Cert Encoding: X.509 Certificate - Signature (the only one we use).
CERT_X509_SIGNATURE = 4


class TSType(IntEnum):
    """RFC 7296 3.13.1."""
    IPV4_ADDR_RANGE = 7
    IPV6_ADDR_RANGE = 8


class Notify(IntEnum):
    """RFC 7296 3.10.1 Notify Message Types (errors < 16384, status >= 16384)."""
    UNSUPPORTED_CRITICAL_PAYLOAD = 1
    INVALID_IKE_SPI = 4
    INVALID_MAJOR_VERSION = 5
    INVALID_SYNTAX = 7
    INVALID_MESSAGE_ID = 9
    INVALID_SPI = 11
    NO_PROPOSAL_CHOSEN = 14
    INVALID_KE_PAYLOAD = 17
    AUTHENTICATION_FAILED = 24
    SINGLE_PAIR_REQUIRED = 34
    NO_ADDITIONAL_SAS = 35
    INTERNAL_ADDRESS_FAILURE = 36
    FAILED_CP_REQUIRED = 37
    TS_UNACCEPTABLE = 38
    INVALID_SELECTORS = 39
    TEMPORARY_FAILURE = 43
    CHILD_SA_NOT_FOUND = 44
    INITIAL_CONTACT = 16384
    SET_WINDOW_SIZE = 16385
    ADDITIONAL_TS_POSSIBLE = 16386
    IPCOMP_SUPPORTED = 16387
    NAT_DETECTION_SOURCE_IP = 16388
    NAT_DETECTION_DESTINATION_IP = 16389
    COOKIE = 16390
    USE_TRANSPORT_MODE = 16391
    HTTP_CERT_LOOKUP_SUPPORTED = 16392
    REKEY_SA = 16393
    ESP_TFC_PADDING_NOT_SUPPORTED = 16394
    NON_FIRST_FRAGMENTS_ALSO = 16395
    MOBIKE_SUPPORTED = 16396
    IKEV2_FRAGMENTATION_SUPPORTED = 16430   # RFC 7383
    SIGNATURE_HASH_ALGORITHMS = 16431       # RFC 7427


#: RFC 7296 3.10.1: types below this are errors.
NOTIFY_ERROR_MAX = 16383


def notify_name(value: int) -> str:
    try:
        return Notify(value).name
    except ValueError:
        return f"NOTIFY_{value}"


class CfgType(IntEnum):
    """RFC 7296 3.15 CFG Type."""
    CFG_REQUEST = 1
    CFG_REPLY = 2
    CFG_SET = 3
    CFG_ACK = 4
