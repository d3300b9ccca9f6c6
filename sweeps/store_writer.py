"""Write-behind for the results store: the driver hands rows off, a thread writes them in batches.

Writing one Parquet file per reported result costs the driver's event loop a file write, a rename
and a new file in the dataset for every result (and every later read one more file to open). Here
:meth:`WriteBehind.put` only queues the rows; one background thread writes what has queued as one
atomic ``ResultStore.write`` when asked to (:meth:`flush`), when ``max_rows`` rows have queued, or
``max_delay_s`` after the oldest queued row. Rows of one key collapse to the newest before they
are written, and batches are written in order, so the store's "newest write wins" holds.

Exactly once. A row is durable once a flush that started after its ``put`` has returned. The
store callback flushes (and waits) before Tune saves its experiment state, so every result that a
saved experiment state counts as processed is in the store; results after it are re-reported by
the resumed trials and land on the same keys. A failed write keeps its rows queued and stops the
thread; the error is raised to the caller at its next ``put``/``flush``/``close``, so the sweep stops
(resumable) rather than going on with rows missing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["WriteBehind"]


class WriteBehind:
    """Queue rows for ``store.write`` on a background thread (see the module docstring).

    Args (keyword-only after ``store``):
        store: anything with ``write(rows)``, e.g. ``analysis.store.ResultStore``.
        key: the row's store key (rows with one key collapse to the newest).
        max_rows: write as soon as this many rows are queued.
        max_delay_s: write at the latest this long after the oldest queued row.
    """

    def __init__(self, store: Any, *, key: Callable[[Mapping[str, Any]], tuple], max_rows: int = 256,
                 max_delay_s: float = 2.0):
        self.store = store
        self.key = key
        self.max_rows = int(max_rows)
        self.max_delay_s = float(max_delay_s)
        self.batches_written = 0
        self._cond = threading.Condition()
        self._pending: dict[tuple, Mapping[str, Any]] = {}
        self._oldest: float | None = None
        self._queued = 0            # rows ever put
        self._durable = 0           # rows put before the last successful write was taken
        self._flush_to = 0          # write now everything put up to here
        self._closing = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="sage-store-writer", daemon=True)
        self._thread.start()

    # -- caller side ------------------------------------------------------------------------
    def put(self, rows: Iterable[Mapping[str, Any]]) -> None:
        with self._cond:
            self._raise_if_failed()
            for row in rows:
                k = self.key(row)
                self._pending.pop(k, None)
                self._pending[k] = row
                self._queued += 1
            if self._oldest is None and self._pending:
                self._oldest = time.monotonic()
            self._cond.notify_all()

    def flush(self, *, wait: bool = True) -> None:
        """Write everything queued so far now; with ``wait``, return once it is in the store."""
        with self._cond:
            self._raise_if_failed()
            target = self._queued
            self._flush_to = max(self._flush_to, target)
            self._cond.notify_all()
            if not wait:
                return
            while self._durable < target and self._error is None:
                self._cond.wait()
            self._raise_if_failed()

    def close(self) -> None:
        """Flush, wait, and stop the thread (raises the write error if one happened)."""
        try:
            self.flush(wait=True)
        finally:
            with self._cond:
                self._closing = True
                self._cond.notify_all()
            self._thread.join()

    @property
    def pending(self) -> int:
        """Rows queued and not yet written (one per key)."""
        with self._cond:
            return len(self._pending)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    # -- writer thread ----------------------------------------------------------------------
    def _due(self) -> bool:
        if self._closing or self._flush_to > self._durable or len(self._pending) >= self.max_rows:
            return True
        return self._oldest is not None and time.monotonic() - self._oldest >= self.max_delay_s

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending:
                    return
                while not self._due():
                    self._cond.wait(max(0.0, self.max_delay_s - (time.monotonic() - (self._oldest or 0.0))))
                batch, upto = self._pending, self._queued
                self._pending, self._oldest = {}, None
            try:
                self.store.write(list(batch.values()))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, never swallowed
                with self._cond:
                    merged = dict(batch)
                    merged.update(self._pending)  # rows queued meanwhile are newer: they win
                    self._pending, self._error = merged, exc
                    self._cond.notify_all()
                return
            with self._cond:
                self._durable = upto
                self.batches_written += 1
                self._cond.notify_all()
