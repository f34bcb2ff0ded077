#!/usr/bin/env python3
"""test_server_models.py — the model manager (issue 7) against the real
`kiln serve --models DIR`, DIR being a temporary directory of symlinks to
the shared models under chosen names (plus damaged copies):

 names     `name:QUANT`, `name` alone (Q4_K_M first, else the smallest),
           lower-case suffixes, DIR/<name>/<QUANT>.gguf, `org/repo:QUANT`,
           the file id form, files without a suffix, --alias; unknown
           quantizations and models are 404s that list what exists
 loading   16 concurrent first requests load once; a truncated file, and
           a file whose load fails after its header (tokenizer key
           renamed, so concurrent requests share one failed load), fail
           every request while other models keep serving, are retried by
           the next request, and load once the file is fixed
 ttl       expiry after --unload-timeout with --cleanup-interval; refresh
           by inference but not by /health, /api/ps, /tokenize or
           /detokenize; the unload logged and counted; the flag over
           MODEL_UNLOAD_TIMEOUT, which works alone with
           CLEANUP_CHECK_INTERVAL; keep_alive 0, -1 and durations;
           --preload, --pin; no unload while a request runs; shutdown
           unloads and logs each model
 memory    eviction under --memory-budget, least recently used first;
           503 with the numbers while the only candidate is busy, or when
           the model can never fit; automatic context reduced to a power of
           two (warning logged, /api/ps context_reduced, /health n_ctx);
           an explicit -c or num_ctx that cannot fit is a 400 with the
           numbers; a larger num_ctx gets its own instance, a smaller one
           shares
 ps        /api/ps in Ollama's shape plus kiln's keys, in_flight
 config    --print-config with profiles, a flag over a profile,
           KILN_PROFILE, the environment over defaults and a flag over the
           environment

Budgets are computed from the estimates the server logs for the same
flags (a probe server preloads the models first), so the test does not
hard-code kiln's estimator. Timings poll with deadlines; the checks that
need a request to outlast a timeout say so and skip on a machine fast
enough to finish it first."""

import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import struct
import tempfile
import threading
import time
from datetime import datetime, timezone

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kiln_server as ks  # noqa: E402

ks.need_env()
ck = ks.Checks()
MIB = 1024 * 1024
SERVERS = []  # every server started, for the log tails on failure

# DIR layout: name in DIR -> shared model file
LAYOUT = {
    "stories-Q8_0.gguf": "stories260K-Q8_0",
    "stories-F32.gguf": "stories260K",
    "tiny-Q4_K_M.gguf": "tiny-llama-Q4_K_M",
    "tiny-Q4_0.gguf": "tiny-llama-Q4_0",          # smaller than tiny-Q4_K_M: `tiny` must still pick Q4_K_M
    "sub/Q4_0.gguf": "tiny-llama-Q4_0",           # DIR/<name>/<QUANT>.gguf
    "sub/F32.gguf": "stories260K",                # smaller: `sub` alone picks it
    "org/repo/Q8_0.gguf": "stories260K-Q8_0",     # org/repo:Q8_0
    "low-q8_0.gguf": "stories260K-Q8_0",          # lower-case suffix
    "plain.gguf": "stories260K",                  # no suffix: the label comes from the file
    "rope-Q8_0.gguf": "tiny-llama-ropescale-Q8_0",  # context_length 8192
}


def make_dir(root, names):
    d = tempfile.mkdtemp(prefix="kiln-models-", dir=root)
    for rel in names:
        dst = os.path.join(d, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.symlink(ks.model_path(LAYOUT[rel]), dst)
    return d


def start(args, env=None):
    # --cache-ram 0: the prefix cache's extra KV room (elastic: it takes only
    # budget left over) would make the probed estimates depend on the budget
    srv = ks.Server(list(args) + ["--cache-ram", "0"], env=env)
    SERVERS.append(srv)
    return srv


def run(t, arg, also=()):
    """Runs one test; on a failure, shows the log tails of the servers it
    started (and of `also`)."""
    fails, n = ck.fails, len(SERVERS)
    ck.run(t, arg)
    if ck.fails > fails:
        for s in list(also) + SERVERS[n:]:
            s.dump_log_tail(30)


def stop(srv, name):
    rc = srv.stop(30)
    ck.exited_clean(name + " server on SIGTERM", srv, rc)


# ---------------------------------------------------------------- helpers

def ps(srv):
    r = srv.get("/api/ps", timeout=10)
    if r.status != 200:
        raise ks.ServerError("/api/ps -> %r" % r)
    return r.json()["models"]


def ps_names(srv):
    return sorted(m["name"] for m in ps(srv))


def ps_entry(srv, name):
    for m in ps(srv):
        if m["name"] == name:
            return m
    return None


def wait_until(pred, timeout, interval=0.1):
    """Polls pred() until true or timeout; returns (ok, seconds)."""
    t0 = time.time()
    while True:
        if pred():
            return True, time.time() - t0
        if time.time() - t0 > timeout:
            return False, time.time() - t0
        time.sleep(interval)


def complete(srv, model, max_tokens=2, timeout=120, **extra):
    body = {"model": model, "prompt": "Once upon a time", "max_tokens": max_tokens, "temperature": 0}
    body.update(extra)
    return srv.post("/v1/completions", body, timeout=timeout)


def generate(srv, model, keep_alive=None, prompt="Once upon a time", num_predict=3, options=None):
    body = {"model": model, "prompt": prompt, "stream": False, "options": {"num_predict": num_predict}}
    if options:
        body["options"].update(options)
    if keep_alive is not None:
        body["keep_alive"] = keep_alive
    return srv.post("/api/generate", body, timeout=120)


def count(log, pattern):
    return len(re.findall(pattern, log, flags=re.M))


def estimates(log):
    """{id: (MiB estimate, context)} from the `loading ID (...) from ... (context N..., estimate X MiB)` lines."""
    out = {}
    for m in re.finditer(r"loading (\S+) \(.*?\) from .*?\(context (\d+)[^)]*?estimate ([0-9.]+) MiB\)", log):
        out[m.group(1)] = (float(m.group(3)), int(m.group(2)))
    return out


def mib_near(msg, pattern, want, tol=1.0):
    """True when pattern's number in msg is within tol MiB of want."""
    m = re.search(pattern, msg)
    return m is not None and abs(float(m.group(1)) - want) <= tol


def iso_epoch(s):
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()


def metric(srv, name, model):
    """The value of name{model="..."} in /metrics, or None."""
    r = srv.get("/metrics", timeout=10)
    pat = re.compile(r'^%s\{[^}]*model="%s"[^}]*\} (\S+)$' % (re.escape(name), re.escape(model)), re.M)
    m = pat.search(r.text())
    return float(m.group(1)) if m else None


class Holder:
    """A non-streamed completion that keeps a model busy until abort()
    closes its connection (the server cancels it within ~0.2 s)."""

    def __init__(self, srv, model, max_tokens):
        self.conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=300)
        self.status = None
        self.err = None
        body = json.dumps({"model": model, "prompt": "Once upon a time", "max_tokens": max_tokens,
                           "ignore_eos": True, "temperature": 0}).encode()
        self.conn.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        try:
            self.status = self.conn.getresponse().status
        except (OSError, http.client.HTTPException) as e:
            self.err = e

    def done(self):
        return not self.t.is_alive()

    def abort(self):
        try:
            if self.conn.sock is not None:
                self.conn.sock.shutdown(2)
        except OSError:
            pass
        self.conn.close()
        self.t.join(10)


# ---------------------------------------------------------------- names (server A)

def test_concurrent_first_load(srv):
    """16 requests at once for a model nobody loaded: one load, 16 answers."""
    n = 16
    barrier = threading.Barrier(n)
    results = [None] * n

    def one(i):
        barrier.wait()
        try:
            results[i] = complete(srv, "sub:Q4_0", max_tokens=2)
        except Exception as e:  # noqa: BLE001
            results[i] = e

    th = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in th:
        t.start()
    for t in th:
        t.join(120)
    ok = [r for r in results if isinstance(r, ks.Response) and r.status == 200]
    ck.check("16 concurrent first requests: all 200", len(ok) == n, [r for r in results if r not in ok][:3])
    ck.check("16 concurrent first requests: every answer from sub/Q4_0",
             all(r.json().get("model") == "sub/Q4_0" for r in ok), [r.json().get("model") for r in ok][:4])
    ck.eq("16 concurrent first requests: exactly one 'loading sub/Q4_0' line",
          srv.log_count(r"loading sub/Q4_0 \(", 1), 1)
    ck.eq("16 concurrent first requests: exactly one 'loaded sub:Q4_0' line",
          srv.log_count(r"loaded sub:Q4_0 in", 1), 1)
    ck.eq("16 concurrent first requests: one sub:Q4_0 instance in /api/ps",
          [m["name"] for m in ps(srv)].count("sub:Q4_0"), 1)
    ck.eq("16 concurrent first requests: kiln_model_loads_total{sub/Q4_0}", metric(srv, "kiln_model_loads_total",
                                                                                   "sub/Q4_0"), 1.0)


def test_names(srv):
    tags = srv.get("/api/tags").json()["models"]
    ck.eq("/api/tags: every file under its name:QUANT", sorted(t["name"] for t in tags),
          sorted(["stories:Q8_0", "stories:F32", "tiny:Q4_K_M", "tiny:Q4_0", "sub:Q4_0", "sub:F32", "org/repo:Q8_0",
                  "low:Q8_0", "plain:F32", "rope:Q8_0"]))
    # request -> the file (its id) that answers
    cases = [
        ("stories:Q8_0", "stories-Q8_0"),
        ("stories:q8_0", "stories-Q8_0"),
        ("stories:F32", "stories-F32"),
        ("stories:f32", "stories-F32"),
        ("stories", "stories-Q8_0"),          # no Q4_K_M: the smallest
        ("stories-Q8_0", "stories-Q8_0"),     # the file id
        ("stories-F32", "stories-F32"),
        ("tiny", "tiny-Q4_K_M"),              # Q4_K_M first, though tiny-Q4_0 is smaller
        ("tiny:Q4_0", "tiny-Q4_0"),
        ("sub", "sub/F32"),
        ("sub:Q4_0", "sub/Q4_0"),
        ("sub/Q4_0", "sub/Q4_0"),
        ("org/repo:q8_0", "org/repo/Q8_0"),
        ("org/repo", "org/repo/Q8_0"),
        ("low:Q8_0", "low-q8_0"),
        ("low", "low-q8_0"),
        ("plain", "plain"),
        ("plain:F32", "plain"),
        ("story", "stories-Q8_0"),            # --alias story=stories:Q8_0
        ("t4", "tiny-Q4_0"),                  # --alias t4=tiny-Q4_0 (to an id)
    ]
    for req, want in cases:
        r = complete(srv, req, max_tokens=1)
        if ck.eq("model %r: status" % req, r.status, 200):
            ck.eq("model %r: answered by file %s" % (req, want), r.json().get("model"), want)
        else:
            print("   " + repr(r))
    # /api/show resolves without loading
    for req, want in (("tiny", "Q4_K_M"), ("stories", "Q8_0"), ("plain", "F32"), ("org/repo", "Q8_0")):
        r = srv.post("/api/show", {"model": req})
        ck.check("/api/show %r: quantization %s" % (req, want), r.status == 200 and r.json().get("quantization") == want,
                 r)
    # the label of a file without a suffix comes from the file
    info = ks.kiln_info(ks.model_path("stories260K"))
    ck.check("plain.gguf: its tensors are F32, so plain:F32", set(info["tensor_types"]) == {"F32"},
             info["tensor_types"])


def test_unknown_names(srv):
    r = complete(srv, "stories:Q6_K")
    ck.eq("unknown quant stories:Q6_K: 404", r.status, 404)
    msg = ks.error_message(r)
    for w in ("Q6_K", "Q8_0", "F32"):
        ck.check("unknown quant stories:Q6_K: message lists %s" % w, w in msg, msg)
    ck.check("unknown quant: message does not list other models' quants", "Q4_K_M" not in msg, msg)
    r = generate(srv, "tiny:Q8_0")
    ck.eq("unknown quant tiny:Q8_0 (Ollama): 404", r.status, 404)
    msg = ks.error_message(r)
    ck.check("unknown quant tiny:Q8_0 (Ollama): {error: string} listing Q4_K_M and Q4_0",
             isinstance(r.json().get("error"), str) and "Q4_K_M" in msg and "Q4_0" in msg, r)
    r = complete(srv, "nosuch")
    ck.eq("unknown model: 404", r.status, 404)
    msg = ks.error_message(r)
    ck.check("unknown model: message lists available names", "stories:Q8_0" in msg and "tiny:Q4_K_M" in msg, msg)
    for bad in ("../stories-Q8_0", "/stories-Q8_0", "stories:", "sub/../stories-Q8_0", "stories\u0001"):
        r = complete(srv, bad)
        ck.eq("bad model name %r: 404" % bad, r.status, 404)
    ck.check("no failed loads from name errors", "cannot load" not in srv.log(), srv.log()[-2000:])


def check_ps_shape(name, e, want_name, want_quant):
    keys = ("name", "model", "size", "digest", "details", "expires_at", "size_vram", "quantization",
            "context_length", "context_reduced", "in_flight")
    missing = [k for k in keys if k not in e]
    ck.check(name + ": has " + ", ".join(keys), not missing, "missing %s in %r" % (missing, e))
    ck.eq(name + ": name", e.get("name"), want_name)
    ck.eq(name + ": model", e.get("model"), want_name)
    ck.check(name + ": size is a positive integer", isinstance(e.get("size"), int) and e["size"] > 0, e.get("size"))
    ck.check(name + ": digest is a string", isinstance(e.get("digest"), str), e.get("digest"))
    d = e.get("details")
    ck.check(name + ": details {format gguf, family, quantization_level}",
             isinstance(d, dict) and d.get("format") == "gguf" and d.get("quantization_level") == want_quant
             and isinstance(d.get("family"), str), d)
    ck.check(name + ": size_vram 0", e.get("size_vram") == 0 and isinstance(e.get("size_vram"), int),
             e.get("size_vram"))
    ck.eq(name + ": quantization", e.get("quantization"), want_quant)
    ck.check(name + ": context_length a positive integer",
             isinstance(e.get("context_length"), int) and e["context_length"] > 0, e.get("context_length"))
    ck.check(name + ": context_reduced a bool", isinstance(e.get("context_reduced"), bool), e.get("context_reduced"))
    ck.check(name + ": in_flight an integer", isinstance(e.get("in_flight"), int), e.get("in_flight"))
    try:
        iso_epoch(e.get("expires_at"))
        ok = True
    except (TypeError, ValueError):
        ok = False
    ck.check(name + ": expires_at is an ISO time (YYYY-MM-DDTHH:MM:SSZ)", ok, e.get("expires_at"))


def test_ps_shape(srv):
    r = srv.get("/api/ps")
    ck.eq("/api/ps: 200", r.status, 200)
    body = r.json()
    ck.check("/api/ps: {models: [...]}", isinstance(body.get("models"), list), body)
    e = ps_entry(srv, "tiny:Q4_K_M")
    if not ck.check("/api/ps lists tiny:Q4_K_M", e is not None, ps_names(srv)):
        return
    check_ps_shape("/api/ps tiny:Q4_K_M", e, "tiny:Q4_K_M", "Q4_K_M")
    info = ks.kiln_info(ks.model_path("tiny-llama-Q4_K_M"))
    ck.eq("/api/ps tiny:Q4_K_M: context_length is the model's", e.get("context_length"), info["context_length"])
    ck.eq("/api/ps tiny:Q4_K_M: context not reduced", e.get("context_reduced"), False)
    ck.eq("/api/ps tiny:Q4_K_M: in_flight 0 when idle", e.get("in_flight"), 0)
    ck.check("/api/ps tiny:Q4_K_M: size covers the weights", e.get("size", 0) >= info["file_size"] // 2,
             (e.get("size"), info["file_size"]))
    left = iso_epoch(e["expires_at"]) - time.time()
    ck.check("/api/ps: expires_at about now + the default 300 s", 280 <= left <= 302, left)
    # in_flight counts a request in progress
    h = Holder(srv, "tiny:Q4_K_M", 2000)
    try:
        ok, _ = wait_until(lambda: (ps_entry(srv, "tiny:Q4_K_M") or {}).get("in_flight", 0) >= 1 or h.done(), 20, 0.05)
        e = ps_entry(srv, "tiny:Q4_K_M") or {}
        ck.check("/api/ps: in_flight 1 while a request runs", e.get("in_flight") == 1 or h.done(), e)
    finally:
        h.abort()
    ok, _ = wait_until(lambda: (ps_entry(srv, "tiny:Q4_K_M") or {}).get("in_flight") == 0, 10)
    ck.check("/api/ps: in_flight back to 0 after the request", ok, ps_entry(srv, "tiny:Q4_K_M"))


def test_keep_alive(srv):
    # durations: a string and a number of seconds
    for ka, want in (("5m", 300), ("90s", 90), (120, 120), ("1h", 3600)):
        r = generate(srv, "stories:F32", keep_alive=ka)
        ck.eq("keep_alive %r: 200" % (ka,), r.status, 200)
        e = ps_entry(srv, "stories:F32") or {}
        left = iso_epoch(e["expires_at"]) - time.time() if e.get("expires_at") else None
        ck.check("keep_alive %r: expires_at about now + %d s" % (ka, want),
                 left is not None and want - 20 <= left <= want + 2, left)
    # keep_alive 0: unloaded as soon as the request ends
    kv_loaded = ks.metric_sum(srv, "kiln_kv_blocks_capacity", model="stories-F32")
    ck.check("loaded: kiln_kv_blocks_capacity{stories-F32} > 0", kv_loaded > 0, kv_loaded)
    r = generate(srv, "stories:F32", keep_alive=0)
    ck.eq("keep_alive 0: 200 with text", (r.status, bool(r.status == 200 and r.json().get("response"))), (200, True))
    ok, t = wait_until(lambda: ps_entry(srv, "stories:F32") is None, 5, 0.05)
    ck.check("keep_alive 0: stories:F32 gone from /api/ps right after (%.2f s)" % t, ok, ps_names(srv))
    wait_until(lambda: re.search(r"unloading stories:F32 \(keep_alive 0\)", srv.log()), 5, 0.05)
    ck.check("keep_alive 0: the log says why", re.search(r"unloading stories:F32 \(keep_alive 0\)", srv.log()),
             srv.log()[-1500:])
    ck.check("keep_alive 0: the other models stay", ps_entry(srv, "tiny:Q4_K_M") is not None, ps_names(srv))
    # a model unloaded since the last scrape reads 0, not the gauges it had then
    gone = {n: ks.metric_sum(srv, n, model="stories-F32")
            for n in ("kiln_kv_blocks_capacity", "kiln_requests_running", "kiln_requests_waiting", "kiln_model_bytes")}
    ck.check("keep_alive 0: the unloaded model's gauges read 0 in /metrics", all(v == 0 for v in gone.values()), gone)
    # Ollama's unload idiom: an empty prompt with keep_alive 0
    r = complete(srv, "low:Q8_0")
    ck.check("low:Q8_0 loaded", r.status == 200 and ps_entry(srv, "low:Q8_0") is not None, r)
    r = srv.post("/api/generate", {"model": "low:Q8_0", "keep_alive": 0})
    ck.check("empty prompt + keep_alive 0: 200 done_reason unload/load",
             r.status == 200 and r.json().get("done") is True, r)
    ok, _ = wait_until(lambda: ps_entry(srv, "low:Q8_0") is None, 5, 0.05)
    ck.check("empty prompt + keep_alive 0: low:Q8_0 unloaded", ok, ps_names(srv))
    # the next request loads it again
    r = generate(srv, "stories:F32")
    ck.check("after keep_alive 0: the next request loads it again",
             r.status == 200 and ps_entry(srv, "stories:F32") is not None, r)
    ck.eq("after keep_alive 0: two 'loading stories-F32' lines", srv.log_count(r"loading stories-F32 \(", 2), 2)
    # bad keep_alive values are 400s
    for bad in ("soon", "5 parsecs", [], {"m": 5}):
        r = generate(srv, "stories:F32", keep_alive=bad)
        ck.eq("keep_alive %r: 400" % (bad,), r.status, 400)


# ---------------------------------------------------------------- loading failures (server F)

def test_failing_load(root):
    d = make_dir(root, ["stories-Q8_0.gguf"])
    bad = os.path.join(d, "bad-Q8_0.gguf")
    with open(ks.model_path("stories260K-Q8_0"), "rb") as f:
        good = f.read()
    with open(bad, "wb") as f:
        f.write(good[:len(good) * 2 // 3])  # header intact, tensor data cut
    srv = start(["--models", d, "-np", "2", "--unload-timeout", "300"])
    try:
        ck.eq("stories:Q8_0 serves before", complete(srv, "stories:Q8_0").status, 200)
        n = 16
        barrier = threading.Barrier(n + 2)
        res = [None] * n
        others = []

        def one(i):
            barrier.wait()
            try:
                res[i] = complete(srv, "bad:Q8_0")
            except Exception as e:  # noqa: BLE001
                res[i] = e

        def other():
            barrier.wait()
            for _ in range(3):
                others.append(complete(srv, "stories:Q8_0", max_tokens=4))

        th = [threading.Thread(target=one, args=(i,)) for i in range(n)] + \
             [threading.Thread(target=other) for _ in range(2)]
        for t in th:
            t.start()
        for t in th:
            t.join(120)
        statuses = [r.status if isinstance(r, ks.Response) else repr(r) for r in res]
        ck.check("corrupt file: all 16 concurrent requests get an error status (400/500)",
                 all(s in (400, 500) for s in statuses), statuses)
        msgs = [ks.error_message(r) for r in res if isinstance(r, ks.Response)]
        ck.check("corrupt file: every error names the model and the problem",
                 len(msgs) == n and all("bad" in m and ("end of file" in m or "truncat" in m or "past" in m)
                                        for m in msgs), msgs[:3])
        ck.check("corrupt file: the other model kept serving (6 x 200)",
                 len(others) == 6 and all(r.status == 200 for r in others), others)
        ck.check("corrupt file: not listed in /api/ps", ps_entry(srv, "bad:Q8_0") is None, ps_names(srv))
        ck.check("corrupt file: the failure is logged", srv.log_count("cannot load bad:Q8_0", 1) >= 1, srv.log()[-1500:])
        fails = metric(srv, "kiln_model_load_failures_total", "bad-Q8_0")
        ck.check("corrupt file: kiln_model_load_failures_total{bad-Q8_0} >= 1", fails is not None and fails >= 1, fails)
        n_before = count(srv.log(), r"cannot load bad:Q8_0")
        r = complete(srv, "bad:Q8_0")
        srv.log_count(r"cannot load bad:Q8_0", n_before + 1)
        ck.check("corrupt file: the next request retries (a new attempt, an error again)",
                 r.status in (400, 500) and count(srv.log(), r"cannot load bad:Q8_0") == n_before + 1,
                 (r, n_before, count(srv.log(), r"cannot load bad:Q8_0")))
        # fix the file under the same name
        tmp = os.path.join(d, ".bad.tmp")
        with open(tmp, "wb") as f:
            f.write(good)
        os.replace(tmp, bad)
        r = complete(srv, "bad:Q8_0", max_tokens=4)
        ck.eq("fixed file: the next request loads it (200)", r.status, 200)
        ck.check("fixed file: listed in /api/ps", ps_entry(srv, "bad:Q8_0") is not None, ps_names(srv))
        ck.eq("fixed file: one 'loaded bad:Q8_0' line", srv.log_count(r"loaded bad:Q8_0 in", 1), 1)
        ck.eq("fixed file: same text as the good file under another name",
              r.json()["choices"][0]["text"] if r.status == 200 else None,
              complete(srv, "stories:Q8_0", max_tokens=4).json()["choices"][0]["text"])
        ck.eq("still serving stories:Q8_0", complete(srv, "stories:Q8_0").status, 200)
    finally:
        stop(srv, "failing-load")


def write_without_tokens(src, dst):
    """A copy of src whose `tokenizer.ggml.tokens` key is renamed (same
    length, so every offset stays valid): the header and tensors read
    fine, and the load fails later, at the tokenizer."""
    with open(src, "rb") as f:
        data = f.read()
    key = b"tokenizer.ggml.tokens"
    needle = struct.pack("<Q", len(key)) + key
    i = data.find(needle)
    if i < 0 or data.find(needle, i + 1) >= 0:
        raise RuntimeError("%s: the key %r is not there exactly once" % (src, key))
    with open(dst, "wb") as f:
        f.write(data[:i] + struct.pack("<Q", len(key)) + b"tokenizer.ggml.tokenX" + data[i + len(needle):])
    return data


def test_failing_load_shared(root):
    """The load itself fails (after the loading line): the requests that
    waited for it get that same error; fixing the file makes it load."""
    d = make_dir(root, ["stories-Q8_0.gguf"])
    bad = os.path.join(d, "notok-Q4_0.gguf")
    good = write_without_tokens(ks.model_path("tiny-llama-Q4_0"), bad)
    srv = start(["--models", d, "-np", "2"])
    try:
        n = 16
        barrier = threading.Barrier(n)
        res = [None] * n

        def one(i):
            barrier.wait()
            try:
                res[i] = complete(srv, "notok")
            except Exception as e:  # noqa: BLE001
                res[i] = e

        th = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in th:
            t.start()
        for t in th:
            t.join(120)
        statuses = [r.status if isinstance(r, ks.Response) else repr(r) for r in res]
        ck.check("load failure: all 16 concurrent requests get an error status (400/500)",
                 all(s in (400, 500) for s in statuses), statuses)
        msgs = [ks.error_message(r) for r in res if isinstance(r, ks.Response)]
        ck.check("load failure: every error says what failed (the tokenizer)",
                 len(msgs) == n and all("tokenizer" in m for m in msgs), msgs[:3])
        ck.check("load failure: every error names the model", all("notok" in m for m in msgs), msgs[:3])
        loads = srv.log_count(r"loading notok-Q4_0 \(", 1)
        fails = srv.log_count(r"cannot load notok:Q4_0", loads)
        ck.check("load failure: each load attempt logged and failed (%d attempts for 16 requests)" % loads,
                 1 <= loads <= n and fails == loads, (loads, fails))
        print("   (%d load attempts served 16 concurrent requests)" % loads)
        ck.check("load failure: nothing listed in /api/ps", ps_names(srv) == [], ps_names(srv))
        ck.eq("load failure: another model loads and serves", complete(srv, "stories:Q8_0").status, 200)
        n_before = count(srv.log(), r"loading notok-Q4_0 \(")
        r = complete(srv, "notok")
        ck.eq("load failure: the next request retries (one more load attempt)",
              srv.log_count(r"loading notok-Q4_0 \(", n_before + 1), n_before + 1)
        ck.check("load failure: the retry fails again with 400/500", r.status in (400, 500), r)
        tmp = os.path.join(d, ".notok.tmp")
        with open(tmp, "wb") as f:
            f.write(good)
        os.replace(tmp, bad)
        r = complete(srv, "notok", max_tokens=4)
        ck.eq("load failure fixed: 200", r.status, 200)
        ck.check("load failure fixed: listed", ps_entry(srv, "notok:Q4_0") is not None, ps_names(srv))
    finally:
        stop(srv, "failing-load-shared")


# ---------------------------------------------------------------- TTL (servers B, C)

def test_ttl(root):
    d = make_dir(root, ["stories-Q8_0.gguf", "stories-F32.gguf"])
    # the flag wins over the environment (which says 10 minutes)
    srv = start(["--models", d, "-np", "2", "--unload-timeout", "2", "--cleanup-interval", "1"],
                env={"MODEL_UNLOAD_TIMEOUT": "600", "CLEANUP_CHECK_INTERVAL": "600"})
    try:
        ck.eq("ttl: nothing loaded at startup", ps_names(srv), [])
        r = generate(srv, "stories:Q8_0")
        ck.eq("ttl: first request 200", r.status, 200)
        e = ps_entry(srv, "stories:Q8_0")
        ck.check("ttl: listed after the request", e is not None, ps_names(srv))
        if e:
            left = iso_epoch(e["expires_at"]) - time.time()
            ck.check("ttl: expires_at about now + 2 s", -1.5 <= left <= 3.0, left)
        # refresh: requests every ~0.5 s for 5 s (2.5 x the timeout) keep it loaded
        t_end = time.time() + 5.0
        n_req = 0
        gaps_ok = True
        missing = []
        last = time.time()
        while time.time() < t_end:
            time.sleep(0.5)
            if time.time() - last > 1.6:
                gaps_ok = False  # the machine stalled: the model may legitimately expire
            r = generate(srv, "stories:Q8_0")
            last = time.time()
            n_req += 1
            if r.status != 200:
                missing.append(r)
            if ps_entry(srv, "stories:Q8_0") is None:
                missing.append("not listed after request %d" % n_req)
        ck.check("ttl: %d refreshing requests, all 200 and the model stays listed" % n_req, not missing, missing[:3])
        unloads = count(srv.log(), r"unloading stories:Q8_0")
        if gaps_ok:
            ck.eq("ttl: no unload while requests keep coming", unloads, 0)
        else:
            print("   (skipped the no-unload check: this machine stalled more than 1.6 s between requests)")
        loads = count(srv.log(), r"loading stories-Q8_0 \(")
        ck.eq("ttl: loaded once for all the refreshing requests", loads, 1 if gaps_ok else loads)
        # idle: /health, /api/ps, /tokenize and /detokenize must not refresh it
        t_last = time.time()
        tok_ok = []

        def gone():
            srv.get("/health", timeout=10)
            if time.time() - t_last < 1.2:  # while it is surely still loaded (later they would reload it)
                r1 = srv.post("/tokenize", {"model": "stories:Q8_0", "content": "Once upon a time"}, timeout=10)
                r2 = srv.post("/detokenize", {"model": "stories:Q8_0", "tokens": [1, 2]}, timeout=10)
                tok_ok.append(r1.status == 200 and r2.status == 200)
            return ps_entry(srv, "stories:Q8_0") is None

        ok, _ = wait_until(gone, 12, 0.1)
        t_gone = time.time() - t_last
        ck.check("ttl: unloaded after ~2 s idle while /health, /api/ps, /tokenize, /detokenize were polled (%.2f s)" % t_gone, ok,
                 ps(srv))
        ck.check("ttl: /tokenize and /detokenize answered while idle (%d times)" % len(tok_ok),
                 tok_ok and all(tok_ok), tok_ok)
        ck.check("ttl: not unloaded before the timeout (%.2f s >= 1.5 s)" % t_gone, t_gone >= 1.5, t_gone)
        ck.check("ttl: gone within timeout + interval + slack (%.2f s <= 8 s)" % t_gone, t_gone <= 8, t_gone)
        idle_re = r"unloading stories:Q8_0 \(idle for \d+ s, keep-alive 2 s\)"
        wait_until(lambda: re.search(idle_re, srv.log()), 10, 0.1)
        ck.check("ttl: the log shows the idle unload",
                 re.search(idle_re, srv.log()),
                 srv.log()[-1500:])
        # the instance leaves /api/ps before its memory is freed and counted: give the count a moment
        wait_until(lambda: metric(srv, "kiln_model_unloads_total", "stories-Q8_0") is not None, 10, 0.1)
        ck.eq("ttl: kiln_model_unloads_total{stories-Q8_0}", metric(srv, "kiln_model_unloads_total", "stories-Q8_0"),
              1.0)
        # a request after expiry loads it again
        ck.eq("ttl: a request after expiry is served", generate(srv, "stories:Q8_0").status, 200)
        ck.eq("ttl: and loads it a second time", srv.log_count(r"loading stories-Q8_0 \(", loads + 1), loads + 1)
    finally:
        stop(srv, "ttl")


def test_never_expire(root):
    """MODEL_UNLOAD_TIMEOUT=1 / CLEANUP_CHECK_INTERVAL=1 from the environment;
    --preload + --pin, and keep_alive -1, survive; a plain request expires."""
    d = make_dir(root, ["stories-Q8_0.gguf", "stories-F32.gguf", "plain.gguf", "tiny-Q4_K_M.gguf"])
    t0 = time.time()
    srv = start(["--models", d, "-np", "2", "-c", "8192", "--preload", "plain", "--pin", "plain"],
                env={"MODEL_UNLOAD_TIMEOUT": "1", "CLEANUP_CHECK_INTERVAL": "1"})
    try:
        log = srv.log()
        ck.check("--preload: loaded before 'ready'", re.search(r"loading plain \(.*\] ready", log, re.S), log[-1500:])
        ck.check("--preload: startup stays fast (%.2f s)" % (time.time() - t0), time.time() - t0 < 20, "")
        e = ps_entry(srv, "plain:F32")
        ck.check("--preload: plain:F32 in /api/ps at startup", e is not None, ps_names(srv))
        if e:
            ck.check("--pin: /api/ps says pinned, expires_at far away",
                     e.get("pinned") is True and iso_epoch(e["expires_at"]) - time.time() > 10 * 365 * 86400, e)
        r = generate(srv, "stories:F32", keep_alive=-1)
        ck.eq("keep_alive -1: 200", r.status, 200)
        e = ps_entry(srv, "stories:F32")
        ck.check("keep_alive -1: expires_at far away",
                 e is not None and iso_epoch(e["expires_at"]) - time.time() > 10 * 365 * 86400, e)
        ck.eq("control request (default keep-alive from MODEL_UNLOAD_TIMEOUT=1): 200",
              generate(srv, "stories:Q8_0").status, 200)
        t_last = time.time()
        ok, _ = wait_until(lambda: ps_entry(srv, "stories:Q8_0") is None, 10, 0.1)
        t_gone = time.time() - t_last
        ck.check("MODEL_UNLOAD_TIMEOUT=1, CLEANUP_CHECK_INTERVAL=1: the control model unloads (%.2f s)" % t_gone, ok,
                 ps_names(srv))
        ck.check("control unloads after >= ~1 s (%.2f s)" % t_gone, t_gone >= 0.5, t_gone)
        # two more cleanup rounds at least
        time.sleep(2.5)
        names = ps_names(srv)
        ck.check("keep_alive -1: stories:F32 still loaded %.1f s later" % (time.time() - t_last),
                 "stories:F32" in names, names)
        ck.check("--pin: plain:F32 still loaded %.1f s after startup" % (time.time() - t0), "plain:F32" in names,
                 names)
        ck.eq("no unload of the pinned or keep_alive -1 models in the log",
              count(srv.log(), r"unloading (plain|stories):F32"), 0)
        # a model in use never unloads, however long the request takes
        h = Holder(srv, "tiny:Q4_K_M", 8000)
        try:
            ok, _ = wait_until(lambda: (ps_entry(srv, "tiny:Q4_K_M") or {}).get("in_flight", 0) >= 1 or h.done(), 30,
                               0.05)
            t_busy = time.time()
            while time.time() - t_busy < 3.5 and not h.done():
                time.sleep(0.1)
            still = not h.done()
            e = ps_entry(srv, "tiny:Q4_K_M")
            if still:
                ck.check("in use: tiny:Q4_K_M still loaded after 3.5 s (timeout 1 s) with a request running",
                         e is not None and e.get("in_flight", 0) >= 1, e)
                ck.eq("in use: no unload of tiny:Q4_K_M logged", count(srv.log(), r"unloading tiny:Q4_K_M"), 0)
            else:
                print("   (skipped the in-use check: the 8000-token request finished within 3.5 s)")
        finally:
            h.abort()
        t_rel = time.time()
        ok, _ = wait_until(lambda: ps_entry(srv, "tiny:Q4_K_M") is None, 10, 0.1)
        ck.check("in use: unloaded once the request ended (%.2f s)" % (time.time() - t_rel), ok, ps_names(srv))
    finally:
        rc = srv.stop(30)
    ck.exited_clean("never-expire server on SIGTERM", srv, rc)
    log = srv.log()
    ck.check("shutdown unloads every loaded model and logs each",
             re.search(r"unloading plain:F32 \(shutting down\)", log)
             and re.search(r"unloading stories:F32 \(shutting down\)", log), log[-1500:])


# ---------------------------------------------------------------- memory (servers D, E)

def probe(d, flags, names):
    """Starts a server with a large budget that preloads names; returns the
    logged {id: (estimate MiB, context)}."""
    srv = start(["--models", d, "--memory-budget", "4g", "--preload", ",".join(names)] + flags)
    try:
        return estimates(srv.log())
    finally:
        srv.stop(30)


def test_eviction_and_503(root):
    d = make_dir(root, ["tiny-Q4_K_M.gguf", "sub/Q4_0.gguf", "stories-Q8_0.gguf"])
    # -c 8192: a holder request can run long enough to keep its model busy
    flags = ["-np", "1", "-c", "8192", "--queue-timeout", "1"]
    est = probe(d, flags, ["tiny:Q4_K_M", "sub:Q4_0"])
    if not ck.check("probe: estimates logged for tiny-Q4_K_M and sub/Q4_0",
                    "tiny-Q4_K_M" in est and "sub/Q4_0" in est, est):
        return
    e_tiny, e_sub = est["tiny-Q4_K_M"][0], est["sub/Q4_0"][0]
    budget_mib = int(1.5 * max(e_tiny, e_sub)) + 1
    ck.check("budget %d MiB fits one (%.1f, %.1f MiB) but not both" % (budget_mib, e_tiny, e_sub),
             max(e_tiny, e_sub) < budget_mib < e_tiny + e_sub, "")
    srv = start(["--models", d, "--memory-budget", "%dm" % budget_mib] + flags)
    try:
        ck.eq("evict: tiny:Q4_K_M 200", complete(srv, "tiny:Q4_K_M").status, 200)
        ck.eq("evict: /api/ps [tiny:Q4_K_M]", ps_names(srv), ["tiny:Q4_K_M"])
        r = complete(srv, "sub:Q4_0")
        ck.eq("evict: sub:Q4_0 200 (the idle tiny:Q4_K_M makes room)", r.status, 200)
        ck.eq("evict: /api/ps [sub:Q4_0] only", ps_names(srv), ["sub:Q4_0"])
        ck.check("evict: the log shows tiny:Q4_K_M unloaded to make room",
                 re.search(r"unloading tiny:Q4_K_M \(making room under the memory budget\)", srv.log()),
                 srv.log()[-1500:])
        # a small model fits beside: no eviction needed
        ck.eq("evict: stories:Q8_0 fits beside sub:Q4_0", complete(srv, "stories:Q8_0").status, 200)
        ck.eq("evict: /api/ps [stories:Q8_0, sub:Q4_0]", ps_names(srv), ["stories:Q8_0", "sub:Q4_0"])
        ck.eq("evict: sub:Q4_0 used again", complete(srv, "sub:Q4_0").status, 200)

        # 503: the only model that could make room is busy
        h = Holder(srv, "sub:Q4_0", 8000)
        try:
            ok, _ = wait_until(lambda: (ps_entry(srv, "sub:Q4_0") or {}).get("in_flight", 0) >= 1 or h.done(), 20,
                               0.05)
            ck.check("503: sub:Q4_0 busy (in_flight 1)", ok and not h.done(), ps(srv))
            t = time.time()
            r = complete(srv, "tiny:Q4_K_M")
            waited = time.time() - t
            still_busy = not h.done() and (ps_entry(srv, "sub:Q4_0") or {}).get("in_flight", 0) >= 1
            ck.check("503: (setup) the holder was still running after the refused request", still_busy,
                     "holder finished early: status %s" % h.status)
            ck.eq("503: tiny:Q4_K_M refused while sub:Q4_0 is busy", r.status, 503)
            msg = ks.error_message(r)
            ck.check("503: the message has the need (~%.1f MiB) and the budget (%d MiB)" % (e_tiny, budget_mib),
                     mib_near(msg, r"needs about (\d+) MiB", e_tiny) and mib_near(msg, r"budget is (\d+) MiB",
                                                                                 budget_mib), msg)
            ck.check("503: Retry-After header", r.header("retry-after") is not None, r.headers)
            ck.check("503: waited about --queue-timeout (1 s) for memory (%.2f s)" % waited, 0.8 <= waited <= 15,
                     waited)
            ck.check("503: the busy model was not evicted", ps_entry(srv, "sub:Q4_0") is not None, ps_names(srv))
        finally:
            h.abort()
        ok, _ = wait_until(lambda: (ps_entry(srv, "sub:Q4_0") or {}).get("in_flight") == 0, 10)
        ck.check("503: the holder's request ended after the client left", ok, ps(srv))
        r = complete(srv, "tiny:Q4_K_M")
        ck.eq("after the busy request ends: tiny:Q4_K_M loads (200)", r.status, 200)
        ck.check("after: sub:Q4_0 evicted for it", "sub:Q4_0" not in ps_names(srv) and "tiny:Q4_K_M" in ps_names(srv),
                 ps_names(srv))
        ck.check("never more than the budget: the estimates of the listed models fit",
                 sum(est.get(m["id"], (0,))[0] for m in ps(srv) if "id" in m) <= budget_mib, ps(srv))
    finally:
        stop(srv, "eviction")


def test_lru_order(root):
    d = make_dir(root, ["stories-Q8_0.gguf", "stories-F32.gguf", "plain.gguf"])
    flags = ["-np", "2"]
    est = probe(d, flags, ["stories:Q8_0", "stories:F32", "plain"])
    ids = ["stories-Q8_0", "stories-F32", "plain"]
    if not ck.check("lru probe: three estimates", all(i in est for i in ids), est):
        return
    e = [est[i][0] for i in ids]
    pair, triple = max(e[0] + e[1], e[0] + e[2], e[1] + e[2]), sum(e)
    budget = (pair + triple) / 2
    ck.check("lru: budget %.1f MiB fits any two (%.1f) but not three (%.1f)" % (budget, pair, triple),
             pair + 0.5 < budget < triple - 0.5, e)
    srv = start(["--models", d, "--memory-budget", "%dk" % int(budget * 1024)] + flags)
    try:
        for m in ("stories:Q8_0", "stories:F32"):
            ck.eq("lru: %s 200" % m, complete(srv, m).status, 200)
        time.sleep(0.05)
        ck.eq("lru: stories:Q8_0 used again (stories:F32 is now the least recent)",
              complete(srv, "stories:Q8_0").status, 200)
        ck.eq("lru: plain 200", complete(srv, "plain").status, 200)
        ck.eq("lru: the least recently used (stories:F32) was unloaded", ps_names(srv), ["plain:F32", "stories:Q8_0"])
        ck.check("lru: logged", re.search(r"unloading stories:F32 \(making room", srv.log()), srv.log()[-1500:])
        time.sleep(0.05)
        ck.eq("lru: plain used again", complete(srv, "plain").status, 200)
        ck.eq("lru: stories:F32 back", complete(srv, "stories:F32").status, 200)
        ck.eq("lru: now stories:Q8_0 was the least recent", ps_names(srv), ["plain:F32", "stories:F32"])
    finally:
        stop(srv, "lru")


def test_context_instances(root):
    """A request asking for more context than the loaded instance gets its
    own instance; one asking for less shares the loaded one."""
    d = make_dir(root, ["stories-Q8_0.gguf"])
    srv = start(["--models", d, "-np", "2", "-c", "512"])
    try:
        ck.eq("ctx: default instance 200", generate(srv, "stories:Q8_0").status, 200)
        ck.eq("ctx: one instance with -c 512", [m["context_length"] for m in ps(srv)], [512])
        ck.eq("ctx: num_ctx 256 shares it", generate(srv, "stories:Q8_0", options={"num_ctx": 256}).status, 200)
        ck.eq("ctx: still one instance", [m["context_length"] for m in ps(srv)], [512])
        r = generate(srv, "stories:Q8_0", options={"num_ctx": 1024})
        ck.eq("ctx: num_ctx 1024: 200", r.status, 200)
        ck.eq("ctx: a second instance with context 1024",
              sorted((m["name"], m["context_length"]) for m in ps(srv)),
              [("stories:Q8_0", 512), ("stories:Q8_0", 1024)])
        ck.eq("ctx: two loads logged", srv.log_count(r"loading stories-Q8_0 \(", 2), 2)
        # a prompt of 700 tokens fits the 1024 instance only
        prompt = list(range(3, 703))
        r = srv.post("/v1/completions", {"model": "stories:Q8_0", "prompt": prompt, "max_tokens": 1})
        ck.check("ctx: a 700-token prompt without num_ctx goes to the default (512) instance and is refused",
                 r.status == 400 and "512" in ks.error_message(r), r)
        ck.eq("ctx: num_ctx 900 reuses the 1024 instance",
              generate(srv, "stories:Q8_0", options={"num_ctx": 900}).status, 200)
        ck.eq("ctx: still two loads", count(srv.log(), r"loading stories-Q8_0 \("), 2)
    finally:
        stop(srv, "context-instances")


def kv_per_token(info, kv_bytes=2):
    head_dim = info["embedding_length"] // info["head_count"]
    return 2 * info["block_count"] * info["head_count_kv"] * head_dim * kv_bytes


def test_auto_context(root):
    d = make_dir(root, ["rope-Q8_0.gguf", "stories-Q8_0.gguf"])
    info = ks.kiln_info(ks.model_path("tiny-llama-ropescale-Q8_0"))
    ctx_train = info["context_length"]
    slots = 4
    flags = ["-np", str(slots), "--queue-timeout", "1"]
    est = probe(d, flags, ["rope"])
    if not ck.check("probe: rope loaded with the model's context %d" % ctx_train,
                    est.get("rope-Q8_0", (0, 0))[1] == ctx_train, est):
        return
    full = est["rope-Q8_0"][0]
    kvt = kv_per_token(info) * slots / MIB  # MiB per context token, all slots

    def at(c):
        return full - kvt * (ctx_train - c)

    # fits at half the context, not at the full one
    for want, lo, hi in ((ctx_train // 2, at(ctx_train // 2), full), (2048, at(2048), at(4096))):
        budget = (lo + hi) / 2
        srv = start(["--models", d, "--memory-budget", "%dk" % int(budget * 1024)] + flags)
        try:
            r = complete(srv, "rope")
            name = "auto context (budget %.1f MiB, full %.1f MiB)" % (budget, full)
            ck.eq(name + ": 200", r.status, 200)
            e = ps_entry(srv, "rope:Q8_0") or {}
            c = e.get("context_length")
            ck.eq(name + ": context_length", c, want)
            ck.check(name + ": a power of two >= 2048", isinstance(c, int) and c >= 2048 and c & (c - 1) == 0, c)
            ck.eq(name + ": context_reduced", e.get("context_reduced"), True)
            ck.check(name + ": warning logged",
                     re.search(r"\[warn\].*context of the new instance reduced from %d to %d" % (ctx_train, want),
                               srv.log()), srv.log()[-1500:])
            h = srv.get("/health").json()
            ck.eq(name + ": /health n_ctx", [m.get("n_ctx") for m in h.get("models", [])], [want])
            # a prompt longer than the reduced context is refused with both numbers
            long_prompt = list(range(3, 3 + want + 10))
            r = srv.post("/v1/completions", {"model": "rope", "prompt": long_prompt, "max_tokens": 1})
            ck.check(name + ": a prompt over the reduced context is a 400 naming it",
                     r.status == 400 and str(want) in ks.error_message(r), r)
            # a smaller model keeps its own context, not reduced
            ck.eq(name + ": stories:Q8_0 200", complete(srv, "stories:Q8_0").status, 200)
            s = ps_entry(srv, "stories:Q8_0") or {}
            ck.check(name + ": stories keeps its own 2048, not reduced",
                     s.get("context_length") == 2048 and s.get("context_reduced") is False, s)
            if want == ctx_train // 2:
                # num_ctx asking for the full context cannot fit: refused with a clear error
                r = generate(srv, "rope", options={"num_ctx": ctx_train})
                msg = ks.error_message(r)
                ck.eq(name + ": num_ctx %d that cannot fit: 400" % ctx_train, r.status, 400)
                ck.check(name + ": the error names the context and the budget",
                         str(ctx_train) in msg and "budget" in msg and "MiB" in msg, msg)
        finally:
            stop(srv, "auto-context")

    # a budget below the smallest context the model may get: 503 with numbers
    budget = at(2048) - 2.0
    srv = start(["--models", d, "--memory-budget", "%dk" % int(budget * 1024)] + flags)
    try:
        r = complete(srv, "rope")
        msg = ks.error_message(r)
        ck.eq("budget below the model (%.1f < %.1f MiB): 503" % (budget, at(2048)), r.status, 503)
        ck.check("budget below the model: the message has the need and the budget in MiB",
                 mib_near(msg, r"needs about (\d+) MiB", at(2048)) and mib_near(msg, r"budget is (\d+) MiB", budget),
                 msg)
        ck.eq("budget below the model: nothing loaded", ps_names(srv), [])
        ck.eq("budget below the model: stories:Q8_0 still loads", complete(srv, "stories:Q8_0").status, 200)
    finally:
        stop(srv, "tiny-budget")

    # an explicit -c that cannot fit is refused with a clear error; one that fits is used as is
    budget = (at(ctx_train // 2) + full) / 2
    srv = start(["--models", d, "--memory-budget", "%dk" % int(budget * 1024), "-c", str(ctx_train)] + flags)
    try:
        r = complete(srv, "rope")
        msg = ks.error_message(r)
        ck.eq("explicit -c %d over the budget: 400" % ctx_train, r.status, 400)
        ck.check("explicit -c over the budget: the error names the context, the slots and the budget",
                 str(ctx_train) in msg and "%d slots" % slots in msg and "budget" in msg, msg)
        ck.eq("explicit -c over the budget: nothing loaded", ps_names(srv), [])
    finally:
        stop(srv, "explicit-ctx")
    srv = start(["--models", d, "--memory-budget", "%dk" % int(budget * 1024), "-c", "1024"] + flags)
    try:
        ck.eq("explicit -c 1024: 200", complete(srv, "rope").status, 200)
        e = ps_entry(srv, "rope:Q8_0") or {}
        ck.check("explicit -c 1024: context_length 1024, not reduced",
                 e.get("context_length") == 1024 and e.get("context_reduced") is False, e)
    finally:
        stop(srv, "explicit-ctx-fits")


# ---------------------------------------------------------------- config

def print_config(args, env=None):
    e = dict(os.environ)
    for k in ("MODEL_UNLOAD_TIMEOUT", "CLEANUP_CHECK_INTERVAL", "KILN_PROFILE"):
        e.pop(k, None)
    if env:
        e.update(env)
    p = subprocess.run([ks.KILN_BIN, "serve", "--print-config"] + args, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=e, timeout=60)
    vals = {}
    for ln in p.stdout.decode().splitlines():
        m = re.match(r"^([a-z-]+): (.*)$", ln)
        if m:
            vals[m.group(1)] = m.group(2).strip('"')
    return p.returncode, vals


def test_print_config(root):
    d = make_dir(root, [])
    rc, v = print_config(["--models", d, "--profile", "memory"])
    ck.eq("--print-config --profile memory: exit 0", rc, 0)
    ck.eq("profile memory: values", (v.get("profile"), v.get("kv-type"), v.get("ctx-size"), v.get("parallel")),
          ("memory", "q8_0", "2048", "2"))
    rc, v2 = print_config(["--models", d, "--profile", "memory", "-c", "4096", "--kv-type", "f16"])
    ck.eq("profile memory + -c 4096 --kv-type f16: the flags win",
          (v2.get("ctx-size"), v2.get("kv-type"), v2.get("parallel")), ("4096", "f16", "2"))
    rc, v = print_config(["--models", d, "--profile", "latency"])
    ck.eq("profile latency: one slot, no batching wait", (v.get("parallel"), v.get("batch-wait-ms")), ("1", "0"))
    rc, v = print_config(["--models", d, "--profile", "throughput"])
    ck.check("profile throughput: more slots, larger batches and a batching wait",
             int(v.get("parallel", 0)) > 4 and int(v.get("batch-size", 0)) >= 512 and int(v.get("batch-wait-ms", 0)) > 0,
             v)
    rc, v = print_config(["--models", d], env={"MODEL_UNLOAD_TIMEOUT": "7", "CLEANUP_CHECK_INTERVAL": "3"})
    ck.eq("environment: unload-timeout 7, cleanup-interval 3", (v.get("unload-timeout"), v.get("cleanup-interval")),
          ("7", "3"))
    rc, v = print_config(["--models", d, "--unload-timeout", "9", "--memory-budget", "64m", "--pin", "a,b",
                          "--preload", "a", "--alias", "x=a"], env={"MODEL_UNLOAD_TIMEOUT": "7"})
    ck.eq("flag over environment: unload-timeout 9", v.get("unload-timeout"), "9")
    ck.check("memory-budget shown as 64 MiB", v.get("memory-budget") in ("64m", "64M", str(64 * MIB), "64MiB"), v)
    ck.eq("pin / preload / alias shown", (v.get("pin"), v.get("preload"), v.get("alias")), ("a,b", "a", "x=a"))
    rc, v = print_config(["--models", d], env={"KILN_PROFILE": "memory"})
    ck.eq("KILN_PROFILE=memory: the memory profile", (v.get("profile"), v.get("kv-type")), ("memory", "q8_0"))
    rc, v = print_config(["--models", d, "--profile", "latency"], env={"KILN_PROFILE": "memory"})
    ck.eq("--profile over KILN_PROFILE", (v.get("profile"), v.get("parallel")), ("latency", "1"))
    rc, v = print_config(["--models", d, "--profile", "nosuch"])
    ck.check("unknown profile: nonzero exit", rc != 0, rc)
    rc, v = print_config(["--models", d])
    ck.eq("defaults: unload-timeout 300, cleanup-interval 30", (v.get("unload-timeout"), v.get("cleanup-interval")),
          ("300", "30"))


# ---------------------------------------------------------------- main

def main():
    for k in ("MODEL_UNLOAD_TIMEOUT", "CLEANUP_CHECK_INTERVAL", "KILN_PROFILE", "KILN_MODELS", "KILN_API_KEY"):
        os.environ.pop(k, None)  # the test sets these itself
    root = tempfile.mkdtemp(prefix="kiln-itest-models-")
    t0 = time.time()
    try:
        d = make_dir(root, list(LAYOUT))
        srv = start(["--models", d, "-np", "2", "--alias", "story=stories:Q8_0,t4=tiny-Q4_0"])
        try:
            ck.eq("startup: nothing loaded", ps_names(srv), [])
            for t in (test_concurrent_first_load, test_names, test_unknown_names, test_ps_shape, test_keep_alive):
                run(t, srv, also=[srv])
        finally:
            stop(srv, "names")
        for t in (test_failing_load, test_failing_load_shared, test_ttl, test_never_expire, test_eviction_and_503,
                  test_lru_order, test_context_instances, test_auto_context, test_print_config):
            run(t, root)
    finally:
        for s in SERVERS:
            s.kill()
        shutil.rmtree(root, ignore_errors=True)
    print("total %.1f s" % (time.time() - t0))
    ck.finish()


if __name__ == "__main__":
    main()
