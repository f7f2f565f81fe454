"""What IKE_AUTH proves (RFC 7296 2.15): our AUTH (and CERTs), and the check of the peer's.

    our_auth(sa, cfg, id_payload)          -> [CERT..., AUTH]   (PSK: [AUTH])
    peer_auth_error(sa, cfg, id_payload, msg) -> None if the peer proved `id_payload`,
                                              else a reason for AuthenticationFailed

Both sign/MAC the same octets: RealMessage | Nonce | prf(SK_p, ID body) (2.15). With a
certificate the peer must also send a chain to one of our trusted CAs (ike/certs.py)
whose leaf names its ID and has the key kind our auth_method expects; its AUTH is
checked by ike/auth.py. Reasons start with one word (expired, unknown-ca, bad-signature,
identity-mismatch, key-type, ...) a log line and the event carry; no secrets in them.
"""
from __future__ import annotations

import hmac
from typing import Optional

from .auth import SIGNATURE_METHODS, AuthError, sign, verify
from .certs import CertificateError, check_identity, peer_key, verify_chain
from .config import AUTH_METHODS, IKEConfig
from .constants import CERT_X509_SIGNATURE, AuthMethod
from .crypto import psk_auth, signed_octets
from .ike_sa import IKESA
from .messages import Message
from .payloads import AuthPayload, CertPayload, CertReqPayload, IDPayload


def _method_name(method: int) -> str:
    try:
        return AuthMethod(method).name
    except ValueError:
        return str(method)


def octets(sa: IKESA, local: bool, id_payload: IDPayload) -> bytes:
    """The signed octets for our side (local=True) or the ones expected from the peer."""
    if local:
        message, nonce, sk_p = (sa.init_request if sa.initiator else sa.init_response,
                                sa.nonce_remote, sa.sk_p_local)
    else:
        message, nonce, sk_p = (sa.init_response if sa.initiator else sa.init_request,
                                sa.nonce_local, sa.sk_p_remote)
    return signed_octets(sa.alg.prf, message, nonce, sk_p, id_payload.auth_body())


def our_auth(sa: IKESA, cfg: IKEConfig, id_payload: IDPayload) -> list:
    """Payloads that follow our ID: CERT (leaf, then intermediates) and AUTH."""
    data = octets(sa, True, id_payload)
    if cfg.auth_method == "psk":
        return [AuthPayload(AuthMethod.SHARED_KEY_MIC, psk_auth(sa.alg.prf, cfg.psk, data))]
    creds = cfg.credentials
    method, auth = sign(creds.private_key, data, sa.peer_sig_hashes)
    return [CertPayload(CERT_X509_SIGNATURE, der) for der in creds.chain_der()] + \
        [AuthPayload(method, auth)]


def certreq(cfg: IKEConfig) -> list:
    """CERTREQ for the initiator's IKE_AUTH request (3.7), when we use certificates."""
    if cfg.credentials is None:
        return []
    return [CertReqPayload(CERT_X509_SIGNATURE, cfg.credentials.certreq())]


def peer_auth_error(sa: IKESA, cfg: IKEConfig, id_payload: IDPayload,
                    msg: Message) -> Optional[str]:
    auth = msg.get(AuthPayload)
    if auth is None:
        return "malformed: no AUTH payload"
    expected = octets(sa, False, id_payload)
    if cfg.auth_method == "psk":
        if auth.method != AuthMethod.SHARED_KEY_MIC:
            return f"auth-method: peer uses {_method_name(auth.method)}, we expect a " \
                   "pre-shared key"
        if not hmac.compare_digest(auth.data, psk_auth(sa.alg.prf, cfg.psk, expected)):
            return "bad-psk: the peer's AUTH does not verify with our pre-shared key"
        return None
    if auth.method not in SIGNATURE_METHODS:
        return f"auth-method: peer uses {_method_name(auth.method)}, we expect " \
               f"{cfg.auth_method}"
    certs = [c.data for c in msg.all(CertPayload) if c.encoding == CERT_X509_SIGNATURE]
    if not certs:
        return "no-certificate: the peer sent no X.509 certificate"
    creds = cfg.credentials
    try:
        leaf = verify_chain(certs, creds.trusted, creds.clock())
        check_identity(leaf, id_payload.id_type, id_payload.data)
        key, kind = peer_key(leaf)
    except CertificateError as err:
        return f"{err.reason}: {err.detail}"
    if kind != AUTH_METHODS[cfg.auth_method]:
        return f"key-type: peer certificate has a {kind} key, {cfg.auth_method} expects " \
               f"{AUTH_METHODS[cfg.auth_method]}"
    try:
        verify(auth.method, auth.data, key, expected)
    except AuthError as err:
        return f"{err.reason}: {err.detail}"
    return None
