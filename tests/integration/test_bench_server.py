#!/usr/bin/env python3
"""test_bench_server.py — `kiln bench server` against the real `kiln serve`
(stories260K, one thread, --api-key so the key path is exercised):

 1. throughput (4 streams, 3 s): exit 0 with a generous SLA; the JSON has every
    key; percentiles are ordered; requests = ok + errors; Little's law
    (req/s x mean e2e) shows ~4 requests really were in flight; the HTML
    report exists and its <svg> plots are well-formed XML;
 2. latency (4 requests): two phases of 4 sequential requests each (cache off,
    then on); the e2e times add up to no more than the wall time;
 3. ramp (2 -> 6 req/s over 4 s, 2 steps): a `steps` array whose counts add
    up to the total, a `knee` key, the latency-vs-load plot in the report;
 4. an impossible SLA (--sla-p95 0.000001) gives exit 2 and "pass": false;
 5. --dataset + --ignore-eos: the output token count is exactly
    max_tokens x ok (from the server's usage), the inter-token (chunk gap)
    samples number at most tokens - 1 per request, and every request gives
    one time-per-output-token sample;
 6. errors by kind: no API key -> http_4xx and exit 1; nothing listening ->
    connect and exit 1; bad options -> exit 1;
 7. robustness: the server is SIGKILLed mid-run, or SIGSTOPped (hung): the
    bench exits within a bounded time with errors (network/connect, or
    timeout), exit 1 or 2, instead of hanging.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kiln_server as ks  # noqa: E402

ks.need_env()
ck = ks.Checks()
MODEL = "stories260K"
KEY = "bench-key"
TMP = tempfile.mkdtemp(prefix="kiln-bench-server-")
STAT_KEYS = ["p50", "p75", "p90", "p95", "p99", "p999", "min", "max", "mean", "stddev"]
TOP_KEYS = ["scenario", "requests", "ok", "errors", "ttft_s", "itl_s", "e2e_s", "output_tok_s", "requests_s",
            "cache_hit_rate", "goodput", "sla"]


def start_server():
    return ks.Server(["-m", ks.model_path(MODEL), "-t", "1", "-c", "256", "--api-key", KEY])


def bench(srv_url, args, timeout=60, key=True):
    """Runs kiln bench server; returns (exit code, parsed JSON or None, stderr, seconds)."""
    out = os.path.join(TMP, "out.json")
    if os.path.exists(out):
        os.remove(out)
    cmd = [ks.KILN_BIN, "bench", "server", "--url", srv_url, "--model", MODEL, "--output", out] + list(args)
    if key:
        cmd += ["--api-key", KEY]
    t0 = time.time()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    dt = time.time() - t0
    doc = None
    if os.path.exists(out):
        with open(out) as f:
            doc = json.load(f)
    return p.returncode, doc, p.stdout.decode("utf-8", "replace") + p.stderr.decode("utf-8", "replace"), dt


def check_doc(name, d, scenario):
    """The keys, the ordering of percentiles and the consistency of the counts."""
    if not ck.check(name + ": JSON written", d is not None):
        return False
    missing = [k for k in TOP_KEYS if k not in d]
    ck.check(name + ": top-level keys", not missing, "missing %s" % missing)
    ck.eq(name + ": scenario", d.get("scenario"), scenario)
    errs = sum(d["errors"].values())
    ck.eq(name + ": requests = ok + errors", d["requests"], d["ok"] + errs)
    for k in ("ttft_s", "itl_s", "e2e_s", "tpot_s"):
        s = d[k]
        miss = [x for x in STAT_KEYS if x not in s]
        ck.check("%s: %s has %s" % (name, k, STAT_KEYS), not miss, "missing %s" % miss)
        if d["ok"] == 0 or s["p50"] is None:
            continue
        chain = [s["min"], s["p50"], s["p75"], s["p90"], s["p95"], s["p99"], s["p999"], s["max"]]
        ck.check("%s: %s min <= p50 <= ... <= p99.9 <= max" % (name, k),
                 all(a <= b + 1e-12 for a, b in zip(chain, chain[1:])) and chain[0] >= 0, chain)
        ck.check("%s: %s min <= mean <= max, stddev >= 0" % (name, k),
                 s["min"] - 1e-12 <= s["mean"] <= s["max"] + 1e-12 and s["stddev"] >= 0, s)
    if d["ok"]:
        ck.check(name + ": ttft p50 <= e2e p50", d["ttft_s"]["p50"] <= d["e2e_s"]["p50"] + 1e-9,
                 (d["ttft_s"]["p50"], d["e2e_s"]["p50"]))
        ck.eq(name + ": e2e sample count = ok", d["e2e_s"]["n"], d["ok"])
    ck.check(name + ": sla has p95_target_s and pass", "p95_target_s" in d["sla"] and isinstance(d["sla"]["pass"], bool),
             d["sla"])
    ck.check(name + ": goodput <= requests/s", d["goodput"] <= d["requests_s"] + 1e-9, (d["goodput"], d["requests_s"]))
    return True


def check_report(name, path, want_texts):
    if not ck.check(name + ": HTML report exists", os.path.exists(path)):
        return
    with open(path, encoding="utf-8") as f:
        html = f.read()
    ck.check(name + ": report contains <svg", "<svg" in html)
    ck.check(name + ": report is self-contained (no scripts or external resources)",
             "<script" not in html and "src=" not in html and "href=" not in html)
    svgs = []
    i = 0
    while True:
        a = html.find("<svg", i)
        if a < 0:
            break
        b = html.find("</svg>", a)
        svgs.append(html[a:b + 6])
        i = b + 6
    bad = []
    for s in svgs:
        try:
            ET.fromstring(s)
        except ET.ParseError as e:
            bad.append(str(e))
    ck.check(name + ": 3 SVG plots, each well-formed XML", len(svgs) == 3 and not bad, (len(svgs), bad))
    for t in want_texts:
        ck.check(name + ": report shows %r" % t, t in html)


def t_throughput(url):
    rep = os.path.join(TMP, "t.html")
    rc, d, log, dt = bench(url, ["--scenario", "throughput", "--concurrency", "4", "--duration", "3",
                                 "--max-tokens", "32", "--sla-p95", "30", "--report", rep])
    ck.eq("throughput: exit 0 (PASS) with a generous SLA", rc, 0)
    if not check_doc("throughput", d, "throughput"):
        print(log)
        return
    ck.check("throughput: requests succeeded, no errors", d["ok"] >= 8 and d["errors"] == {}, (d["ok"], d["errors"]))
    ck.check("throughput: sla.pass true", d["sla"]["pass"] is True)
    ck.check("throughput: PASS line printed", "SLA: PASS" in log, log[-500:])
    little = d["requests_s"] * d["e2e_s"]["mean"]
    ck.check("throughput: ~4 requests in flight (req/s x mean e2e in [2, 4.3])", 2.0 <= little <= 4.3, little)
    ck.check("throughput: output tok/s = output tokens / duration",
             abs(d["output_tok_s"] - d["output_tokens"] / d["duration_s"]) < 1e-3 * d["output_tok_s"] + 1e-6,
             (d["output_tok_s"], d["output_tokens"], d["duration_s"]))
    ck.check("throughput: ran ~3 s", 2.9 <= d["duration_s"] <= 20, d["duration_s"])
    ck.check("throughput: cache_hit_rate null (kiln has no /cache/stats yet)", d["cache_hit_rate"] is None)
    check_report("throughput", rep, ["Time to first token", "Output tokens per second"])


def t_latency(url):
    rc, d, log, dt = bench(url, ["--scenario", "latency", "--requests", "4", "--max-tokens", "16", "--sla-p95", "30"])
    ck.eq("latency: exit 0", rc, 0)
    if not check_doc("latency", d, "latency"):
        print(log)
        return
    ck.eq("latency: 8 requests (4 cache off + 4 cache on)", (d["requests"], d["ok"]), (8, 8))
    ph = d.get("phases", {})
    ck.eq("latency: phases", sorted(ph), ["cache_off", "cache_on"])
    if sorted(ph) == ["cache_off", "cache_on"]:
        ck.eq("latency: 4 requests per phase", (ph["cache_off"]["requests"], ph["cache_on"]["requests"]), (4, 4))
    ck.check("latency: sequential (sum of e2e <= wall time)",
             d["e2e_s"]["mean"] * d["ok"] <= d["duration_s"] + 1e-3, (d["e2e_s"]["mean"] * d["ok"], d["duration_s"]))


def t_ramp(url):
    rep = os.path.join(TMP, "r.html")
    rc, d, log, dt = bench(url, ["--scenario", "ramp", "--initial-rate", "2", "--final-rate", "6", "--ramp-duration", "4",
                                 "--ramp-steps", "2", "--max-tokens", "16", "--sla-p95", "30", "--sla-max-errors", "1",
                                 "--report", rep])
    ck.eq("ramp: exit 0 with a generous SLA", rc, 0)
    if not check_doc("ramp", d, "ramp"):
        print(log)
        return
    steps = d.get("steps", [])
    ck.eq("ramp: 2 steps", len(steps), 2)
    if len(steps) == 2:
        ck.eq("ramp: offered rates", [s["offered_rate"] for s in steps], [2.0, 6.0])
        ck.eq("ramp: step requests add up", sum(s["requests"] for s in steps), d["requests"])
        for i, s in enumerate(steps):
            ck.check("ramp: step %d keys" % i, all(k in s for k in ("e2e_s", "ttft_s", "goodput", "error_rate", "sla_pass")), s)
    # Poisson arrivals: 2 s at 2/s + 2 s at 6/s = 16 expected
    ck.check("ramp: request count plausible for the offered load (6..32)", 6 <= d["requests"] <= 32, d["requests"])
    ck.check("ramp: knee key present, null when every step passes", "knee" in d and d["knee"] is None, d.get("knee"))
    check_report("ramp", rep, ["latency percentiles vs offered load", "Steps"])


def t_sla_fail(url):
    rc, d, log, dt = bench(url, ["--scenario", "throughput", "--concurrency", "2", "--requests", "4", "--max-tokens", "8",
                                 "--sla-p95", "0.000001"])
    ck.eq("impossible SLA: exit 2", rc, 2)
    if check_doc("impossible SLA", d, "throughput"):
        ck.eq("impossible SLA: 4 requests ok", (d["requests"], d["ok"]), (4, 4))
        ck.check("impossible SLA: pass false, goodput 0", d["sla"]["pass"] is False and d["goodput"] == 0, d["sla"])
    ck.check("impossible SLA: FAIL line printed", "SLA: FAIL" in log, log[-500:])
    rc, d, log, dt = bench(url, ["--scenario", "latency", "--requests", "2", "--max-tokens", "8",
                                 "--sla-ttft-p95", "0.000001", "--sla-p95", "30"])
    ck.eq("impossible TTFT SLA: exit 2", rc, 2)


def t_dataset(url):
    ds = os.path.join(TMP, "ds.jsonl")
    with open(ds, "w") as f:
        f.write(json.dumps({"prompt": "Once upon a time", "max_tokens": 7}) + "\n\n")
        f.write(json.dumps({"prompt": "The little dog", "max_tokens": 7}) + "\n")
    rc, d, log, dt = bench(url, ["--scenario", "throughput", "--concurrency", "2", "--requests", "6", "--dataset", ds,
                                 "--ignore-eos", "--sla-p95", "30"])
    ck.eq("dataset: exit 0", rc, 0)
    if check_doc("dataset", d, "throughput"):
        ck.eq("dataset: output tokens = 7 x ok (server usage)", (d["ok"], d["output_tokens"]), (6, 42))
        # the server may send several tokens in one chunk: gaps <= tokens - 1 per request
        ck.check("dataset: inter-token gaps <= tokens - 1 per request", d["itl_s"]["n"] <= 36, d["itl_s"]["n"])
        ck.eq("dataset: one time-per-output-token sample per request", d["tpot_s"]["n"], 6)
    with open(ds, "w") as f:
        f.write('{"prompt": "ok"}\n{"prompt": 5}\n')
    rc, d, log, dt = bench(url, ["--scenario", "latency", "--dataset", ds])
    ck.check("bad dataset: exit 1 naming the line", rc == 1 and "ds.jsonl:2" in log, (rc, log[-300:]))


def t_errors(url):
    rc, d, log, dt = bench(url, ["--scenario", "throughput", "--requests", "3", "--max-tokens", "4"], key=False)
    ck.eq("no API key: exit 1 (nothing succeeded)", rc, 1)
    if d is not None:
        ck.eq("no API key: errors by kind", d["errors"], {"http_4xx": 3})
        ck.check("no API key: the message is kept", "401" in (d.get("first_error") or ""), d.get("first_error"))
    # a port with nothing listening: take a free one and close it
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    rc, d, log, dt = bench("http://127.0.0.1:%d" % port, ["--scenario", "throughput", "--duration", "5"])
    ck.eq("nothing listening: exit 1", rc, 1)
    if d is not None:
        ck.check("nothing listening: connect errors", d["errors"].get("connect", 0) > 0 and d["ok"] == 0, d["errors"])
        ck.check("nothing listening: stopped early", d.get("aborted") is not None and dt < 5, (d.get("aborted"), dt))
    for args in (["--scenario", "nope"], ["--scenario", "throughput", "--concurrency", "0"], ["--bogus", "1"],
                 ["--scenario", "ramp", "--initial-rate", "-1"]):
        rc, d, log, dt = bench(url, args)
        ck.check("bad options %s: exit 1 with a message" % args, rc == 1 and "kiln bench server:" in log, (rc, log[-300:]))


def t_server_killed():
    srv = start_server()
    url = "http://127.0.0.1:%d" % srv.port
    out = os.path.join(TMP, "kill.json")
    cmd = [ks.KILN_BIN, "bench", "server", "--url", url, "--model", MODEL, "--api-key", KEY, "--scenario", "throughput",
           "--concurrency", "4", "--duration", "30", "--max-tokens", "200", "--ignore-eos", "--timeout", "10",
           "--output", out, "--quiet"]
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.5)
    srv.kill()
    try:
        rc = p.wait(timeout=25)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        rc = None
    dt = time.time() - t0
    ck.check("server killed: the bench exits soon (not after the 30 s duration)", rc is not None and dt < 15, dt)
    ck.check("server killed: exit 1 or 2", rc in (1, 2), rc)
    if ck.check("server killed: JSON written", os.path.exists(out)):
        with open(out) as f:
            d = json.load(f)
        errs = d["errors"]
        ck.check("server killed: errors > 0 (network/connect)", sum(errs.values()) > 0 and
                 errs.get("network", 0) + errs.get("connect", 0) > 0, errs)
        ck.eq("server killed: requests = ok + errors", d["requests"], d["ok"] + sum(errs.values()))
        ck.check("server killed: sla FAIL", d["sla"]["pass"] is False)


def t_server_hung():
    srv = start_server()
    url = "http://127.0.0.1:%d" % srv.port
    out = os.path.join(TMP, "hung.json")
    cmd = [ks.KILN_BIN, "bench", "server", "--url", url, "--model", MODEL, "--api-key", KEY, "--scenario", "throughput",
           "--concurrency", "2", "--duration", "3", "--max-tokens", "200", "--ignore-eos", "--timeout", "2",
           "--output", out, "--quiet"]
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        srv.proc.send_signal(signal.SIGSTOP)
        try:
            rc = p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            rc = None
        dt = time.time() - t0
    finally:
        srv.proc.send_signal(signal.SIGCONT)
        srv.kill()
    # duration 3 s + at most one 2 s timeout for requests in flight, plus slack
    ck.check("server hung: the bench exits within duration + timeout", rc is not None and dt < 9, dt)
    ck.check("server hung: exit 1 or 2", rc in (1, 2), rc)
    if ck.check("server hung: JSON written", os.path.exists(out)):
        with open(out) as f:
            d = json.load(f)
        ck.check("server hung: timeout errors", d["errors"].get("timeout", 0) > 0, d["errors"])


def main():
    srv = start_server()
    url = "http://127.0.0.1:%d" % srv.port
    try:
        ck.run(t_throughput, url)
        ck.run(t_latency, url)
        ck.run(t_ramp, url)
        ck.run(t_sla_fail, url)
        ck.run(t_dataset, url)
        ck.run(t_errors, url)
        rc = srv.stop()
        ck.exited_clean("server after the benches", srv, rc)
        ck.run(t_server_killed)
        ck.run(t_server_hung)
    finally:
        srv.kill()
        shutil.rmtree(TMP, ignore_errors=True)
    ck.finish([srv])


if __name__ == "__main__":
    main()
