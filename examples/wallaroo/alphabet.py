"""Alphabet (partitioned), as in Wallaroo's examples, in the 0.4 Python API: votes for letters.

Input: framed messages whose 5-byte payload is a letter and a big-endian 32-bit vote count. Votes
are added up in one state object per letter (the partition key); every update sends the letter's
total out as a framed message: a 4-byte length (9), the letter, a big-endian 64-bit total.

    machida --application-module examples.wallaroo.alphabet --in 127.0.0.1:7010 --out 127.0.0.1:7002
"""
import string
import struct

import wallaroo

LETTER_PARTITIONS = list(string.ascii_lowercase)
VOTE = struct.Struct(">sI")
TOTAL = struct.Struct(">IsQ")


def application_setup(args):
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    ab = wallaroo.ApplicationBuilder("alphabet")
    ab.new_pipeline("alphabet", wallaroo.TCPSourceConfig(in_host, in_port, decoder))
    ab.to_state_partition(add_votes, TotalVotes, "letter state", partition, LETTER_PARTITIONS)
    ab.to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encoder))
    return ab.build()


class Votes:
    def __init__(self, letter, votes):
        self.letter = letter
        self.votes = votes


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decoder(payload):
    letter, votes = VOTE.unpack(payload)
    return Votes(letter.decode("ascii").lower(), votes)


def serialize(votes):
    """Votes cross to the state step in their wire format (data, not pickle)."""
    return VOTE.pack(votes.letter.encode("ascii"), votes.votes)


def deserialize(data):
    return decoder(data)


@wallaroo.partition
def partition(votes):
    return votes.letter


class TotalVotes:
    def __init__(self):
        self.letter = None
        self.votes = 0

    def update(self, votes):
        self.letter = votes.letter
        self.votes += votes.votes

    def get_votes(self):
        return Votes(self.letter, self.votes)


@wallaroo.state_computation(name="add votes")
def add_votes(votes, state):
    state.update(votes)
    return state.get_votes(), True


@wallaroo.encoder
def encoder(votes):
    return TOTAL.pack(TOTAL.size - 4, votes.letter.encode("ascii"), votes.votes)
