"""Word count, as in Wallaroo's examples, in the 0.4 Python API: text over TCP, counts over TCP.

Input: Wallaroo's framed messages (a 4-byte big-endian length, then that many bytes of text). Each
chunk is split into lowercase words without surrounding punctuation; each word is counted in a state
partition chosen by its first letter ("!" for anything else); every count goes out as a line
"word => count".

    machida --application-module examples.wallaroo.word_count --in 127.0.0.1:7010 --out 127.0.0.1:7002
"""
import string

import wallaroo

PUNCTUATION = string.punctuation + " \t\r"
LETTER_PARTITIONS = list(string.ascii_lowercase) + ["!"]


def application_setup(args):
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    ab = wallaroo.ApplicationBuilder("Word Count Application")
    ab.new_pipeline("Split and Count", wallaroo.TCPSourceConfig(in_host, in_port, decoder))
    ab.to_parallel(split)
    ab.to_state_partition(count_word, WordTotals, "word totals", partition, LETTER_PARTITIONS)
    ab.to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encoder))
    return ab.build()


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decoder(payload):
    return payload.decode("utf-8")


@wallaroo.computation_multi(name="split into words")
def split(text):
    words = []
    for line in text.split("\n"):
        for word in line.lower().split():
            word = word.strip(PUNCTUATION)
            if word:
                words.append(word)
    return words


@wallaroo.partition
def partition(word):
    first = word[0]
    return first if first in string.ascii_lowercase else "!"


class WordCount:
    def __init__(self, word, count):
        self.word = word
        self.count = count


class WordTotals:
    def __init__(self):
        self.word_totals = {}

    def update(self, word):
        self.word_totals[word] = self.word_totals.get(word, 0) + 1

    def get_count(self, word):
        return WordCount(word, self.word_totals[word])


@wallaroo.state_computation(name="count word")
def count_word(word, word_totals):
    word_totals.update(word)
    return word_totals.get_count(word), True


@wallaroo.encoder
def encoder(data):
    return f"{data.word} => {data.count}\n"
