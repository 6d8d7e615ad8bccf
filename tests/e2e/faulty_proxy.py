"""A fault-injecting HTTP proxy in front of the S3-compatible test server.

strata talks to the proxy as if it were S3; the test switches the proxy between
healthy, down (every request after the Nth PUT answers 503, as a server going away
mid-publish looks to a client) and flaky (every Kth request fails once with 503).
"""
from __future__ import annotations

import http.client
import http.server
import threading
import urllib.parse

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization", "proxy-authenticate"}


class FaultyProxy:
    def __init__(self, upstream: str):
        u = urllib.parse.urlparse(upstream)
        self.upstream = (u.hostname, u.port)
        self.lock = threading.Lock()
        self.healthy()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if proxy.should_fail(self.command, self.path):
                    payload = b"<Error><Code>ServiceUnavailable</Code><Message>injected fault</Message></Error>"
                    self.send_response(503)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def healthy(self):
        with self.lock:
            self.mode, self.puts, self.requests, self.failed = "healthy", 0, 0, 0

    def down_after_puts(self, n: int):
        """Answer 503 to every request once `n` PUTs have gone through."""
        with self.lock:
            self.mode, self.limit, self.puts = "down_after", n, 0

    def flaky(self, every: int):
        """Fail every `every`-th request once: its retry (same method and path) goes through."""
        with self.lock:
            self.mode, self.every, self.requests, self.failed = "flaky", every, 0, 0
            self.failed_once = set()

    def should_fail(self, method: str, path: str) -> bool:
        with self.lock:
            if self.mode == "down_after":
                if self.puts >= self.limit:
                    return True
                if method == "PUT":
                    self.puts += 1
                return False
            if self.mode == "flaky":
                if (method, path) in self.failed_once:
                    return False
                self.requests += 1
                if self.requests % self.every == 0:
                    self.failed_once.add((method, path))
                    self.failed += 1
                    return True
            return False

    def close(self):
        self.server.shutdown()
        self.server.server_close()
