#!/usr/bin/env python3
"""test_reliability_clients.py — hostile and vanishing clients against the
real `kiln serve -m stories260K.gguf` (issue 11):

 1. idle connections: 500 connections that send nothing, half a request line
    or unfinished headers; meanwhile a chat completion and GET /health still
    answer promptly, and the server closes every idle one after
    --conn-timeout (3 s; each socket reads EOF or RST within timeout + slack);
 2. headers never finished ("POST ... HTTP/1.1\\r\\nHost: x\\r\\n" and nothing
    more): closed after --conn-timeout, not before;
 3. a body trickled at 1 byte / 0.25 s with --read-timeout 2: 408 (code
    request_timeout) or the connection closed within read-timeout + slack;
    a small body trickled fast enough to arrive in time gets its 200;
 4. KILN_ABORTS (default 1000) streaming requests aborted by ~8 concurrent
    clients over the four generation routes (OpenAI chat and completions
    SSE, Ollama generate and chat NDJSON): each closes right after sending
    (before the first token), after k random events (mid-stream) or after
    everything but the end (SSE: before data: [DONE]; NDJSON: after the
    done line, before the chunked terminator), with RST (SO_LINGER 0) or FIN.
    Afterwards, within a bounded wait: requests_running = requests_waiting
    = 0, every slots_busy = 0, KV blocks_used back to its starting count
    (blocks_cached may legitimately hold prefix blocks: they are referenced
    by no sequence, see kv.h), kiln_requests_running and
    kiln_requests_waiting (summed over models) 0; a normal request works;
 5. a client that never reads (--send-timeout 2, a small SO_RCVBUF set before
    connect, a long stream with large logprob chunks): the server cancels the
    sequence (log: "read nothing", running back to 0) and closes the
    connection; a normal request meanwhile completes.
Finally SIGTERM: exit 0 and no sanitizer report (leaks show at exit under
ASan/LSan). Counts and durations are printed for docs/reliability.md.

Environment: KILN_ABORTS (default 1000), KILN_ABORT_WORKERS (default 8),
KILN_IDLE_CONNS (default 500)."""

import json
import os
import random
import re
import resource
import select
import socket
import struct
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kiln_server as ks  # noqa: E402

ks.need_env()
ck = ks.Checks()
MODEL = "stories260K"
MFILE = ks.model_path(MODEL)
CONN_TIMEOUT = 3
READ_TIMEOUT = 2
SEND_TIMEOUT = 2
SLACK = 12.0  # seconds on top of a timeout (the sanitizer builds on a loaded 2-core machine)
N_ABORTS = int(os.environ.get("KILN_ABORTS", "1000"))
N_WORKERS = int(os.environ.get("KILN_ABORT_WORKERS", "8"))
N_IDLE = int(os.environ.get("KILN_IDLE_CONNS", "500"))
GEN_ROUTES = ["/v1/chat/completions", "/v1/completions", "/api/generate", "/api/chat"]
MSGS = [{"role": "user", "content": "Tell me a story about a cat."}]


def serve_help():
    try:
        return ks.run_kiln(["serve", "--help"]).decode("utf-8", "replace")
    except RuntimeError as e:  # some commands print their help and exit nonzero
        return str(e)


def raise_fd_limit(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def gen_body(route, n, stream=True, extra=None):
    if route == "/v1/chat/completions":
        b = {"model": MODEL, "messages": MSGS, "max_tokens": n, "ignore_eos": True, "temperature": 0.8,
             "stream": stream}
    elif route == "/v1/completions":
        b = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": n, "ignore_eos": True, "temperature": 0.8,
             "stream": stream}
    elif route == "/api/generate":
        b = {"model": MODEL, "prompt": "Once upon a time", "stream": stream,
             "options": {"num_predict": n, "ignore_eos": True, "temperature": 0.8}}
    else:
        b = {"model": MODEL, "messages": MSGS, "stream": stream,
             "options": {"num_predict": n, "ignore_eos": True, "temperature": 0.8}}
    if extra:
        b.update(extra)
    return b


def http_request(path, body, method="POST"):
    data = json.dumps(body).encode() if body is not None else b""
    head = "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" % (method, path)
    if body is not None:
        head += "Content-Type: application/json\r\nContent-Length: %d\r\n" % len(data)
    return head.encode() + b"\r\n" + data


def close_rst(s):
    """Closes with an RST (SO_LINGER on, timeout 0)."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    s.close()


def closed_by_peer(s):
    """True when s is readable and reads EOF or RST (data is drained)."""
    try:
        while True:
            b = s.recv(65536, socket.MSG_DONTWAIT)
            if not b:
                return True
    except BlockingIOError:
        return False
    except (ConnectionResetError, OSError):
        return True


class RawStream:
    """A raw-socket HTTP/1.1 client for one streamed answer: the head, then
    the chunked body decoded incrementally into SSE events or NDJSON lines."""

    def __init__(self, port, path, body, rcvbuf=None, timeout=120):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.s.settimeout(timeout)
        self.s.connect(("127.0.0.1", port))
        self.s.sendall(http_request(path, body))
        self.raw = b""      # undecoded bytes
        self.data = b""     # decoded body bytes not yet consumed
        self.status = None
        self.headers = {}
        self.chunked = False
        self.body_done = False  # saw the zero-size chunk
        self.eof = False

    def _recv(self):
        b = self.s.recv(65536)
        if not b:
            self.eof = True
            return False
        self.raw += b
        return True

    def read_head(self):
        while b"\r\n\r\n" not in self.raw:
            if not self._recv():
                raise ks.ServerError("closed before the answer head")
        head, self.raw = self.raw.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        for ln in lines[1:]:
            k, v = ln.split(":", 1)
            self.headers[k.strip().lower()] = v.strip()
        self.chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
        return self.status

    def _decode(self):
        """Moves whole chunks from raw to data; True if progress was made."""
        if not self.chunked:
            self.data += self.raw
            self.raw = b""
            return True
        moved = False
        while not self.body_done:
            i = self.raw.find(b"\r\n")
            if i < 0:
                return moved
            size = int(self.raw[:i].split(b";")[0], 16)
            if size == 0:
                self.body_done = True
                self.raw = self.raw[i + 2:]
                return True
            if len(self.raw) < i + 2 + size + 2:
                return moved
            self.data += self.raw[i + 2:i + 2 + size]
            self.raw = self.raw[i + 2 + size + 2:]
            moved = True
        return moved

    def next_unit(self, sep):
        """The next SSE event (sep b"\\n\\n") or NDJSON line (b"\\n"), or None at the end."""
        while True:
            self._decode()
            i = self.data.find(sep)
            if i >= 0:
                u, self.data = self.data[:i], self.data[i + len(sep):]
                return u
            if self.body_done or self.eof:
                return None
            if not self._recv():
                self._decode()
                if sep not in self.data:
                    return None

    def close(self, rst=False):
        if rst:
            close_rst(self.s)
        else:
            self.s.close()


# ---------------------------------------------------------------- 1 + 2: idle connections

def test_idle_connections(srv):
    lim = raise_fd_limit(N_IDLE + 256)
    n = min(N_IDLE, lim - 64)
    ck.check("RLIMIT_NOFILE allows %d idle connections (soft limit %d)" % (N_IDLE, lim), n == N_IDLE, lim)
    socks, kinds = [], {"silent": 0, "half_request_line": 0, "unfinished_headers": 0}
    t_open = time.time()
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
        if i % 10 == 8:
            s.sendall(b"POST /v1/chat/compl")
            kinds["half_request_line"] += 1
        elif i % 10 == 9:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n")
            kinds["unfinished_headers"] += 1
        else:
            kinds["silent"] += 1
        socks.append(s)
    t_opened = time.time()
    print("   opened %d idle connections in %.2f s (%s)" % (n, t_opened - t_open, kinds))
    # the others are still served
    t = time.time()
    r = srv.post("/v1/chat/completions", {"model": MODEL, "messages": MSGS, "max_tokens": 8, "temperature": 0},
                 timeout=60)
    dt_chat = time.time() - t
    ck.eq("chat completion with %d idle connections open: 200" % n, r.status, 200)
    ck.check("  ... within 30 s (%.2f s)" % dt_chat, dt_chat < 30, dt_chat)
    t = time.time()
    st, _ = srv.health()
    dt_health = time.time() - t
    ck.eq("GET /health with the idle connections open: 200", st, 200)
    ck.check("  ... within 30 s (%.2f s)" % dt_health, dt_health < 30, dt_health)
    # the server closes them after --conn-timeout
    open_ = {s.fileno(): s for s in socks}
    closed_at = []
    deadline = t_opened + CONN_TIMEOUT + SLACK
    early = 0
    while open_ and time.time() < deadline:
        r_, _, _ = select.select(list(open_.values())[:1000], [], [], 0.2)
        for s in r_:
            if closed_by_peer(s):
                dt = time.time() - t_open
                closed_at.append(dt)
                if time.time() - t_opened < CONN_TIMEOUT - 1.0 and dt < CONN_TIMEOUT - 1.0:
                    early += 1
                del open_[s.fileno()]
                s.close()
    left = len(open_)
    for s in open_.values():
        s.close()
    ck.eq("every idle connection closed by the server within conn-timeout %d s + %.0f s" % (CONN_TIMEOUT, SLACK),
          left, 0)
    ck.eq("no idle connection closed before conn-timeout - 1 s", early, 0)
    if closed_at:
        print("   idle connections closed after %.2f .. %.2f s (conn-timeout %d s)"
              % (min(closed_at), max(closed_at), CONN_TIMEOUT))
    ok, last, _ = srv.wait_idle(timeout=10)
    ck.check("server idle after the idle connections", ok, last)


def read_until_closed(sock, timeout, bufsize=4096):
    """Reads until the peer closes (EOF or RST) or timeout seconds pass
    without data. Returns (bytes read, whether the peer closed)."""
    sock.settimeout(timeout)
    got = bytearray()
    try:
        while True:
            b = sock.recv(bufsize)
            if not b:
                return bytes(got), True
            got += b
    except ConnectionResetError:
        return bytes(got), True
    except socket.timeout:
        return bytes(got), False


def test_headers_never_finished(srv):
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
    t0 = time.time()
    got, closed = read_until_closed(s, CONN_TIMEOUT + SLACK)
    dt = time.time() - t0
    s.close()
    ck.check("unfinished headers: the server closes the connection (%.2f s)" % dt, closed, got[:200])
    ck.check("unfinished headers: closed after conn-timeout (%d s), not before (%.2f s)" % (CONN_TIMEOUT, dt),
             CONN_TIMEOUT - 0.5 <= dt <= CONN_TIMEOUT + SLACK, dt)
    ck.check("unfinished headers: no answer or a 4xx", not got or got.startswith(b"HTTP/1.1 4"), got[:200])


# ---------------------------------------------------------------- 3: trickled body

def trickle(srv, path, body, gap):
    """Sends the headers, then the body one byte per `gap` s while watching
    for an answer. Returns (status or None, body bytes, seconds since the
    headers, closed, bytes of the body sent)."""
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    head = ("POST %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
            "Content-Length: %d\r\n\r\n" % (path, len(body))).encode()
    s.sendall(head)
    t0 = time.time()
    sent = 0
    got = b""
    closed = False
    deadline = t0 + READ_TIMEOUT + SLACK + len(body) * gap
    try:
        while time.time() < deadline:
            if sent < len(body):
                try:
                    s.sendall(body[sent:sent + 1])
                    sent += 1
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
            r, _, _ = select.select([s], [], [], gap)
            if r:
                try:
                    b = s.recv(65536)
                except ConnectionResetError:
                    b = b""
                if not b:
                    closed = True
                    break
                got += b
                if b"\r\n\r\n" in got:
                    hd, rest = got.split(b"\r\n\r\n", 1)
                    cl = [ln.split(b":", 1)[1].strip() for ln in hd.split(b"\r\n") if ln.lower().startswith(b"content-length:")]
                    if cl and len(rest) >= int(cl[0]):
                        break
            if closed:
                break
    finally:
        dt = time.time() - t0
        s.close()
    status = None
    payload = b""
    if got.startswith(b"HTTP/1."):
        status = int(got.split(b" ", 2)[1])
        payload = got.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in got else b""
    return status, payload, dt, closed, sent


def test_trickled_body(srv, have_read_timeout):
    if not ck.check("kiln serve has --read-timeout", have_read_timeout, "flag missing from `kiln serve --help`"):
        return
    body = json.dumps({"model": MODEL, "messages": MSGS, "max_tokens": 4, "temperature": 0,
                       "padding": "x" * 150}).encode()
    st, payload, dt, closed, sent = trickle(srv, "/v1/chat/completions", body, 0.25)
    print("   slow body: status %s, closed %s, %.2f s after the headers, %d of %d bytes sent"
          % (st, closed, dt, sent, len(body)))
    if st is not None:
        ck.eq("slow body: 408", st, 408)
        try:
            err = json.loads(payload.decode()).get("error") or {}
        except ValueError:
            err = {}
        ck.eq("slow body: error code request_timeout", err.get("code") if isinstance(err, dict) else None,
              "request_timeout")
    else:
        ck.check("slow body: 408 or the connection closed", closed, payload[:200])
    ck.check("slow body: answered/closed within read-timeout %d s + %.0f s (%.2f s)" % (READ_TIMEOUT, SLACK, dt),
             dt <= READ_TIMEOUT + SLACK, dt)
    ck.check("slow body: not cut before read-timeout - 0.5 s (%.2f s)" % dt, dt >= READ_TIMEOUT - 0.5, dt)
    ck.check("slow body: the body was not complete", sent < len(body), sent)
    # a small body trickled fast enough
    small = json.dumps({"content": "Once upon a time"}).encode()
    gap = min(0.05, (READ_TIMEOUT * 0.3) / len(small))
    st, payload, dt, closed, sent = trickle(srv, "/tokenize", small, gap)
    ck.eq("trickled small body within the read timeout (%d bytes in %.2f s): 200" % (len(small), dt), st, 200)
    try:
        toks = json.loads(payload.decode()).get("tokens")
    except ValueError:
        toks = None
    ck.check("trickled small body: tokens answered", isinstance(toks, list) and toks, payload[:200])


# ---------------------------------------------------------------- 4: aborted streams

def kv_used(h):
    return sum((m.get("kv") or {}).get("blocks_used", 0) for m in h.get("models", []))


def one_abort(port, rng, route, kind, rst, n_short, n_long, stats):
    """One stream aborted as `kind` says: long streams for the aborts before
    the first token and mid-stream (so that generation is still running when
    the client leaves), short ones for the aborts at the end."""
    n_tokens = n_short if kind == "end" else n_long
    body = gen_body(route, n_tokens)
    sse = route.startswith("/v1/")
    st = RawStream(port, route, body, timeout=120)
    units = 0
    try:
        if kind == "before":
            if rng.random() < 0.5:
                time.sleep(rng.random() * 0.02)
            return "ok"
        status = st.read_head()
        if status != 200:
            return "status %d" % status
        sep = b"\n\n" if sse else b"\n"
        if kind == "mid":
            # several tokens may share an event (incomplete UTF-8 is held back): aim inside the first half
            k = rng.randint(1, max(1, min(24, n_tokens // 2)))
            while units < k:
                u = st.next_unit(sep)
                if u is None:
                    return "short"  # the stream ended first: aborted after its end (counted, not a failure)
                units += 1
            return "ok"
        # "end": everything but the end
        while True:
            u = st.next_unit(sep)
            if u is None:
                return "stream ended before its final event (%d units)" % units
            units += 1
            if sse:
                if u.startswith(b"data: ") and u != b"data: [DONE]":
                    ch = json.loads(u[6:])
                    if any(c.get("finish_reason") for c in ch.get("choices", [])):
                        return "ok"  # the next event would be data: [DONE]
                elif u == b"data: [DONE]":
                    return "[DONE] before a finish_reason"
            else:
                if json.loads(u).get("done") is True:
                    return "ok"  # the chunked terminator is not read
    except (OSError, ValueError, ks.ServerError) as e:
        return "error %r" % e
    finally:
        st.close(rst=rst)
        with stats["lock"]:
            stats["units"] += units


def test_aborts(srv):
    log0 = len(srv.log())
    m0 = ks.metrics_of(srv)
    st0, h0 = srv.health()
    ck.eq("/health before the aborts", st0, 200)
    used0 = kv_used(h0)
    print("   before: %s" % json.dumps([{k: m.get(k) for k in ("slots_total", "slots_busy", "running", "waiting", "kv")}
                                       for m in h0.get("models", [])]))
    # a token budget that keeps the whole run near a minute in the sanitizer builds
    rate = ks.token_rate(srv, MODEL, n=64)
    n_short = max(16, min(64, int(rate * 0.05)))
    n_long = max(128, min(1500, int(rate * 0.5)))
    print("   %.0f tokens/s alone; streams of %d tokens (aborted at the end) and %d (before the first token and "
          "mid-stream), %d aborts, %d workers" % (rate, n_short, n_long, N_ABORTS, N_WORKERS))
    stats = {"lock": threading.Lock(), "units": 0, "counts": {}, "problems": []}
    nxt = [0]
    master = random.Random(int(os.environ.get("KILN_ABORT_SEED", "11")))
    plan = [(master.choice(GEN_ROUTES), master.choice(["before", "mid", "end"]), master.random() < 0.5,
             master.randrange(1 << 30)) for _ in range(N_ABORTS)]

    def worker():
        while True:
            with stats["lock"]:
                if nxt[0] >= len(plan):
                    return
                i = nxt[0]
                nxt[0] += 1
            route, kind, rst, seed = plan[i]
            res = one_abort(srv.port, random.Random(seed), route, kind, rst, n_short, n_long, stats)
            key = (kind, "rst" if rst else "fin", route)
            with stats["lock"]:
                stats["counts"][key] = stats["counts"].get(key, 0) + 1
                if res == "short":
                    stats["short"] = stats.get("short", 0) + 1
                elif res != "ok":
                    stats["problems"].append((i, key, res))

    t0 = time.time()
    ths = [threading.Thread(target=worker, daemon=True) for _ in range(N_WORKERS)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(600)
    dt = time.time() - t0
    ck.check("all abort workers finished", not any(t.is_alive() for t in ths), "hung")
    by_kind, by_close, by_route = {}, {}, {}
    for (kind, close, route), c in stats["counts"].items():
        by_kind[kind] = by_kind.get(kind, 0) + c
        by_close[close] = by_close.get(close, 0) + c
        by_route[route] = by_route.get(route, 0) + c
    total = sum(stats["counts"].values())
    print("   %d aborts in %.1f s: %s; %s; %s; %d events/lines read; %d mid-stream aborts found the stream "
          "already ended" % (total, dt, by_kind, by_close, by_route, stats["units"], stats.get("short", 0)))
    gone = srv.log()[log0:].count("went away")
    print("   the server logged %d requests cancelled because the client went away" % gone)
    ck.eq("aborts done", total, N_ABORTS)
    ck.check("every aborted stream answered 200 and streamed as expected up to its abort point",
             not stats["problems"], stats["problems"][:10])
    # back to the starting state
    t1 = time.time()
    last = None
    settled = False
    while time.time() - t1 < 60:
        st, h = srv.health()
        last = h
        if st == 200 and h.get("requests_running") == 0 and h.get("requests_waiting") == 0 and \
                all(m.get("slots_busy") == 0 and m.get("running") == 0 and m.get("waiting") == 0
                    for m in h.get("models", [])) and kv_used(h) == used0:
            settled = True
            break
        time.sleep(0.1)
    print("   after (%.1f s): %s" % (time.time() - t1, json.dumps([{k: m.get(k) for k in (
        "slots_total", "slots_busy", "running", "waiting", "kv")} for m in (last or {}).get("models", [])])))
    ck.check("after the aborts: running 0, waiting 0, every slot free, kv blocks_used back to %d (within 60 s)"
             % used0, settled, last)
    m = ks.metrics_of(srv)
    gen = m.get("kiln_generated_tokens_total", 0) - m0.get("kiln_generated_tokens_total", 0)
    full = sum(n_short if k == "end" else n_long for _, k, _, _ in plan)
    closed = ks.metric_sum(srv, "kiln_requests_total", status="499")
    print("   tokens generated during the aborts: %d of %d had every stream run to its end (%.1f%%); "
          "kiln_requests_total{status=\"499\"} (answer cut by the client) %d"
          % (gen, full, 100.0 * gen / max(full, 1), closed))
    ck.check("the aborted streams were cut short (generated tokens < half of the full streams)", gen < full / 2,
             (gen, full))
    ck.eq("kiln_requests_running (sum over models) 0", m.get("kiln_requests_running", -1), 0.0)
    ck.eq("kiln_requests_waiting (sum over models) 0", m.get("kiln_requests_waiting", -1), 0.0)
    print("   kiln_kv_blocks_used %s, kiln_kv_blocks_cached %s" % (m.get("kiln_kv_blocks_used"),
                                                                 m.get("kiln_kv_blocks_cached")))
    res = srv.sse("/v1/chat/completions", gen_body("/v1/chat/completions", 8, extra={"temperature": 0}))
    ks.check_sse(ck, "a normal stream after the aborts", res, chat=True, want_finish="length")
    r = srv.post("/api/generate", gen_body("/api/generate", 8, stream=False))
    ck.eq("a normal /api/generate after the aborts", r.status, 200)


# ---------------------------------------------------------------- 5: a client that never reads

def test_never_reads(srv):
    log0 = len(srv.log())
    # big chunks: each token carries its top logprobs, so the socket buffers fill long before the end
    body = gen_body("/v1/chat/completions", 100000, extra={"logprobs": True, "top_logprobs": 20,
                                                             "temperature": 1.0})  # ~1 KiB per token
    body.pop("max_tokens")
    rs = RawStream(srv.port, "/v1/chat/completions", body, rcvbuf=4096, timeout=120)
    t0 = time.time()
    started = False
    while time.time() - t0 < 30 and not started:
        st, h = srv.health()
        started = st == 200 and h.get("requests_running", 0) >= 1
        time.sleep(0.05)
    ck.check("never-reading client: its stream is running", started, h)
    # meanwhile a normal request completes
    r = srv.post("/v1/completions", {"model": MODEL, "prompt": "Once", "max_tokens": 8, "temperature": 0},
                 timeout=60)
    ck.eq("a normal request while a client reads nothing: 200", r.status, 200)
    # the server cancels the stream: running back to 0, and the log says so
    t_cancel = None
    while time.time() - t0 < SEND_TIMEOUT + 60:
        st, h = srv.health()
        if st == 200 and h.get("requests_running") == 0:
            t_cancel = time.time() - t0
            break
        time.sleep(0.2)
    ck.check("never-reading client: its sequence stops (requests_running back to 0)", t_cancel is not None, h)
    if t_cancel is not None:
        print("   never-reading client: running back to 0 %.1f s after its request (send-timeout %d s)"
              % (t_cancel, SEND_TIMEOUT))
        ck.check("never-reading client: stopped within send-timeout + %.0f s" % SLACK,
                 t_cancel <= SEND_TIMEOUT + SLACK + 0.5, t_cancel)
    t1 = time.time()
    while "read nothing" not in srv.log()[log0:] and time.time() - t1 < 5:
        time.sleep(0.1)
    ck.check("never-reading client: the log says 'read nothing'", "read nothing" in srv.log()[log0:],
             srv.log()[log0:][-1500:] or "(nothing logged)")
    # the connection is closed by the server: reading now drains what was buffered, then EOF/RST
    rs.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    got, closed = read_until_closed(rs.s, SLACK, 1 << 20)
    rs.close()
    n = len(got)
    ck.check("never-reading client: the server closed the connection (%d buffered bytes read)" % n, closed, n)
    # cut off, or ended as cancelled: never a stream that claims to be complete
    fins = re.findall(rb'"finish_reason":"([a-z_]+)"', bytes(got))
    print("   never-reading client: %d bytes were buffered; finish_reason %s; [DONE] %s"
          % (n, [f.decode() for f in fins], b"data: [DONE]" in got))
    ck.check("never-reading client: the stream does not end as complete (finish_reason stop/length)",
             not any(f in (b"stop", b"length") for f in fins), fins)
    ok, last, _ = srv.wait_idle(timeout=20)
    ck.check("idle after the never-reading client", ok, last)


def main():
    hlp = serve_help()
    have_read = "--read-timeout" in hlp
    have_send = "--send-timeout" in hlp
    servers = []
    # tests 1-4: short idle and read timeouts
    args = ["-m", MFILE, "--conn-timeout", str(CONN_TIMEOUT), "--conn-limit", str(N_IDLE + 200)]
    if have_read:
        args += ["--read-timeout", str(READ_TIMEOUT)]
    try:
        srv = ks.Server(args)
        servers.append(srv)
        for fn, a in ((test_idle_connections, ()), (test_headers_never_finished, ()),
                      (test_trickled_body, (have_read,)), (test_aborts, ())):
            ck.run(fn, srv, *a)
            if srv.proc.poll() is not None:
                ck.fail("server alive after " + fn.__name__, "exited with %s" % srv.proc.returncode)
                break
        rc = srv.stop(timeout=60)
        ck.exited_clean("SIGTERM after the idle, slow and aborting clients", srv, rc)
        # test 5: a context long enough that a stream outgrows every socket buffer (4 MiB at most here)
        if ck.check("kiln serve has --send-timeout", have_send, "flag missing from `kiln serve --help`"):
            srv2 = ks.Server(["-m", MFILE, "-c", "8192", "-np", "2", "--send-timeout", str(SEND_TIMEOUT)])
            servers.append(srv2)
            ck.run(test_never_reads, srv2)
            rc = srv2.stop(timeout=60)
            ck.exited_clean("SIGTERM after the never-reading client", srv2, rc)
    finally:
        for s in servers:
            s.kill()
    ck.finish(servers)


if __name__ == "__main__":
    main()
