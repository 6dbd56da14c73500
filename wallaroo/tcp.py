"""TCP source and sink configuration, and the 0.4 `--in`/`--out` parsers.

A TCP source listens on its address for Wallaroo's framed messages (a header of the decoder's
`header_length()` bytes, whose `payload_length(header)` says how many payload bytes follow); a TCP
sink connects to its address and writes what the encoder returns, as it returns it. On this runtime
both are bridges to Kafka (wallaroo/runtime/tcp.py): the source's frames go into an internal topic
the pipeline reads, the sink's outputs into an internal topic a forwarder sends on.
"""
import argparse

# The largest frame a TCP source accepts and the largest output a TCP sink sends: each is one record
# of an internal topic, created to hold it.
MAX_FRAME_BYTES = 8 * 1024 * 1024


class TCPSourceConfig:
    """Listen on `host:port` for framed messages; `decoder` frames and decodes them."""

    def __init__(self, host, port, decoder):
        self.host = host
        self.port = port
        self.decoder = decoder
        self.topic = None             # the internal topic its frames go to, named by the runtime

    def __repr__(self):
        return f"TCPSourceConfig({self.host!r}, {self.port!r})"


class TCPSinkConfig:
    """Connect to `host:port` and write each output as `encoder` returns it (bytes or str)."""

    def __init__(self, host, port, encoder):
        self.host = host
        self.port = port
        self.encoder = encoder
        self.topic = None             # the internal topic its outputs wait in, named by the runtime
        self.max_message_size = MAX_FRAME_BYTES
        self.partitions = None

    def __repr__(self):
        return f"TCPSinkConfig({self.host!r}, {self.port!r})"


def address_error(host, port):
    """Why (host, port) is not a TCP address to use, or None."""
    if not isinstance(host, str) or not host:
        return f"host {host!r} is not a host name"
    try:
        number = int(port)
    except (TypeError, ValueError):
        return f"port {port!r} is not a number"
    if not 0 <= number <= 65535:
        return f"port {number} is outside 0..65535"
    return None


def _parse_addrs(args, flags, dest, what):
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(*flags, dest=dest)
    value = getattr(p.parse_known_args(args)[0], dest)
    if not value:
        from .builder import ApplicationError
        raise ApplicationError(f"this application needs {flags[-1]} HOST:PORT[,HOST:PORT...] ({what})")
    out = []
    for item in value.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep:
            from .builder import ApplicationError
            raise ApplicationError(f"{flags[-1]} {item!r} is not HOST:PORT")
        out.append((host.strip("[]"), port))
    return out


def tcp_parse_input_addrs(args):
    """[(host, port)] from `--in H1:P1,H2:P2` (`-i`), as 0.4 returned them (strings)."""
    return _parse_addrs(args, ("-i", "--in"), "input_addrs", "the addresses its TCP sources listen on")


def tcp_parse_output_addrs(args):
    """[(host, port)] from `--out H1:P1,...` (`-o`), as 0.4 returned them (strings)."""
    return _parse_addrs(args, ("-o", "--out"), "output_addrs", "the addresses its TCP sinks send to")
