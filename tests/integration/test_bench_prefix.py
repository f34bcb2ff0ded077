#!/usr/bin/env python3
"""test_bench_prefix.py — the kiln-oriented scenarios of `kiln bench server`
(issue 8's benchmarks) against the real `kiln serve` (stories260K, -np 4):

 1. prefix (200-word prefix, 3 between, 1 round): exit 0, RESULT: PASS; the
    "prefix" object has finite positive cold / between / warm TTFTs, a ratio
    equal to warm / cold, one round, the prompt token count from usage; the
    request count is rounds x (between + 2); the server's prefix-cache hit
    counter grew by at least half the prefix (the warm request really shared
    it); the HTML report has the prefix table;
 2. shared-prefix (4 concurrent, 200-word prefix, 32 tokens): the peaks from
    /metrics satisfy logical >= used > 0, the ratio is used / logical, some
    polls succeeded, 4 requests ok;
 3. spec (1 request a mode, 32 tokens): "identical" is true (greedy ngram
    speculation must not change the text), both decode rates finite > 0, the
    speedup is their ratio, draft / accepted counts are numbers with
    accepted <= draft, the acceptance rate is null or in [0, 1];
 4. against a minimal OpenAI-style server without /metrics (in-process mock):
    shared-prefix and spec still exit 0 with the kiln-only figures null;
 5. --help names the scenarios; --duration with prefix and a bad
    --prefix-tokens are usage errors (exit 1).
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
TMP = tempfile.mkdtemp(prefix="kiln-bench-prefix-")


def bench(url, args, model=MODEL, timeout=120):
    return ks.run_bench(url, args, TMP, model, timeout)


def finite_pos(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def metric(srv, name):
    """Sum of the series of `name` in GET /metrics."""
    return ks.metric_sum(srv, name)


def t_prefix(srv, url):
    hits0 = metric(srv, "kiln_prefix_cache_hit_tokens_total")
    html = os.path.join(TMP, "prefix.html")
    rc, d, out = bench(url, ["--scenario", "prefix", "--prefix-tokens", "200", "--between", "3", "--requests", "1",
                             "--report", html])
    hits1 = metric(srv, "kiln_prefix_cache_hit_tokens_total")
    ck.eq("prefix: exit 0", rc, 0)
    ck.check("prefix: RESULT: PASS in the summary", "RESULT: PASS" in out, out)
    if not ck.check("prefix: JSON with a prefix object", d is not None and "prefix" in d, out):
        return
    p = d["prefix"]
    ck.eq("prefix: scenario", d["scenario"], "prefix")
    ck.eq("prefix: requests = 1 x (3 + 2)", (d["requests"], d["ok"]), (5, 5))
    for k in ("cold_ttft_s", "between_ttft_s", "warm_ttft_s", "warm_cold_ratio"):
        ck.check("prefix: %s finite > 0" % k, finite_pos(p.get(k)), p)
    if finite_pos(p.get("cold_ttft_s")) and finite_pos(p.get("warm_ttft_s")):
        ck.check("prefix: ratio = warm / cold", abs(p["warm_cold_ratio"] - p["warm_ttft_s"] / p["cold_ttft_s"]) < 1e-4, p)
    ck.eq("prefix: one round", len(p.get("rounds", [])), 1)
    ck.eq("prefix: echoes the sizes", (p.get("prefix_tokens"), p.get("between")), (200, 3))
    ck.check("prefix: prompt tokens from usage >= 200", isinstance(p.get("prompt_tokens"), int) and
             p["prompt_tokens"] >= 200, p)
    ck.check("prefix: the warm request reused at least half the prefix from the cache",
             isinstance(p.get("prompt_tokens"), int) and hits1 - hits0 >= p["prompt_tokens"] / 2,
             (hits0, hits1, p.get("prompt_tokens")))
    ck.check("prefix: ttft_s covers all requests", d["ttft_s"]["n"] == 5, d["ttft_s"])
    ck.check("prefix: HTML report has the prefix table",
             os.path.exists(html) and "Prefix caching" in open(html).read())


def t_shared(url):
    rc, d, out = bench(url, ["--scenario", "shared-prefix", "--prefix-tokens", "200", "--concurrency", "4",
                             "--max-tokens", "32"])
    ck.eq("shared-prefix: exit 0", rc, 0)
    if not ck.check("shared-prefix: JSON with a shared_prefix object", d is not None and "shared_prefix" in d, out):
        return
    s = d["shared_prefix"]
    ck.eq("shared-prefix: 4 requests ok", (d["requests"], d["ok"]), (4, 4))
    ck.eq("shared-prefix: concurrency", s.get("concurrency"), 4)
    used, logical = s.get("kv_used_bytes_peak"), s.get("kv_logical_bytes_peak")
    ck.check("shared-prefix: peaks are finite numbers > 0", finite_pos(used) and finite_pos(logical), s)
    if finite_pos(used) and finite_pos(logical):
        ck.check("shared-prefix: logical >= used > 0", logical >= used > 0, s)
        ck.check("shared-prefix: ratio = used / logical", abs(s["used_logical_ratio"] - used / logical) < 1e-4, s)
    ck.check("shared-prefix: some /metrics polls", isinstance(s.get("metrics_polls"), int) and s["metrics_polls"] >= 1, s)
    ck.check("shared-prefix: summary names the KV peak", "KV peak in use" in out, out)


def t_spec(url):
    rc, d, out = bench(url, ["--scenario", "spec", "--requests", "1", "--max-tokens", "32"])
    ck.eq("spec: exit 0", rc, 0)
    if not ck.check("spec: JSON with a spec object", d is not None and "spec" in d, out):
        return
    s = d["spec"]
    ck.eq("spec: 2 requests ok", (d["requests"], d["ok"]), (2, 2))
    ck.eq("spec: outputs identical", s.get("identical"), True)
    a, b = s.get("decode_tok_s_none"), s.get("decode_tok_s_ngram")
    ck.check("spec: decode rates finite > 0", finite_pos(a) and finite_pos(b), s)
    if finite_pos(a) and finite_pos(b):
        ck.check("spec: speedup = ngram / none", abs(s["speedup"] - b / a) < 1e-3 * max(1, s["speedup"]), s)
    dr, ac = s.get("draft_tokens"), s.get("accepted_tokens")
    ck.check("spec: draft/accepted counts, 0 <= accepted <= draft",
             isinstance(dr, (int, float)) and isinstance(ac, (int, float)) and 0 <= ac <= dr, s)
    r = s.get("acceptance_rate")
    ck.check("spec: acceptance null or in [0, 1]", r is None or 0 <= r <= 1, s)
    ck.check("spec: summary line", "speculative decoding" in out and "outputs identical: yes" in out, out)


class Mock(http.server.BaseHTTPRequestHandler):
    """A minimal OpenAI-style completion server: 4 fixed tokens, no /metrics."""
    protocol_version = "HTTP/1.0"

    def log_message(self, *a):
        pass

    def do_GET(self):
        self.send_response(404)
        self.end_headers()

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        json.loads(self.rfile.read(n))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for w in ("one", " two", " three", " four"):
            self.wfile.write(b"data: " + json.dumps({"choices": [{"index": 0, "text": w}]}).encode() + b"\n\n")
            self.wfile.flush()
        self.wfile.write(b"data: " + json.dumps({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}})
                         .encode() + b"\n\ndata: [DONE]\n\n")


def t_other_server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Mock)
    th = threading.Thread(target=httpd.serve_forever, daemon=True)
    th.start()
    url = "http://127.0.0.1:%d" % httpd.server_address[1]
    try:
        rc, d, out = bench(url, ["--scenario", "shared-prefix", "--prefix-tokens", "50", "--concurrency", "3"],
                           model="m")
        ck.eq("mock shared-prefix: exit 0", rc, 0)
        if ck.check("mock shared-prefix: JSON", d is not None and "shared_prefix" in d, out):
            s = d["shared_prefix"]
            ck.eq("mock shared-prefix: peaks null without /metrics",
                  (s["kv_used_bytes_peak"], s["kv_logical_bytes_peak"], s["used_logical_ratio"]), (None, None, None))
            ck.check("mock shared-prefix: summary says n/a", "KV bytes: n/a" in out, out)
        rc, d, out = bench(url, ["--scenario", "spec", "--requests", "2"], model="m")
        ck.eq("mock spec: exit 0", rc, 0)
        if ck.check("mock spec: JSON", d is not None and "spec" in d, out):
            s = d["spec"]
            ck.eq("mock spec: acceptance null", (s["acceptance_rate"], s["draft_tokens"]), (None, None))
            ck.eq("mock spec: identical", s["identical"], True)
            ck.eq("mock spec: 4 requests", d["ok"], 4)
        rc, d, out = bench(url, ["--scenario", "prefix", "--prefix-tokens", "20", "--between", "2", "--requests", "2"],
                           model="m")
        ck.eq("mock prefix: exit 0", rc, 0)
        if ck.check("mock prefix: JSON", d is not None and "prefix" in d, out):
            ck.eq("mock prefix: 2 rounds, 8 requests", (len(d["prefix"]["rounds"]), d["ok"]), (2, 8))
            ck.check("mock prefix: ratio finite", finite_pos(d["prefix"]["warm_cold_ratio"]), d["prefix"])
    finally:
        httpd.shutdown()
        httpd.server_close()


def t_usage():
    p = subprocess.run([ks.KILN_BIN, "bench", "server", "--help"], stdout=subprocess.PIPE, timeout=30)
    h = p.stdout.decode()
    ck.check("--help documents prefix, shared-prefix, spec, --prefix-tokens, --between",
             all(w in h for w in ("prefix", "shared-prefix", "spec", "--prefix-tokens", "--between")), h)
    for args in (["--scenario", "prefix", "--duration", "5"], ["--scenario", "prefix", "--prefix-tokens", "0"],
                 ["--scenario", "spec", "--between", "-1"]):
        rc, _, out = bench("http://127.0.0.1:9", args)
        ck.eq("usage error %s: exit 1" % " ".join(args), rc, 1)


def main():
    srv = ks.Server(["-m", ks.model_path(MODEL), "-t", "1", "-np", "4", "-c", "2048"])
    url = "http://127.0.0.1:%d" % srv.port
    try:
        ck.run(t_prefix, srv, url)
        ck.run(t_shared, url)
        ck.run(t_spec, url)
        rc = srv.stop()
        ck.exited_clean("server after the benches", srv, rc)
        ck.run(t_other_server)
        ck.run(t_usage)
    finally:
        srv.kill()
        shutil.rmtree(TMP, ignore_errors=True)
    ck.finish([srv])


if __name__ == "__main__":
    main()
