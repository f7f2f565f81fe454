"""Certificate authentication in IKE_AUTH (RFC 7296 2.15, 3.6-3.8; RFC 4754; RFC 7427).

Two in-memory peers (tests/ike_harness.py) with chains root CA -> intermediate -> leaf made
at test time (tests/cert_factory.py). The signatures are checked against the
`cryptography` package as the independent implementation; the AlgorithmIdentifier bytes
against RFC 7427 Appendix A. strongSwan as a live peer is in tests/test_ike_strongswan.py.
"""
from __future__ import annotations

import hashlib
import logging

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

import ike.peer_auth
from ike import auth
from ike.certs import (CertificateError, Credentials, certreq_hash, check_identity,
                       peer_key, verify_chain)
from ike.config import ChildConfig, IKEConfig, Identity
from ike.constants import AuthMethod, IDType, PayloadType
from ike.dn import decode_name, dn_text, encode_dn
from ike.events import AuthenticationFailed, ChildSAEstablished, IKESAEstablished

from cert_factory import DAY, NOW, Pki, issue, new_key
from ike_harness import Pair, of

ESP = ChildConfig("net", ("aes128-sha1",), ("10.1.0.0/16",), ("10.2.0.0/16",))
ESP_R = ChildConfig("net", ("aes128-sha1",), ("10.2.0.0/16",), ("10.1.0.0/16",))
METHOD = {"rsa": "rsa-signatures", "ecdsa-256": "ecdsa-signatures-256",
          "ecdsa-384": "ecdsa-signatures-384"}


@pytest.fixture(scope="module")
def rsa_pki():
    return Pki("rsa")


@pytest.fixture(scope="module")
def ec_pki():
    return Pki("ecdsa-256", name="pyspu ec")


def _cfg(creds, local_id, remote_id, method, *, initiator=True, **kw):
    return IKEConfig(local_id=local_id, remote_id=remote_id, credentials=creds,
                     auth_method=method, proposals=("aes128-sha256-modp2048",),
                     children=(ESP if initiator else ESP_R,), **kw)


def _pair(creds_i, creds_r, *, id_i=None, id_r=None, expect_i=None, expect_r=None,
          method_i=None, method_r=None):
    id_i = id_i or Identity.from_certificate(creds_i)
    id_r = id_r or Identity.from_certificate(creds_r)
    ci = _cfg(creds_i, id_i, expect_r if expect_r is not None else id_r,
              method_i or METHOD[creds_i.kind])
    cr = _cfg(creds_r, id_r, expect_i if expect_i is not None else id_i,
              method_r or METHOD[creds_r.kind], initiator=False)
    pair = Pair(ci, cr)
    pair.start()
    pair.run()
    return pair


def _skf_count(datagrams) -> int:
    """Datagrams whose IKE header names SKF as first payload (RFC 7383 2.5)."""
    return sum(1 for d in datagrams
               if (d[4:] if d[:4] == bytes(4) else d)[16] == PayloadType.SKF)


@pytest.mark.parametrize("key_type", ["rsa", "ecdsa-256", "ecdsa-384"])
def test_chain_authenticates_both_ways(key_type):
    pki = Pki(key_type)
    leaf_i, key_i = pki.leaf("C=CH, O=pyspu, CN=west", key_type, dns=["west.example"])
    leaf_r, key_r = pki.leaf("C=CH, O=pyspu, CN=east", key_type, dns=["east.example"])
    pair = _pair(pki.credentials(leaf_i, key_i), pki.credentials(leaf_r, key_r))
    assert pair.i.established and pair.r.established, (pair.events_i, pair.events_r)
    (up_i,) = of(pair.events_i, IKESAEstablished)
    (up_r,) = of(pair.events_r, IKESAEstablished)
    assert up_i.remote_id == "C=CH, O=pyspu, CN=east"
    assert up_r.remote_id == "C=CH, O=pyspu, CN=west"
    assert of(pair.events_i, ChildSAEstablished) and of(pair.events_r, ChildSAEstablished)
    if key_type == "rsa":
        # two RSA-2048 certificates do not fit 1280 bytes: IKE_AUTH goes in SKF fragments
        assert _skf_count(pair.sent_i) >= 2 and _skf_count(pair.sent_r) >= 2


def test_fqdn_email_and_ip_identities_must_be_subject_alt_names(rsa_pki):
    leaf_i, key_i = rsa_pki.leaf("CN=west", emails=["vpn@west.example"], ips=["192.0.2.1"])
    leaf_r, key_r = rsa_pki.leaf("CN=east", dns=["East.Example"])
    ci, cr = rsa_pki.credentials(leaf_i, key_i), rsa_pki.credentials(leaf_r, key_r)
    for id_i in (Identity.user_at_hostname("vpn@west.example"), Identity.inet("192.0.2.1")):
        pair = _pair(ci, cr, id_i=id_i, id_r=Identity.hostname("east.example"))
        assert pair.i.established and pair.r.established
    pair = _pair(ci, cr, id_i=Identity.hostname("west.example"),
                 id_r=Identity.hostname("east.example"))
    (fail,) = of(pair.events_r, AuthenticationFailed)
    assert fail.reason.startswith("identity-mismatch") and "west.example" in fail.reason
    (fail_i,) = of(pair.events_i, AuthenticationFailed)
    assert fail_i.by_peer and not pair.i.established


def test_distinguished_name_text_matches_the_certificate_subject(rsa_pki):
    """A DN typed as strongSwan/Junos write it names a subject whose strings are
    UTF8String (cryptography's default): the comparison is by content."""
    key = new_key("rsa")
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COUNTRY_NAME, "CH"),
                         x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "pyspu"),
                         x509.NameAttribute(x509.NameOID.COMMON_NAME, "gw1")])
    leaf = (x509.CertificateBuilder().subject_name(subject).issuer_name(rsa_pki.inter.subject)
            .public_key(key.public_key()).serial_number(7)
            .not_valid_before(NOW - DAY).not_valid_after(NOW + DAY)
            .sign(rsa_pki.inter_key, hashes.SHA256()))
    typed = Identity.distinguished_name("C=CH, O=pyspu, CN=gw1")
    assert typed.data != subject.public_bytes()          # PrintableString vs UTF8String
    assert typed.matches(Identity.from_certificate(leaf)) and str(typed) == \
        "C=CH, O=pyspu, CN=gw1"
    leaf_r, key_r = rsa_pki.leaf("CN=east", dns=["east.example"])
    pair = _pair(rsa_pki.credentials(leaf, key), rsa_pki.credentials(leaf_r, key_r),
                 expect_i=typed)
    assert pair.i.established and pair.r.established


def test_dn_encoding_and_decoding():
    der = encode_dn("C=CH, O=pyspu, OU=ops\\, east, CN=gw1.example, E=a@b.example")
    name = decode_name(der)
    # DER order as written (strongSwan's convention), the escaped comma kept
    assert [a.value for rdn in name.rdns for a in rdn] == \
        ["CH", "pyspu", "ops, east", "gw1.example", "a@b.example"]
    assert name.public_bytes() == der
    # the `cryptography` package reads the same bytes as a certificate subject
    cert = issue("C=CH, O=pyspu, OU=ops\\, east, CN=gw1.example, E=a@b.example",
                 new_key("ecdsa-256").public_key(), name, new_key("ecdsa-256"), ca=False)
    assert cert.subject == name and cert.subject.public_bytes() == der
    for bad in ("", "CN", "XX=1", "C=CHE"):
        with pytest.raises(ValueError):
            encode_dn(bad)
    for junk in (b"", b"\x30", b"\x30\x03\x31\x01\x00", b"\x31\x00", der + b"\x00"):
        with pytest.raises(ValueError):
            decode_name(junk)


@pytest.mark.parametrize("case", ["unknown-ca", "expired", "not-yet-valid", "bad-signature",
                                  "missing-intermediate", "not-a-ca"])
def test_bad_initiator_chains_are_refused(rsa_pki, ec_pki, case, caplog):
    leaf_r, key_r = rsa_pki.leaf("CN=east", dns=["east.example"])
    creds_r = rsa_pki.credentials(leaf_r, key_r)
    kw = {}
    if case == "expired":
        kw = {"not_before": NOW - 400 * DAY, "not_after": NOW - DAY}
    elif case == "not-yet-valid":
        kw = {"not_before": NOW + DAY, "not_after": NOW + 400 * DAY}
    leaf_i, key_i = rsa_pki.leaf("CN=west", dns=["west.example"], **kw)
    creds_i = rsa_pki.credentials(leaf_i, key_i)
    expect = case
    if case == "unknown-ca":
        other = Pki("rsa", name="elsewhere")
        leaf_i, key_i = other.leaf("CN=west", dns=["west.example"])
        creds_i = other.credentials(leaf_i, key_i)
    elif case == "bad-signature":
        der = bytearray(leaf_i.public_bytes(serialization.Encoding.DER))
        der[-5] ^= 0x01                       # inside the issuer's signature value
        creds_i = Credentials((x509.load_der_x509_certificate(bytes(der)), rsa_pki.inter),
                              key_i, (rsa_pki.root,), creds_r.clock)
    elif case == "missing-intermediate":
        creds_i = Credentials((leaf_i,), key_i, (rsa_pki.root,), creds_r.clock)
        expect = "unknown-ca"
    elif case == "not-a-ca":
        # the intermediate's name and key, but no basicConstraints cA
        inter = issue(dn_text(rsa_pki.inter.subject), rsa_pki.inter_key.public_key(),
                      rsa_pki.root.subject,
                      rsa_pki.root_key, ca=False, key_usage=False, basic_constraints=False)
        creds_i = Credentials((leaf_i, inter), key_i, (rsa_pki.root,), creds_r.clock)
    caplog.set_level(logging.WARNING, logger="ike.auth")
    pair = _pair(creds_i, creds_r, id_i=Identity.hostname("west.example"))
    assert not pair.i.established and not pair.r.established
    (fail_r,) = of(pair.events_r, AuthenticationFailed)
    assert fail_r.reason.startswith(expect + ":"), fail_r.reason
    (fail_i,) = of(pair.events_i, AuthenticationFailed)
    assert fail_i.by_peer                           # AUTHENTICATION_FAILED reached it
    assert any(expect in r.getMessage() and r.name == "ike.auth" for r in caplog.records)
    assert not any(r.exc_info for r in caplog.records)


def test_initiator_refuses_an_expired_responder(rsa_pki):
    leaf_i, key_i = rsa_pki.leaf("CN=west", dns=["west.example"])
    leaf_r, key_r = rsa_pki.leaf("CN=east", dns=["east.example"], not_before=NOW - 9 * DAY,
                                 not_after=NOW - 2 * DAY)
    pair = _pair(rsa_pki.credentials(leaf_i, key_i), rsa_pki.credentials(leaf_r, key_r))
    (fail,) = of(pair.events_i, AuthenticationFailed)
    assert fail.reason.startswith("expired") and not fail.by_peer and pair.i.closed
    # the responder learns it from the initiator's INFORMATIONAL (RFC 7296 2.21.2)
    assert not pair.r.established


def test_the_wall_clock_is_injected(rsa_pki):
    leaf_i, key_i = rsa_pki.leaf("CN=west", dns=["west.example"])
    leaf_r, key_r = rsa_pki.leaf("CN=east", dns=["east.example"])
    later = lambda: (NOW + 500 * DAY).timestamp()          # noqa: E731 - after the leaf
    pair = _pair(rsa_pki.credentials(leaf_i, key_i),
                 rsa_pki.credentials(leaf_r, key_r, clock=later))
    (fail,) = of(pair.events_r, AuthenticationFailed)
    assert fail.reason.startswith("expired")


def test_tampered_auth_signature_is_refused(rsa_pki, monkeypatch):
    real_sign = auth.sign

    def tampered(key, octets, hashes_=()):
        method, data = real_sign(key, octets, hashes_)
        return method, data[:-1] + bytes([data[-1] ^ 0x80])

    monkeypatch.setattr(ike.peer_auth, "sign", tampered)
    leaf_i, key_i = rsa_pki.leaf("CN=west", dns=["west.example"])
    leaf_r, key_r = rsa_pki.leaf("CN=east", dns=["east.example"])
    pair = _pair(rsa_pki.credentials(leaf_i, key_i), rsa_pki.credentials(leaf_r, key_r))
    (fail,) = of(pair.events_r, AuthenticationFailed)
    assert fail.reason.startswith("bad-signature")


def test_key_type_must_fit_the_auth_method(rsa_pki, ec_pki):
    leaf, key = rsa_pki.leaf("CN=west", dns=["west.example"])
    with pytest.raises(ValueError, match="ecdsa-signatures-256 cannot use the rsa key"):
        _cfg(rsa_pki.credentials(leaf, key), Identity.hostname("west.example"), None,
             "ecdsa-signatures-256")
    # the peer signs with ECDSA P-256 where we expect RSA signatures
    leaf_i, key_i = ec_pki.leaf("CN=west", "ecdsa-256", dns=["west.example"])
    leaf_r, key_r = rsa_pki.leaf("CN=east", dns=["east.example"])
    creds_i = Credentials((leaf_i, ec_pki.inter), key_i, (rsa_pki.root,),
                          lambda: NOW.timestamp())
    creds_r = Credentials((leaf_r, rsa_pki.inter), key_r, (ec_pki.root,),
                          lambda: NOW.timestamp())
    pair = _pair(creds_i, creds_r)
    (fail,) = of(pair.events_r, AuthenticationFailed)
    assert fail.reason.startswith("key-type") and "ecdsa-256" in fail.reason
    # and a PSK peer is not let in by a certificate config
    psk_i = IKEConfig(local_id=Identity.from_certificate(leaf_i), psk=b"x" * 20,
                      proposals=("aes128-sha256-modp2048",), children=(ESP,))
    cr = _cfg(creds_r, Identity.from_certificate(leaf_r), None, "rsa-signatures",
              initiator=False)
    pair = Pair(psk_i, cr)
    pair.start()
    pair.run()
    (fail,) = of(pair.events_r, AuthenticationFailed)
    assert fail.reason.startswith("auth-method")


# --- the signature primitives against the `cryptography` package and RFC 7427 -------------

OCTETS = b"RealMessage | Nonce | prf(SK_p, IDb)" * 20


@pytest.mark.parametrize("key_type,method,size,h", [
    ("ecdsa-256", AuthMethod.ECDSA_256, 32, hashes.SHA256),
    ("ecdsa-384", AuthMethod.ECDSA_384, 48, hashes.SHA384),
    ("ecdsa-521", AuthMethod.ECDSA_521, 66, hashes.SHA512)])
def test_classic_ecdsa_is_r_and_s(key_type, method, size, h):
    """RFC 4754 7: AUTH data is r | s, fixed width, hash by curve."""
    key = new_key(key_type)
    got_method, data = auth.sign(key, OCTETS)
    assert got_method == method and len(data) == 2 * size
    der = encode_dss_signature(int.from_bytes(data[:size], "big"),
                               int.from_bytes(data[size:], "big"))
    key.public_key().verify(der, OCTETS, ec.ECDSA(h()))      # the independent check
    auth.verify(method, data, key.public_key(), OCTETS)
    with pytest.raises(auth.AuthError, match="bad-signature"):
        auth.verify(method, data, key.public_key(), OCTETS + b"!")


def test_classic_rsa_is_pkcs1_v15_sha1():
    key = new_key("rsa")
    method, data = auth.sign(key, OCTETS)
    assert method == AuthMethod.RSA_SIG
    key.public_key().verify(data, OCTETS, padding.PKCS1v15(), hashes.SHA1())
    auth.verify(method, data, key.public_key(), OCTETS)
    with pytest.raises(auth.AuthError, match="key-type"):
        auth.verify(AuthMethod.ECDSA_256, data, key.public_key(), OCTETS)


# RFC 7427 Appendix A.1.3 (sha256WithRSAEncryption) and A.3.1/A.3.2 (ecdsa-with-SHA256/384)
RFC7427_ALG_IDS = {
    ("rsa", auth.HashAlg.SHA2_256): "300d06092a864886f70d01010b0500",
    ("ecdsa-256", auth.HashAlg.SHA2_256): "300a06082a8648ce3d040302",
    ("ecdsa-384", auth.HashAlg.SHA2_384): "300a06082a8648ce3d040303",
}


@pytest.mark.parametrize("key_type,alg", list(RFC7427_ALG_IDS))
def test_digital_signature_method(key_type, alg):
    key = new_key(key_type)
    method, data = auth.sign(key, OCTETS, auth.OUR_HASHES)
    assert method == AuthMethod.DIGITAL_SIGNATURE
    alg_id = data[1:1 + data[0]]
    assert alg_id.hex() == RFC7427_ALG_IDS[(key_type, alg)]
    sig = data[1 + data[0]:]
    h = {auth.HashAlg.SHA2_256: hashes.SHA256, auth.HashAlg.SHA2_384: hashes.SHA384}[alg]()
    if key_type == "rsa":
        key.public_key().verify(sig, OCTETS, padding.PKCS1v15(), h)
    else:
        key.public_key().verify(sig, OCTETS, ec.ECDSA(h))
    auth.verify(method, data, key.public_key(), OCTETS)
    with pytest.raises(auth.AuthError, match="unsupported-method"):
        auth.verify(method, bytes([3]) + b"\x30\x01\x00" + sig, key.public_key(), OCTETS)
    with pytest.raises(auth.AuthError):
        auth.verify(method, data[:1], key.public_key(), OCTETS)
    # without a shared hash the classic method is used (RFC 7427 4)
    assert auth.sign(key, OCTETS, (auth.HashAlg.SHA1, 99))[0] != AuthMethod.DIGITAL_SIGNATURE


# --- loading credentials ------------------------------------------------------------------

def test_from_files(tmp_path, rsa_pki):
    leaf, key = rsa_pki.leaf("C=CH, O=pyspu, CN=gw1", dns=["gw1.example"])
    files = rsa_pki.write(tmp_path, leaf, key)
    creds = Credentials.from_files(files["cert"], files["key"], files["ca"])
    assert creds.chain == (leaf, rsa_pki.inter) and creds.trusted == (rsa_pki.root,)
    assert creds.kind == "rsa" and creds.certreq() == certreq_hash(rsa_pki.root)
    assert Identity.from_certificate(creds) == Identity(IDType.DER_ASN1_DN,
                                                        leaf.subject.public_bytes())
    secret = key.private_numbers().d
    assert str(secret) not in repr(creds) and "private_key" not in repr(creds)
    # the CA file may hold several CAs
    (tmp_path / "cas.pem").write_bytes(
        (tmp_path / "ca.pem").read_bytes() + (tmp_path / "inter.pem").read_bytes())
    assert len(Credentials.from_files(files["cert"], files["key"],
                                      str(tmp_path / "cas.pem")).trusted) == 2
    other_key = tmp_path / "other.key"
    other_key.write_bytes(new_key("rsa").private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()))
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    bad = [((files["cert"], str(other_key), files["ca"]), "does not belong"),
           ((str(tmp_path / "nope.pem"), files["key"], files["ca"]), "nope.pem"),
           ((str(tmp_path / "junk.pem"), files["key"], files["ca"]), "junk.pem"),
           ((files["cert"], str(tmp_path / "junk.pem"), files["ca"]), "junk.pem"),
           ((files["cert"], files["key"], str(tmp_path / "junk.pem")), "junk.pem")]
    for args, needle in bad:
        with pytest.raises(ValueError, match=needle):
            Credentials.from_files(*args)


def test_certreq_hash_is_sha1_of_spki(rsa_pki):
    """RFC 7296 3.7: SHA-1 of the DER SubjectPublicKeyInfo (not of the certificate)."""
    spki = rsa_pki.root.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert certreq_hash(rsa_pki.root) == hashlib.sha1(spki).digest()


def test_verify_chain_direct(rsa_pki):
    leaf, _ = rsa_pki.leaf("CN=x", dns=["x.example"])
    at = NOW.timestamp()
    assert verify_chain([leaf, rsa_pki.inter], [rsa_pki.root], at) == leaf
    # intermediates may come in any order, with junk around them
    junk, _ = Pki("rsa", name="junk").leaf("CN=junk")
    assert verify_chain([leaf, junk, rsa_pki.inter], [rsa_pki.root], at) == leaf
    # trusting the intermediate directly is enough
    assert verify_chain([leaf], [rsa_pki.inter], at) == leaf
    with pytest.raises(CertificateError) as err:
        verify_chain([b"\x30\x03\x02\x01\x00"], [rsa_pki.root], at)
    assert err.value.reason == "malformed"
    with pytest.raises(CertificateError) as err:
        verify_chain([leaf, rsa_pki.inter], [rsa_pki.root],
                     (rsa_pki.root.not_valid_after_utc + DAY).timestamp())
    assert err.value.reason == "expired"
    with pytest.raises(CertificateError) as err:
        check_identity(leaf, IDType.KEY_ID, b"x")
    assert err.value.reason == "identity-mismatch"
    check_identity(leaf, IDType.FQDN, b"X.Example.")


_FUZZ_PKI = {}


def _fuzz_material():
    if not _FUZZ_PKI:
        pki = Pki("ecdsa-256", name="fuzz")
        leaf, _ = pki.leaf("C=CH, CN=fuzz", "ecdsa-256", dns=["fuzz.example"],
                           emails=["a@fuzz.example"], ips=["192.0.2.9"])
        _FUZZ_PKI.update(pki=pki, der=leaf.public_bytes(serialization.Encoding.DER))
    return _FUZZ_PKI


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), min_size=1,
                max_size=4), st.integers(0, 3))
def test_mangled_peer_certificates_only_raise_certificate_error(flips, cut):
    """A peer's certificate bytes, corrupted anywhere: the checks answer with
    CertificateError (-> AUTHENTICATION_FAILED), never another exception."""
    m = _fuzz_material()
    der = bytearray(m["der"])
    for pos, value in flips:
        der[pos % len(der)] = value
    der = bytes(der[:len(der) - cut * 7])
    for id_type, data in ((IDType.FQDN, b"fuzz.example"), (IDType.DER_ASN1_DN, der[:40]),
                          (IDType.IPV4_ADDR, bytes([192, 0, 2, 9]))):
        try:
            leaf = verify_chain([der, m["pki"].inter], [m["pki"].root], NOW.timestamp())
            check_identity(leaf, id_type, data)
            key, _ = peer_key(leaf)
            auth.verify(AuthMethod.ECDSA_256, bytes(64), key, b"x")
        except (CertificateError, auth.AuthError):
            pass
