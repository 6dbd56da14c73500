"""Market spread, as in Wallaroo's examples, in the 0.4 Python API: two pipelines joined by named state.

"Market Data" reads quotes (best bid and offer per symbol) and only updates the symbol's state; it
ends with done(), without a sink. "Orders" reads orders, checks each against the same state
("symbol-data", partitioned by symbol as a 64-bit integer, `to_state_partition_u64`) and reports the
orders to withdraw: those on a symbol whose spread is wide (offer - bid >= 0.05, or >= 5% of the
mid price) or that has had no quote yet.

Over TCP (as Wallaroo ran it): `--in ORDERS_HOST:PORT,QUOTES_HOST:PORT --out HOST:PORT`. Over Kafka:
`--kafka_source_topic` (orders), `--market_data_topic` (quotes), `--kafka_sink_topic` (reports).
Messages are binary, big-endian:

    order   (53 bytes): type 1 (u8), side (u8), account (u32), order id (6 bytes), symbol (4 bytes),
                        quantity (f64), price (f64), transaction time (21 bytes)
    quote   (42 bytes): type 2 (u8), symbol (4 bytes), transaction time (21 bytes), bid (f64), offer (f64)

each framed on TCP by a 4-byte length. A report is a line "side=1, account=..., order_id=..., ...".
"""
import argparse
import struct

import wallaroo

ORDER_TYPE, QUOTE_TYPE = 1, 2
ORDER = struct.Struct(">BBI6s4sdd21s")
QUOTE = struct.Struct(">B4s21sdd")
SYMBOLS = [f"{first}{second}{third}" for first in "ABCDEFGH" for second in "XYZ" for third in "QRS"]


def symbol_key(symbol):
    """A symbol as the 64-bit partition key: its 4 bytes (space-padded on the left) as an integer."""
    return int.from_bytes(symbol.rjust(4).encode("ascii"), "big")


SYMBOL_PARTITIONS = [symbol_key(s) for s in SYMBOLS]


def application_setup(args):
    ab = wallaroo.ApplicationBuilder("market-spread")
    orders, quotes = sources(args)
    ab.new_pipeline("Orders", orders)
    ab.to_state_partition_u64(check_order, SymbolData, "symbol-data", symbol_partition, SYMBOL_PARTITIONS)
    ab.to_sink(sink(args))
    ab.new_pipeline("Market Data", quotes)
    ab.to_state_partition_u64(update_market_data, SymbolData, "symbol-data", symbol_partition, SYMBOL_PARTITIONS)
    ab.done()
    return ab.build()


def sources(args):
    if any(a == "--in" or a.startswith("--in=") for a in args):
        (orders_host, orders_port), (quotes_host, quotes_port) = wallaroo.tcp_parse_input_addrs(args)[:2]
        return (wallaroo.TCPSourceConfig(orders_host, orders_port, order_decoder),
                wallaroo.TCPSourceConfig(quotes_host, quotes_port, market_data_decoder))
    topic, brokers, log_level = wallaroo.kafka_parse_source_options(args)
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--market_data_topic", default="market-data")
    quotes_topic = p.parse_known_args(args)[0].market_data_topic
    return (wallaroo.KafkaSourceConfig(topic, brokers, log_level, order_decoder),
            wallaroo.KafkaSourceConfig(quotes_topic, brokers, log_level, market_data_decoder))


def sink(args):
    if any(a == "--out" or a.startswith("--out=") for a in args):
        host, port = wallaroo.tcp_parse_output_addrs(args)[0]
        return wallaroo.TCPSinkConfig(host, port, order_result_encoder)
    topic, brokers, log_level, max_produce_buffer_ms, max_message_size = wallaroo.kafka_parse_sink_options(args)
    return wallaroo.KafkaSinkConfig(topic, brokers, log_level, max_produce_buffer_ms, max_message_size,
                                    order_result_encoder)


class MarketSpreadError(ValueError):
    pass


class SymbolData:
    def __init__(self):
        self.last_bid = 0.0
        self.last_offer = 0.0
        self.should_reject_trades = True      # no quote yet
        self.quotes = 0


class Order:
    def __init__(self, side, account, order_id, symbol, quantity, price, transact_time):
        self.side = side
        self.account = account
        self.order_id = order_id
        self.symbol = symbol
        self.quantity = quantity
        self.price = price
        self.transact_time = transact_time


class MarketData:
    def __init__(self, symbol, transact_time, bid, offer):
        self.symbol = symbol
        self.transact_time = transact_time
        self.bid = bid
        self.offer = offer
        self.mid = (bid + offer) / 2.0


class OrderResult:
    def __init__(self, order, bid, offer):
        self.order = order
        self.bid = bid
        self.offer = offer


def _text(raw):
    return raw.decode("ascii").strip()


@wallaroo.decoder(header_length=4, length_fmt=">I")
def order_decoder(payload):
    if len(payload) != ORDER.size or payload[0] != ORDER_TYPE:
        raise MarketSpreadError(f"not an order message ({len(payload)} bytes, type {payload[:1]!r}): "
                                f"are the order and market data inputs the wrong way round?")
    _type, side, account, order_id, symbol, quantity, price, transact_time = ORDER.unpack(payload)
    return Order(side, account, _text(order_id), _text(symbol), quantity, price, _text(transact_time))


@wallaroo.decoder(header_length=4, length_fmt=">I")
def market_data_decoder(payload):
    if len(payload) != QUOTE.size or payload[0] != QUOTE_TYPE:
        raise MarketSpreadError(f"not a market data message ({len(payload)} bytes, type {payload[:1]!r}): "
                                f"are the order and market data inputs the wrong way round?")
    _type, symbol, transact_time, bid, offer = QUOTE.unpack(payload)
    return MarketData(_text(symbol), _text(transact_time), bid, offer)


@wallaroo.partition
def symbol_partition(message):
    return symbol_key(message.symbol)


@wallaroo.state_computation(name="check order")
def check_order(order, state):
    if state.should_reject_trades:
        return OrderResult(order, state.last_bid, state.last_offer), False
    return None, False


@wallaroo.state_computation(name="update market data")
def update_market_data(quote, state):
    spread = quote.offer - quote.bid
    state.should_reject_trades = spread >= 0.05 or spread / quote.mid >= 0.05
    state.last_bid = quote.bid
    state.last_offer = quote.offer
    state.quotes += 1
    return None, True


@wallaroo.encoder
def order_result_encoder(result):
    order = result.order
    line = (f"side={order.side}, account={order.account}, order_id={order.order_id}, symbol={order.symbol}, "
            f"quantity={order.quantity:.0f}, price={order.price:.2f}, bid={result.bid:.2f}, "
            f"offer={result.offer:.2f}\n")
    return line.encode("ascii"), order.symbol.encode("ascii")


def serialize(message):
    """Orders and quotes cross to the state step in their own wire format: plain bytes, so the engine
    needs no pickle (which would let anyone who can write to the repartition topic run code)."""
    if isinstance(message, Order):
        return order_message(message.side, message.account, message.order_id, message.symbol,
                             message.quantity, message.price, message.transact_time)
    return market_data_message(message.symbol, message.bid, message.offer, message.transact_time)


def deserialize(data):
    return order_decoder(data) if data[:1] == bytes([ORDER_TYPE]) else market_data_decoder(data)


def order_message(side, account, order_id, symbol, quantity, price, transact_time="20180101-00:00:00.000"):
    """An order as the Orders pipeline reads it (unframed)."""
    return ORDER.pack(ORDER_TYPE, side, account, order_id.encode().rjust(6), symbol.encode().rjust(4),
                      quantity, price, transact_time.encode().ljust(21))


def market_data_message(symbol, bid, offer, transact_time="20180101-00:00:00.000"):
    """A quote as the Market Data pipeline reads it (unframed)."""
    return QUOTE.pack(QUOTE_TYPE, symbol.encode().rjust(4), transact_time.encode().ljust(21), bid, offer)
