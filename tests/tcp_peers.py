"""The other ends of TCP sources and sinks, for the tests: a sender of Wallaroo's framed messages (what
Wallaroo's giles sender did) and a receiver that collects what a TCP sink writes (its data_receiver)."""
import fcntl
import socket
import struct
import termios
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
        self.reading = threading.Event()    # cleared: the receiver stops reading (its kernel still acknowledges)
        self.reading.set()
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
            if not self.reading.wait(0.2):
                continue
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

    def received(self):
        """The bytes of each connection, in order: each is its own stream, and a dropped one can end
        mid-output."""
        with self.lock:
            return [bytes(c) for c in self.connections]

    def lines(self):
        """Every connection's lines, one after the other (a dropped connection's last one may be cut)."""
        return [line for data in self.received() for line in data.decode("utf-8").splitlines()]

    def frames(self):
        """The received bytes cut at Wallaroo's framing (4-byte big-endian length, payload)."""
        out = []
        for data in self.received():
            pos = 0
            while len(data) - pos >= 4:
                (size,) = struct.unpack(">I", data[pos:pos + 4])
                if len(data) - pos - 4 < size:
                    break
                out.append(data[pos + 4:pos + 4 + size])
                pos += 4 + size
        return out

    def unread_bytes(self):
        """Bytes the accepted connections' kernel buffers hold that have not been read (FIONREAD)."""
        with self.lock:
            return sum(struct.unpack("i", fcntl.ioctl(c.fileno(), termios.FIONREAD, b"\0" * 4))[0]
                       for c in self.sockets)

    def drop_connections(self):
        """Close every accepted connection, as a receiver that restarts would: what its kernel holds
        unread is lost."""
        with self.lock:
            for conn in self.sockets:
                conn.close()
            self.sockets = []

    def close(self):
        self.running = False
        self.server.close()
        self.drop_connections()
