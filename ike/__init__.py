"""pyspu's IKEv2 control plane (RFC 7296), a sans-I/O core with a thin asyncio adapter.

    constants.py    protocol numbers (RFC 7296 3, IANA)
    errors.py       ParseError / IntegrityError / ProtocolError and how each is handled
    payloads.py     one dataclass per payload, body codecs (3.2-3.15)
    messages.py     header, payload chain, SK envelope, RFC 3948 framing (3.1, 3.14)
    dh.py           MODP / ECP / Curve25519 key exchange (2.14, RFC 5903, RFC 8031)
    crypto.py       PRF, prf+, SKEYSEED and Child SA keys, SK ciphers, PSK AUTH (2.13-2.18)
    proposals.py    proposal names, the responder's choice, mapping to engine algorithms
    ts.py           traffic selector narrowing and the engine Selector (2.9)
    config.py       IKEConfig / ChildConfig / Identity records
    dn.py           distinguished names for ID_DER_ASN1_DN (strongSwan's text order)
    certs.py        Credentials (PEM files), peer chain checks, ID vs certificate (2.15)
    auth.py         signature AUTH: RSA / ECDSA (3.8, RFC 4754) and RFC 7427 method 14
    peer_auth.py    our AUTH (+CERT) and the check of the peer's, PSK or certificate
    fragments.py    RFC 7383 fragmentation: SKF encoding, authenticated reassembly
    events.py       typed events: the only way the core talks to the data plane
    ike_sa.py       the state one IKE SA's tasks share (and its successor after a rekey)
    lifetimes.py    soft (rekey) and hard (delete) limits with random jitter (2.8)
    tasks/          one module per exchange + the task manager (message IDs, retransmits)
    connection.py   IKEConnection: one IKE SA (across its rekeys), bytes and `now` in,
                    datagrams/timers/events out; create_child / rekey_child / rekey_ike /
                    child_bytes
    endpoint.py     IKEEndpoint: many IKE SAs on one address, SPI routing, COOKIEs (2.6)
    daemon.py       asyncio DatagramProtocol adapter on UDP 500/4500
    junos.py        Junos configuration syntax (braces or `set` lines) -> statement tree
    vpn_schema.py   CONFIG.md's statements as a table; the checked Section tree
    vpn_config.py   GatewayConfig: IKE gateways, VPNs, manual SAs, st0, routes (CONFIG.md)
    junos_algorithms.py / junos_secret.py / vpn_manual.py / vpn_describe.py
                    Junos algorithm names, `$9$` keys, manual-key SAs, the --check summary
    gateway.py      `spu gateway`: IKE events -> Engine installs, tunnels, lifetimes, status
    dataplane.py    st0 TUN <-> Engine <-> ESP-in-UDP / raw ESP, in batches (engine/netio.py)
    control.py      the gateway's Unix control socket (JSON lines)
    status.py       `spu status` tables, Junos style
    cli.py          `spu gateway`, `spu status`, `spu request`

Not yet: IKE SA reauthentication (2.8.3: the hard IKE lifetime deletes), EAP, certificate
revocation (CRL/OCSP), RSASSA-PSS signatures, hash-and-URL certificates, MOBIKE, IKEv1.
"""
