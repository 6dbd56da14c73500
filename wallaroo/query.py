"""Queryable state: read-only methods of a state class that the outside world may call.

    class RepoMetadata:
        @wallaroo.query(key=partition_of)       # the argument -> the state's partition key
        def repo(self, name): return {...}       # plain data (JSON): never the live objects

A worker started with `--query-port` answers `GET /query/<state name>/<method>?arg=<text>` for the
partitions it owns and forwards the others to their owner (wallaroo/runtime/queries.py);
`wallaroo.testing.run_local(...).query(state, method, arg)` answers the same. A key with no state
object yet is asked of a fresh one, which is not kept.
"""
import functools

QUERY_MAX_ARG = 512          # characters: a query's argument is text from outside


class Query:
    """A state method marked with @query: `key(arg)` finds the partition key, `func(state, arg)` answers."""

    def __init__(self, func, key):
        functools.update_wrapper(self, func)
        self.func, self.key = func, key

    def __call__(self, state, arg):
        return self.func(state, arg)

    def __get__(self, obj, cls=None):            # state.repo("a/b") still works as a method
        return self if obj is None else functools.partial(self.func, obj)


def query(key):
    """Mark a state method `m(self, arg) -> data` as a read-only query; `key(arg)` is the partition key
    of the state that answers it (raise ValueError for an argument that names none)."""
    def wrap(func):
        return Query(func, key)
    return wrap


def queries_of(state_class):
    """{method name: Query} of a state class."""
    return {name: q for name, q in vars(state_class).items() if isinstance(q, Query)}
