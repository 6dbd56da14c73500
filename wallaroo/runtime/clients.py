"""Every librdkafka setting the worker uses, with the reason for each.

One module so a reader tuning the engine finds them together; the worker, the checkpoint and the
state restore only ask for a configuration here.
"""
from .topics import MAX_STATE_BYTES


DEFAULT_LINGER_MS = 20


def producer_config(bootstrap, transactional_id, transaction_timeout_ms, linger_ms=DEFAULT_LINGER_MS, log=None):
    """The worker's one transactional producer: sink, repartition, changelog and dead-letter records.

    `linger_ms`: the sinks' max_produce_buffer_ms when they set one; `log`: their log level
    (wallaroo.kafka.librdkafka_log_settings)."""
    return {**(log or {}),
        "bootstrap.servers": bootstrap,
        # Names the worker across restarts: a restarted worker fences its previous incarnation.
        "transactional.id": transactional_id,
        # Transactions imply idempotence and acks=all; said here so nobody lowers it: a record is
        # committed only once every in-sync replica has it (min.insync.replicas decides how many).
        "acks": "all",
        # How long a crashed worker's open transaction can hold back read_committed readers.
        "transaction.timeout.ms": transaction_timeout_ms,
        # Output is committed once per checkpoint anyway: batch it big and compress it cheaply.
        # Measured (2026-12, the 300,000-event day of benchmarks/end_to_end_day.py, streamer and worker
        # producers both switched, runs alternated): "none" instead of lz4 on loopback changed neither
        # the CPU seconds of the streamer, workers and broker nor the rate beyond the machine's noise
        # (lz4: 16.3k/28.5k events/s, none: 16.4k/24.6k, two rounds each), while lz4 keeps the broker's
        # log and page cache smaller, so lz4 stays.
        "linger.ms": linger_ms, "batch.size": 1_000_000, "compression.type": "lz4",
        "queue.buffering.max.messages": 1_000_000,
        # A whole state object is one changelog record.
        "message.max.bytes": MAX_STATE_BYTES + 1024 * 1024,
    }


def consumer_config(bootstrap, group_id, client_id, session_timeout_ms, log=None):
    """The worker's consumer of its source and repartition topics, in the application's group;
    `log`: the Kafka sources' log level (wallaroo.kafka.librdkafka_log_settings)."""
    return {**(log or {}),
        "bootstrap.servers": bootstrap,
        "group.id": group_id,
        "client.id": client_id,
        # Only committed checkpoints: never a zombie's or an aborted transaction's records.
        "isolation.level": "read_committed",
        # Offsets are committed inside the checkpoint's transaction, never on their own.
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        # The end of a partition can lie past its last record: the commit markers of the transactions
        # that wrote it. Checkpoints commit the end the EOF names (Checkpointer.reached_end), so a
        # caught-up group has no lag.
        "enable.partition.eof": True,
        # Eager range assignment: every rebalance revokes all partitions, and we checkpoint before
        # giving them up while our generation is still valid; partition i of co-partitioned topics
        # lands on one worker.
        "partition.assignment.strategy": "range",
        # One fetch queue serves source and repartition partitions: keep it short, so records bound
        # for state do not wait behind seconds of prefetched source records, and refill it at once
        # (librdkafka's default waits a whole second once the queue was full).
        "queued.max.messages.kbytes": 8192,
        "fetch.queue.backoff.ms": 5,
        "session.timeout.ms": session_timeout_ms,
        "heartbeat.interval.ms": max(100, session_timeout_ms // 5),
    }


def restore_consumer_config(bootstrap, group_id):
    """Reads changelog partitions from the start; assigned by hand, never joins a group."""
    return {
        "bootstrap.servers": bootstrap, "group.id": group_id,
        "enable.auto.commit": False,
        # A crashed worker's unfinished checkpoint is never restored.
        "isolation.level": "read_committed",
        "enable.partition.eof": False,
        # State objects can be large records: fetch them whole.
        "fetch.max.bytes": 64 * 1024 * 1024,
        "max.partition.fetch.bytes": 64 * 1024 * 1024,
        "receive.message.max.bytes": 128 * 1024 * 1024,
        # Refill the fetch queue at once: with librdkafka's default (1000 ms) every fetch that fills
        # the queue (64 MB, a few state objects' versions) costs a second's pause. Measured on a
        # 2018-scale day's changelog (one worker's share, 281 MB read for 9.5 MB of live state, since
        # compaction leaves the active segment alone): 3.05 s -> 1.3 s.
        "fetch.queue.backoff.ms": 5,
    }


def end_offsets_probe_config(bootstrap, group_id):
    """Asks for high watermarks: read_uncommitted, because a read_committed client gets the last stable
    offset, which lags behind a checkpoint whose commit markers are not written yet."""
    return {"bootstrap.servers": bootstrap, "group.id": group_id,
            "enable.auto.commit": False, "isolation.level": "read_uncommitted"}


def control_consumer_config(bootstrap, group_id):
    """Reads the application's control topic (machida shrink); assigned by hand, never joins a group
    and never commits (each worker reads from the end as it was when the worker started)."""
    return {"bootstrap.servers": bootstrap, "group.id": group_id,
            "enable.auto.commit": False, "enable.auto.offset.store": False}


def metrics_producer_config(bootstrap):
    """Sends metrics snapshots (metrics.Publisher): no transaction, one small record every few seconds;
    a snapshot that cannot be sent within a minute is dropped (the next one carries the same counters)."""
    return {"bootstrap.servers": bootstrap, "acks": 1, "linger.ms": 0, "message.timeout.ms": 60_000,
            "queue.buffering.max.messages": 100}


def admin_config(bootstrap):
    return {"bootstrap.servers": bootstrap}


def tcp_ingress_producer_config(bootstrap, max_frame_bytes):
    """Writes what TCP sources receive into their internal topics, outside the worker's transactions
    (an aborted checkpoint must not drop received frames)."""
    return {
        "bootstrap.servers": bootstrap,
        # No duplicates when librdkafka retries; a frame counts as taken once every replica has it.
        "enable.idempotence": True, "acks": "all",
        "linger.ms": 5, "compression.type": "lz4",
        "message.max.bytes": max_frame_bytes + 64 * 1024,
    }


def tcp_egress_consumer_config(bootstrap, group_id, client_id, session_timeout_ms):
    """Reads TCP sinks' internal topics for the forwarder; its own group, so the sink topics' partitions
    go to one worker each."""
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group_id,
        "client.id": client_id,
        # Only outputs of committed checkpoints are sent.
        "isolation.level": "read_committed",
        # Offsets are committed once the receiving host's TCP stack has acknowledged the bytes.
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": session_timeout_ms,
        "heartbeat.interval.ms": max(100, session_timeout_ms // 5),
        "fetch.max.bytes": 64 * 1024 * 1024,
        "max.partition.fetch.bytes": 16 * 1024 * 1024,
    }
