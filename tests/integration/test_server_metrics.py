#!/usr/bin/env python3
"""test_server_metrics.py — GET /metrics after known traffic:
 - promtool (Debian's prometheus package) accepts the exposition;
 - kiln_requests_total{endpoint,status} counts exactly the requests made,
   errors included, and a client that left mid-stream counts as 499;
 - histogram counts equal the requests (request duration per route, TTFT
   per generation, queue wait per admitted request) and their buckets are
   cumulative;
 - token counters equal the usage the API reported;
 - gauges: running/waiting back at 0, KV blocks and model bytes present;
 - /health's rolling percentiles count the same requests, are ordered, and
   the SLA verdict flips with --sla-p95-ms."""

import os
import re
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kiln_server as ks  # noqa: E402

ks.need_env()
ck = ks.Checks()
MODEL = "stories260K"
LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text):
    """{(name, frozenset(labels)): value}"""
    out = {}
    for ln in text.splitlines():
        if not ln or ln.startswith("#"):
            continue
        m = LINE.match(ln)
        if not m:
            ck.fail("exposition line parses", ln)
            continue
        labels = frozenset(LABEL.findall(m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def val(ms, name, **labels):
    return ms.get((name, frozenset(labels.items())), 0.0)


def scrape(srv):
    r = srv.get("/metrics")
    ck.eq("/metrics status", r.status, 200)
    ck.check("/metrics content type is Prometheus text 0.0.4", "version=0.0.4" in (r.header("Content-Type") or ""),
             r.header("Content-Type"))
    return r.body.decode("utf-8")


def promtool(text):
    p = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True)
    ck.eq("promtool check metrics accepts the exposition (%s)" % p.stderr.decode()[:300].strip(), p.returncode, 0)


def test_traffic():
    srv = ks.Server(["-m", ks.model_path(MODEL), "-c", "256", "-t", "1", "-np", "2", "--cache-ram", "0"])
    try:
        before = parse(scrape(srv))
        ck.eq("no requests but /health counted before traffic",
              sum(v for (n, l), v in before.items() if n == "kiln_requests_total" and
                  dict(l).get("endpoint") != "/health"), 0.0)
        usage_prompt = usage_gen = 0
        n_comp = 5
        for i in range(n_comp):
            j = srv.post_json("/v1/completions", {"prompt": "Once upon a time %d" % i, "max_tokens": 8 + i,
                                                  "temperature": 0, "ignore_eos": True})
            usage_prompt += j["usage"]["prompt_tokens"]
            usage_gen += j["usage"]["completion_tokens"]
        res = srv.sse("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 6,
                                               "stream": True, "stream_options": {"include_usage": True},
                                               "ignore_eos": True})
        u = [c for c in res.chunks if c.get("usage")][-1]["usage"]
        usage_prompt += u["prompt_tokens"]
        usage_gen += u["completion_tokens"]
        emb = srv.post_json("/v1/embeddings", {"input": ["a b", "c d e"]})
        usage_prompt += emb["usage"]["prompt_tokens"]
        bad = [srv.post("/v1/completions", raw=b"{nope").status,
               srv.post("/v1/completions", {"model": "nope", "prompt": "x"}).status,
               srv.get("/nowhere").status]
        ck.eq("error statuses", bad, [400, 404, 404])
        # a client that leaves mid-stream
        st = srv.open_stream("/v1/completions", {"prompt": "The", "max_tokens": 200, "stream": True,
                                                  "ignore_eos": True})
        next(iter(st.sse_events()))
        st.abort()
        ok, h, _ = srv.wait_idle(10)
        ck.check("idle after the traffic", ok, h)
        text = scrape(srv)
        promtool(text)
        ms = parse(text)
        R = "kiln_requests_total"
        ck.eq("completions 200", val(ms, R, endpoint="/v1/completions", status="200"), float(n_comp))
        ck.eq("completions 400", val(ms, R, endpoint="/v1/completions", status="400"), 1.0)
        ck.eq("completions 404", val(ms, R, endpoint="/v1/completions", status="404"), 1.0)
        ck.eq("completions 499 (client left)", val(ms, R, endpoint="/v1/completions", status="499"), 1.0)
        ck.eq("chat 200", val(ms, R, endpoint="/v1/chat/completions", status="200"), 1.0)
        ck.eq("embeddings 200", val(ms, R, endpoint="/v1/embeddings", status="200"), 1.0)
        ck.eq("unknown route 404", val(ms, R, endpoint="other", status="404"), 1.0)
        ck.eq("one /metrics scrape counted before this one", val(ms, R, endpoint="/metrics", status="200"), 1.0)
        D = "kiln_request_duration_seconds_count"
        ck.eq("duration count, completions (5 + the one that left)",
              val(ms, D, model=MODEL, endpoint="/v1/completions"), float(n_comp + 1))
        ck.eq("duration count, chat", val(ms, D, model=MODEL, endpoint="/v1/chat/completions"), 1.0)
        ck.eq("duration count, embeddings", val(ms, D, model=MODEL, endpoint="/v1/embeddings"), 1.0)
        n_gen_reqs = n_comp + 2  # + chat + the stream that was cut
        ck.eq("TTFT count = generation requests", val(ms, "kiln_time_to_first_token_seconds_count", model=MODEL),
              float(n_gen_reqs))
        ck.eq("prefill count = generation requests", val(ms, "kiln_prefill_seconds_count", model=MODEL),
              float(n_gen_reqs))
        ck.eq("queue wait count = admitted requests (embeddings too)",
              val(ms, "kiln_queue_wait_seconds_count", model=MODEL), float(n_gen_reqs + 1))
        gen_total = val(ms, "kiln_generated_tokens_total", model=MODEL)
        ck.check("generated tokens >= the usage reported (+ the cut stream's)", gen_total >= usage_gen + 1,
                 (gen_total, usage_gen))
        ck.check("generated tokens: the cut stream made fewer than 200", gen_total < usage_gen + 200,
                 (gen_total, usage_gen))
        ck.check("prompt tokens >= the usage reported", val(ms, "kiln_prompt_tokens_total", model=MODEL) >= usage_prompt,
                 (val(ms, "kiln_prompt_tokens_total", model=MODEL), usage_prompt))
        itl = val(ms, "kiln_inter_token_latency_seconds_count", model=MODEL)
        ck.eq("ITL observations = tokens - first tokens", itl, gen_total - n_gen_reqs)
        # buckets cumulative and ending at _count
        for name, lbl in [("kiln_time_to_first_token_seconds", {"model": MODEL}),
                          ("kiln_request_duration_seconds", {"model": MODEL, "endpoint": "/v1/completions"})]:
            bs = sorted(((float("inf") if dict(k[1])["le"] == "+Inf" else float(dict(k[1])["le"])), v)
                        for k, v in ms.items() if k[0] == name + "_bucket" and
                        all(dict(k[1]).get(a) == b for a, b in lbl.items()))
            ck.check(name + " buckets are cumulative", all(bs[i][1] <= bs[i + 1][1] for i in range(len(bs) - 1)), bs)
            ck.eq(name + " +Inf bucket = count", bs[-1][1], val(ms, name + "_count", **lbl))
        ck.eq("running gauge back to 0", val(ms, "kiln_requests_running", model=MODEL), 0.0)
        ck.eq("waiting gauge back to 0", val(ms, "kiln_requests_waiting", model=MODEL), 0.0)
        ck.eq("KV blocks used back to 0", val(ms, "kiln_kv_blocks_used", model=MODEL), 0.0)
        # 2 slots x (256 / 32 blocks + one for copy-on-write), no prefix-cache room
        ck.eq("KV blocks capacity = slots x (blocks per context + 1)", val(ms, "kiln_kv_blocks_capacity", model=MODEL),
              18.0)
        ck.check("model bytes > 0", val(ms, "kiln_model_bytes", model=MODEL) > 0, "")
        ck.eq("one model load counted", val(ms, "kiln_model_loads_total", model=MODEL), 1.0)
        ck.check("process RSS exported", val(ms, "process_resident_memory_bytes") > 0, "")
        # rolling percentiles in /health
        st, h = srv.health()
        lat = h["latency"]
        ck.eq("health: TTFT window count", lat["ttft_s"]["count"], n_gen_reqs)
        ck.eq("health: e2e window counts successful generation and embedding requests", lat["e2e_s"]["count"],
              n_comp + 2)
        for k in ("ttft_s", "e2e_s"):
            q = lat[k]
            ck.check("health: %s p50 <= p95 <= p99" % k, 0 < q["p50"] <= q["p95"] <= q["p99"], q)
        ck.eq("health: SLA passes a 2 s target on this tiny model", h["sla"]["pass"], True)
    finally:
        rc = srv.stop(30)
    ck.exited_clean("metrics server", srv, rc)
    return srv


def test_sla_fail():
    srv = ks.Server(["-m", ks.model_path(MODEL), "-c", "256", "-t", "1", "--sla-p95-ms", "1"])
    try:
        st, h = srv.health()
        ck.eq("health: no verdict before any request", h["sla"]["pass"], None)
        for i in range(3):
            srv.post_json("/v1/completions", {"prompt": "Once", "max_tokens": 40, "ignore_eos": True})
        st, h = srv.health()
        ck.eq("health: SLA target 1 ms", h["sla"]["p95_target_s"], 0.001)
        ck.eq("health: SLA fails a 1 ms target", h["sla"]["pass"], False)
    finally:
        rc = srv.stop(30)
    ck.exited_clean("sla server", srv, rc)


if __name__ == "__main__":
    ck.run(test_traffic)
    ck.run(test_sla_fail)
    ck.finish()
