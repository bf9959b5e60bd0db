"""A feed file server on 127.0.0.1, for the flash demo, its tests and ``bench feeds``.

``async with FeedFiles({"/news.rss": rss_bytes}) as files:`` (or ``with``) serves each document at
``files.url("/news.rss")`` from a thread (the standard library's HTTP server), with an
ETag per document and 304 for a matching ``If-None-Match``, like a real feed host.
``files.put(path, body)`` replaces a document (a new ETag); ``files.hits`` counts the
requests per path and status.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self
from xml.sax.saxutils import escape

__all__ = ["FeedFiles", "rss"]


def rss(title: str, items: list[tuple[str, str, str]], *, language: str = "en") -> bytes:
    """An RSS 2.0 document of ``(guid, title, description)`` items."""
    body = "".join(f"<item><guid>{escape(g)}</guid><title>{escape(t)}</title>"
                   f"<description>{escape(d)}</description></item>" for g, t, d in items)
    return (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
            f"<title>{escape(title)}</title><link>http://127.0.0.1/</link>"
            f"<description>{escape(title)}</description><language>{escape(language)}</language>"
            f"{body}</channel></rss>").encode()


class FeedFiles:
    def __init__(self, files: dict[str, bytes], *, content_type: str = "application/rss+xml") -> None:
        self._files = dict(files)
        self._lock = threading.Lock()
        self.hits: Counter[tuple[str, int]] = Counter()
        self.content_type = content_type
        outer = self

        class Handler(BaseHTTPRequestHandler):
            # headers and body go out as two writes: without TCP_NODELAY the body waits
            # ~40 ms behind the client's delayed ACK, which is this server's, not HQ's
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                with outer._lock:
                    body = outer._files.get(self.path)
                if body is None:
                    self._answer(404, b"not found")
                    return
                etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                if self.headers.get("if-none-match") == etag:
                    self._answer(304, b"", etag)
                    return
                self._answer(200, body, etag)

            def _answer(self, status: int, body: bytes, etag: str | None = None) -> None:
                outer.hits[(self.path, status)] += 1
                self.send_response(status)
                if etag:
                    self.send_header("ETag", etag)
                if status != 304:
                    self.send_header("Content-Type", outer.content_type)
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if status != 304:
                    self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                del format, args  # quiet: the tests and the demo print their own lines

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="feed-files",
                                        daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def put(self, path: str, body: bytes) -> None:
        with self._lock:
            self._files[path] = body

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.__enter__)

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        """Stopping waits for the serving thread: off the event loop."""
        await asyncio.to_thread(self.__exit__, exc_type, exc, tb)
