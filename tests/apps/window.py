"""A 24-hour window per key, closed by event time alone: the engine test for idle partitions.

Records are b"key" with their Kafka timestamp as event time. Each key's state counts records per
absolute hour; `on_event_time` drops hours that left the 24-hour window and reports the key's total
as b"key,window_end_hour,total" whenever it changes.
"""
import wallaroo

KEYS = ["a", "b"]
HOUR_MS = 3600 * 1000


def application_setup(args):
    in_topic, in_brokers, in_log = wallaroo.kafka_parse_source_options(args)
    out_topic, out_brokers, out_log, out_ms, out_max = wallaroo.kafka_parse_sink_options(args)
    ab = wallaroo.ApplicationBuilder("window")
    ab.new_pipeline("windows", wallaroo.KafkaSourceConfig(in_topic, in_brokers, in_log, decode))
    ab.to_state_partition(add, Window, "windows", by_key, KEYS)
    ab.to_sink(wallaroo.KafkaSinkConfig(out_topic, out_brokers, out_log, out_ms, out_max, encode))
    return ab.build()


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode(data):
    return data.decode()


@wallaroo.partition
def by_key(key):
    return key


class Window:
    def __init__(self):
        self.key = None
        self.hours = {}
        self.end_hour = None
        self.reported = None

    def total(self):
        return sum(self.hours.values())

    def on_event_time(self, event_time_ms):
        hour = event_time_ms // HOUR_MS
        if self.end_hour is not None and hour <= self.end_hour:
            return None, False
        self.end_hour = hour
        for h in [h for h in self.hours if h <= hour - 24]:
            del self.hours[h]
        return self.report()

    def report(self):
        if self.key is None or self.total() == self.reported:    # (no key: a new object, before its record)
            return None, True
        self.reported = self.total()
        return (self.key, self.end_hour, self.reported), True


@wallaroo.state_computation(name="add")
def add(key, state):
    state.key = key
    hour = wallaroo.event_time() // HOUR_MS
    state.hours[hour] = state.hours.get(hour, 0) + 1
    if state.end_hour is None or hour > state.end_hour:
        state.end_hour = hour
    return state.report()


@wallaroo.encoder
def encode(report):
    key, hour, total = report
    return f"{key},{hour},{total}".encode(), key
