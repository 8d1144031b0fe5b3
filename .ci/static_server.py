#!/usr/bin/env python3
"""Static file server for the app and its tests: HTTP Range requests (206), CORS, no caching headers games.

Serves the repository root at / and the sibling shared/ folder at /shared/ (the tiny golden model for
?model=/shared/goldens/lambda-tiny/model/). GET /__stats returns per-path request counts as JSON (tests
check that a reload fetches no weights); POST /__stats/reset clears them. Binds 127.0.0.1 only.

    python3 .ci/static_server.py [--port 8080]
"""
import argparse
import collections
import http.server
import json
import os
import re
import threading

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SHARED = os.path.abspath(os.path.join(ROOT, "..", "shared"))
COUNTS = collections.Counter()
LOCK = threading.Lock()


class Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".wasm": "application/wasm", ".js": "text/javascript", ".mjs": "text/javascript"}

    def translate_path(self, path):
        path = path.split("?", 1)[0].split("#", 1)[0]
        if path.startswith("/shared/"):
            rel = path[len("/shared/"):]
            base = SHARED
        else:
            rel = path.lstrip("/")
            base = ROOT
        full = os.path.abspath(os.path.join(base, *[p for p in rel.split("/") if p not in ("", ".", "..")]))
        return full if full.startswith(base) else base

    def end_headers(self):
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Allow-Headers", "Range")
        self.send_header("Access-Control-Expose-Headers", "Content-Range, Content-Length, Accept-Ranges")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, fmt, *args):
        pass

    def do_OPTIONS(self):
        self.send_response(204)
        self.end_headers()

    def do_POST(self):
        if self.path == "/__stats/reset":
            with LOCK:
                COUNTS.clear()
            self.send_response(204)
            self.end_headers()
        else:
            self.send_error(405)

    def do_GET(self):
        if self.path == "/__stats":
            with LOCK:
                body = json.dumps(dict(COUNTS)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        with LOCK:
            COUNTS[self.path.split("?", 1)[0]] += 1
        path = self.translate_path(self.path)
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if not m or not os.path.isfile(path):
            return super().do_GET()
        size = os.path.getsize(path)
        start = int(m.group(1))
        end = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
        if start >= size or end < start:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.end_headers()
            return
        self.send_response(206)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        with open(path, "rb") as f:
            f.seek(start)
            remaining = end - start + 1
            while remaining > 0:
                chunk = f.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8080)
    args = ap.parse_args()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"serving {ROOT} (and {SHARED} at /shared/) on http://127.0.0.1:{args.port}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
