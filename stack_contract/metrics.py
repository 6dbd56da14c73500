"""The shape of the engine's metrics snapshots, which the dashboard's pipeline page reads.

Every worker publishes one `Snapshot` (JSON) every SNAPSHOT_INTERVAL_S to the topic
`metrics_topic(application id)`, keyed by the worker's name, so a UI finds every worker without knowing
their hosts.  Counters and histograms are cumulative since `started_ms` (a restarted worker starts
again from zero with a new `started_ms`); rates and windowed percentiles come from the difference of
two snapshots of the same worker and start.  Standard library only.
"""
from typing import TypedDict

VERSION = 1
SNAPSHOT_INTERVAL_S = 5.0


def metrics_topic(application_id: str) -> str:
    return f"{application_id}-metrics"


# Latency bins, Wallaroo's decades from 1 us to 1 s with 2 and 5 in between (so percentiles are within
# a factor of 2.5): upper bounds in seconds; a histogram has one count per bound plus one for > 1 s.
LATENCY_BOUNDS_S = tuple(float(f"{m}e{e}") for e in range(-6, 0) for m in (1, 2, 5)) + (1.0,)
PERCENTILES = (50.0, 75.0, 90.0, 99.0, 99.9, 99.99)


class Histogram(TypedDict):
    counts: list[int]        # len(LATENCY_BOUNDS_S) + 1, the last for > 1 s
    sum_s: float             # total of the observed seconds


class Step(TypedDict):
    name: str                # the display name given to the decorator ("filter interesting events")
    kind: str                # "decoder", "computation", "state", "sink"
    messages_in: int
    messages_out: int
    latency: Histogram       # the step's own compute time per message (sampled and weighted: its count
                             # may trail messages_in; wallaroo/runtime/metrics.py)


class Pipeline(TypedDict):
    name: str
    source: str              # source topic
    steps: list[Step]        # in pipeline order, decoder first and sinks last
    end_to_end: Histogram    # from a record's arrival at this worker to the commit of its output


class WorkerFigures(TypedDict):
    checkpoints: int
    checkpoint_latency: Histogram
    restores: int
    restore_seconds: float   # total
    dead_letters: int
    reconnects: int
    consumer_lag: int        # records behind on the worker's assigned source and repartition partitions
    event_time_lag_ms: int | None   # wall clock minus the newest source event time; None before any
    partitions: int          # partitions assigned (source and state)


class Snapshot(TypedDict):
    version: int             # VERSION
    application: str
    worker: str
    started_ms: int          # wall clock when this worker's counters started
    at_ms: int               # wall clock of this snapshot
    pipelines: list[Pipeline]
    figures: WorkerFigures


def percentile(counts, q):
    """The upper bound (s) of the bin holding the q-th percentile of a histogram's counts; None when
    empty; inf when it falls in the > 1 s bin."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = total * q / 100.0
    seen = 0
    for bound, n in zip(LATENCY_BOUNDS_S + (float("inf"),), counts):
        seen += n
        if seen >= rank:
            return bound
    return float("inf")
