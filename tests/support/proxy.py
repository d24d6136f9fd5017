"""A real TCP proxy in front of Redis that loses replies on purpose (issue #14's lost-reply
tests): it forwards bytes both ways, follows the RESP commands and replies of each connection,
and can swallow the replies of chosen commands (the client then sees a socket timeout, as with
a reset connection or a failover) or cut every connection."""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading
from collections import deque
from collections.abc import Callable

from conveyor.redis.scripts import source

Command = list[bytes]


def _line_end(buf: bytearray | bytes, pos: int) -> int:
    end = buf.find(b"\r\n", pos)
    return -1 if end < 0 else end


def _skip(buf: bytearray | bytes, pos: int) -> int:
    """End of the RESP value starting at ``pos`` (-1 when incomplete)."""
    end = _line_end(buf, pos)
    if end < 0:
        return -1
    kind, head = buf[pos : pos + 1], buf[pos + 1 : end]
    nxt = end + 2
    if kind in (b"+", b"-", b":", b"_", b",", b"#", b"("):
        return nxt
    if kind in (b"$", b"=", b"!"):
        size = int(head)
        if size < 0:
            return nxt
        return nxt + size + 2 if len(buf) >= nxt + size + 2 else -1
    if kind in (b"*", b"~", b">", b"%", b"|"):
        count = int(head)
        if kind in (b"%", b"|"):
            count *= 2
        for _ in range(max(count, 0)):
            nxt = _skip(buf, nxt)
            if nxt < 0:
                return -1
        return nxt
    raise ValueError(f"not RESP: {bytes(buf[pos : pos + 20])!r}")


def _command(buf: bytes) -> Command:
    """The bulk strings of one RESP command array."""
    out: Command = []
    end = _line_end(buf, 0)
    count = int(buf[1:end])
    pos = end + 2
    for _ in range(count):
        end = _line_end(buf, pos)
        size = int(buf[pos + 1 : end])
        out.append(bytes(buf[end + 2 : end + 2 + size]))
        pos = end + 2 + size + 2
    return out


def script_sha(name: str) -> bytes:
    """The SHA1 redis-py sends in EVALSHA for ``lua/<name>.lua``."""
    return hashlib.sha1(source(name).encode()).hexdigest().encode()


def is_script(name: str) -> Callable[[Command], bool]:
    """A predicate matching EVALSHA/EVAL calls of one of Conveyor's Lua scripts."""
    sha, text = script_sha(name), source(name).encode()

    def match(cmd: Command) -> bool:
        verb = cmd[0].upper() if cmd else b""
        return (verb == b"EVALSHA" and cmd[1] == sha) or (verb == b"EVAL" and cmd[1] == text)

    return match


def is_verb(verb: str) -> Callable[[Command], bool]:
    wanted = verb.upper().encode()
    return lambda cmd: bool(cmd) and cmd[0].upper() == wanted


class _Pipe:
    """One client connection and its upstream connection."""

    def __init__(self, proxy: RedisProxy, client: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = socket.create_connection(proxy.upstream, timeout=None)
        self.pending: deque[bool] = deque()  # per command sent: drop its reply?
        self.lock = threading.Lock()
        for target in (self._requests, self._replies):
            threading.Thread(target=target, daemon=True).start()

    def close(self) -> None:
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _requests(self) -> None:
        buf = bytearray()
        try:
            while chunk := self.client.recv(65536):
                buf += chunk
                pos = 0
                while pos < len(buf):
                    end = _skip(buf, pos)
                    if end < 0:
                        break
                    drop = self.proxy._should_drop(_command(bytes(buf[pos:end])))
                    with self.lock:
                        self.pending.append(drop)
                    pos = end
                self.upstream.sendall(bytes(buf[:pos]))
                del buf[:pos]
        except (OSError, ValueError):
            pass
        self.close()

    def _replies(self) -> None:
        buf = bytearray()
        try:
            while chunk := self.upstream.recv(65536):
                buf += chunk
                pos, out = 0, bytearray()
                while pos < len(buf):
                    end = _skip(buf, pos)
                    if end < 0:
                        break
                    with self.lock:
                        drop = self.pending.popleft() if self.pending else False
                    if not drop:
                        out += buf[pos:end]
                    pos = end
                if out:
                    self.client.sendall(bytes(out))
                del buf[:pos]
        except (OSError, ValueError):
            pass
        self.close()


class RedisProxy:
    """Listens on 127.0.0.1 and forwards to ``upstream``; call :meth:`drop_replies` to lose
    the replies of the next matching commands, :meth:`cut` to reset every connection.

    >>> with RedisProxy(("127.0.0.1", 6379)) as proxy:                  # doctest: +SKIP
    ...     proxy.drop_replies(is_script("fetch"), 3)
    ...     url = proxy.url
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._pipes: list[_Pipe] = []
        self._rules: list[tuple[Callable[[Command], bool], list[int]]] = []
        self._lock = threading.Lock()
        #: Commands whose replies were swallowed so far.
        self.dropped: list[Command] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def drop_replies(self, match: Callable[[Command], bool], count: int) -> None:
        """Swallow the replies of the next ``count`` commands ``match`` accepts."""
        with self._lock:
            self._rules.append((match, [count]))

    def cut(self) -> None:
        """Reset every open connection (clients reconnect through the proxy)."""
        with self._lock:
            pipes, self._pipes = self._pipes, []
        for pipe in pipes:
            pipe.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.cut()

    def __enter__(self) -> RedisProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _should_drop(self, cmd: Command) -> bool:
        with self._lock:
            for match, left in self._rules:
                if left[0] > 0 and match(cmd):
                    left[0] -= 1
                    self.dropped.append(cmd)
                    return True
        return False

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                pipe = _Pipe(self, client)
            except OSError:  # upstream down: refuse, as Redis itself would be unreachable
                client.close()
                continue
            with self._lock:
                self._pipes.append(pipe)
