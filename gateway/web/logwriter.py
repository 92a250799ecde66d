"""LogWriter: log entries leave the request path through a bounded in-process buffer.

`submit(entry)` never blocks and never raises: when the buffer (`log.buffer_entries`) is full
the new entry is dropped and counted. A background task writes batches (every 50 ms, or at
once when 500 are waiting) with one `write_log_entries` call each; a failed batch goes back
to the front of the buffer and is retried with backoff, so a Redis hiccup delays entries and
loses none while the bound holds (delivery is at least once: a batch whose reply was lost in
a connection failure may be written twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from gateway.metrics import GatewayMetrics

log = logging.getLogger("gateway.logwriter")


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
        self._buffer: deque[Mapping[str, Any]] = deque()
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

    def submit(self, entry: Mapping[str, Any]) -> bool:
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

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            if not self._buffer:
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
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
            if self.metrics is not None:
                self.metrics.log_buffer_depth.set(self.depth)
            if not self._closing and len(self._buffer) < self.batch_size:
                # Let entries accumulate into a batch instead of one write per entry.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.interval)
                self._wake.clear()

    async def _write_batch(self) -> None:
        count = min(len(self._buffer), self.batch_size)
        batch = [self._buffer.popleft() for _ in range(count)]
        self._inflight = count
        try:
            await self.sink.write_log_entries(batch)
        except BaseException:
            self._buffer.extendleft(reversed(batch))
            raise
        finally:
            self._inflight = 0
        self.written_total += count
