#!/usr/bin/env python3
"""test_bench_cache.py — the cache scenario of `kiln bench server` (issue 9's
benchmark) against the real `kiln serve` (stories260K, response cache on,
a fresh --cache-dir):

 1. --requests 20 --duration 2 (3 rounds): exit 0, RESULT: PASS and the two
    goal lines; the JSON has every documented key with goal_l1_p99_ms 1 and
    goal_l2_p99_ms 5; each latency object is ordered (min <= p50 <= p90 <=
    p99 <= max, all >= 0) with 60 samples for L1 and L2; 20 populate misses;
    no unexpected miss, no text mismatch. Checked against GET /cache/stats
    read by this test before and after the run: l2.response.hits grew by
    exactly the 60 phase-3 requests (= the report's l2_hits and l2_requests),
    l1.response.hits by the 60 L1-phase requests plus the throughput hits,
    l1.response.misses by the 20 populate + 60 L2-phase lookups; entries ==
    20; bytes_per_entry = l1 bytes / entries; entry_overhead_bytes =
    l1_entry_overhead_bytes; overhead_per_entry = bytes_per_entry - the
    answer text; hits_per_s > 0 and = hits / duration; the HTML report;
 2. a server started with --response-cache=false: exit 1 and a message
    saying the response cache is off;
 3. in-process fakes: a server without /cache/stats (404) and one whose
    answers have no X-Cache header: exit 1, "not a kiln server with the
    response cache";
 4. usage errors: --duration with --requests-total, --rounds 0, and
    --requests-total with another scenario (exit 1); --help documents it.
"""

import http.server
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kiln_server as ks  # noqa: E402

ks.need_env()
ck = ks.Checks()
MODEL = "stories260K"
TMP = tempfile.mkdtemp(prefix="kiln-bench-cache-")
N, ROUNDS = 20, 3


def bench(url, args, model=MODEL, timeout=120):
    return ks.run_bench(url, args, TMP, model, timeout)


def num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def response_stats(srv):
    r = srv.get("/cache/stats")
    if r.status != 200:
        raise ks.ServerError("GET /cache/stats -> %r" % r)
    return r.json()


def check_ms(name, o, n=None):
    """A latency object {p50, p90, p99, max, ...} in ms, ordered."""
    if not ck.check("%s: an object with p50/p90/p99/max" % name,
                    isinstance(o, dict) and all(num(o.get(k)) for k in ("min", "p50", "p90", "p99", "max")), o):
        return
    ck.check("%s: 0 <= min <= p50 <= p90 <= p99 <= max" % name,
             0 <= o["min"] <= o["p50"] <= o["p90"] <= o["p99"] <= o["max"], o)
    if n is not None:
        ck.eq("%s: samples" % name, o.get("n"), n)


def t_cache(srv, url):
    s0 = response_stats(srv)
    html = os.path.join(TMP, "cache.html")
    rc, d, out = bench(url, ["--scenario", "cache", "--requests", str(N), "--duration", "2", "--max-tokens", "16",
                             "--report", html])
    s1 = response_stats(srv)
    ck.eq("cache: exit 0", rc, 0)
    ck.check("cache: RESULT: PASS", "RESULT: PASS" in out, out)
    for g in ("goal L1 hit p99 < 1 ms (server): ", "goal L2 hit p99 < 5 ms (server): "):
        ck.check("cache: summary line '%s' PASS or FAIL" % g.strip(),
                 (g + "PASS") in out or (g + "FAIL") in out, out)
    if not ck.check("cache: JSON result", isinstance(d, dict), out):
        return
    keys = ("l1_server_ms", "l1_client_ms", "l2_server_ms", "l2_client_ms", "hits_per_s", "throughput_server_ms",
            "entries", "bytes_per_entry", "overhead_per_entry", "goal_l1_p99_ms", "goal_l2_p99_ms")
    ck.check("cache: every documented key", all(k in d for k in keys), sorted(d))
    ck.eq("cache: scenario", d.get("scenario"), "cache")
    ck.eq("cache: goals", (d.get("goal_l1_p99_ms"), d.get("goal_l2_p99_ms")), (1, 5))
    ck.eq("cache: pass", d.get("pass"), True)
    ck.eq("cache: 20 populate misses", (d.get("populate_misses"), d.get("populate_hits")), (N, 0))
    ck.eq("cache: every expected hit was a hit", d.get("not_hits"), {"l1": 0, "l2": 0, "throughput": 0})
    ck.eq("cache: hits carry the populate text", d.get("mismatched"), 0)
    ck.eq("cache: every answer had Server-Timing", d.get("no_server_timing"), 0)
    ck.eq("cache: the server has L2", d.get("l2"), True)
    check_ms("l1_server_ms", d.get("l1_server_ms"), N * ROUNDS)
    check_ms("l1_client_ms", d.get("l1_client_ms"), N * ROUNDS)
    check_ms("l2_server_ms", d.get("l2_server_ms"), N * ROUNDS)
    check_ms("l2_client_ms", d.get("l2_client_ms"), N * ROUNDS)
    check_ms("throughput_server_ms", d.get("throughput_server_ms"), d.get("throughput_hits"))
    check_ms("throughput_client_ms", d.get("throughput_client_ms"), d.get("throughput_hits"))
    for k in ("l1", "l2"):
        sv, cl = d.get(k + "_server_ms") or {}, d.get(k + "_client_ms") or {}
        if num(sv.get("p50")) and num(cl.get("p50")):
            ck.check("%s: server-side p50 <= client p50 (the server's part of the round trip)" % k,
                     sv["p50"] <= cl["p50"], (sv, cl))
    for k, v in (("goal_l1_pass", d.get("l1_server_ms")), ("goal_l2_pass", d.get("l2_server_ms"))):
        goal = 1 if k == "goal_l1_pass" else 5
        if isinstance(v, dict) and num(v.get("p99")):
            ck.eq("cache: %s = (p99 < %d ms)" % (k, goal), d.get(k), v["p99"] < goal)

    # phase 3 against the server's own counters
    l2h = s1["l2"]["response"]["hits"] - s0["l2"]["response"]["hits"]
    ck.eq("cache: l2.response.hits grew by the phase-3 requests", l2h, N * ROUNDS)
    ck.eq("cache: the report's l2_hits / l2_requests", (d.get("l2_hits"), d.get("l2_requests")), (l2h, N * ROUNDS))
    thr = d.get("throughput_hits")
    l1h = s1["l1"]["response"]["hits"] - s0["l1"]["response"]["hits"]
    l1m = s1["l1"]["response"]["misses"] - s0["l1"]["response"]["misses"]
    ck.check("cache: l1.response.hits grew by the L1 phase + the throughput hits",
             isinstance(thr, int) and l1h == N * ROUNDS + thr, (l1h, thr))
    ck.eq("cache: l1.response.misses grew by the populate + the L2-phase lookups", l1m, N + N * ROUNDS)
    ck.check("cache: throughput requests all hits", thr == d.get("throughput_requests") and thr > 0, d)
    ck.check("cache: hits_per_s > 0", num(d.get("hits_per_s")) and d["hits_per_s"] > 0, d.get("hits_per_s"))
    if num(d.get("throughput_duration_s")) and d["throughput_duration_s"] > 0 and isinstance(thr, int):
        ck.check("cache: hits_per_s = hits / duration",
                 abs(d["hits_per_s"] - thr / d["throughput_duration_s"]) <= 1e-3 * d["hits_per_s"] + 1e-6, d)
        ck.check("cache: the throughput phase lasted about --duration 2",
                 1.9 <= d["throughput_duration_s"] <= 10, d["throughput_duration_s"])

    # memory against /cache/stats
    l1 = s1["l1"]["response"]
    ck.eq("cache: entries == 20", d.get("entries"), N)
    ck.eq("cache: /cache/stats l1 entries == 20", l1["entries"], N)
    ck.eq("cache: bytes", d.get("bytes"), l1["bytes"])
    if num(d.get("bytes_per_entry")) and l1["entries"]:
        ck.check("cache: bytes_per_entry = bytes / entries",
                 abs(d["bytes_per_entry"] - l1["bytes"] / l1["entries"]) < 1e-3, (d["bytes_per_entry"], l1))
    ck.eq("cache: entry_overhead_bytes", d.get("entry_overhead_bytes"), s1.get("l1_entry_overhead_bytes"))
    if all(num(d.get(k)) for k in ("bytes_per_entry", "text_bytes_per_entry", "overhead_per_entry")):
        ck.check("cache: text bytes > 0", d["text_bytes_per_entry"] > 0, d)
        ck.check("cache: overhead_per_entry = bytes_per_entry - text bytes",
                 abs(d["overhead_per_entry"] - (d["bytes_per_entry"] - d["text_bytes_per_entry"])) < 1e-3, d)
    total = N + 2 * N * ROUNDS + (thr or 0)
    ck.eq("cache: requests = populate + 2 x rounds x N + throughput", (d.get("requests"), d.get("ok")), (total, total))
    ck.check("cache: HTML report", os.path.exists(html) and "L1 hit, server" in open(html).read())


def t_cache_off():
    srv = ks.Server(["-m", ks.model_path(MODEL), "-t", "1", "--response-cache=false"])
    try:
        rc, d, out = bench("http://127.0.0.1:%d" % srv.port, ["--scenario", "cache", "--requests", "3",
                                                              "--duration", "1"])
        ck.eq("response cache off: exit 1", rc, 1)
        ck.check("response cache off: the message says so", "response cache is off" in out, out)
        ck.eq("response cache off: no JSON result", d, None)
    finally:
        rc = srv.stop()
    ck.exited_clean("server with the response cache off", srv, rc)


class NoStats(http.server.BaseHTTPRequestHandler):
    """An OpenAI-style server without /cache/stats."""
    protocol_version = "HTTP/1.0"

    def log_message(self, *a):
        pass

    def do_GET(self):
        self.send_response(404)
        self.end_headers()

    def do_POST(self):
        self.send_response(404)
        self.end_headers()


class NoXCache(NoStats):
    """Has a /cache/stats page, but its answers carry no X-Cache."""

    def do_GET(self):
        s = {"entries": 0, "bytes": 0, "hits": 0, "misses": 0}
        b = json.dumps({"l1": {"response": s}, "l2": {"response": s}, "enabled": {"response": True},
                        "l1_entry_overhead_bytes": 100}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b)

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        json.loads(self.rfile.read(n))
        b = json.dumps({"choices": [{"index": 0, "text": "hello", "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 3, "completion_tokens": 1}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b)


def t_not_kiln():
    for handler, what in ((NoStats, "GET /cache/stats: HTTP 404"), (NoXCache, "X-Cache header absent")):
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        th = threading.Thread(target=httpd.serve_forever, daemon=True)
        th.start()
        try:
            rc, d, out = bench("http://127.0.0.1:%d" % httpd.server_address[1],
                               ["--scenario", "cache", "--requests", "2", "--duration", "1"], model="m")
            ck.eq("%s: exit 1" % handler.__name__, rc, 1)
            ck.check("%s: 'not a kiln server with the response cache' (%s)" % (handler.__name__, what),
                     "not a kiln server with the response cache" in out and what in out, out)
        finally:
            httpd.shutdown()
            httpd.server_close()


def t_usage():
    p = subprocess.run([ks.KILN_BIN, "bench", "server", "--help"], stdout=subprocess.PIPE, timeout=30)
    h = p.stdout.decode()
    ck.check("--help documents cache, --rounds, --requests-total",
             all(w in h for w in ("cache ", "--rounds", "--requests-total")), h)
    for args in (["--scenario", "cache", "--duration", "1", "--requests-total", "5"],
                 ["--scenario", "cache", "--rounds", "0"],
                 ["--scenario", "throughput", "--requests-total", "5"]):
        rc, _, out = bench("http://127.0.0.1:9", args)
        ck.eq("usage error %s: exit 1" % " ".join(args), rc, 1)


def main():
    srv = ks.Server(["-m", ks.model_path(MODEL), "-t", "1"], cache=True)
    url = "http://127.0.0.1:%d" % srv.port
    try:
        ck.run(t_cache, srv, url)
        rc = srv.stop()
        ck.exited_clean("server after the bench", srv, rc)
        ck.run(t_cache_off)
        ck.run(t_not_kiln)
        ck.run(t_usage)
    finally:
        srv.kill()
        shutil.rmtree(TMP, ignore_errors=True)
    ck.finish([srv])


if __name__ == "__main__":
    main()
