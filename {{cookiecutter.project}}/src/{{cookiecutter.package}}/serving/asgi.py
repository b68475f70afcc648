"""The little of ASGI the service speaks: a request's head, its body read in chunks up to a cap, and
a JSON response. A web framework would add a layer of work to every request and read bodies whole
before any limit applies; the service needs neither (server.py has the routes)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]


class BodyTooLarge(Exception):
    """The body is longer than the cap (declared so, or found so while reading)."""


class ClientGone(Exception):
    """The client disconnected before its body arrived in full."""


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names; a repeated header keeps its first value
    client: str  # the peer address ("" when the server does not know it)
    receive: Receive

    @classmethod
    def from_scope(cls, scope: Scope, receive: Receive) -> Request:
        headers: dict[str, str] = {}
        for name, value in scope.get("headers", ()):
            headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
        client = scope.get("client") or ("", 0)
        return cls(scope["method"], scope["path"], headers, str(client[0]), receive)

    async def body(self, limit: int) -> bytes:
        """The whole body, read chunk by chunk; BodyTooLarge as soon as it passes `limit` bytes
        (a chunked body has no length to check first), so at most `limit` bytes are ever held."""
        declared = self.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def json_bytes(payload: Any) -> bytes:
    """UTF-8 JSON, readable; escaped to ASCII when a string cannot be UTF-8 (a lone surrogate that a
    model sent back as `\\ud800` in its JSON): still valid JSON, and never a 500."""
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode()
    except UnicodeEncodeError:
        return json.dumps(payload, separators=(",", ":")).encode()


async def respond(send: Send, status: int, body: bytes, headers: Headers, content_type: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})
