"""How messages cross Kafka internally: the application's serialize/deserialize, or pickle.

Wallaroo looked for `serialize`/`deserialize` in the application module. An application built from
another module's steps (examples/fork_leaders.py uses star_leaders') gets that module's pair: when the
application module defines neither, the module that defines each state computation is asked next.
"""
import pickle
import sys


class Serde:
    def __init__(self, module=None, app=None):
        owner = next((m for m in _candidates(module, app)
                      if hasattr(m, "serialize") or hasattr(m, "deserialize")), None)
        self.dumps = getattr(owner, "serialize", None) or _pickle_dumps
        self.loads = getattr(owner, "deserialize", None) or pickle.loads


def _candidates(module, app):
    if module is not None:
        yield module
    if app is not None:
        for _pi, _si, step in app.state_steps():
            defining = sys.modules.get(getattr(step.computation, "__module__", None))
            if defining is not None:
                yield defining


def _pickle_dumps(obj):
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def dump_state(state) -> bytes:
    """State objects always travel as pickle: serialize/deserialize are for messages."""
    return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)


def load_state(data: bytes):
    return pickle.loads(data)
