"""Length-prefixed pickle frames between the Worker (parent) and the child.

A frame is a 4-byte big-endian length followed by a pickle of one message from
``cogkit.worker.protocol``. The parent decodes with ``decode_from_child``, which only
accepts protocol classes: the parent never imports user code, so a child that sends
anything else (a bug, or garbage on the socket) is treated as broken, not trusted.
"""

from __future__ import annotations

import io
import os
import pickle
import socket
import struct
import threading
from typing import Any

from cogkit.worker import protocol

HEADER = struct.Struct(">I")
MAX_FRAME = 1 << 31  # 2 GiB: anything larger is a corrupt length, not a message

_PROTOCOL_CLASSES = {
    name: obj
    for name, obj in vars(protocol).items()
    if isinstance(obj, type) and getattr(obj, "__module__", "") == protocol.__name__
}


class ProtocolError(Exception):
    """The peer sent bytes that are not a valid frame or message."""


def encode(message: Any) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


class _ProtocolUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == protocol.__name__ and name in _PROTOCOL_CLASSES:
            return _PROTOCOL_CLASSES[name]
        raise pickle.UnpicklingError(f"unexpected class {module}.{name} in a worker message")


def decode_from_child(data: bytes) -> Any:
    """Unpickle one frame body, allowing only protocol messages and plain data."""
    try:
        message = _ProtocolUnpickler(io.BytesIO(data)).load()
    except Exception as exc:  # noqa: BLE001 - any decoding failure means a broken child
        raise ProtocolError(f"undecodable message from the worker: {exc}") from exc
    if type(message).__name__ not in _PROTOCOL_CLASSES or type(message) is not _PROTOCOL_CLASSES.get(
        type(message).__name__
    ):
        raise ProtocolError(f"unexpected message type {type(message).__name__} from the worker")
    return message


class ChildConnection:
    """The child's end: blocking socket, sends from any thread, receives on one thread."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._rfile = sock.makefile("rb")
        self._lock = threading.Lock()
        self._disabled = False

    def disable(self) -> None:
        """In a process forked from the child: never touch the parent's socket."""
        self._disabled = True

    def send(self, message: Any) -> None:
        if self._disabled:
            return
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        header = HEADER.pack(len(data))
        with self._lock:
            try:
                if len(data) < 65536:
                    self._sock.sendall(header + data)
                else:  # avoid copying a large payload just to prepend 4 bytes
                    self._sock.sendall(header)
                    self._sock.sendall(data)
            except OSError:
                os._exit(0)  # the parent is gone: there is nobody left to work for

    def recv(self) -> Any:
        """Next message from the parent; EOFError when the parent has gone."""
        header = self._rfile.read(HEADER.size)
        if len(header) < HEADER.size:
            raise EOFError("parent closed the connection")
        (size,) = HEADER.unpack(header)
        data = self._rfile.read(size)
        if len(data) < size:
            raise EOFError("parent closed the connection mid-message")
        return pickle.loads(data)
