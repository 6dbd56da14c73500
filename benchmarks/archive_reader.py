"""What the archive streamer's reader costs (CPU time, no Kafka): the real hour, a bad line of each
kind, and newline bombs (16 KB of gzip inflating to millions of lines).

    .venv/bin/python benchmarks/archive_reader.py [--code DIR] [--bomb-limit-s S]

`--code DIR` measures another checkout's archive_streamer (e.g. an export of an older commit), so
two versions can be compared in one sitting on a shared machine.  CPU time, best of three.
"""
import argparse
import gzip
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REAL_HOUR = ROOT.parent / "shared/data/gharchive/2015-01-01-12.json.gz"

STAR = (b'{"id":"1","type":"WatchEvent","actor":{"id":1,"login":"u"},"repo":{"id":2,"name":"o/r"},'
        b'"payload":{"action":"started"},"public":true,"created_at":"2015-01-01T12:30:00Z"}')
BAD_LINES = {
    "truncated": STAR[:60],
    "garbage": b"this is not json",
    "NaN": STAR.replace(b"true", b"NaN"),
    "invalid UTF-8": STAR.replace(b"o/r", b"o/\xff"),
    "two objects": STAR + STAR,
    "created_at 2999": STAR.replace(b"2015-01-01T12:30:00Z", b"2999-01-01T00:00:00Z"),
    "lone surrogate (valid)": STAR.replace(b"o/r", b"o/\\ud83d"),
}
BOMBS = {"blank lines": b"\n", "one garbage line": b"x\n", "two garbage lines in turn": b"x\n[1]\n"}


def best_cpu(fn, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--code", type=Path, default=ROOT, help="checkout whose archive_streamer to measure")
    p.add_argument("--bomb-lines", type=int, default=16_500_000 // 4,
                   help="lines per bomb (default: about 4 MB; 16 KB of gzip makes 16.5 MB)")
    args = p.parse_args()
    sys.path.insert(0, str(args.code))
    import logging
    logging.disable(logging.WARNING)
    from archive_streamer import reader
    print(f"reader: {reader.__file__}")
    folder = Path(tempfile.mkdtemp())

    if REAL_HOUR.exists():
        n = sum(1 for _ in reader.read_file(REAL_HOUR))
        cpu = best_cpu(lambda: sum(1 for _ in reader.read_file(REAL_HOUR)))
        print(f"real hour: {n} events in {cpu:.3f} s CPU = {cpu / n * 1e6:.1f} us/event")

    lines = 20_000
    path = folder / "2015-01-01-12.json.gz"

    def distinct(line: bytes, i: int) -> bytes:
        """The i-th of `lines` different copies (a repeated line would be counted from a cache)."""
        return line.replace(b'"id":"1"', b'"id":"%d"' % i) if b'"id":"1"' in line else line + b" %d" % i

    for name, line in [("good small line", STAR)] + list(BAD_LINES.items()):
        path.write_bytes(gzip.compress(b"\n".join(distinct(line, i) for i in range(lines)) + b"\n", 1))
        cpu = best_cpu(lambda: sum(1 for _ in reader.read_file(path)))
        print(f"{name}: {cpu / lines * 1e6:.2f} us/line")

    for name, unit in BOMBS.items():
        count = args.bomb_lines // unit.count(b"\n")
        data = gzip.compress(unit * count, 9)
        path.write_bytes(data)
        stats = reader.ReadStats()
        start = time.process_time()
        for _ in reader.read_file(path, stats):
            pass
        cpu = time.process_time() - start
        print(f"bomb, {name}: {len(data) / 1024:.0f} KB of gzip, {stats.lines} lines in {cpu:.2f} s CPU "
              f"({cpu / stats.lines * 1e9:.0f} ns/line), {dict(stats.skipped)}")


if __name__ == "__main__":
    main()
