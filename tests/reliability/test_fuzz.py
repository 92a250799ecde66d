"""The HTTP fuzzer (`bench/fuzz_http.py`), briefly: a few seconds of mutated envelopes through
the full HTTP path, every invariant checked (see that script)."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.reliability.rig import StartGateway

FUZZER = Path(__file__).resolve().parents[2] / "bench" / "fuzz_http.py"


def load_fuzzer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_http", FUZZER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_http"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
async def test_a_few_seconds_of_fuzzing_break_no_invariant(start_gateway: StartGateway) -> None:
    fuzzer = load_fuzzer()
    seed = random.SystemRandom().randrange(1 << 32)
    report = await fuzzer.fuzz(start_gateway, seconds=3.0, seed=seed, concurrency=4)
    print(f"\nfuzz seed {seed}\n{report.summary()}")
    assert report.iterations > 500
    assert report.failures == [], f"seed {seed}: {report.summary()}"
    assert report.logged_errors == [], f"seed {seed}: {report.summary()}"
