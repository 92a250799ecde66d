"""Fixtures of the reliability tests; the rig itself is `tests.reliability.rig` (the fault
benchmarks in `bench/` use it too)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.reliability.rig import StartGateway, gateways


@pytest.fixture
async def start_gateway(redis_url: str) -> AsyncIterator[StartGateway]:
    async with gateways(redis_url) as start:
        yield start
