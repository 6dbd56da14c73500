"""The base of the dashboard's background threads: daemon threads that stop when asked."""
from __future__ import annotations

import threading


class BackgroundThread(threading.Thread):
    def __init__(self, name: str):
        super().__init__(name=name, daemon=True)
        self._stop_event = threading.Event()

    def request_stop(self) -> None:
        """Ask the thread to stop, without waiting (several threads can then stop in parallel)."""
        self._stop_event.set()

    def stop(self, timeout: float | None = 10.0) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout)
