"""Engine-only throughput: now a shortcut for `spu bench` (bench/runner.py).

    python -m bench.engine_speed [--batch 1024] [--repeats 5] [--sizes 64,1400]
                                 [--backend auto|openssl|ipsec-mb]

runs `spu bench --no-baselines` on the three suites this script has always measured
(AES-128-GCM, AES-128-CBC + HMAC-SHA1-96, ChaCha20-Poly1305), both directions. The bench
adds the crypto ceiling, the spread over repeats and cycles/byte; `spu bench --help` has
the rest (baselines, --profile, --json, --plot).
"""
from __future__ import annotations

import argparse
import sys

from .runner import main as bench_main

SUITES = ("rfc4106(gcm(aes))/128", "cbc(aes)/128+hmac(sha1)/96",
          "rfc7539esp(chacha20,poly1305)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", default="1024")
    ap.add_argument("--repeats", default="5")
    ap.add_argument("--sizes", default="64,1400")
    ap.add_argument("--backend", default="auto", choices=("auto", "openssl", "ipsec-mb"),
                    help="crypto backend (engine/backends.py); the table says which ran")
    args = ap.parse_args(argv)
    return bench_main(["--suites", ",".join(SUITES), "--sizes", args.sizes, "--batch",
                       args.batch, "--repeats", args.repeats, "--no-baselines",
                       "--backend", args.backend])


if __name__ == "__main__":
    sys.exit(main())
