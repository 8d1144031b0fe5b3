#!/usr/bin/env python3
"""Static file server for the app and its tests: HTTP Range requests (206), ETags, no HTTP caching.

Serves only what the app needs, read-only, bound to 127.0.0.1:
  /  and /index.html          the page
  /www/, /pkg/                its modules and the wasm package
  /tests/e2e/pages/           the test pages (api-goldens.html is also a manual check, see README)
  /shared/goldens/, /shared/assets/images/   the tiny golden models, goldens and photos in ../shared/
  /PREFIX/                    a model folder given with `--mount /PREFIX=DIR` (tests serve doctored copies)
Nothing else: no dotfile or dot-folder (.git/), no directory listing, no path outside these folders. Paths
are URL-decoded (%20, %2e, …) before they are checked.

`--cors` adds `Access-Control-Allow-Origin: *` (a page of another origin may then read the files: the
widget embedded cross-origin, a model on another server); without it there is no CORS header at all.

`--test-hooks` enables the hooks the end-to-end tests use, and only then do they exist (404 otherwise):
GET /__stats returns per-path request counts as JSON (a reload must fetch no weights); POST /__stats/reset
clears them; POST /__throttle?rate=BYTES_PER_S&delay_ms=MS changes the throttle while running (400 for a
value that is not a non-negative number). Hooks refuse a browser request from another origin (403).
`--throttle BYTES_PER_S` sends the files matching `--throttle-pattern` (default: *.safetensors) at that
rate per response and `--delay-ms MS` waits that long before each such response, so tests can interrupt a
download.

    python3 .ci/static_server.py [--port 8080] [--mount /PREFIX=DIR ...] [--cors] [--test-hooks]
                                 [--throttle BYTES_PER_S] [--delay-ms MS] [--throttle-pattern REGEX]
"""
import argparse
import collections
import email.utils
import http.server
import json
import math
import mimetypes
import os
import re
import sys
import threading
import time
import urllib.parse

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SHARED = os.path.abspath(os.path.join(ROOT, "..", "shared"))

# URL prefix (ending in "/") → folder. What the app and its tests read; longest prefix wins.
DEFAULT_FOLDERS = [
    ("/www/", os.path.join(ROOT, "www")),
    ("/pkg/", os.path.join(ROOT, "pkg")),
    ("/tests/e2e/pages/", os.path.join(ROOT, "tests", "e2e", "pages")),
    ("/shared/goldens/", os.path.join(SHARED, "goldens")),
    ("/shared/assets/images/", os.path.join(SHARED, "assets", "images")),
]
# Single files served at an exact path.
PAGES = {"/": os.path.join(ROOT, "index.html"), "/index.html": os.path.join(ROOT, "index.html")}

TYPES = {".wasm": "application/wasm", ".js": "text/javascript", ".mjs": "text/javascript", ".json": "application/json",
         ".ts": "text/plain", ".safetensors": "application/octet-stream", ".npy": "application/octet-stream"}


class Config:
    """What the server was started with (one per process; the handler reads it)."""

    def __init__(self):
        self.folders = sorted(DEFAULT_FOLDERS, key=lambda pf: -len(pf[0]))
        self.cors = False
        self.test_hooks = False
        self.throttle_rate = 0
        self.throttle_delay = 0.0
        self.throttle_pattern = re.compile(r"\.safetensors$")
        self.counts = collections.Counter()
        self.lock = threading.Lock()

    def mount(self, prefix, folder):
        self.folders.append(("/" + prefix.strip("/") + "/", os.path.abspath(folder)))
        self.folders.sort(key=lambda pf: -len(pf[0]))


CONFIG = Config()


class BadRequest(Exception):
    pass


def resolve(url_path):
    """The file a URL path names, or None. `url_path` is still percent-encoded; it is decoded here, then every
    segment is checked: no empty/`.`/`..` segment, no dotfile, no NUL or backslash."""
    try:
        path = urllib.parse.unquote(url_path, errors="strict")
    except UnicodeDecodeError:
        raise BadRequest("the path is not UTF-8 once URL-decoded")
    if "\x00" in path or "\\" in path:
        raise BadRequest("the path holds a NUL byte or a backslash")
    if path in PAGES:
        return PAGES[path]
    for prefix, folder in CONFIG.folders:
        if path.startswith(prefix):
            segments = path[len(prefix):].split("/")
            if any(s in ("", ".", "..") or s.startswith(".") for s in segments):
                return None
            full = os.path.abspath(os.path.join(folder, *segments))
            if not full.startswith(folder + os.sep) or not os.path.isfile(full):
                return None  # directories are never listed
            return full
    return None


def non_negative(query, name, default):
    """A query parameter as a finite number ≥ 0, else BadRequest naming it."""
    raw = query.get(name, [str(default)])[-1]
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"{name}={raw!r} is not a number")
    if not math.isfinite(value) or value < 0:
        raise BadRequest(f"{name}={raw!r} must be a finite number ≥ 0")
    return value


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "lambda-eclipse-static"
    sys_version = ""

    def log_message(self, fmt, *args):
        pass

    # ---- responses ----

    def common_headers(self):
        if CONFIG.cors:
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Access-Control-Allow-Headers", "Range")
            self.send_header("Access-Control-Expose-Headers", "Content-Range, Content-Length, Accept-Ranges, ETag")
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")

    def reply(self, status, body=b"", content_type="text/plain; charset=utf-8", headers=()):
        if isinstance(body, str):
            body = (body + "\n").encode()
        self.send_response(status)
        self.common_headers()
        for k, v in headers:
            self.send_header(k, v)
        if body or status not in (204, 304):
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def split_path(self):
        # Not urlsplit: it would read "//x/y" as a host x.
        path, _, query = self.path.partition("#")[0].partition("?")
        if not path.startswith("/"):
            raise BadRequest("the request target is not an absolute path")
        return path, urllib.parse.parse_qs(query, keep_blank_values=True)

    def guarded(self, fn):
        try:
            fn()
        except BadRequest as e:
            self.reply(400, f"bad request: {e}")
            self.close_connection = True

    # ---- test hooks ----

    def hook(self, method, path, query):
        """Handles a test hook; False when `path` is not one (or hooks are off)."""
        if not CONFIG.test_hooks or path not in ("/__stats", "/__stats/reset", "/__throttle"):
            return False
        origin = self.headers.get("Origin")
        if origin is not None and origin != f"http://{self.headers.get('Host', '')}":
            self.reply(403, "test hooks answer only this server's own origin")
            return True
        want = {"/__stats": "GET", "/__stats/reset": "POST", "/__throttle": "POST"}[path]
        if method != want:
            self.reply(405, f"{path} takes {want}", headers=[("Allow", want)])
            return True
        if path == "/__stats":
            with CONFIG.lock:
                body = json.dumps(dict(CONFIG.counts)).encode()
            self.reply(200, body, "application/json")
        elif path == "/__stats/reset":
            with CONFIG.lock:
                CONFIG.counts.clear()
            self.reply(204)
        else:
            rate = non_negative(query, "rate", 0)
            delay_ms = non_negative(query, "delay_ms", 0)
            CONFIG.throttle_rate = int(rate)
            CONFIG.throttle_delay = delay_ms / 1000
            self.reply(204)
        return True

    # ---- methods ----

    def do_OPTIONS(self):
        # A CORS preflight (the Range header is not "simple"); without --cors it carries no CORS header, so
        # the browser refuses the real request.
        self.reply(204, headers=[("Allow", "GET, HEAD, OPTIONS")])

    def do_POST(self):
        def run():
            path, query = self.split_path()
            if not self.hook("POST", path, query):
                self.reply(405 if resolve(path) else 404, "only GET and HEAD here", headers=[("Allow", "GET, HEAD")])
        self.guarded(run)

    def do_HEAD(self):
        self.guarded(self.serve)

    def do_GET(self):
        self.guarded(self.serve)

    def serve(self):
        path, query = self.split_path()
        if self.hook(self.command, path, query):
            return
        if self.command == "GET":
            with CONFIG.lock:
                CONFIG.counts[urllib.parse.unquote(path)] += 1
        file = resolve(path)
        if file is None:
            self.reply(404, "not found")
            return
        st = os.stat(file)
        size = st.st_size
        etag = f'"{size:x}-{st.st_mtime_ns:x}"'
        ctype = TYPES.get(os.path.splitext(file)[1]) or mimetypes.guess_type(file)[0] or "application/octet-stream"
        headers = [("ETag", etag), ("Accept-Ranges", "bytes"), ("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))]
        start, end, status = 0, size - 1, 200
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "").strip())
        if m:  # other Range forms (suffix, multiple ranges) are ignored, as RFC 9110 allows: the whole file
            start = int(m.group(1))
            end = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
            if start >= size or end < start:
                self.reply(416, "range not satisfiable", headers=[("Content-Range", f"bytes */{size}")])
                return
            status = 206
            headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
        self.send_response(status)
        self.common_headers()
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        if self.command == "HEAD":
            return
        throttled = CONFIG.throttle_pattern.search(urllib.parse.unquote(path))
        rate = CONFIG.throttle_rate if throttled else 0
        if throttled and CONFIG.throttle_delay:
            time.sleep(CONFIG.throttle_delay)
        step = max(1, min(1 << 20, rate // 20)) if rate else 1 << 20
        with open(file, "rb") as f:
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
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A browser that cancels a download closes the connection mid-body: not worth a traceback.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--mount", action="append", default=[], metavar="/PREFIX=DIR", help="also serve the model folder DIR at /PREFIX/")
    ap.add_argument("--cors", action="store_true", help="send Access-Control-Allow-Origin: * (pages of other origins may read the files)")
    ap.add_argument("--test-hooks", action="store_true", help="enable /__stats, /__stats/reset and /__throttle (end-to-end tests)")
    ap.add_argument("--throttle", type=int, default=0, metavar="BYTES_PER_S", help="send matching files at this rate per response")
    ap.add_argument("--delay-ms", type=float, default=0, metavar="MS", help="wait this long before each matching response")
    ap.add_argument("--throttle-pattern", default=r"\.safetensors$", help="regex on the path of the files to throttle")
    args = ap.parse_args(argv)
    for m in args.mount:
        prefix, sep, folder = m.partition("=")
        if not sep or not prefix.strip("/") or not os.path.isdir(folder):
            ap.error(f"--mount {m}: expected /PREFIX=DIR with an existing DIR")
        CONFIG.mount(prefix, folder)
    if args.throttle < 0 or args.delay_ms < 0:
        ap.error("--throttle and --delay-ms must be ≥ 0")
    CONFIG.cors = args.cors
    CONFIG.test_hooks = args.test_hooks
    CONFIG.throttle_rate = args.throttle
    CONFIG.throttle_delay = args.delay_ms / 1000
    CONFIG.throttle_pattern = re.compile(args.throttle_pattern)
    server = Server(("127.0.0.1", args.port), Handler)
    extras = [w for w, on in (("CORS", args.cors), ("test hooks", args.test_hooks)) if on]
    print(f"serving the app in {ROOT} (goldens and photos of {SHARED} at /shared/) on http://127.0.0.1:{args.port}/"
          + (f" with {', '.join(extras)}" if extras else ""), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
