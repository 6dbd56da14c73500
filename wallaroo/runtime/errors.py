"""Kafka errors: which ones mean "try again", which ones mean the client is done for, and retrying."""
import logging
import time

from confluent_kafka import KafkaError, KafkaException

log = logging.getLogger("wallaroo.errors")


def retrying(what, call, stopping=lambda: False, deadline_s=300.0):
    """`call()`, retried with backoff while it raises a KafkaException (Kafka is away, a partition has
    no leader yet), for at most `deadline_s`."""
    deadline = time.monotonic() + deadline_s
    attempt = 0
    while True:
        try:
            return call()
        except KafkaException as e:
            attempt += 1
            if is_fatal(e) or stopping() or time.monotonic() > deadline:
                raise
            if attempt in (1, 10) or attempt % 50 == 0:
                log.warning("%s failed (%s); retrying", what, e)
            time.sleep(min(0.2 * attempt, 2.0))


def is_fenced(err):
    return err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH)


def is_fatal(e):
    err = e.args[0] if isinstance(e, KafkaException) and e.args else None
    return err is not None and (err.fatal() or is_fenced(err))
