"""What the serve tests share: the tasks of the served model and free ports for a server."""

from __future__ import annotations

import socket

TASKS = ["seg", "depth", "normal"]


def free_ports(count: int = 3) -> list[int]:
    """Ports nothing listens on now (the kernel's choice), for one server's HTTP, gRPC and metrics."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()
