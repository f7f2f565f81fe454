"""One module per IKEv2 exchange (strongSwan's ikev2/tasks, STYLE.md 2).

    ike_init.py       IKE_SA_INIT (RFC 7296 1.2): proposals, KE, nonces, NAT detection,
                      COOKIE and INVALID_KE_PAYLOAD retries
    ike_auth.py       IKE_AUTH (1.2, 2.15): identities, PSK AUTH, the first Child SA
    child_sa.py       Child SA helpers shared by IKE_AUTH and CREATE_CHILD_SA
    create_child.py   CREATE_CHILD_SA (1.3): new Child SAs, Child SA rekeying (PFS,
                      collisions 2.8.1), and the responder for all three uses
    rekey_ike.py      CREATE_CHILD_SA rekeying the IKE SA (1.3.2, 2.18, collisions)
    informational.py  INFORMATIONAL (1.4): Delete, liveness (DPD), error notifies
    manager.py        message IDs, window of one, retransmission, cached responses
"""
