"""Celsius to Fahrenheit on Kafka, as in Wallaroo's celsius-kafka example, in the 0.4 Python API.

Input records are big-endian 32-bit floats (degrees Celsius); each is multiplied by 1.8, then 32 is
added, and the result goes out as a big-endian 32-bit float.

    machida --application-module examples.wallaroo.celsius --kafka_source_topic celsius \\
        --kafka_source_brokers 127.0.0.1:9092 --kafka_sink_topic fahrenheit --kafka_sink_brokers 127.0.0.1:9092 \\
        --kafka_sink_max_message_size 100000 --kafka_sink_max_produce_buffer_ms 10
"""
import struct

import wallaroo

FLOAT = struct.Struct(">f")


def application_setup(args):
    in_topic, in_brokers, in_log_level = wallaroo.kafka_parse_source_options(args)
    (out_topic, out_brokers, out_log_level, out_max_produce_buffer_ms,
     out_max_message_size) = wallaroo.kafka_parse_sink_options(args)
    ab = wallaroo.ApplicationBuilder("Celsius to Fahrenheit with Kafka")
    ab.new_pipeline("convert", wallaroo.KafkaSourceConfig(in_topic, in_brokers, in_log_level, decoder))
    ab.to(multiply)
    ab.to(add)
    ab.to_sink(wallaroo.KafkaSinkConfig(out_topic, out_brokers, out_log_level, out_max_produce_buffer_ms,
                                        out_max_message_size, encoder))
    return ab.build()


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decoder(value):
    return FLOAT.unpack(value)[0]


@wallaroo.computation(name="multiply by 1.8")
def multiply(celsius):
    return celsius * 1.8


@wallaroo.computation(name="add 32")
def add(value):
    return value + 32


@wallaroo.encoder
def encoder(fahrenheit):
    return FLOAT.pack(fahrenheit), None
