"""pyspu's IKEv2 control plane (RFC 7296), a sans-I/O core with a thin asyncio adapter.

    constants.py    protocol numbers (RFC 7296 3, IANA)
    errors.py       ParseError / IntegrityError / ProtocolError and how each is handled
    payloads.py     one dataclass per payload, body codecs (3.2-3.15)
    messages.py     header, payload chain, SK envelope, RFC 3948 framing (3.1, 3.14)
    dh.py           MODP / ECP / Curve25519 key exchange (2.14, RFC 5903, RFC 8031)
    crypto.py       PRF, prf+, SKEYSEED and Child SA keys, SK ciphers, PSK AUTH (2.13-2.17)
    proposals.py    proposal names, the responder's choice, mapping to engine algorithms
    ts.py           traffic selector narrowing and the engine Selector (2.9)
    config.py       IKEConfig / ChildConfig / Identity records
    events.py       typed events: the only way the core talks to the data plane
    ike_sa.py       the state one IKE SA's tasks share
    tasks/          one module per exchange + the task manager (message IDs, retransmits)
    connection.py   IKEConnection: one IKE SA, bytes and `now` in, datagrams/timers/events out
    endpoint.py     IKEEndpoint: many IKE SAs on one address, SPI routing, COOKIEs (2.6)
    daemon.py       asyncio DatagramProtocol adapter on UDP 500/4500

Not yet: CREATE_CHILD_SA (rekeying; refused with NO_ADDITIONAL_SAS), certificates/EAP,
IKEv2 fragmentation (RFC 7383), MOBIKE, IKEv1.
"""
