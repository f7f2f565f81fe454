"""HMAC known-answer vectors: RFC 2202 (MD5, SHA-1), RFC 4231 and RFC 4868 (SHA-2).

Pure data. Conventions (shared by every module in tests/vectors):
  * byte strings are hex, whitespace ignored (``bytes.fromhex``); long runs that the RFC
    itself describes as "0xaa repeated 80 times" are written ``"aa" * 80``;
  * a field ending in ``_text`` is an ASCII string as quoted in the RFC (no trailing NUL);
  * ``source`` names the document, section and test case each value was transcribed from.

Every digest is checked against the `cryptography` package in tests/test_kat.py before it
is used against the engine.
"""

# --------------------------------------------------------------------------------------
# RFC 2202, "Test Cases for HMAC-MD5 and HMAC-SHA-1", sections 2 (MD5) and 3 (SHA-1).
# ``digest_96`` is the RFC's own truncated value (test case 5 only).
# --------------------------------------------------------------------------------------
RFC2202_HMAC_MD5 = [
    dict(source="RFC 2202 section 2, test_case 1",
         key="0b" * 16, data_text="Hi There",
         digest="9294727a3638bb1c13f48ef8158bfc9d"),
    dict(source="RFC 2202 section 2, test_case 2",
         key_text="Jefe", data_text="what do ya want for nothing?",
         digest="750c783e6ab0b503eaa86e310a5db738"),
    dict(source="RFC 2202 section 2, test_case 3",
         key="aa" * 16, data="dd" * 50,
         digest="56be34521d144c88dbb8c733f0e8b3f6"),
    dict(source="RFC 2202 section 2, test_case 4",
         key="0102030405060708090a0b0c0d0e0f10111213141516171819", data="cd" * 50,
         digest="697eaf0aca3a3aea3a75164746ffaa79"),
    dict(source="RFC 2202 section 2, test_case 5",
         key="0c" * 16, data_text="Test With Truncation",
         digest="56461ef2342edc00f9bab995690efd4c",
         digest_96="56461ef2342edc00f9bab995"),
    dict(source="RFC 2202 section 2, test_case 6",
         key="aa" * 80, data_text="Test Using Larger Than Block-Size Key - Hash Key First",
         digest="6b1ab7fe4bd7bf8f0b62e6ce61b9d0cd"),
    dict(source="RFC 2202 section 2, test_case 7",
         key="aa" * 80,
         data_text="Test Using Larger Than Block-Size Key and Larger Than One Block-Size Data",
         digest="6f630fad67cda0ee1fb1f562db3aa53e"),
]

RFC2202_HMAC_SHA1 = [
    dict(source="RFC 2202 section 3, test_case 1",
         key="0b" * 20, data_text="Hi There",
         digest="b617318655057264e28bc0b6fb378c8ef146be00"),
    dict(source="RFC 2202 section 3, test_case 2",
         key_text="Jefe", data_text="what do ya want for nothing?",
         digest="effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"),
    dict(source="RFC 2202 section 3, test_case 3",
         key="aa" * 20, data="dd" * 50,
         digest="125d7342b9ac11cd91a39af48aa17b4f63f175d3"),
    dict(source="RFC 2202 section 3, test_case 4",
         key="0102030405060708090a0b0c0d0e0f10111213141516171819", data="cd" * 50,
         digest="4c9007f4026250c6bc8414f9bf50c86c2d7235da"),
    dict(source="RFC 2202 section 3, test_case 5",
         key="0c" * 20, data_text="Test With Truncation",
         digest="4c1a03424b55e07fe7f27be1d58bb9324a9a5a04",
         digest_96="4c1a03424b55e07fe7f27be1"),
    dict(source="RFC 2202 section 3, test_case 6",
         key="aa" * 80, data_text="Test Using Larger Than Block-Size Key - Hash Key First",
         digest="aa4ae5e15272d00e95705637ce8a3b55ed402112"),
    dict(source="RFC 2202 section 3, test_case 7",
         key="aa" * 80,
         data_text="Test Using Larger Than Block-Size Key and Larger Than One Block-Size Data",
         digest="e8e99d0f45237d786d6bbaa7965c7808bbff1a91"),
]

# --------------------------------------------------------------------------------------
# RFC 4231, "Identifiers and Test Vectors for HMAC-SHA-224, -256, -384, and -512",
# section 4 (test cases 1-7). SHA-224 is not an ESP transform and is left out.
# Test case 5 gives only the first 128 bits of each output ("Test with a truncation of
# output to 128 bits"); those entries carry ``truncated_bits=128``.
# --------------------------------------------------------------------------------------
_RFC4231_KEY_131 = "aa" * 131
_RFC4231_DATA_6 = """
    54657374205573696e67204c61726765 72205468616e20426c6f636b2d53697a
    65204b6579202d2048617368204b6579 204669727374"""
_RFC4231_DATA_7 = """
    54686973206973206120746573742075 73696e672061206c6172676572207468
    616e20626c6f636b2d73697a65206b65 7920616e642061206c61726765722074
    68616e20626c6f636b2d73697a652064 6174612e20546865206b6579206e6565
    647320746f2062652068617368656420 6265666f7265206265696e6720757365
    642062792074686520484d414320616c 676f726974686d2e"""

RFC4231 = [
    dict(source="RFC 4231 section 4.2, Test Case 1",
         key="0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b 0b0b0b0b", data="4869205468657265",
         sha256="b0344c61d8db38535ca8afceaf0bf12b 881dc200c9833da726e9376c2e32cff7",
         sha384="""afd03944d84895626b0825f4ab46907f 15f9dadbe4101ec682aa034c7cebc59c
                   faea9ea9076ede7f4af152e8b2fa9cb6""",
         sha512="""87aa7cdea5ef619d4ff0b4241a1d6cb0 2379f4e2ce4ec2787ad0b30545e17cde
                   daa833b7d6b8a702038b274eaea3f4e4 be9d914eeb61f1702e696c203a126854"""),
    dict(source="RFC 4231 section 4.3, Test Case 2",
         key="4a656665", data="7768617420646f2079612077616e7420 666f72206e6f7468696e673f",
         sha256="5bdcc146bf60754e6a042426089575c7 5a003f089d2739839dec58b964ec3843",
         sha384="""af45d2e376484031617f78d2b58a6b1b 9c7ef464f5a01b47e42ec3736322445e
                   8e2240ca5e69e2c78b3239ecfab21649""",
         sha512="""164b7a7bfcf819e2e395fbe73b56e0a3 87bd64222e831fd610270cd7ea250554
                   9758bf75c05a994a6d034f65f8f0e6fd caeab1a34d4a6b4b636e070a38bce737"""),
    dict(source="RFC 4231 section 4.4, Test Case 3",
         key="aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa aaaaaaaa", data="dd" * 50,
         sha256="773ea91e36800e46854db8ebd09181a7 2959098b3ef8c122d9635514ced565fe",
         sha384="""88062608d3e6ad8a0aa2ace014c8a86f 0aa635d947ac9febe83ef4e55966144b
                   2a5ab39dc13814b94e3ab6e101a34f27""",
         sha512="""fa73b0089d56a284efb0f0756c890be9 b1b5dbdd8ee81a3655f83e33b2279d39
                   bf3e848279a722c806b485a47e67c807 b946a337bee8942674278859e13292fb"""),
    dict(source="RFC 4231 section 4.5, Test Case 4",
         key="0102030405060708090a0b0c0d0e0f10 111213141516171819", data="cd" * 50,
         sha256="82558a389a443c0ea4cc819899f2083a 85f0faa3e578f8077a2e3ff46729665b",
         sha384="""3e8a69b7783c25851933ab6290af6ca7 7a9981480850009cc5577c6e1f573b4e
                   6801dd23c4a7d679ccf8a386c674cffb""",
         sha512="""b0ba465637458c6990e5a8c5f61d4af7 e576d97ff94b872de76f8050361ee3db
                   a91ca5c11aa25eb4d679275cc5788063 a5f19741120c4f2de2adebeb10a298dd"""),
    dict(source="RFC 4231 section 4.6, Test Case 5",
         key="0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c 0c0c0c0c",
         data="546573742057697468205472756e6361 74696f6e",
         truncated_bits=128,
         sha256="a3b6167473100ee06e0c796c2955552b",
         sha384="3abf34c3503b2a23a46efc619baef897",
         sha512="415fad6271580a531d4179bc891d87a6"),
    dict(source="RFC 4231 section 4.7, Test Case 6",
         key=_RFC4231_KEY_131, data=_RFC4231_DATA_6,
         sha256="60e431591ee0b67f0d8a26aacbf5b77f 8e0bc6213728c5140546040f0ee37f54",
         sha384="""4ece084485813e9088d2c63a041bc5b4 4f9ef1012a2b588f3cd11f05033ac4c6
                   0c2ef6ab4030fe8296248df163f44952""",
         sha512="""80b24263c7c1a3ebb71493c1dd7be8b4 9b46d1f41b4aeec1121b013783f8f352
                   6b56d037e05f2598bd0fd2215d6a1e52 95e64f73f63f0aec8b915a985d786598"""),
    dict(source="RFC 4231 section 4.8, Test Case 7",
         key=_RFC4231_KEY_131, data=_RFC4231_DATA_7,
         sha256="9b09ffa71b942fcb27635fbcd5b0e944 bfdc63644f0713938a7f51535c3a35e2",
         sha384="""6617178e941f020d351e2f254e8fd32c 602420feb0b8fb9adccebb82461e99c5
                   a678cc31e799176d3860e6110c46523e""",
         sha512="""e37b6a775dc87dbaa4dfa9f96e5e3ffd debd71f8867289865df5a32d20cdc944
                   b6022cac3c4982b10d5eeb55c3e4de15 134676fb6de0446065c97440fa8c6a58"""),
]

# --------------------------------------------------------------------------------------
# RFC 4868, "Using HMAC-SHA-256, HMAC-SHA-384, and HMAC-SHA-512 with IPsec", section 2.7.
# 2.7.1: PRF test vectors PRF-1 .. PRF-6 (same inputs/outputs as RFC 4231 cases 1-4, 6, 7).
# --------------------------------------------------------------------------------------
RFC4868_PRF = [
    dict(source="RFC 4868 section 2.7.1, Test Case PRF-1",
         key="0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b 0b0b0b0b", data="4869205468657265",
         sha256="b0344c61d8db38535ca8afceaf0bf12b 881dc200c9833da726e9376c2e32cff7",
         sha384="""afd03944d84895626b0825f4ab46907f 15f9dadbe4101ec682aa034c7cebc59c
                   faea9ea9076ede7f4af152e8b2fa9cb6""",
         sha512="""87aa7cdea5ef619d4ff0b4241a1d6cb0 2379f4e2ce4ec2787ad0b30545e17cde
                   daa833b7d6b8a702038b274eaea3f4e4 be9d914eeb61f1702e696c203a126854"""),
    dict(source="RFC 4868 section 2.7.1, Test Case PRF-2",
         key="4a656665", data="7768617420646f2079612077616e7420 666f72206e6f7468696e673f",
         sha256="5bdcc146bf60754e6a042426089575c7 5a003f089d2739839dec58b964ec3843",
         sha384="""af45d2e376484031617f78d2b58a6b1b 9c7ef464f5a01b47e42ec3736322445e
                   8e2240ca5e69e2c78b3239ecfab21649""",
         sha512="""164b7a7bfcf819e2e395fbe73b56e0a3 87bd64222e831fd610270cd7ea250554
                   9758bf75c05a994a6d034f65f8f0e6fd caeab1a34d4a6b4b636e070a38bce737"""),
    dict(source="RFC 4868 section 2.7.1, Test Case PRF-3",
         key="aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa aaaaaaaa", data="dd" * 50,
         sha256="773ea91e36800e46854db8ebd09181a7 2959098b3ef8c122d9635514ced565fe",
         sha384="""88062608d3e6ad8a0aa2ace014c8a86f 0aa635d947ac9febe83ef4e55966144b
                   2a5ab39dc13814b94e3ab6e101a34f27""",
         sha512="""fa73b0089d56a284efb0f0756c890be9 b1b5dbdd8ee81a3655f83e33b2279d39
                   bf3e848279a722c806b485a47e67c807 b946a337bee8942674278859e13292fb"""),
    dict(source="RFC 4868 section 2.7.1, Test Case PRF-4",
         key="0102030405060708090a0b0c0d0e0f10 111213141516171819", data="cd" * 50,
         sha256="82558a389a443c0ea4cc819899f2083a 85f0faa3e578f8077a2e3ff46729665b",
         sha384="""3e8a69b7783c25851933ab6290af6ca7 7a9981480850009cc5577c6e1f573b4e
                   6801dd23c4a7d679ccf8a386c674cffb""",
         sha512="""b0ba465637458c6990e5a8c5f61d4af7 e576d97ff94b872de76f8050361ee3db
                   a91ca5c11aa25eb4d679275cc5788063 a5f19741120c4f2de2adebeb10a298dd"""),
    dict(source="RFC 4868 section 2.7.1, Test Case PRF-5",
         key=_RFC4231_KEY_131, data=_RFC4231_DATA_6,
         sha256="60e431591ee0b67f0d8a26aacbf5b77f 8e0bc6213728c5140546040f0ee37f54",
         sha384="""4ece084485813e9088d2c63a041bc5b4 4f9ef1012a2b588f3cd11f05033ac4c6
                   0c2ef6ab4030fe8296248df163f44952""",
         sha512="""80b24263c7c1a3ebb71493c1dd7be8b4 9b46d1f41b4aeec1121b013783f8f352
                   6b56d037e05f2598bd0fd2215d6a1e52 95e64f73f63f0aec8b915a985d786598"""),
    dict(source="RFC 4868 section 2.7.1, Test Case PRF-6",
         key=_RFC4231_KEY_131, data=_RFC4231_DATA_7,
         sha256="9b09ffa71b942fcb27635fbcd5b0e944 bfdc63644f0713938a7f51535c3a35e2",
         sha384="""6617178e941f020d351e2f254e8fd32c 602420feb0b8fb9adccebb82461e99c5
                   a678cc31e799176d3860e6110c46523e""",
         sha512="""e37b6a775dc87dbaa4dfa9f96e5e3ffd debd71f8867289865df5a32d20cdc944
                   b6022cac3c4982b10d5eeb55c3e4de15 134676fb6de0446065c97440fa8c6a58"""),
]

# 2.7.2: authenticator test vectors. Keys are as long as the hash output (the IPsec key
# size); ``full`` is the PRF-HMAC-SHA-xxx value and ``truncated`` the HMAC-SHA-xxx-yyy ICV
# (128/192/256 bits) printed next to it.
#
# RFC errata (checked against `cryptography`):
#  * AUTH512-4 (section 2.7.2.3): the printed key has a spurious first line
#    "0a0b0c0d0e0f10111213141516171819" (80 bytes, not the stated 64). Erratum 1785
#    (Verified) removes it; the printed digests are those of the corrected 64-byte key,
#    which is what is transcribed below.
#  * AUTH384-4 (section 2.7.2.2): the printed key's third line is
#    "0a0b0c0d0e0f10111213141516171819" (not the 2122..2f30 the pattern suggests).
#    Erratum 5507 (Held for Document Update) proposes "2122232425262728292a2b2c2d2e2f30",
#    but the printed digests are those of the key AS PRINTED, so the key is transcribed
#    as printed; adopting the erratum would make the vector fail.
_JEFE = "4a656665"
RFC4868_AUTH = [
    # 2.7.2.1 SHA256 Authentication Test Vectors (HMAC-SHA-256-128)
    dict(source="RFC 4868 section 2.7.2.1, Test Case AUTH256-1", hash="sha256",
         key="0b" * 32, data="4869205468657265",
         full="198a607eb44bfbc69903a0f1cf2bbdc5 ba0aa3f3d9ae3c1c7a3b1696a0b68cf7",
         truncated="198a607eb44bfbc69903a0f1cf2bbdc5"),
    dict(source="RFC 4868 section 2.7.2.1, Test Case AUTH256-2", hash="sha256",
         key=_JEFE * 8, data="7768617420646f2079612077616e7420 666f72206e6f7468696e673f",
         full="167f928588c5cc2eef8e3093caa0e87c 9ff566a14794aa61648d81621a2a40c6",
         truncated="167f928588c5cc2eef8e3093caa0e87c"),
    dict(source="RFC 4868 section 2.7.2.1, Test Case AUTH256-3", hash="sha256",
         key="aa" * 32, data="dd" * 50,
         full="cdcb1220d1ecccea91e53aba3092f962 e549fe6ce9ed7fdc43191fbde45c30b0",
         truncated="cdcb1220d1ecccea91e53aba3092f962"),
    dict(source="RFC 4868 section 2.7.2.1, Test Case AUTH256-4", hash="sha256",
         key="0102030405060708090a0b0c0d0e0f10 1112131415161718191a1b1c1d1e1f20",
         data="cd" * 50,
         full="372efcf9b40b35c2115b1346903d2ef4 2fced46f0846e7257bb156d3d7b30d3f",
         truncated="372efcf9b40b35c2115b1346903d2ef4"),
    # 2.7.2.2 SHA384 Authentication Test Vectors (HMAC-SHA-384-192)
    dict(source="RFC 4868 section 2.7.2.2, Test Case AUTH384-1", hash="sha384",
         key="0b" * 48, data="4869205468657265",
         full="""b6a8d5636f5c6a7224f9977dcf7ee6c7 fb6d0c48cbdee9737a959796489bddbc
                 4c5df61d5b3297b4fb68dab9f1b582c2""",
         truncated="b6a8d5636f5c6a7224f9977dcf7ee6c7 fb6d0c48cbdee973"),
    dict(source="RFC 4868 section 2.7.2.2, Test Case AUTH384-2", hash="sha384",
         key=_JEFE * 12, data="7768617420646f2079612077616e7420 666f72206e6f7468696e673f",
         full="""2c7353974f1842fd66d53c452ca42122 b28c0b594cfb184da86a368e9b8e16f5
                 349524ca4e82400cbde0686d403371c9""",
         truncated="2c7353974f1842fd66d53c452ca42122 b28c0b594cfb184d"),
    dict(source="RFC 4868 section 2.7.2.2, Test Case AUTH384-3", hash="sha384",
         key="aa" * 48, data="dd" * 50,
         full="""809f439be00274321d4a538652164b53 554a508184a0c3160353e3428597003d
                 35914a18770f9443987054944b7c4b4a""",
         truncated="809f439be00274321d4a538652164b53 554a508184a0c316"),
    dict(source="RFC 4868 section 2.7.2.2, Test Case AUTH384-4 (key as printed, see above)",
         hash="sha384",
         key="""0102030405060708090a0b0c0d0e0f10 1112131415161718191a1b1c1d1e1f20
                0a0b0c0d0e0f10111213141516171819""",
         data="cd" * 50,
         full="""5b540085c6e6358096532b2493609ed1 cb298f774f87bb5c2ebf182c83cc7428
                 707fb92eab2536a5812258228bc96687""",
         truncated="5b540085c6e6358096532b2493609ed1 cb298f774f87bb5c"),
    # 2.7.2.3 SHA512 Authentication Test Vectors (HMAC-SHA-512-256)
    dict(source="RFC 4868 section 2.7.2.3, Test Case AUTH512-1", hash="sha512",
         key="0b" * 64, data="4869205468657265",
         full="""637edc6e01dce7e6742a99451aae82df 23da3e92439e590e43e761b33e910fb8
                 ac2878ebd5803f6f0b61dbce5e251ff8 789a4722c1be65aea45fd464e89f8f5b""",
         truncated="637edc6e01dce7e6742a99451aae82df 23da3e92439e590e43e761b33e910fb8"),
    dict(source="RFC 4868 section 2.7.2.3, Test Case AUTH512-2", hash="sha512",
         key=_JEFE * 16, data="7768617420646f2079612077616e7420 666f72206e6f7468696e673f",
         full="""cb370917ae8a7ce28cfd1d8f4705d614 1c173b2a9362c15df235dfb251b15454
                 6aa334ae9fb9afc2184932d8695e397b fa0ffb93466cfcceaae38c833b7dba38""",
         truncated="cb370917ae8a7ce28cfd1d8f4705d614 1c173b2a9362c15df235dfb251b15454"),
    dict(source="RFC 4868 section 2.7.2.3, Test Case AUTH512-3", hash="sha512",
         key="aa" * 64, data="dd" * 50,
         full="""2ee7acd783624ca9398710f3ee05ae41 b9f9b0510c87e49e586cc9bf961733d8
                 623c7b55cebefccf02d5581acc1c9d5f b1ff68a1de45509fbe4da9a433922655""",
         truncated="2ee7acd783624ca9398710f3ee05ae41 b9f9b0510c87e49e586cc9bf961733d8"),
    dict(source="RFC 4868 section 2.7.2.3, Test Case AUTH512-4 (key per Erratum 1785)",
         hash="sha512",
         key="""0102030405060708090a0b0c0d0e0f10 1112131415161718191a1b1c1d1e1f20
                2122232425262728292a2b2c2d2e2f30 3132333435363738393a3b3c3d3e3f40""",
         data="cd" * 50,
         full="""5e6688e5a3daec826ca32eaea224eff5 e700628947470e13ad01302561bab108
                 b8c48cbc6b807dcfbd850521a685babc 7eae4a2a2e660dc0e86b931d65503fd2""",
         truncated="5e6688e5a3daec826ca32eaea224eff5 e700628947470e13ad01302561bab108"),
]
