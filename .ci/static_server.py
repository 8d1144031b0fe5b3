#!/usr/bin/env python3
"""Static file server for the app and its tests: HTTP Range requests (206), CORS, ETags, no HTTP caching.

Serves the repository root at / and the sibling shared/ folder at /shared/ (the tiny golden model for
?model=/shared/goldens/lambda-tiny/model/); `--mount /PREFIX=DIR` serves DIR at /PREFIX/ as well (tests
serve doctored model copies from temp folders). GET /__stats returns per-path request counts as JSON (tests
check that a reload fetches no weights); POST /__stats/reset clears them. `--throttle BYTES_PER_S` sends
the files matching `--throttle-pattern` (default: *.safetensors) at that rate per response and
`--delay-ms MS` waits that long before each such response, so tests can interrupt a download;
POST /__throttle?rate=BYTES_PER_S&delay_ms=MS changes both while running. `--no-cors` leaves out the CORS
headers (a page of another origin then cannot read the files). Binds 127.0.0.1 only.

    python3 .ci/static_server.py [--port 8080] [--mount /PREFIX=DIR ...] [--throttle BYTES_PER_S] [--delay-ms MS]
"""
import argparse
import collections
import http.server
import json
import os
import re
import threading
import time
import urllib.parse

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SHARED = os.path.abspath(os.path.join(ROOT, "..", "shared"))
COUNTS = collections.Counter()
LOCK = threading.Lock()
MOUNTS = []  # (url prefix ending in "/", folder), longest prefix first
CORS = {"enabled": True}
THROTTLE = {"rate": 0, "delay": 0.0, "pattern": re.compile(r"\.safetensors$")}


class Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".wasm": "application/wasm", ".js": "text/javascript", ".mjs": "text/javascript"}

    def translate_path(self, path):
        path = path.split("?", 1)[0].split("#", 1)[0]
        for prefix, folder in MOUNTS + [("/shared/", SHARED)]:
            if path.startswith(prefix):
                rel = path[len(prefix):]
                base = folder
                break
        else:
            rel = path.lstrip("/")
            base = ROOT
        full = os.path.abspath(os.path.join(base, *[p for p in rel.split("/") if p not in ("", ".", "..")]))
        return full if full.startswith(base) else base

    def end_headers(self):
        if CORS["enabled"]:
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Access-Control-Allow-Headers", "Range")
            self.send_header("Access-Control-Expose-Headers", "Content-Range, Content-Length, Accept-Ranges, ETag")
        self.send_header("Accept-Ranges", "bytes")
        if self.command in ("GET", "HEAD"):
            path = self.translate_path(self.path)
            if os.path.isfile(path):
                st = os.stat(path)
                self.send_header("ETag", f'"{st.st_size:x}-{st.st_mtime_ns:x}"')
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
        elif self.path.startswith("/__throttle"):
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            THROTTLE["rate"] = int(query.get("rate", ["0"])[0])
            THROTTLE["delay"] = float(query.get("delay_ms", ["0"])[0]) / 1000
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
        throttled = THROTTLE["pattern"].search(self.path.split("?", 1)[0])
        rate = THROTTLE["rate"] if throttled else 0
        if throttled and THROTTLE["delay"]:
            time.sleep(THROTTLE["delay"])
        step = max(1, min(1 << 20, rate // 20)) if rate else 1 << 20
        with open(path, "rb") as f:
            f.seek(start)
            remaining = end - start + 1
            while remaining > 0:
                chunk = f.read(min(remaining, step))
                if not chunk:
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)
                if rate:
                    self.wfile.flush()
                    time.sleep(len(chunk) / rate)


class Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # A browser that cancels a download closes the connection mid-body: not worth a traceback.
        import sys
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--mount", action="append", default=[], metavar="/PREFIX=DIR", help="also serve DIR at /PREFIX/")
    ap.add_argument("--throttle", type=int, default=0, metavar="BYTES_PER_S", help="send matching files at this rate per response")
    ap.add_argument("--delay-ms", type=float, default=0, metavar="MS", help="wait this long before each matching response")
    ap.add_argument("--no-cors", action="store_true", help="send no CORS headers (other origins cannot read anything)")
    ap.add_argument("--throttle-pattern", default=r"\.safetensors$", help="regex on the path of the files to throttle")
    args = ap.parse_args()
    for m in args.mount:
        prefix, sep, folder = m.partition("=")
        if not sep or not os.path.isdir(folder):
            ap.error(f"--mount {m}: expected /PREFIX=DIR with an existing DIR")
        MOUNTS.append(("/" + prefix.strip("/") + "/", os.path.abspath(folder)))
    MOUNTS.sort(key=lambda pm: -len(pm[0]))
    CORS["enabled"] = not args.no_cors
    THROTTLE["rate"] = args.throttle
    THROTTLE["delay"] = args.delay_ms / 1000
    THROTTLE["pattern"] = re.compile(args.throttle_pattern)
    server = Server(("127.0.0.1", args.port), Handler)
    print(f"serving {ROOT} (and {SHARED} at /shared/) on http://127.0.0.1:{args.port}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
