"""Build the Cython extensions against the system OpenSSL 3 libcrypto.

A build without the compiled core is an error, never a silent pure-Python fallback.
"""
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
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True,
                             "initializedcheck": False},
    ),
)
