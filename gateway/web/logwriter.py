"""LogWriter: log entries leave the request path through a bounded in-process buffer.

`submit(entry)` never blocks and never raises: when the buffer (`log.buffer_entries`) is full
the new entry is dropped and counted. An entry is a mapping, or a callable that builds one
(the proxy hands over `Exchange.log_entry`, so redaction and JSON happen here, in the writer
task, not while the client waits); an entry that fails to build is logged and skipped.

A background task writes batches (every 50 ms, or at once when 500 are waiting) with one
`write_log_entries` call each; a failed batch goes back to the front of the buffer and is
retried with backoff, so a Redis hiccup delays entries and loses none while the bound holds
(delivery is at least once: a batch whose reply was lost in a connection failure may be
written twice). `gateway_log_buffer_entries` follows the depth after every write attempt
and every idle tick; `gateway_log_entries_dropped_total` counts the drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeAlias

from gateway.metrics import GatewayMetrics

log = logging.getLogger("gateway.logwriter")

LogItem: TypeAlias = Mapping[str, Any] | Callable[[], Mapping[str, Any]]
_BUILD_SLICE = 0.002


class LogSink(Protocol):
    async def write_log_entries(self, entries: Sequence[Mapping[str, Any]]) -> None: ...


class LogWriter:
    def __init__(
        self,
        sink: LogSink,
        capacity: int,
        *,
        metrics: GatewayMetrics | None = None,
        batch_size: int = 500,
        interval: float = 0.05,
        max_backoff: float = 2.0,
    ) -> None:
        self.sink = sink
        self.capacity = max(1, capacity)
        self.metrics = metrics
        self.batch_size = batch_size
        self.interval = interval
        self.max_backoff = max_backoff
        self._buffer: deque[LogItem] = deque()
        self._inflight = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.dropped_total = 0
        self.written_total = 0
        self.failed_batches = 0

    @property
    def depth(self) -> int:
        """Entries accepted and not yet written (the batch being written included)."""
        return len(self._buffer) + self._inflight

    def submit(self, entry: LogItem) -> bool:
        """Queue one entry; False (and counted) when the buffer is full."""
        if self.depth >= self.capacity:
            self.dropped_total += 1
            if self.metrics is not None:
                self.metrics.log_dropped.inc()
            return False
        self._buffer.append(entry)
        if len(self._buffer) >= self.batch_size:
            self._wake.set()
        return True

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._closing = False
            self._task = asyncio.create_task(self._run(), name="log-writer")

    async def stop(self, timeout: float = 5.0) -> None:
        """Write what can be written within `timeout`, then stop."""
        self._closing = True
        self._wake.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            log.warning("log writer stopped with %d entries unwritten", self.depth)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def flush(self) -> None:
        """Write everything buffered now (tests, shutdown); raises what the sink raises."""
        while self._buffer:
            await self._write_batch()

    def _report_depth(self) -> None:
        if self.metrics is not None:
            self.metrics.log_buffer_depth.set(self.depth)

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            if not self._buffer:
                self._report_depth()
                if self._closing:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.interval)
                self._wake.clear()
                continue
            try:
                await self._write_batch()
                backoff = 0.05
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a Redis failure: keep the entries and retry later
                self.failed_batches += 1
                if self.failed_batches == 1 or self.failed_batches % 100 == 0:
                    log.warning("log write failed (%s); %d entries buffered", e, self.depth)
                self._report_depth()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
            self._report_depth()
            if not self._closing and len(self._buffer) < self.batch_size:
                # Let entries accumulate into a batch instead of one write per entry.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.interval)
                self._wake.clear()

    async def _write_batch(self) -> None:
        count = min(len(self._buffer), self.batch_size)
        batch = [self._buffer.popleft() for _ in range(count)]
        self._inflight += count
        built: list[Mapping[str, Any] | None] = []
        try:
            await _build_all(batch, built)
            await self.sink.write_log_entries([e for e in built if e is not None])
        except BaseException:
            # Back to the front, built ones as built: a retry does not redact them again.
            kept = [e for e in built if e is not None] + batch[len(built):]
            self._buffer.extendleft(reversed(kept))
            raise
        finally:
            self._inflight -= count
        self.written_total += sum(e is not None for e in built)


async def _build_all(batch: Sequence[LogItem], into: list[Mapping[str, Any] | None]) -> None:
    """Build a batch's entries, giving the event loop back every `_BUILD_SLICE` seconds:
    redacting a 64 KiB document takes milliseconds, and 500 of them in one go would stall
    every request of this worker."""
    sliced = time.perf_counter()
    for item in batch:
        into.append(_built(item))
        if time.perf_counter() - sliced > _BUILD_SLICE:
            await asyncio.sleep(0)
            sliced = time.perf_counter()


def _built(item: LogItem) -> Mapping[str, Any] | None:
    if not callable(item):
        return item
    try:
        return item()
    except Exception:
        log.exception("could not build a log entry")
        return None
