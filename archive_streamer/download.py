"""GH Archive hour files over HTTP into an on-disk cache: `<cache>/YYYY-MM-DD-H.json.gz`.

Only verified files enter the cache.  A download goes to `<name>.part` and is renamed when it has
the length the server declared and is a complete gzip stream that decodes to its end (a streaming
decode, bounded memory).  A cached file is decoded again before it is handed out; one that no
longer decodes (cut by another program) is downloaded again, never replayed as it is.

A `.part` is resumed with `Range` and `If-Range` carrying the ETag (else Last-Modified) of the
response it began with, kept in `<name>.part.json`, so a file changed on the server comes back
whole (200).  A 206 whose validator or total size differs from the saved ones is dropped, and a
resumed file that fails verification is downloaded again from its start: nothing is spliced.

Retried, with exponential backoff: HTTP 5xx and 429, a dropped connection, a body shorter than
declared, a body that is not gzip (an HTML error page served with 200; never cached), a gzip that
does not decode to its end.  When two complete downloads in a row bring the same damaged gzip, the
archive itself serves it so: it is kept as `<name>.damaged`, replayed as far as it decodes (the
reader counts the damage) and reused; delete it to ask again.  HTTP 404/410 is HourMissing.

Redirects (at most DOWNLOAD_MAX_REDIRECTS) are followed only to https on the base URL's host, or
to the base URL's own scheme, host and port (an http mirror); any other target is a DownloadError.
"""
import gzip
import hashlib
import json
import logging
import os
import queue
import threading
import zlib
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterable, Iterator
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

from . import config
from .hours import file_name, hour_name

log = logging.getLogger("archive_streamer")
USER_AGENT = "star-leaders-archive-streamer/0.1"
GZIP_MAGIC = b"\x1f\x8b"
DAMAGED_SUFFIX = ".damaged"
NOT_GZIP = "not gzip"           # gzip_problem's verdict for a file without the gzip magic


class HourMissing(Exception):
    """The archive has no file for this hour (HTTP 404 or 410)."""


class DownloadError(Exception):
    """The file could not be fetched, after retries where retrying made sense."""


class Stopped(Exception):
    """The caller asked us to stop."""


class _Retry(Exception):
    """A failure worth another try."""


class _NotGzip(_Retry):
    """The body is not gzip at all (say an HTML error page): never kept, whatever comes next."""


def hour_url(base_url: str, hour: datetime) -> str:
    return f"{base_url.rstrip('/')}/{file_name(hour)}"


def redirect_allowed(base_url: str, target: str) -> bool:
    """Whether a redirect from the archive at `base_url` to `target` may be followed: https on
    the base's host, or exactly the base's scheme, host and port."""
    base, to = urlsplit(base_url), urlsplit(target)
    try:
        if not to.hostname or to.hostname != base.hostname:
            return False
        if to.scheme == "https":
            return True
        defaults = {"http": 80, "https": 443}
        return (to.scheme, to.port or defaults.get(to.scheme)) == (
            base.scheme, base.port or defaults.get(base.scheme))
    except ValueError:          # a port that is not a number
        return False


def _content_range_total(value: str | None) -> tuple[int | None, int | None]:
    """`bytes 100-199/1234` -> (100, 1234); unknown parts are None."""
    if not value or not value.startswith("bytes "):
        return None, None
    span, _, total = value[6:].partition("/")
    start = span.partition("-")[0]
    return (int(start) if start.isdigit() else None, int(total) if total.isdigit() else None)


@dataclass
class _PartInfo:
    """What the response a `.part` began with said about the whole file."""
    etag: str | None = None
    last_modified: str | None = None
    length: int | None = None

    @classmethod
    def of(cls, response: requests.Response, length: int | None) -> "_PartInfo":
        return cls(response.headers.get("ETag"), response.headers.get("Last-Modified"), length)

    def if_range(self) -> str | None:
        """If-Range's value: a strong ETag, else Last-Modified (a weak ETag is not allowed)."""
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified

    def changed(self, later: "_PartInfo") -> str | None:
        """How `later` (a 206) shows another version of the file, or None when it does not."""
        if self.etag and later.etag and self.etag.removeprefix("W/") != later.etag.removeprefix("W/"):
            return f"ETag {self.etag} -> {later.etag}"
        if (not (self.etag and later.etag) and self.last_modified and later.last_modified
                and self.last_modified != later.last_modified):
            return f"Last-Modified {self.last_modified} -> {later.last_modified}"
        if self.length is not None and later.length is not None and self.length != later.length:
            return f"{self.length} -> {later.length} bytes"
        return None

    @staticmethod
    def path(part: Path) -> Path:
        return part.with_name(part.name + ".json")

    @classmethod
    def load(cls, part: Path) -> "_PartInfo":
        try:
            data = json.loads(cls.path(part).read_text())
            etag, modified, length = data.get("etag"), data.get("last_modified"), data.get("length")
        except (OSError, ValueError, AttributeError):
            return cls()        # none saved (or unreadable): resume unguarded, verify after
        return cls(etag if isinstance(etag, str) else None,
                   modified if isinstance(modified, str) else None,
                   length if type(length) is int else None)

    def save(self, part: Path) -> None:
        self.path(part).write_text(json.dumps(asdict(self)))


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    _PartInfo.path(part).unlink(missing_ok=True)


def _get(session: requests.Session, url: str, base_url: str, headers: dict) -> requests.Response:
    """GET `url`, following only the redirects `redirect_allowed` permits."""
    first = url
    for _ in range(config.DOWNLOAD_MAX_REDIRECTS + 1):
        r = session.get(url, headers=headers, stream=True, timeout=config.DOWNLOAD_TIMEOUT_S,
                        allow_redirects=False)
        if not r.is_redirect:
            return r
        target = urljoin(url, r.headers["Location"])
        r.close()
        if not redirect_allowed(base_url, target):
            host = urlsplit(base_url).hostname
            raise DownloadError(f"{first}: redirected to {target}, which is not followed (only "
                                f"https on {host}, or {base_url}'s own scheme, host and port)")
        url = target
    raise DownloadError(f"{first}: more than {config.DOWNLOAD_MAX_REDIRECTS} redirects")


def _not_gzip(head: bytes, content_type: str | None = None) -> str:
    return (f"not a gzip file: the server sent {content_type or 'a body'} starting "
            f"{head[:40]!r}; not cached")


def _attempt(session: requests.Session, url: str, base_url: str, part: Path,
             stop: threading.Event) -> None:
    """One GET into `part`, resuming it when it already holds bytes.  Returns when `part` holds
    as many bytes as the server declared (or all it sent, when it declared none)."""
    have = part.stat().st_size if part.exists() else 0
    info = _PartInfo.load(part) if have else _PartInfo()
    # identity: the file is gzip already; a transparently decoded body would be the wrong bytes.
    headers = {"Accept-Encoding": "identity", "User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
        if info.if_range():
            headers["If-Range"] = info.if_range()
    try:
        with _get(session, url, base_url, headers) as r:
            if r.status_code in (404, 410):
                raise HourMissing(f"{url}: HTTP {r.status_code}")
            if r.status_code == 416 and have:
                if _content_range_total(r.headers.get("Content-Range"))[1] == have:
                    return              # the part is already whole (a run ended before the rename)
                _discard(part)          # our partial file does not match the server's: start over
                raise _Retry("HTTP 416 for the resumed range")
            if r.status_code == 429 or r.status_code >= 500:
                raise _Retry(f"HTTP {r.status_code}")
            if r.status_code == 206:
                start, total = _content_range_total(r.headers.get("Content-Range"))
                if start != have:
                    _discard(part)
                    raise _Retry(f"server resumed at byte {start}, not {have}")
                now = _PartInfo.of(r, total)
                change = info.changed(now) if have else None
                if change:
                    _discard(part)      # it ignored If-Range: the tail is of another file
                    raise _Retry(f"the file changed on the server ({change}) and it sent a "
                                 "range of the new one: starting over")
                expected = total if total is not None else info.length
                if not have:
                    now.save(part)
                mode = "ab"
            elif r.status_code == 200:
                # no range support, a changed file (If-Range failed), or no part: the whole file
                length = r.headers.get("Content-Length")
                expected = int(length) if length and length.isdigit() else None
                _PartInfo.of(r, expected).save(part)
                mode, have = "wb", 0
            else:
                raise DownloadError(f"{url}: HTTP {r.status_code}")
            with open(part, mode) as f:
                head = b""
                for chunk in r.raw.stream(config.DOWNLOAD_CHUNK_BYTES, decode_content=False):
                    if stop.is_set():
                        raise Stopped()
                    if mode == "wb" and len(head) < len(GZIP_MAGIC):
                        head += chunk[:64]
                        if not head.startswith(GZIP_MAGIC[:len(head)]):
                            raise _NotGzip(_not_gzip(head, r.headers.get("Content-Type")))
                    f.write(chunk)
    except (requests.RequestException, urllib3.exceptions.HTTPError, ConnectionError,
            TimeoutError) as e:
        raise _Retry(f"{type(e).__name__}: {e}") from None
    size = part.stat().st_size
    if expected is not None and size < expected:
        raise _Retry(f"connection ended after {size} of {expected} bytes")
    if expected is not None and size > expected:
        _discard(part)
        raise _Retry(f"{size} bytes where the server declared {expected}: starting over")


def gzip_problem(path: Path, stop: threading.Event | None = None) -> str | None:
    """None when `path` is a complete gzip stream that decodes to its end, else what is wrong.
    Streams, so memory stays at one chunk; reads as the reader will (gzip members, CRC, size)."""
    with open(path, "rb") as raw:
        head = raw.read(len(GZIP_MAGIC))
    if head != GZIP_MAGIC:
        return NOT_GZIP
    try:
        with gzip.open(path, "rb") as f:
            while f.read(config.DOWNLOAD_CHUNK_BYTES):
                if stop is not None and stop.is_set():
                    raise Stopped()
    except EOFError as e:
        return f"truncated gzip ({e})"
    except (gzip.BadGzipFile, zlib.error, OSError) as e:
        return f"corrupt gzip ({e})"
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(config.DOWNLOAD_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_hour(hour: datetime, base_url: str = config.GHARCHIVE_URL, cache_dir=None, *,
               session: requests.Session | None = None, retries: int = config.DOWNLOAD_RETRIES,
               backoff_s: float = config.DOWNLOAD_BACKOFF_S,
               stop: threading.Event | None = None) -> Path:
    """The cached path of `hour`'s file, downloading it first unless the cache has it whole.

    The path is `<name>.damaged` when the archive serves the file damaged (see the module).
    Raises HourMissing (404), DownloadError (other failures, after `retries` retries with
    exponential backoff from `backoff_s`), or Stopped when `stop` is set meanwhile."""
    cache = Path(cache_dir) if cache_dir is not None else config.default_cache_dir()
    final = cache / file_name(hour)
    damaged = final.with_name(final.name + DAMAGED_SUFFIX)
    stop = stop or threading.Event()
    if final.is_file():
        problem = gzip_problem(final, stop)
        if problem is None:
            return final
        log.warning("cached %s is damaged (%s), cut or changed since it was verified: "
                    "downloading it again", final, problem)
        final.unlink()
    elif damaged.is_file():
        log.warning("hour %s: replaying %s, which the archive served damaged (delete it to "
                    "download again)", hour_name(hour), damaged)
        return damaged
    cache.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    url = hour_url(base_url, hour)
    own_session = session is None
    session = session or requests.Session()
    damaged_digest = None       # of the last complete download whose gzip did not decode
    log.info("downloading %s", url)
    try:
        for attempt in range(retries + 1):
            try:
                try:
                    _attempt(session, url, base_url, part, stop)
                except _NotGzip:
                    _discard(part)
                    raise
                problem = gzip_problem(part, stop)
                if problem is None:
                    os.replace(part, final)
                    _discard(part)
                    return final
                if problem == NOT_GZIP:
                    with open(part, "rb") as f:
                        head = f.read(40)
                    _discard(part)
                    raise _NotGzip(_not_gzip(head))
                digest = _sha256(part)
                if digest == damaged_digest:
                    os.replace(part, damaged)
                    _discard(part)
                    log.warning("hour %s: the archive serves a damaged file (%s, the same bytes "
                                "twice): kept as %s and replayed as far as it decodes",
                                hour_name(hour), problem, damaged)
                    return damaged
                damaged_digest = digest
                _discard(part)
                raise _Retry(f"{problem}; downloading it again from the start")
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
