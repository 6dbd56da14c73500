"""Wallaroo's 0.4 Python application API (with 0.5's to_sinks, sink-less pipelines and 3-tuple
encoders), running on Kafka.

An application module defines `application_setup(args)` returning `ApplicationBuilder(...).build()`;
`machida --application-module NAME ...` runs it on Kafka, `wallaroo.testing.run_local` runs it in memory.

State classes may define `on_event_time(self, event_time_ms)`, called whenever the stream's event time
(carried on Kafka timestamps, see docs in README) moves on for the state's partition, even when no record
for that partition arrives. It returns `(output or None, state_changed)` like a state computation; the
output continues through the steps after the state step of the first pipeline that uses the state.

State classes may mark read-only methods `@wallaroo.query(key=...)`: a worker with `--query-port` answers
them over HTTP for any key, and `run_local(...).query(...)` in tests (see wallaroo/query.py).

A state computation may return `wallaroo.Deferred(render)` as its output: into coalescing sinks it is
rendered from the state object only at the checkpoint, once (see wallaroo/deferred.py).
"""
from .builder import Application, ApplicationBuilder, ApplicationError
from .context import event_time
from .deferred import Deferred
from .decorators import (computation, computation_multi, decoder, encoder, partition,
                         state_computation, state_computation_multi)
from .query import query
from .kafka import (KafkaSinkConfig, KafkaSourceConfig, kafka_parse_sink_options,
                    kafka_parse_source_options)
from .tcp import TCPSinkConfig, TCPSourceConfig, tcp_parse_input_addrs, tcp_parse_output_addrs

__all__ = [
    "Application", "ApplicationBuilder", "ApplicationError", "Deferred", "KafkaSinkConfig", "KafkaSourceConfig",
    "computation", "computation_multi", "decoder", "encoder", "event_time", "kafka_parse_sink_options",
    "kafka_parse_source_options", "partition", "query", "state_computation", "state_computation_multi",
    "TCPSinkConfig", "TCPSourceConfig", "tcp_parse_input_addrs", "tcp_parse_output_addrs",
]
