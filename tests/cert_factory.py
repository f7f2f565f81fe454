"""Test PKI made at test time with the `cryptography` package: CA -> intermediate -> leaf.

    pki = Pki("rsa")                              # or "ecdsa-256", "ecdsa-384"
    leaf, key = pki.leaf("CN=gw1", dns=["gw1.example"], key_type="ecdsa-256")
    creds = pki.credentials(leaf, key)            # chain leaf + intermediate, trust root
    pki.write(dirpath, leaf, key)                 # PEM files for from_files / strongSwan

Every key and certificate here is throwaway and never leaves the test's temp directory.
"""
from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from ike.certs import Credentials
from ike.dn import parse_dn

NOW = datetime.datetime(2026, 6, 1, 12, 0, tzinfo=datetime.timezone.utc)
DAY = datetime.timedelta(days=1)


def new_key(key_type: str):
    if key_type == "rsa":
        return rsa.generate_private_key(65537, 2048)
    curve = {"ecdsa-256": ec.SECP256R1, "ecdsa-384": ec.SECP384R1,
             "ecdsa-521": ec.SECP521R1}[key_type]()
    return ec.generate_private_key(curve)


def _hash_for(key):
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def issue(subject: str, public_key, issuer_name: x509.Name, issuer_key, *, ca: bool,
          not_before=None, not_after=None, dns=(), emails=(), ips=(),
          key_usage: bool = True, basic_constraints: bool = True,
          now: datetime.datetime = NOW) -> x509.Certificate:
    nb = not_before or now - 30 * DAY
    na = not_after or now + 365 * DAY
    b = (x509.CertificateBuilder().subject_name(parse_dn(subject)).issuer_name(issuer_name)
         .public_key(public_key).serial_number(x509.random_serial_number())
         .not_valid_before(nb).not_valid_after(na))
    if basic_constraints:
        b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    if key_usage:
        b = b.add_extension(x509.KeyUsage(
            digital_signature=not ca, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
            encipher_only=False, decipher_only=False), critical=True)
    san = [x509.DNSName(d) for d in dns] + [x509.RFC822Name(e) for e in emails] + \
        [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if san:
        b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return b.sign(issuer_key, _hash_for(issuer_key))


class Pki:
    """A root CA and an intermediate CA of one key type."""

    def __init__(self, key_type: str = "rsa", name: str = "pyspu test",
                 now: datetime.datetime = NOW):
        """`now`: the time the certificates are valid around (the tests pin NOW; the
        strongSwan tests use the real time, since charon reads its own clock)."""
        self.now = now
        self.root_key = new_key(key_type)
        self.root = issue(f"C=CH, O={name}, CN={name} Root CA", self.root_key.public_key(),
                          parse_dn(f"C=CH, O={name}, CN={name} Root CA"), self.root_key,
                          ca=True, now=now)
        self.inter_key = new_key(key_type)
        self.inter = issue(f"C=CH, O={name}, CN={name} Intermediate CA",
                           self.inter_key.public_key(), self.root.subject, self.root_key,
                           ca=True, now=now)

    def leaf(self, subject: str, key_type: str = "rsa", **kw):
        key = new_key(key_type)
        kw.setdefault("now", self.now)
        cert = issue(subject, key.public_key(), self.inter.subject, self.inter_key, ca=False,
                     **kw)
        return cert, key

    def credentials(self, leaf, key, *, trusted=None, clock=None) -> Credentials:
        return Credentials((leaf, self.inter), key, tuple(trusted or (self.root,)),
                           clock or (lambda: NOW.timestamp()))

    def write(self, directory: Path, leaf, key, prefix: str = "gw") -> dict:
        """PEM files: <prefix>.pem (leaf + intermediate), <prefix>.key, ca.pem (root)."""
        directory.mkdir(parents=True, exist_ok=True)
        pem = serialization.Encoding.PEM
        paths = {"cert": directory / f"{prefix}.pem", "key": directory / f"{prefix}.key",
                 "ca": directory / "ca.pem", "leaf": directory / f"{prefix}-leaf.pem",
                 "inter": directory / "inter.pem"}
        paths["cert"].write_bytes(leaf.public_bytes(pem) + self.inter.public_bytes(pem))
        paths["leaf"].write_bytes(leaf.public_bytes(pem))
        paths["inter"].write_bytes(self.inter.public_bytes(pem))
        paths["key"].write_bytes(key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        paths["key"].chmod(0o600)
        paths["ca"].write_bytes(self.root.public_bytes(pem))
        return {k: str(v) for k, v in paths.items()}


__all__ = ["Pki", "issue", "new_key", "NOW", "DAY", "NameOID"]
