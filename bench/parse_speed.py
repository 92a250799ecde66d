"""Structural-parse throughput of the envelope inspector (MB/s), fed in 64 KiB chunks.

Run from the project root: `.venv/bin/python bench/parse_speed.py [size_mb]`.
(a) text: one big base64 element (a file upload) plus a few hundred fields;
(b) dense: sales-order lines, element after element (as /work/shared/bench/make_bodies.py).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.core.envelope import EnvelopeInspector
from tests.factories import big_body, make_envelope, token_passport_xml

CHUNK = 64 * 1024
VERSION = "2024_2"


def measure(doc: bytes, rounds: int = 3) -> float:
    chunks = [doc[i : i + CHUNK] for i in range(0, len(doc), CHUNK)]
    best = float("inf")
    for _ in range(rounds):
        inspector = EnvelopeInspector(max_depth=64, max_head_bytes=262144, soap_action='"add"')
        start = time.perf_counter()
        for chunk in chunks:
            inspector.feed(chunk)
        inspector.close()
        best = min(best, time.perf_counter() - start)
        assert inspector.complete, inspector.error
    return len(doc) / best / 1e6


def main() -> None:
    size = int(float(sys.argv[1]) * 1e6) if len(sys.argv) > 1 else 20_000_000
    header = [token_passport_xml(VERSION, "1234567", "ck" * 32, "cs" * 32, "tk" * 32, "ts" * 32)]
    for kind in ("text", "dense"):
        doc = make_envelope(big_body(VERSION, kind, size), header)
        print(f"{kind:5s} {len(doc) / 1e6:6.1f} MB  {measure(doc):8.1f} MB/s")


if __name__ == "__main__":
    main()
