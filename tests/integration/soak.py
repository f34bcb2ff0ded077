#!/usr/bin/env python3
"""soak.py — a mixed-traffic soak of the real `kiln serve` (issue 11).

Starts the server itself (kiln_server.Server, $KILN_BIN) over a temporary
models directory of symlinks to the shared models in $KILN_SHARED:

  storya-F32.gguf  -> stories260K          (generation, model A)
  storyb-Q8_0.gguf -> stories260K-Q8_0     (generation, model B)
  bert-Q8_0.gguf   -> tiny-bert-mean-Q8_0  (embeddings)

with --unload-timeout TTL (2 s) and --cleanup-interval 1, so that models
load and unload over and over, the response and embedding caches on (in
RAM and in a temporary --cache-dir) and a small -np.

Worker threads (--workers, each with its own seeded random stream) send:
  - OpenAI /v1/chat/completions and /v1/completions, Ollama /api/generate
    and /api/chat, each streamed or not;
  - OpenAI /v1/embeddings and Ollama /api/embed;
  - GET /health, /api/ps, /metrics, /v1/models, /api/tags (racing the
    loads and unloads); a few Ollama requests with keep_alive 0;
  - "repeat" requests: a fixed set of prompts at temperature 0; once an
    identical request has completed, a repeat must answer X-Cache: hit
    with the same text;
  - "fresh" requests: temperature 0 with a new prompt and
    `Cache-Control: no-store` (the model computes; the cache stays small);
  - "sampled" requests: temperature 0.8, no seed (never a hit);
  - client aborts: a stream closed before its first event, mid-stream or
    near its end, and non-streamed requests closed before the answer.
A controller thread cycles through phases: mixed traffic; a pause longer
than TTL + cleanup interval (every model unloads); and "only A" / "only B"
phases in which the other models unload while traffic goes on.

Pass conditions (each a check; the exit status is 1 on any failure):
zero sanitizer reports in the server log; no 5xx except 503 (counted), no
other unexpected status; every request ends within --bound seconds (no
stuck request); at the end /health shows requests_running 0 and
requests_waiting 0; kiln_model_loads_total and kiln_model_unloads_total
both above 1; cache hits happened (client X-Cache and kiln_cache_hits_total);
every pause longer than TTL + cleanup ends with /api/ps empty; SIGTERM
gives exit status 0.

--rss (the long run, Release build): VmRSS of the server is sampled from
/proc/PID/status every --rss-interval seconds; the run fails when the RSS
at the end exceeds the RSS at --rss-base seconds (default 300: minute 5) by
more than 5%. Both values come from the least-squares line through every
sample from --rss-base to the end: with models loading and unloading every
few seconds (and their memory given back), single samples swing between
about 38 and 80 MB, so one sample, or the peak of a window, says more
about which models happened to be loaded than about growth. The window
peaks (--rss-window) and the single samples are printed too.

The last line is the summary: requests by kind, statuses, aborts,
loads/unloads, cache hits and RSS figures.

Usage: soak.py [--seconds 60] [--seed 1] [--workers 3] [--rss]
Standard library only.
"""

import argparse
import http.client
import json
import os
import random
import re
import shutil
import socket
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kiln_server as ks  # noqa: E402

LAYOUT = {
    "storya-F32.gguf": "stories260K",
    "storyb-Q8_0.gguf": "stories260K-Q8_0",
    "bert-Q8_0.gguf": "tiny-bert-mean-Q8_0",
}
GEN_MODELS = ("storya:F32", "storyb:Q8_0")
EMB_MODEL = "bert:Q8_0"

WORDS = ("the little cat dog bird tree house river sun moon girl boy lily tim ball red blue happy sad "
         "ran jumped played saw found big small garden park toy friend mom dad day night").split()

REPEAT_PROMPTS = [
    "Once upon a time",
    "One day, a little girl named Lily",
    "The cat sat on the",
    "Tim and his dog went to the park",
    "There was a big red ball",
    "The sun was shining and",
    "Mom said, \"Let's go",
    "A bird flew over the river",
    "The boy found a small box",
    "In the garden there was a tree",
]
EMBED_POOL = [
    "a cat sits on the mat", "the weather is nice today", "kiln serves language models",
    "embeddings map text to vectors", "a dog plays in the park", "the river flows to the sea",
    "hello world", "one two three four", "the quick brown fox", "sleep is good for you",
    "bread and butter", "a red ball rolls away",
]

GEN_KINDS = ("oai_chat", "oai_completion", "ollama_generate", "ollama_chat")
EMB_KINDS = ("oai_embed", "ollama_embed")
KIND_WEIGHTS = {"oai_chat": 3, "oai_completion": 3, "ollama_generate": 2, "ollama_chat": 2,
                "oai_embed": 2, "ollama_embed": 1, "monitor": 1}
MONITOR_PATHS = ("/health", "/api/ps", "/metrics", "/v1/models", "/api/tags")
PATHS = {"oai_chat": "/v1/chat/completions", "oai_completion": "/v1/completions",
         "ollama_generate": "/api/generate", "ollama_chat": "/api/chat",
         "oai_embed": "/v1/embeddings", "ollama_embed": "/api/embed"}


def random_text(rng, lo, hi):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


class Stats:
    """Everything the workers count, under one lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.by_kind = {}       # "oai_chat/stream" -> n
        self.statuses = {}      # status (int or "error") -> n
        self.aborts = {"before_first": 0, "mid": 0, "near_end": 0, "nonstream": 0}
        self.unexpected = []    # (what, detail)
        self.stuck = []         # (what, seconds)
        self.xcache = {}        # hit/miss/bypass/None -> n
        self.hits_expected = 0
        self.hits_missing = []  # (what, X-Cache) for repeats that should have hit
        self.hit_text_diff = []
        self.sampled_hits = 0
        self.max_seconds = 0.0
        self.done_repeats = {}  # key -> text of the first completed answer
        self.in_flight = 0
        self.total = 0

    def add(self, d, k, n=1):
        d[k] = d.get(k, 0) + n


class Soak:
    def __init__(self, srv, args, ck):
        self.srv = srv
        self.args = args
        self.ck = ck
        self.st = Stats()
        self.end_at = time.time() + args.seconds
        self.cv = threading.Condition()
        self.paused = False
        self.only = None        # None, or the one generation model in use ("only A/B" phases)
        self.phases = {"mixed": 0, "pause": 0, "only": 0}
        self.ps_after_pause = []  # /api/ps names seen at the end of each pause

    # ------------------------------------------------------------ pacing

    def _enter(self):
        """Waits while paused; returns False once the run is over."""
        with self.cv:
            while self.paused and time.time() < self.end_at:
                self.cv.wait(0.2)
            if time.time() >= self.end_at:
                return False
            self.st.in_flight += 1
            return True

    def _leave(self):
        with self.cv:
            self.st.in_flight -= 1
            self.cv.notify_all()

    def controller(self, rng):
        idle = self.args.ttl + self.args.cleanup + 1.5
        while time.time() < self.end_at:
            self._sleep(rng.uniform(4.0, 9.0))
            self.phases["mixed"] += 1
            if self.end_at - time.time() < idle + 1.0:
                return  # no time left for a whole pause or "only" phase
            if rng.random() < 0.5:
                with self.cv:
                    self.paused = True
                    while self.st.in_flight > 0:
                        self.cv.wait(0.2)
                self.phases["pause"] += 1
                self._sleep(idle)
                try:
                    self.ps_after_pause.append(sorted(m["name"] for m in
                                                      self.srv.get("/api/ps", timeout=30).json()["models"]))
                except (OSError, ValueError, KeyError) as e:
                    self.ps_after_pause.append(repr(e))
                with self.cv:
                    self.paused = False
                    self.cv.notify_all()
            else:
                self.only = rng.choice(GEN_MODELS)
                self.phases["only"] += 1
                self._sleep(idle)
                self.only = None

    def _sleep(self, s):
        time.sleep(max(0.0, min(s, self.end_at - time.time())))

    # ------------------------------------------------------------ requests

    def worker(self, idx):
        rng = random.Random(self.args.seed * 1000 + idx)
        kinds = list(KIND_WEIGHTS)
        weights = [KIND_WEIGHTS[k] for k in kinds]
        while self._enter():
            try:
                kind = rng.choices(kinds, weights)[0]
                if self.only is not None and kind in EMB_KINDS:
                    kind = rng.choice(GEN_KINDS)
                if kind == "monitor":
                    self.monitor(rng)
                elif kind in EMB_KINDS:
                    self.embed(rng, kind)
                else:
                    self.generate(rng, kind)
            finally:
                self._leave()

    def _record(self, what, status, seconds, xc=None):
        st = self.st
        with st.lock:
            st.total += 1
            st.add(st.by_kind, what)
            st.add(st.statuses, status)
            st.max_seconds = max(st.max_seconds, seconds)
            if not what.startswith("GET ") and (xc is not None or status == 200):
                st.add(st.xcache, xc)
            if isinstance(status, int) and status not in (200, 503):
                st.unexpected.append((what, status))

    def _stuck(self, what, t0):
        """A request that got no answer within --bound seconds."""
        secs = time.time() - t0
        with self.st.lock:
            self.st.stuck.append((what, round(secs, 1)))
        self._record(what, "timeout", secs)

    def _fail(self, what, detail):
        with self.st.lock:
            self.st.unexpected.append((what, ks._short(detail, 600)))

    def generate(self, rng, kind):
        st = self.st
        model = self.only or rng.choice(GEN_MODELS)
        r = rng.random()
        mode = "repeat" if r < 0.5 else ("fresh" if r < 0.65 else "sampled")
        stream = rng.random() < 0.5
        headers = {}
        if mode == "repeat":
            i = rng.randrange(len(REPEAT_PROMPTS))
            prompt = REPEAT_PROMPTS[i]
            max_tokens = 12 + 6 * (i % 4)
        else:
            prompt = random_text(rng, 3, 12)
            max_tokens = rng.randint(8, 40)
            if mode == "fresh":
                headers["Cache-Control"] = "no-store"
        temp = 0.0 if mode != "sampled" else 0.8
        abort = None
        if stream and rng.random() < 0.2:
            abort = rng.choice(("before_first", "mid", "near_end"))
        elif not stream and rng.random() < 0.05:
            abort = "nonstream"
        if kind in ("oai_chat", "ollama_chat"):
            msgs = [{"role": "user", "content": prompt}]
            if rng.random() < 0.3:
                msgs.insert(0, {"role": "system", "content": "You tell short stories."})
                if mode == "repeat":
                    msgs = msgs[1:]  # repeats keep one rendering per prompt
        if kind == "oai_chat":
            body = {"model": model, "messages": msgs, "max_tokens": max_tokens, "temperature": temp, "stream": stream}
        elif kind == "oai_completion":
            body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": temp, "stream": stream}
        elif kind == "ollama_generate":
            body = {"model": model, "prompt": prompt, "stream": stream,
                    "options": {"num_predict": max_tokens, "temperature": temp}}
            if rng.random() < 0.05:
                body["keep_alive"] = 0  # unload as soon as idle, while the other workers may use it
        else:
            body = {"model": model, "messages": msgs, "stream": stream,
                    "options": {"num_predict": max_tokens, "temperature": temp}}
        key = (kind, model, prompt, max_tokens) if mode == "repeat" else None
        what = "%s/%s" % (kind, "stream" if stream else "json")
        with st.lock:
            expect_hit = key is not None and key in st.done_repeats and abort is None
        t0 = time.time()
        try:
            if stream:
                status, xc, text, complete = self._stream(kind, body, headers, rng, abort, max_tokens)
            else:
                status, xc, text, complete = self._json(kind, body, headers, rng, abort)
        except socket.timeout:
            self._stuck(what, t0)
            return
        except (OSError, http.client.HTTPException, ValueError) as e:
            secs = time.time() - t0
            self._record(what, "error", secs)
            self._fail(what, "%s: %r" % (type(e).__name__, e))
            return
        secs = time.time() - t0
        if secs > self.args.bound:
            with st.lock:
                st.stuck.append((what, round(secs, 1)))
        if abort is not None and status in (200, "aborted"):  # a 503 answer was not aborted
            with st.lock:
                st.aborts[abort] += 1
        self._record(what + ("/abort" if abort else ""), status, secs, xc)
        if status != 200 or not complete:
            return
        with st.lock:
            if mode == "sampled" and xc == "hit":
                st.sampled_hits += 1
            if key is not None:
                if expect_hit:
                    st.hits_expected += 1
                    if xc != "hit":
                        st.hits_missing.append((what, model, prompt, xc))
                    elif text != st.done_repeats[key]:
                        st.hit_text_diff.append((what, model, prompt, text, st.done_repeats[key]))
                elif key not in st.done_repeats:
                    st.done_repeats[key] = text

    def _json(self, kind, body, headers, rng, abort):
        """A non-streamed generation; returns (status, X-Cache, text, complete)."""
        h = {"Content-Type": "application/json"}
        h.update(headers)
        conn = self.srv.connect(self.args.bound)
        try:
            conn.request("POST", PATHS[kind], body=json.dumps(body).encode(), headers=h)
            if abort == "nonstream":
                time.sleep(rng.uniform(0.0, 0.3))
                _hard_close(conn)
                return "aborted", None, None, False
            resp = conn.getresponse()
            data = resp.read()
            xc = resp.getheader("X-Cache")
            if resp.status != 200:
                if resp.status >= 500 and resp.status != 503:
                    self._fail(kind, "HTTP %d %s" % (resp.status, data[:400]))
                return resp.status, xc, None, False
            j = json.loads(data)
            if kind == "oai_chat":
                text = j["choices"][0]["message"]["content"]
            elif kind == "oai_completion":
                text = j["choices"][0]["text"]
            elif kind == "ollama_generate":
                text = j["response"]
            else:
                text = j["message"]["content"]
            if not isinstance(text, str):
                self._fail(kind, "no text in %r" % j)
            return 200, xc, text, True
        finally:
            conn.close()

    def _stream(self, kind, body, headers, rng, abort, max_tokens):
        """A streamed generation, maybe aborted; returns (status, X-Cache, text, complete)."""
        s = self.srv.open_stream(PATHS[kind], body, headers=headers, timeout=self.args.bound)
        try:
            xc = s.header("X-Cache")
            if s.status != 200:
                data = s.read_all()
                if s.status >= 500 and s.status != 503:
                    self._fail(kind, "HTTP %d %s" % (s.status, data[:400]))
                return s.status, xc, None, False
            stop_after = None
            if abort == "before_first":
                stop_after = 0
            elif abort == "mid":
                stop_after = rng.randint(1, max(1, max_tokens // 2))
            elif abort == "near_end":
                stop_after = max(1, max_tokens - rng.randint(0, 2))
            if stop_after == 0:
                s.abort()
                return 200, xc, None, False
            parts = []
            n = 0
            complete = False
            if kind.startswith("oai_"):
                chat = kind == "oai_chat"
                for data in s.sse_events():
                    n += 1
                    if data == "[DONE]":
                        complete = True
                        break
                    parts.append(ks.sse_text([json.loads(data)], chat))
                    if stop_after is not None and n >= stop_after:
                        s.abort()
                        return 200, xc, None, False
            else:
                for o in s.ndjson_lines():
                    n += 1
                    if "error" in o:
                        self._fail(kind, "error line in stream: %r" % o)
                        return 200, xc, None, False
                    parts.append((o.get("message") or {}).get("content", "") if kind == "ollama_chat"
                                 else o.get("response", ""))
                    if o.get("done") is True:
                        complete = True
                        break
                    if stop_after is not None and n >= stop_after:
                        s.abort()
                        return 200, xc, None, False
            if s.framing_errors:
                self._fail(kind, "framing: %r" % s.framing_errors[:3])
            if not complete and abort is None:
                self._fail(kind, "stream ended without its final event after %d events" % n)
            return 200, xc, "".join(parts), complete
        finally:
            s.close()

    def monitor(self, rng):
        """GETs of the status routes, racing the loads and unloads."""
        path = rng.choice(MONITOR_PATHS)
        t0 = time.time()
        try:
            r = self.srv.get(path, timeout=self.args.bound)
        except socket.timeout:
            self._stuck("GET " + path, t0)
            return
        except (OSError, http.client.HTTPException) as e:
            self._record("GET " + path, "error", time.time() - t0)
            self._fail(path, "%s: %r" % (type(e).__name__, e))
            return
        self._record("GET " + path, r.status, time.time() - t0)
        if r.status == 200 and path != "/metrics":
            try:
                r.json()
            except ValueError as e:
                self._fail(path, "not JSON: %r %r" % (e, r))

    def embed(self, rng, kind):
        st = self.st
        n = rng.randint(1, 4)
        pooled = rng.random() < 0.6
        if pooled:
            inputs = [rng.choice(EMBED_POOL) for _ in range(n)]
            headers = {}
        else:
            inputs = [random_text(rng, 2, 20) for _ in range(n)]
            headers = {"Cache-Control": "no-store"}
        body = {"model": EMB_MODEL, "input": inputs if (n > 1 or rng.random() < 0.5) else inputs[0]}
        what = kind
        t0 = time.time()
        try:
            r = self.srv.post(PATHS[kind], body, headers=headers, timeout=self.args.bound)
        except socket.timeout:
            self._stuck(what, t0)
            return
        except (OSError, http.client.HTTPException) as e:
            self._record(what, "error", time.time() - t0)
            self._fail(what, "%s: %r" % (type(e).__name__, e))
            return
        secs = time.time() - t0
        if secs > self.args.bound:
            with st.lock:
                st.stuck.append((what, round(secs, 1)))
        self._record(what, r.status, secs, r.header("X-Cache"))
        if r.status != 200:
            if r.status >= 500 and r.status != 503:
                self._fail(what, repr(r))
            return
        try:
            j = r.json()
            vecs = [d["embedding"] for d in j["data"]] if kind == "oai_embed" else j["embeddings"]
        except (ValueError, KeyError, TypeError) as e:
            self._fail(what, "bad body %r: %r" % (e, r))
            return
        if len(vecs) != n or any(not v or abs(ks.l2norm(v) - 1.0) > 1e-3 for v in vecs):
            self._fail(what, "want %d unit vectors, got %d (norms %s)" %
                       (n, len(vecs), [round(ks.l2norm(v), 4) for v in vecs if v]))


def _hard_close(conn):
    try:
        if conn.sock is not None:
            conn.sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    conn.close()


class RssSampler:
    def __init__(self, pid, interval):
        self.pid = pid
        self.interval = interval
        self.samples = []  # (seconds since start, KiB)
        self.t0 = time.time()
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _read(self):
        try:
            with open("/proc/%d/status" % self.pid) as f:
                for ln in f:
                    if ln.startswith("VmRSS:"):
                        return int(ln.split()[1])
        except (OSError, ValueError):
            return None
        return None

    def _run(self):
        while not self.stop_ev.is_set():
            v = self._read()
            if v is not None:
                self.samples.append((time.time() - self.t0, v))
            self.stop_ev.wait(self.interval)

    def stop(self):
        self.stop_ev.set()
        self.t.join(5)

    def peak(self, t_from, t_to):
        vals = [v for t, v in self.samples if t_from <= t <= t_to]
        return max(vals) if vals else None

    def trend(self, t_from, t_to):
        """The least-squares line through the samples in [t_from, t_to],
        evaluated at both ends: (KiB at t_from, KiB at t_to), or (None, None)."""
        pts = [(t, v) for t, v in self.samples if t_from <= t <= t_to]
        if len(pts) < 3:
            return None, None
        mt = sum(t for t, _ in pts) / len(pts)
        mv = sum(v for _, v in pts) / len(pts)
        var = sum((t - mt) ** 2 for t, _ in pts)
        slope = sum((t - mt) * (v - mv) for t, v in pts) / var if var else 0.0
        return mv + slope * (t_from - mt), mv + slope * (t_to - mt)

    def at(self, t):
        """The sample nearest before t."""
        best = None
        for s, v in self.samples:
            if s <= t:
                best = v
        return best


def metric_by_model(srv, name):
    out = {}
    for (n, ls), v in ks.metrics_map(srv).items():
        if n == name:
            m = dict(ls).get("model", "")
            out[m] = out.get(m, 0) + v
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="traffic duration (default 60)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=3, help="client threads (default 3)")
    ap.add_argument("--np", type=int, default=2, help="server -np (default 2)")
    ap.add_argument("--ttl", type=int, default=2, help="server --unload-timeout seconds (default 2)")
    ap.add_argument("--cleanup", type=int, default=1, help="server --cleanup-interval seconds (default 1)")
    ap.add_argument("--bound", type=float, default=60.0,
                    help="seconds within which every request must end (default 60)")
    ap.add_argument("--rss", action="store_true", help="fail when RSS grows > 5%% from --rss-base to the end")
    ap.add_argument("--rss-base", type=float, default=300.0, help="seconds of traffic at the baseline (default 300)")
    ap.add_argument("--rss-window", type=float, default=60.0, help="peak window of the RSS figures (default 60)")
    ap.add_argument("--rss-interval", type=float, default=3.0, help="seconds between RSS samples (default 3)")
    ap.add_argument("--rss-log", help="write the RSS samples (seconds, KiB) to this file")
    ap.add_argument("--server-arg", action="append", default=[], help="extra kiln serve argument (repeatable)")
    args = ap.parse_args()
    if args.rss and args.seconds < args.rss_base + args.rss_window:
        ap.error("--rss needs --seconds >= --rss-base + --rss-window (%.0f)" % (args.rss_base + args.rss_window))
    ks.need_env()
    ck = ks.Checks()

    root = tempfile.mkdtemp(prefix="kiln-soak-")
    d = os.path.join(root, "models")
    os.makedirs(d)
    for name, src in LAYOUT.items():
        os.symlink(ks.model_path(src), os.path.join(d, name))
    srv = None
    t_start = time.time()
    try:
        flags = ["--models", d, "--unload-timeout", str(args.ttl), "--cleanup-interval", str(args.cleanup),
                 "-np", str(args.np), "--cache-dir", os.path.join(root, "cache")] + args.server_arg
        srv = ks.Server(flags, cache=True, ready_timeout=120)
        print("soak: kiln %s (pid %d), %d workers, %.0f s, seed %d" %
              (" ".join(srv.args), srv.proc.pid, args.workers, args.seconds, args.seed), flush=True)
        rss = RssSampler(srv.proc.pid, args.rss_interval)
        soak = Soak(srv, args, ck)
        threads = [threading.Thread(target=soak.worker, args=(i,), daemon=True) for i in range(args.workers)]
        ctl = threading.Thread(target=soak.controller, args=(random.Random(args.seed),), daemon=True)
        t_traffic = time.time()
        rss.t0 = t_traffic
        for t in threads + [ctl]:
            t.start()
        last_report = time.time()
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(1.0)
            if time.time() - last_report >= 60:
                last_report = time.time()
                with soak.st.lock:
                    print("soak: %.0f s, %d requests, statuses %s, rss %s KiB" %
                          (time.time() - t_traffic, soak.st.total, dict(soak.st.statuses),
                           rss.samples[-1][1] if rss.samples else "?"), flush=True)
            if srv.proc.poll() is not None:
                break
            if time.time() > soak.end_at + args.bound + 30:
                break
        ctl.join(5)
        traffic_s = time.time() - t_traffic
        alive = [t for t in threads if t.is_alive()]
        ck.check("every worker finished (no request stuck past the end)", not alive, "%d still running" % len(alive))
        ck.check("the server is still running", srv.proc.poll() is None, "exit %s" % srv.proc.poll())
        rss.stop()
        st = soak.st
        if args.rss_log:
            with open(args.rss_log, "w") as f:
                f.writelines("%.1f %d\n" % s for s in rss.samples)

        ok, h, _ = srv.wait_idle(timeout=30)
        health = None
        try:
            code, health = srv.health()
        except (OSError, ValueError) as e:
            code = repr(e)
        ck.eq("/health 200 at the end", code, 200)
        ck.check("/health: requests_running 0 and requests_waiting 0 at the end",
                 isinstance(health, dict) and health.get("requests_running") == 0 and
                 health.get("requests_waiting") == 0, health)
        loads = metric_by_model(srv, "kiln_model_loads_total")
        unloads = metric_by_model(srv, "kiln_model_unloads_total")
        m_hits = ks.metric_sum(srv, "kiln_cache_hits_total")
        running = ks.metric_sum(srv, "kiln_requests_running")
        waiting = ks.metric_sum(srv, "kiln_requests_waiting")
        ck.check("metrics: kiln_requests_running and kiln_requests_waiting 0 at the end",
                 running == 0 and waiting == 0, "running %s waiting %s" % (running, waiting))
        n_loads, n_unloads = sum(loads.values()), sum(unloads.values())
        log = srv.log()
        ck.check("models loaded more than once (kiln_model_loads_total %d %s)" % (n_loads, loads), n_loads > 1, loads)
        ck.check("models unloaded more than once (kiln_model_unloads_total %d %s)" % (n_unloads, unloads),
                 n_unloads > 1, unloads)
        ck.check("log: 'unloading NAME (idle for ...)' lines (%d)" % len(re.findall(r"unloading \S+ \(idle for", log)),
                 re.search(r"unloading \S+ \(idle for", log), log[-1000:])
        ck.check("every pause longer than TTL + cleanup interval ended with no model loaded (%d pauses)" %
                 len(soak.ps_after_pause), all(p == [] for p in soak.ps_after_pause), soak.ps_after_pause)
        c_hits = st.xcache.get("hit", 0)
        ck.check("cache hits happened (X-Cache: hit %d, kiln_cache_hits_total %d)" % (c_hits, m_hits),
                 c_hits > 0 and m_hits > 0, st.xcache)
        ck.check("repeats of a completed temperature-0 request answer X-Cache: hit (%d of %d)" %
                 (st.hits_expected - len(st.hits_missing), st.hits_expected),
                 st.hits_expected > 0 and not st.hits_missing, st.hits_missing[:10])
        ck.check("a cache hit replays the first answer's text", not st.hit_text_diff, st.hit_text_diff[:3])
        ck.eq("sampled requests (temperature 0.8, no seed) never hit", st.sampled_hits, 0)
        n503 = st.statuses.get(503, 0)
        bad5 = {k: v for k, v in st.statuses.items() if isinstance(k, int) and k >= 500 and k != 503}
        ck.check("no 5xx except 503 (%d x 503)" % n503, not bad5, bad5)
        ck.check("no unexpected status, error or malformed answer", not st.unexpected, st.unexpected[:20])
        ck.check("no request took longer than %.0f s (max %.1f s)" % (args.bound, st.max_seconds), not st.stuck,
                 st.stuck[:20])
        ck.check("traffic ran (%d requests)" % st.total, st.total > 0, st.total)

        rc = srv.stop(120)
        total_s = time.time() - t_start
        ck.eq("SIGTERM: exit status 0", rc, 0)
        reports = ks.sanitizer_reports(srv.log())
        ck.check("no sanitizer report in the server log", not reports, "\n".join(reports[:20]))
        if reports:
            print("---- sanitizer report excerpt ----")
            lines = srv.log().splitlines()
            first = next(i for i, ln in enumerate(lines) if ln in reports)
            for ln in lines[max(0, first - 5):first + 60]:
                print("   | " + ln)

        rss_txt = "none"
        if rss.samples:
            first_kib = rss.samples[0][1]
            end_t = rss.samples[-1][0]
            peak_all = max(v for _, v in rss.samples)
            rss_txt = "first %d KiB, peak %d KiB, end %d KiB" % (first_kib, peak_all, rss.samples[-1][1])
            if args.rss:
                base, end = rss.trend(args.rss_base, end_t)
                growth = (end - base) / base if base and end else float("inf")
                rss_txt += ("; trend (least squares over %.0f s..end) %d KiB at %.0f s, %d KiB at the end (%.0f s): "
                            "growth %+.2f%%; window peaks %s / %s KiB, points %s / %s KiB") % (
                    args.rss_base, base or 0, args.rss_base, end or 0, end_t, 100 * growth,
                    rss.peak(args.rss_base - args.rss_window, args.rss_base), rss.peak(end_t - args.rss_window, end_t),
                    rss.at(args.rss_base), rss.samples[-1][1])
                ck.check("RSS growth from %.0f s to the end under 5%% (%+.2f%%)" % (args.rss_base, 100 * growth),
                         growth < 0.05, rss_txt)
        kinds = " ".join("%s=%d" % kv for kv in sorted(st.by_kind.items()))
        statuses = " ".join("%s=%d" % kv for kv in sorted(st.statuses.items(), key=lambda kv: str(kv[0])))
        aborts = sum(st.aborts.values())
        print("soak: phases %s; /api/ps after each pause %s" % (soak.phases, soak.ps_after_pause))
        print("soak: requests by kind: %s" % kinds)
        print("SUMMARY soak seed %d: %.0f s traffic (%.0f s total), %d requests (%.1f/s); statuses %s; "
              "503s %d; aborts %d %s; loads %d unloads %d; cache hits X-Cache %d (expected %d, missing %d), "
              "kiln_cache_hits_total %d; max request %.1f s; sanitizer reports %d; exit %s; RSS %s" %
              (args.seed, traffic_s, total_s, st.total, st.total / max(traffic_s, 1e-3), statuses, n503,
               aborts, st.aborts, n_loads, n_unloads, c_hits, st.hits_expected, len(st.hits_missing), m_hits,
               st.max_seconds, len(reports), rc, rss_txt), flush=True)
    except Exception:
        import traceback
        ck.fail("soak raised", traceback.format_exc())
    finally:
        if srv is not None:
            if srv.proc.poll() is None:
                srv.kill()
            if ck.fails:
                srv.dump_log_tail(60)
        shutil.rmtree(root, ignore_errors=True)
    ck.finish()


if __name__ == "__main__":
    main()
