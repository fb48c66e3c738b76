"""How uvicorn serves the API: its HTTP protocol with TCP_NODELAY on every connection.

With `--workers` > 1, uvicorn 0.54 binds the listening socket itself with protocol 0, and
asyncio then leaves Nagle's algorithm on for the accepted connections: every answer after the
first on a keep-alive connection waited for the client's delayed ACK, about 40 ms (upstream
Kludex/uvicorn#3149). Setting the option per connection does not depend on how the socket was
made. The class is imported by name in each worker process.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol


class NoDelayH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, with TCP_NODELAY set as each TCP connection is made."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock: Any = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
