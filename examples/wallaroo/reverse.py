"""Reverse, as in Wallaroo's examples, in the 0.4 Python API: each framed string in, reversed out.

Input: framed messages (a 4-byte big-endian length, then a UTF-8 string); output: the string
reversed, as a line.

    machida --application-module examples.wallaroo.reverse --in 127.0.0.1:7010 --out 127.0.0.1:7002
"""
import wallaroo


def application_setup(args):
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    ab = wallaroo.ApplicationBuilder("Reverse Word")
    ab.new_pipeline("reverse", wallaroo.TCPSourceConfig(in_host, in_port, decoder))
    ab.to(reverse)
    ab.to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encoder))
    return ab.build()


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decoder(payload):
    return payload.decode("utf-8")


@wallaroo.computation(name="reverse")
def reverse(data):
    return data[::-1]


@wallaroo.encoder
def encoder(data):
    return data + "\n"
