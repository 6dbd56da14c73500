"""Helpers for the archive_streamer tests (no tests here)."""
import gzip
import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

from archive_streamer import synthetic
from archive_streamer.hours import as_hour, file_name


def write_gz(path: Path, lines: list[bytes], *, final_newline: bool = True) -> Path:
    """Writes `lines` as one gzip hour file (fastest compression: the end-to-end days are 200 MB)."""
    data = b"\n".join(lines) + (b"\n" if final_newline else b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(data)
    return path


def synthetic_lines(hour: str, n: int, seed: int = 3) -> list[bytes]:
    """n realistic event lines for `hour` (created_at inside it)."""
    return [e.line for e in synthetic.generate_hour(seed, hour, n)]


def write_hour(folder: Path, hour: str, lines: list[bytes]) -> Path:
    return write_gz(folder / file_name(as_hour(hour)), lines)


def run_cli(*args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m archive_streamer ARGS` in a subprocess; stdout/stderr captured as text."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "archive_streamer", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=full_env)


def sent_count(stderr: str) -> int:
    """The `sent N events` number from the streamer's summary."""
    import re
    m = re.search(r"^archive-streamer: sent (\d+) events", stderr, re.M)
    assert m, stderr
    return int(m.group(1))


def skip_counts(stderr: str) -> dict[str, int]:
    """{kind: count} from the streamer's `skipped N: kind=count (first at ...), ...` summary line."""
    import re
    m = re.search(r"^archive-streamer: skipped (\d+)(?:: (.*))?$", stderr, re.M)
    assert m, stderr
    counts = {kind: int(n) for kind, n in re.findall(r"(\w+)=(\d+) \(first at ", m.group(2) or "")}
    assert sum(counts.values()) == int(m.group(1)), m.group(0)
    return counts
