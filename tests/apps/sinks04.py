"""0.5's sinks on Kafka, for the engine tests: one pipeline writes every number to two sinks
(`to_sinks`); the first sink's encoder picks the Kafka partition (`(bytes, key, partition)`: the number
mod 4, so on a 3-partition topic every fourth number has no partition to go to).

Records are decimal numbers; `--copy_topic` names the second sink's topic.
"""
import argparse

import wallaroo


def application_setup(args):
    in_topic, in_brokers, in_log = wallaroo.kafka_parse_source_options(args)
    out_topic, out_brokers, out_log, out_ms, out_max = wallaroo.kafka_parse_sink_options(args)
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--copy_topic", default="copies")
    copy_topic = p.parse_known_args(args)[0].copy_topic
    ab = wallaroo.ApplicationBuilder("sinks04")
    ab.new_pipeline("numbers", wallaroo.KafkaSourceConfig(in_topic, in_brokers, in_log, decode))
    ab.to_sinks([wallaroo.KafkaSinkConfig(out_topic, out_brokers, out_log, out_ms, out_max, by_partition),
                 wallaroo.KafkaSinkConfig(copy_topic, out_brokers, out_log, out_ms, out_max, plain)])
    return ab.build()


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode(data):
    return int(data)


@wallaroo.encoder
def by_partition(number):
    return str(number), None, number % 4


@wallaroo.encoder
def plain(number):
    return str(number), str(number)
