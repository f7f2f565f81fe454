"""Build the Cython extensions against the system OpenSSL 3 libcrypto (engine._crypto) and,
where its header is installed, Intel's multi-buffer library (engine._mb).

A build without the compiled core is an error, never a silent pure-Python fallback. A build
without engine._mb says so loudly; the engine then runs on OpenSSL alone and reports
"ipsec-mb: not built" in Engine.backend(), and under CI (CI=true) tests/test_mb_backend.py
fails.
"""
import os
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

COMMON = dict(
    include_dirs=[numpy.get_include()],
    libraries=["crypto"],
    extra_compile_args=["-O3", "-Wno-deprecated-declarations", "-Wno-unreachable-code"],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
)

extensions = [
    Extension("engine._crypto", ["engine/_crypto.pyx"], **COMMON),
    # batched TUN / UDP / raw-socket I/O; recvmmsg and sendmmsg need _GNU_SOURCE
    Extension("engine._netio", ["engine/_netio.pyx"],
              **dict(COMMON, libraries=[],
                     define_macros=COMMON["define_macros"] + [("_GNU_SOURCE", "1")])),
    # TUN offloads (virtio_net_hdr): TCP segmentation on read, coalescing on write
    Extension("engine._tun_offload", ["engine/_tun_offload.pyx"],
              **dict(COMMON, libraries=[],
                     define_macros=COMMON["define_macros"] + [("_GNU_SOURCE", "1")])),
]

IPSEC_MB_HEADER = "/usr/include/intel-ipsec-mb.h"   # Debian: libipsec-mb-dev
if os.path.exists(IPSEC_MB_HEADER):
    extensions.append(Extension("engine._mb", ["engine/_mb.pyx"],
                                **dict(COMMON, libraries=["IPSec_MB", "crypto"],
                                       # no v0.53 names: its SHA1/MD5 macros clash with OpenSSL
                                       define_macros=COMMON["define_macros"] + [
                                           ("NO_COMPAT_IMB_API_053", "1")])))
else:
    bar = "!" * 78
    print(f"\n{bar}\nWARNING: {IPSEC_MB_HEADER} not found: engine._mb (the Intel multi-buffer "
          f"crypto\nbackend) is NOT built; the engine will run on OpenSSL only. Install "
          f"libipsec-mb-dev\n(Debian/Ubuntu, x86-64) and rebuild.\n{bar}\n", file=sys.stderr)

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True,
                             "initializedcheck": False},
    ),
)
