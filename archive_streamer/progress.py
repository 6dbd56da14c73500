"""Progress on stderr: a tqdm bar on a terminal, else a plain log line every few seconds.

Shows the archive hour being replayed, events/s, how far behind the target pace the replay is,
and how many lines were skipped.
"""
import logging
import sys
import time

from tqdm import tqdm

from . import config
from .hours import hour_name

log = logging.getLogger("archive_streamer")


class Progress:
    def __init__(self, hours_total: int, events_total: int | None, speedup: float, *,
                 bar: bool, read_stats, interval_s: float = config.PROGRESS_LOG_INTERVAL_S):
        self.hours_total, self.speedup, self.read_stats = hours_total, speedup, read_stats
        self.interval_s = interval_s
        self.hour_label = "-"
        self.started = time.monotonic()
        self._last_log = self.started
        self._shown = 0
        self.bar = tqdm(total=events_total, unit="ev", unit_scale=True, file=sys.stderr,
                        dynamic_ncols=True, mininterval=0.25) if bar else None

    def start_hour(self, hour, index: int, where: str) -> None:
        self.hour_label = f"{hour_name(hour)} ({index}/{self.hours_total})"
        if self.bar is not None:
            self.bar.set_description_str(self.hour_label, refresh=False)
        else:
            log.info("hour %s from %s", self.hour_label, where)

    def _pace(self, sender) -> str:
        if self.speedup <= 0:
            return "as fast as possible"
        lag = sender.pacer.lag_s       # >0 behind, <0 ahead (by at most one window)
        return f"{lag:.1f} s behind pace" if lag >= 0 else f"{-lag:.2f} s ahead of pace"

    def tick(self, sender) -> None:
        skipped = self.read_stats.skipped_total
        if self.bar is not None:
            self.bar.update(sender.produced_now - self._shown)
            self._shown = sender.produced_now
            self.bar.set_postfix_str(f"{self._pace(sender)}, {skipped} skipped", refresh=False)
            return
        now = time.monotonic()
        if now - self._last_log >= self.interval_s:
            rate = sender.produced_now / max(1e-9, now - self.started)
            log.info("hour %s: %d sent, %d acknowledged, %.0f events/s, %s, %d skipped",
                     self.hour_label, sender.produced_now, sender.delivered, rate,
                     self._pace(sender), skipped)
            self._last_log = now

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
