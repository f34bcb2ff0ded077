#!/usr/bin/env python3
"""mock_hub.py — a local Hugging Face-compatible hub for `kiln pull` tests.

Serves the repositories found under --root as ROOT/OWNER/NAME/<files>
(symlinks are followed; hidden files are not listed) on 127.0.0.1, speaking
the subset of the hub API that kiln uses:

  GET /api/models/OWNER/NAME                 {"id", "siblings": [{"rfilename"}]}
  GET /api/models/OWNER/NAME/tree/main[/DIR] [{"type", "path", "size", "oid",
                                               "lfs": {"oid": sha256, "size"}}]
                                              (lfs only for *.gguf, as on the hub)
  GET /OWNER/NAME/resolve/main/PATH          302 to /_cdn/... for *.gguf (like
                                              the hub's LFS redirect), else bytes
  GET /_cdn/OWNER/NAME/PATH                  bytes, with single-range
                                              "Range: bytes=A-[B]" support (206)

An unknown repository or file is a 404 with {"error": ...}.

Test controls (JSON bodies):
  POST /_control {"cut_after": N}   the next file response closes the
                                    connection after N body bytes (once)
                 {"bad_sha": true}  tree listings give a wrong sha256
                 {"no_range": true} ignore Range headers (answer 200)
                 {"throttle_bps": N} file bodies at about N bytes/s
                                    (0: full speed), in 4 KiB writes
                 {"extra_siblings": [NAME...]} rfilenames added to every
                                    repository's info answer (hostile names)
  GET  /_log                        [{"method", "path", "range"}] of every
                                    request so far (controls excluded)

Prints "PORT <n>" on stdout once listening. Standard library only.
"""

import argparse
import hashlib
import json
import os
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class State:
    def __init__(self, root):
        self.root = os.path.realpath(root)
        self.lock = threading.Lock()
        self.log = []
        self.cut_after = None
        self.bad_sha = False
        self.no_range = False
        self.throttle_bps = 0
        self.extra_siblings = []
        self.sha_cache = {}

    def sha256(self, path):
        st = os.stat(path)
        key = (path, st.st_size, st.st_mtime_ns)
        with self.lock:
            if key in self.sha_cache:
                return self.sha_cache[key]
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        d = h.hexdigest()
        with self.lock:
            self.sha_cache[key] = d
        return d


def safe_join(root, *parts):
    """root/parts, or None when a part is empty, "." or ".." (symlinks inside
    root may point anywhere: the test links the shared models in)."""
    segs = "/".join(parts).split("/")
    if any(x in ("", ".", "..") for x in segs):
        return None
    return os.path.join(root, *segs)


class Handler(BaseHTTPRequestHandler):
    server_version = "mock-hub/1"
    protocol_version = "HTTP/1.0"

    def log_message(self, fmt, *args):
        pass

    @property
    def st(self):
        return self.server.state

    def send_json(self, code, obj, extra=None):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def not_found(self, what):
        self.send_json(404, {"error": what})

    def repo_dir(self, owner, name):
        if not owner or not name or owner.startswith(".") or name.startswith("."):
            return None
        d = safe_join(self.st.root, owner, name)
        return d if d and os.path.isdir(d) else None

    # ---------------------------------------------------------------- routes

    def do_POST(self):
        if self.path != "/_control":
            return self.not_found("no such route")
        n = int(self.headers.get("Content-Length") or 0)
        req = json.loads(self.rfile.read(n) or b"{}")
        with self.st.lock:
            if "cut_after" in req:
                self.st.cut_after = req["cut_after"]
            if "bad_sha" in req:
                self.st.bad_sha = bool(req["bad_sha"])
            if "no_range" in req:
                self.st.no_range = bool(req["no_range"])
            if "throttle_bps" in req:
                self.st.throttle_bps = int(req["throttle_bps"])
            if "extra_siblings" in req:
                self.st.extra_siblings = [str(x) for x in req["extra_siblings"]]
        self.send_json(200, {"ok": True})

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(url.path)
        if path == "/_log":
            with self.st.lock:
                return self.send_json(200, list(self.st.log))
        with self.st.lock:
            self.st.log.append({"method": self.command, "path": path, "range": self.headers.get("Range")})
        parts = path.split("/")
        if len(parts) >= 5 and parts[1] == "api" and parts[2] == "models":
            owner, name = parts[3], parts[4]
            d = self.repo_dir(owner, name)
            if d is None:
                return self.not_found("Repository not found")
            if len(parts) == 5:
                return self.api_info(owner, name, d)
            if len(parts) >= 7 and parts[5] == "tree" and parts[6] == "main":
                return self.api_tree(d, "/".join(parts[7:]))
            return self.not_found("no such route")
        if len(parts) >= 5 and parts[1] == "_cdn":
            return self.serve_file(parts[2], parts[3], "/".join(parts[4:]))
        if len(parts) >= 6 and parts[3] == "resolve" and parts[4] == "main":
            rel = "/".join(parts[5:])
            if rel.endswith(".gguf"):
                if self.repo_dir(parts[1], parts[2]) is None:
                    return self.not_found("Repository not found")
                loc = "/_cdn/%s/%s/%s" % (parts[1], parts[2], urllib.parse.quote(rel))
                self.send_response(302)
                self.send_header("Location", loc)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            return self.serve_file(parts[1], parts[2], rel)
        return self.not_found("no such route")

    def walk(self, d):
        out = []
        for base, dirs, files in os.walk(d, followlinks=True):
            dirs[:] = sorted(x for x in dirs if not x.startswith("."))
            for f in sorted(files):
                if not f.startswith("."):
                    out.append(os.path.relpath(os.path.join(base, f), d).replace(os.sep, "/"))
        return out

    def api_info(self, owner, name, d):
        with self.st.lock:
            extra = list(self.st.extra_siblings)
        self.send_json(200, {"id": owner + "/" + name, "modelId": owner + "/" + name,
                             "siblings": [{"rfilename": f} for f in extra + self.walk(d)]})

    def api_tree(self, d, sub):
        target = safe_join(d, sub) if sub else d
        if target is None or not os.path.isdir(target):
            return self.not_found("Entry not found")
        out = []
        for f in sorted(os.listdir(target)):
            if f.startswith("."):
                continue
            full = os.path.join(target, f)
            rel = (sub + "/" + f) if sub else f
            if os.path.isdir(full):
                out.append({"type": "directory", "oid": "0" * 40, "size": 0, "path": rel})
                continue
            size = os.path.getsize(full)
            e = {"type": "file", "oid": hashlib.sha1(rel.encode()).hexdigest(), "size": size, "path": rel}
            if f.endswith(".gguf"):
                sha = self.st.sha256(full)
                if self.st.bad_sha:
                    sha = ("0" if sha[0] != "0" else "1") + sha[1:]
                e["lfs"] = {"oid": sha, "size": size, "pointerSize": 134}
            out.append(e)
        self.send_json(200, out)

    def serve_file(self, owner, name, rel):
        d = self.repo_dir(owner, name)
        f = safe_join(d, rel) if d and rel else None
        if f is None or not os.path.isfile(f):
            return self.not_found("Entry not found")
        size = os.path.getsize(f)
        start, end, code = 0, size - 1, 200
        rng = self.headers.get("Range")
        with self.st.lock:
            no_range = self.st.no_range
            bps = self.st.throttle_bps
            cut = self.st.cut_after
            self.st.cut_after = None
        if rng and not no_range:
            try:
                unit, spec = rng.split("=", 1)
                a, b = spec.split("-", 1)
                assert unit.strip() == "bytes" and "," not in spec
                start = int(a)
                end = int(b) if b else size - 1
            except (ValueError, AssertionError):
                return self.send_json(400, {"error": "bad Range"})
            if start >= size or end < start:
                self.send_response(416)
                self.send_header("Content-Range", "bytes */%d" % size)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            end = min(end, size - 1)
            code = 206
        n = end - start + 1
        self.send_response(code)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(n))
        self.send_header("Accept-Ranges", "bytes")
        if code == 206:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, size))
        self.end_headers()
        with open(f, "rb") as fh:
            fh.seek(start)
            left = n if cut is None else min(n, cut)
            while left > 0:
                chunk = fh.read(min(left, 4096 if bps > 0 else 65536))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)
                if bps > 0:
                    self.wfile.flush()
                    time.sleep(len(chunk) / bps)
        self.wfile.flush()
        if cut is not None and cut < n:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args()
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    srv.daemon_threads = True
    srv.state = State(a.root)
    print("PORT %d" % srv.server_address[1], flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
