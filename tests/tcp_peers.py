"""The other ends of TCP sources and sinks, for the tests: a sender of Wallaroo's framed messages (what
Wallaroo's giles sender did) and a receiver that collects what a TCP sink writes (its data_receiver)."""
import socket
import struct
import threading
import time


def frame(payload: bytes) -> bytes:
    """Wallaroo's source framing: a 4-byte big-endian length, then the payload."""
    return struct.pack(">I", len(payload)) + payload


def send_framed(address, payloads, *, timeout_s=60.0, chunk=500, interval_s=0.0):
    """Connect to `address` (retrying until a worker listens there) and send `payloads` framed, in chunks
    `interval_s` apart; return once the worker has read them all (it closed its side)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            sock = socket.create_connection(address, timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    with sock:
        for i in range(0, len(payloads), chunk):
            sock.sendall(b"".join(frame(p) for p in payloads[i:i + chunk]))
            if interval_s:
                time.sleep(interval_s)
        sock.shutdown(socket.SHUT_WR)
        # wait for the worker to close its side: everything sent has been read
        sock.settimeout(timeout_s)
        while sock.recv(4096):
            pass


class Receiver:
    """Listens on 127.0.0.1 and keeps the bytes of each accepted connection, in order."""

    def __init__(self, port=0):
        self.server = socket.create_server(("127.0.0.1", port))
        self.server.settimeout(0.2)
        self.port = self.server.getsockname()[1]
        self.connections = []           # bytearray per accepted connection
        self.sockets = []
        self.lock = threading.Lock()
        self.running = True
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def address(self):
        return ("127.0.0.1", self.port)

    def _accept(self):
        while self.running:
            try:
                conn, _ = self.server.accept()
            except OSError:
                continue
            data = bytearray()
            with self.lock:
                self.connections.append(data)
                self.sockets.append(conn)
            threading.Thread(target=self._read, args=(conn, data), daemon=True).start()

    def _read(self, conn, data):
        conn.settimeout(0.2)
        while self.running:
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            with self.lock:
                data += chunk

    def data(self) -> bytes:
        with self.lock:
            return b"".join(bytes(c) for c in self.connections)

    def lines(self):
        return self.data().decode("utf-8").splitlines()

    def frames(self):
        """The received bytes cut at Wallaroo's framing (4-byte big-endian length, payload)."""
        out, data, pos = [], self.data(), 0
        while len(data) - pos >= 4:
            (size,) = struct.unpack(">I", data[pos:pos + 4])
            if len(data) - pos - 4 < size:
                break
            out.append(data[pos + 4:pos + 4 + size])
            pos += 4 + size
        return out

    def drop_connections(self):
        """Close every accepted connection, as a receiver that restarts would."""
        with self.lock:
            for conn in self.sockets:
                conn.close()
            self.sockets = []

    def close(self):
        self.running = False
        self.server.close()
        self.drop_connections()
