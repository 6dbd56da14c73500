"""GH Archive hour files over HTTP into an on-disk cache: `<cache>/YYYY-MM-DD-H.json.gz`.

A download goes to `<name>.part` and is renamed when complete, so a file in the cache is always
whole and is reused without asking the server.  A `.part` left by an interrupted run is resumed
with an HTTP Range request.  Failures are retried with exponential backoff; a 404 means the
archive has no such hour (it has a few gaps) and is reported to the caller as HourMissing.
"""
import logging
import os
import queue
import threading
from datetime import datetime
from pathlib import Path
from typing import Iterable, Iterator

import requests
import urllib3

from . import config
from .hours import file_name, hour_name

log = logging.getLogger("archive_streamer")
USER_AGENT = "star-leaders-archive-streamer/0.1"


class HourMissing(Exception):
    """The archive has no file for this hour (HTTP 404 or 410)."""


class DownloadError(Exception):
    """The file could not be fetched, after retries where retrying made sense."""


class Stopped(Exception):
    """The caller asked us to stop."""


class _Retry(Exception):
    """A failure worth another try."""


def hour_url(base_url: str, hour: datetime) -> str:
    return f"{base_url.rstrip('/')}/{file_name(hour)}"


def _content_range_total(value: str | None) -> tuple[int | None, int | None]:
    """`bytes 100-199/1234` -> (100, 1234); unknown parts are None."""
    if not value or not value.startswith("bytes "):
        return None, None
    span, _, total = value[6:].partition("/")
    start = span.partition("-")[0]
    return (int(start) if start.isdigit() else None, int(total) if total.isdigit() else None)


def _attempt(session: requests.Session, url: str, part: Path, stop: threading.Event) -> None:
    """One GET into `part`, resuming it when it already holds bytes."""
    have = part.stat().st_size if part.exists() else 0
    # identity: the file is gzip already; a transparently decoded body would be the wrong bytes.
    headers = {"Accept-Encoding": "identity", "User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        with session.get(url, headers=headers, stream=True, timeout=config.DOWNLOAD_TIMEOUT_S) as r:
            if r.status_code in (404, 410):
                raise HourMissing(f"{url}: HTTP {r.status_code}")
            if r.status_code == 416 and have:
                part.unlink()           # our partial file does not match the server's: start over
                raise _Retry("HTTP 416 for the resumed range")
            if r.status_code == 429 or r.status_code >= 500:
                raise _Retry(f"HTTP {r.status_code}")
            if r.status_code == 206 and have:
                start, expected = _content_range_total(r.headers.get("Content-Range"))
                if start != have:
                    part.unlink()
                    raise _Retry(f"server resumed at byte {start}, not {have}")
                mode = "ab"
            elif r.status_code == 200:
                mode, have = "wb", 0    # no range support (or no part): the whole file again
                length = r.headers.get("Content-Length")
                expected = int(length) if length and length.isdigit() else None
            else:
                raise DownloadError(f"{url}: HTTP {r.status_code}")
            with open(part, mode) as f:
                for chunk in r.raw.stream(config.DOWNLOAD_CHUNK_BYTES, decode_content=False):
                    if stop.is_set():
                        raise Stopped()
                    f.write(chunk)
    except (requests.RequestException, urllib3.exceptions.HTTPError, ConnectionError,
            TimeoutError) as e:
        raise _Retry(f"{type(e).__name__}: {e}") from None
    size = part.stat().st_size
    if expected is not None and size != expected:
        raise _Retry(f"connection ended after {size} of {expected} bytes")


def fetch_hour(hour: datetime, base_url: str = config.GHARCHIVE_URL, cache_dir=None, *,
               session: requests.Session | None = None, retries: int = config.DOWNLOAD_RETRIES,
               backoff_s: float = config.DOWNLOAD_BACKOFF_S,
               stop: threading.Event | None = None) -> Path:
    """The cached path of `hour`'s file, downloading it first unless the cache has it.

    Raises HourMissing (404), DownloadError (other failures, after `retries` retries with
    exponential backoff from `backoff_s`), or Stopped when `stop` is set meanwhile."""
    cache = Path(cache_dir) if cache_dir is not None else config.default_cache_dir()
    final = cache / file_name(hour)
    if final.is_file():
        return final
    cache.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    url = hour_url(base_url, hour)
    stop = stop or threading.Event()
    own_session = session is None
    session = session or requests.Session()
    log.info("downloading %s", url)
    try:
        for attempt in range(retries + 1):
            try:
                _attempt(session, url, part, stop)
                os.replace(part, final)
                return final
            except _Retry as e:
                if attempt == retries:
                    raise DownloadError(f"{url}: {e} (gave up after {retries} retries)") from None
                delay = min(config.DOWNLOAD_BACKOFF_MAX_S, backoff_s * 2 ** attempt)
                log.warning("download of %s failed (%s); retry %d/%d in %g s",
                            hour_name(hour), e, attempt + 1, retries, delay)
                if stop.wait(delay):
                    raise Stopped() from None
        raise AssertionError("unreachable")
    finally:
        if own_session:
            session.close()


def prefetch(hours: Iterable[datetime], base_url: str, cache_dir, stop: threading.Event,
             ahead: int = config.PREFETCH_HOURS, **fetch_args) -> Iterator[tuple]:
    """Yields (hour, path or None, error or None) in order, downloading up to `ahead` hours
    beyond the one being consumed in a background thread.  error is HourMissing or DownloadError."""
    results: queue.Queue = queue.Queue(maxsize=max(1, ahead))
    done = threading.Event()            # the consumer went away: the worker ends too

    def put(item) -> bool:
        while not (stop.is_set() or done.is_set()):
            try:
                results.put(item, timeout=0.2)
                return True
            except queue.Full:
                pass
        return False

    def work() -> None:
        with requests.Session() as session:
            for hour in hours:
                try:
                    item = (hour, fetch_hour(hour, base_url, cache_dir, session=session,
                                             stop=stop, **fetch_args), None)
                except (HourMissing, DownloadError) as e:
                    item = (hour, None, e)
                except Stopped:
                    break
                except Exception as e:  # a bug or a full disk: hand it to the consumer, do not hang
                    item = (hour, None, DownloadError(f"{hour_name(hour)}: {type(e).__name__}: {e}"))
                if not put(item):
                    break
        put(None)

    thread = threading.Thread(target=work, name="gharchive-download", daemon=True)
    thread.start()
    try:
        while True:
            try:
                item = results.get(timeout=0.2)
            except queue.Empty:
                if stop.is_set():
                    return
                continue
            if item is None:
                return
            yield item
    finally:
        done.set()
