"""TCP source and sink for the tunnel rig (bench/rig.py): bytes through, SHA-256 both ends.

    python tcp_sink.py sink HOST PORT                         -> {"bytes", "sha256"}
    python tcp_sink.py source HOST PORT NBYTES SRC [PACE_S]   -> {"bytes", "sha256", "seconds"}

The source sends a deterministic pseudo-random stream in 64 KiB writes (PACE_S seconds apart
when given, so a transfer can be kept running across a rekey).
"""
from __future__ import annotations

import hashlib
import json
import socket
import sys
import time

CHUNK = 65536


def _stream(n: int):
    block = hashlib.sha256(b"pyspu").digest() * (CHUNK // 32)
    k = 0
    while n > 0:
        piece = (k.to_bytes(8, "big") + block)[:min(CHUNK, n)]
        yield piece
        n -= len(piece)
        k += 1


def sink(host: str, port: int) -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, port))
    srv.listen(1)
    srv.settimeout(60)
    conn, _ = srv.accept()
    conn.settimeout(60)
    h, total = hashlib.sha256(), 0
    while True:
        data = conn.recv(1 << 20)
        if not data:
            break
        h.update(data)
        total += len(data)
    print(json.dumps({"bytes": total, "sha256": h.hexdigest()}))


def source(host: str, port: int, n: int, src: str, pace: float) -> None:
    start = time.monotonic()
    for attempt in range(50):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((src, 0))
        s.settimeout(60)
        try:
            s.connect((host, port))
            break
        except (ConnectionRefusedError, socket.timeout):
            s.close()
            time.sleep(0.2)
    h, total = hashlib.sha256(), 0
    for piece in _stream(n):
        s.sendall(piece)
        h.update(piece)
        total += len(piece)
        if pace:
            time.sleep(pace)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
    print(json.dumps({"bytes": total, "sha256": h.hexdigest(),
                      "seconds": round(time.monotonic() - start, 3)}))


if __name__ == "__main__":
    if sys.argv[1] == "sink":
        sink(sys.argv[2], int(sys.argv[3]))
    else:
        source(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5],
               float(sys.argv[6]) if len(sys.argv) > 6 else 0.0)
