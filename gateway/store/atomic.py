"""Optimistic transactions (WATCH / MULTI / EXEC) and the store's clock formats."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from redis.exceptions import WatchError

from gateway.errors import GatewayError, StoreUnavailable

T = TypeVar("T")

_ATTEMPTS = 1000

# redis-py's annotations type every reply as `bytes | str` whatever `decode_responses` says
# (and want invariant Mapping[bytes | str | ...] arguments); the store always decodes to
# str, so the client and its pipelines are handled as Any at this one boundary.
Client = Any
Pipe = Any


class RegistryError(GatewayError):
    """A refused admin operation; `code` is the API error code (NOT_FOUND, CONFLICT, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def iso_now() -> str:
    return iso(datetime.now(UTC))


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def transact(client: Client, keys: list[str], body: Callable[[Pipe], Awaitable[T]]) -> T:
    """Run `body` under WATCH of `keys` until EXEC succeeds.

    `body` reads through the pipeline (immediate mode, may WATCH more keys), then calls
    `pipe.multi()` and queues its writes; a concurrent change to a watched key makes EXEC
    fail and `body` runs again on fresh data, so no update is lost.
    """
    for attempt in range(_ATTEMPTS):
        async with client.pipeline(transaction=True) as pipe:
            try:
                if keys:
                    await pipe.watch(*keys)
                result = await body(pipe)
                await pipe.execute()
                return result
            except WatchError:
                await asyncio.sleep(random.uniform(0, 0.002 * min(2 ** min(attempt, 5), 20)))
    raise StoreUnavailable(f"gave up after {_ATTEMPTS} conflicting attempts on {keys[:3]}")
