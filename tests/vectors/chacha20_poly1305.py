"""ChaCha20-Poly1305 known-answer vectors.

RFC 7634, "ChaCha20, Poly1305, and Their Use in the Internet Key Exchange Protocol (IKE)
and IPsec": Appendix A ("ESP Example") and Appendix B ("IKEv2 Example"). RFC 7634 has no
ESN example: Appendix A is the only ESP example, and it states "ESN is not enabled"
(AAD = SPI || 32-bit sequence number). Appendix B is an IKEv2 Encrypted payload; its
AEAD inputs are still a valid `rfc7539esp(chacha20,poly1305)` vector (same key, salt and
IV, a 32-octet AAD), used here for the raw AEAD only.
Transcribed from draft-ietf-ipsecme-chacha20-poly1305-12, the version approved as
RFC 7634; the ESP packet was cross-checked against the snoop capture that document embeds
at the end of Appendix B (see tests/test_kat.py).

RFC 8439, "ChaCha20 and Poly1305 for IETF Protocols", section 2.8.2 ("Example and Test
Vector for AEAD_CHACHA20_POLY1305"): its 96-bit nonce is a 32-bit constant || 64-bit IV,
the same split as ESP's salt || IV.

Pure data; conventions as in tests/vectors/hmac.py.
"""

RFC7634_ESP = dict(
    source="RFC 7634 Appendix A (ESP Example)",
    mode="tunnel",
    keymat="""80 81 82 83 84 85 86 87 88 89 8a 8b 8c 8d 8e 8f
              90 91 92 93 94 95 96 97 98 99 9a 9b 9c 9d 9e 9f
              a0 a1 a2 a3""",                   # 32-octet key || 4-octet salt
    spi="01 02 03 04",
    seq=5,                                        # "The next sequence number is 5"
    esn=False,                                    # "ESN is not enabled"
    src="203.0.113.153",                          # "The gateway IP address for this side"
    dst="203.0.113.5",                            # "The peer address"
    iv="10 11 12 13 14 15 16 17",
    nonce="a0 a1 a2 a3 10 11 12 13 14 15 16 17",
    source_packet="""
        45 00 00 54 a6 f2 00 00 40 01 e7 78 c6 33 64 05
        c0 00 02 05 08 00 5b 7a 3a 08 00 00 55 3b ec 10
        00 07 36 27 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13
        14 15 16 17 18 19 1a 1b 1c 1d 1e 1f 20 21 22 23
        24 25 26 27 28 29 2a 2b 2c 2d 2e 2f 30 31 32 33
        34 35 36 37""",                           # ICMP 198.51.100.5 -> 192.0.2.5
    plaintext="""
        45 00 00 54 a6 f2 00 00 40 01 e7 78 c6 33 64 05
        c0 00 02 05 08 00 5b 7a 3a 08 00 00 55 3b ec 10
        00 07 36 27 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13
        14 15 16 17 18 19 1a 1b 1c 1d 1e 1f 20 21 22 23
        24 25 26 27 28 29 2a 2b 2c 2d 2e 2f 30 31 32 33
        34 35 36 37 01 02 02 04""",               # + padding 0102, pad length 2, NH 4
    ciphertext="""
        24 03 94 28 b9 7f 41 7e 3c 13 75 3a 4f 05 08 7b
        67 c3 52 e6 a7 fa b1 b9 82 d4 66 ef 40 7a e5 c6
        14 ee 80 99 d5 28 44 eb 61 aa 95 df ab 4c 02 f7
        2a a7 1e 7c 4c 4f 64 c9 be fe 2f ac c6 38 e8 f3
        cb ec 16 3f ac 46 9b 50 27 73 f6 fb 94 e6 64 da
        91 65 b8 28 29 f6 41 e0""",
    poly1305_key="""af 1f 41 2c c1 15 ad ce 5e 4d 0e 29 d5 c1 30 bf
                    46 31 21 0e 0f ef 74 31 c0 45 4f e7 0f d7 c2 d1""",
    aad="01 02 03 04 00 00 00 05",
    tag="76 aa a8 26 6b 7f b0 f7 b1 1b 36 99 07 e1 ad 43",
    esp_packet="""
        45 00 00 8c 23 45 00 00 40 32 de 5b cb 00 71 99
        cb 00 71 05 01 02 03 04 00 00 00 05 10 11 12 13
        14 15 16 17 24 03 94 28 b9 7f 41 7e 3c 13 75 3a
        4f 05 08 7b 67 c3 52 e6 a7 fa b1 b9 82 d4 66 ef
        40 7a e5 c6 14 ee 80 99 d5 28 44 eb 61 aa 95 df
        ab 4c 02 f7 2a a7 1e 7c 4c 4f 64 c9 be fe 2f ac
        c6 38 e8 f3 cb ec 16 3f ac 46 9b 50 27 73 f6 fb
        94 e6 64 da 91 65 b8 28 29 f6 41 e0 76 aa a8 26
        6b 7f b0 f7 b1 1b 36 99 07 e1 ad 43""",
    # The snoop-format capture (base64) printed at the end of Appendix B: the ICMP packet
    # of Appendix A, the ESP packet of Appendix A and the IKEv2 packet of Appendix B.
    snoop_base64="""
        c25vb3AAAAAAAAACAAAABAAAAGIAAABiAAAAegAAAABVPq8PAAADVdhs6fUQBHgx
        wbcpwggARQAAVKbyAABAAed4xjNkBcAAAgUIAFt6OggAAFU77BAABzYnCAkKCwwN
        Dg8QERITFBUWFxgZGhscHR4fICEiIyQlJicoKSorLC0uLzAxMjM0NTY3AAAAmgAA
        AJoAAACyAAAAAFU+rw8AAAo62Gzp9RAEeDHBtynCCABFAACMI0UAAEAy3lvLAHGZ
        ywBxBQECAwQAAAAFEBESExQVFhckA5QouX9BfjwTdTpPBQh7Z8NS5qf6sbmC1Gbv
        QHrlxhTugJnVKETrYaqV36tMAvcqpx58TE9kyb7+L6zGOOjzy+wWP6xGm1Anc/b7
        lOZk2pFluCgp9kHgdqqoJmt/sPexGzaZB+GtQwAAAG8AAABvAAAAhwAAAABVPq8P
        AAARH9hs6fUQBHgxwbcpwggARQAAYSNFAABAEd6nywBxmcsAcQUB9AH0AE0IUcDB
        wsPExcbH0NHS09TV1tcuICUAAAAACQAAAEUpAAApEBESExQVFhdhA5RwH40Bf3wS
        kkiJa3G/4lI279fNxnBmkGMVsg==""",
)

RFC7634_IKEV2 = dict(
    source="RFC 7634 Appendix B (IKEv2 Example)",
    keymat="""80 81 82 83 84 85 86 87 88 89 8a 8b 8c 8d 8e 8f
              90 91 92 93 94 95 96 97 98 99 9a 9b 9c 9d 9e 9f
              a0 a1 a2 a3""",
    iv="10 11 12 13 14 15 16 17",
    plaintext="00 00 00 0c 00 00 40 01 00 00 00 0a 00",
    aad="""c0 c1 c2 c3 c4 c5 c6 c7 d0 d1 d2 d3 d4 d5 d6 d7
           2e 20 25 00 00 00 00 09 00 00 00 45 29 00 00 29""",
    ciphertext="61 03 94 70 1f 8d 01 7f 7c 12 92 48 89",
    tag="6b 71 bf e2 52 36 ef d7 cd c6 70 66 90 63 15 b2",
)

RFC8439_AEAD = dict(
    source="RFC 8439 section 2.8.2 (Example and Test Vector for AEAD_CHACHA20_POLY1305)",
    plaintext_text=("Ladies and Gentlemen of the class of '99: If I could offer you "
                    "only one tip for the future, sunscreen would be it."),
    aad="50 51 52 53 c0 c1 c2 c3 c4 c5 c6 c7",
    key="""80 81 82 83 84 85 86 87 88 89 8a 8b 8c 8d 8e 8f
           90 91 92 93 94 95 96 97 98 99 9a 9b 9c 9d 9e 9f""",
    iv="40 41 42 43 44 45 46 47",
    fixed_common="07 00 00 00",                   # "32-bit fixed-common part"
    ciphertext="""
        d3 1a 8d 34 64 8e 60 db 7b 86 af bc 53 ef 7e c2
        a4 ad ed 51 29 6e 08 fe a9 e2 b5 a7 36 ee 62 d6
        3d be a4 5e 8c a9 67 12 82 fa fb 69 da 92 72 8b
        1a 71 de 0a 9e 06 0b 29 05 d6 a5 b6 7e cd 3b 36
        92 dd bd 7f 2d 77 8b 8c 98 03 ae e3 28 09 1b 58
        fa b3 24 e4 fa d6 75 94 55 85 80 8b 48 31 d7 bc
        3f f4 de f0 8e 4b 7a 9d e5 76 d2 65 86 ce c6 4b
        61 16""",
    tag="1a e1 0b 59 4f 09 e2 6a 7e 90 2e cb d0 60 06 91",
)
