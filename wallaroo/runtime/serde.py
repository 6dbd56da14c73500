"""How messages cross Kafka internally: the application module's serialize/deserialize, or pickle."""
import pickle


class Serde:
    def __init__(self, module=None):
        self.dumps = getattr(module, "serialize", None) or _pickle_dumps
        self.loads = getattr(module, "deserialize", None) or pickle.loads


def _pickle_dumps(obj):
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def dump_state(state) -> bytes:
    """State objects always travel as pickle: serialize/deserialize are for messages."""
    return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)


def load_state(data: bytes):
    return pickle.loads(data)
