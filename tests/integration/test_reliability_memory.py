#!/usr/bin/env python3
"""test_reliability_memory.py — memory pressure (issue 11): a --memory-budget
that holds only one of two generation models, and concurrent requests
alternating between them.

A probe server (budget 4g) preloads both models and the test reads the
estimates it logs (`loading ID (...) (context N, estimate X MiB)`), so the
budget (1.5 x the larger estimate) fits either model alone but not both,
whatever kiln's estimator says. Then KILN_MEM_THREADS threads (default 4)
send KILN_MEM_REQUESTS requests (default 40) in all, each thread
alternating between the two models. Thread 0's requests are long (about
2 s alone, sized from the measured speed) and the server runs with
--queue-timeout 1, so a request for the other model while a long one runs
waits for memory in vain and gets its 503; the short requests of the other
threads evict and reload the models over and over.

Checks: every answer is a 200 or a 503 whose message has the numbers
(needs about N MiB, budget is N MiB, N MiB in use) and a Retry-After
header, and nothing else; a 200 from a model reloaded after an eviction
has the same text as its first answer (temperature 0); the models were
evicted ("making room under the memory budget") and reloaded
(kiln_model_loads_total above 2); the estimates of the models listed by
/api/ps, sampled all along, never exceed the budget; the server process is
never killed; /health is fine at the end with nothing running or waiting;
SIGTERM exits 0 with no sanitizer report.

Models: temporary symlinks to tiny-llama-Q4_0 and tiny-llama-Q4_K_M in
$KILN_SHARED/models. Standard library only."""

import os
import re
import shutil
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kiln_server as ks  # noqa: E402

ks.need_env()
ck = ks.Checks()

LAYOUT = {"tinya-Q4_0.gguf": "tiny-llama-Q4_0", "tinyb-Q4_K_M.gguf": "tiny-llama-Q4_K_M"}
MODELS = ("tinya:Q4_0", "tinyb:Q4_K_M")
IDS = {"tinya:Q4_0": "tinya-Q4_0", "tinyb:Q4_K_M": "tinyb-Q4_K_M"}
FLAGS = ["-np", "2", "-c", "2048", "--cache-ram", "0", "--queue-timeout", "1"]
N_REQ = int(os.environ.get("KILN_MEM_REQUESTS", "40"))
N_THREADS = int(os.environ.get("KILN_MEM_THREADS", "4"))
PROMPTS = ["Once upon a time", "The little dog", "One day, Lily went"]
SERVERS = []


def ps(srv):
    r = srv.get("/api/ps", timeout=30)
    return r.json()["models"] if r.status == 200 else None


def main():
    t0 = time.time()
    root = tempfile.mkdtemp(prefix="kiln-mem-")
    d = os.path.join(root, "models")
    os.makedirs(d)
    for name, src in LAYOUT.items():
        os.symlink(ks.model_path(src), os.path.join(d, name))
    try:
        ck.run(test_memory_pressure, d)
    finally:
        if ck.fails:
            for s in SERVERS:
                s.dump_log_tail(30)
        for s in SERVERS:
            s.kill()
        shutil.rmtree(root, ignore_errors=True)
        print("total %.1f s" % (time.time() - t0))
    ck.finish()


def test_memory_pressure(d):
    probe = ks.Server(["--models", d, "--memory-budget", "4g", "--preload", ",".join(MODELS)] + FLAGS)
    SERVERS.append(probe)
    est = ks.load_estimates(probe.log())
    ck.exited_clean("probe server", probe, probe.stop(60))
    if not ck.check("probe: estimates logged for both models", all(IDS[m] in est for m in MODELS), est):
        return
    ea, eb = (est[IDS[m]] for m in MODELS)
    budget = int(1.5 * max(ea, eb)) + 1
    if not ck.check("budget %d MiB holds one model (%.1f, %.1f MiB) but not both" % (budget, ea, eb),
                    max(ea, eb) < budget < ea + eb, ""):
        return

    srv = ks.Server(["--models", d, "--memory-budget", "%dm" % budget] + FLAGS)
    SERVERS.append(srv)
    results = []  # (model, prompt, status, text or message, has Retry-After)
    lock = threading.Lock()
    over_budget = []
    stop_mon = threading.Event()

    def monitor():
        while not stop_mon.is_set():
            try:
                ms = ps(srv)
                if ms is not None:
                    used = sum(est.get(m.get("id"), est.get(IDS.get(m.get("name")), 0.0)) for m in ms)
                    if used > budget + 0.5:
                        over_budget.append((used, [m.get("name") for m in ms]))
            except (OSError, ValueError):
                pass
            stop_mon.wait(0.1)

    # thread 0 sends long requests (~2 s alone, sized by the measured speed)
    # that keep one model busy past --queue-timeout: requests for the other
    # model then wait for memory in vain and get their 503
    rate = ks.token_rate(srv, MODELS[0])
    long_tokens = ks.tokens_for(rate, 2.0, lo=32, hi=1800)
    long_secs = []

    def worker(i, n):
        for j in range(n):
            model = MODELS[(i + j) % 2]
            prompt = PROMPTS[(i + j) % len(PROMPTS)]
            body = {"model": model, "prompt": prompt, "max_tokens": 8 + 4 * (i % 3), "temperature": 0}
            if i == 0:
                body.update(max_tokens=long_tokens, ignore_eos=True)
            try:
                t = time.time()
                r = srv.post("/v1/completions", body, timeout=180)
                if i == 0 and r.status == 200:
                    with lock:
                        long_secs.append(time.time() - t)
            except OSError as e:
                with lock:
                    results.append((model, prompt, "error", repr(e), False))
                continue
            if r.status == 200:
                out = r.json()["choices"][0]["text"]
            else:
                out = ks.error_message(r)
            with lock:
                results.append((model, prompt, r.status, (body["max_tokens"], out),
                                r.header("retry-after") is not None))

    mon = threading.Thread(target=monitor, daemon=True)
    mon.start()
    per = [N_REQ // N_THREADS + (1 if i < N_REQ % N_THREADS else 0) for i in range(N_THREADS)]
    t_run = time.time()
    threads = [threading.Thread(target=worker, args=(i, per[i]), daemon=True) for i in range(N_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    run_s = time.time() - t_run
    stop_mon.set()
    mon.join(5)

    ck.check("all request threads finished", not any(t.is_alive() for t in threads), "")
    ck.check("the server process is alive (never killed)", srv.proc.poll() is None, srv.proc.poll())
    ck.eq("every request answered", len(results), N_REQ)
    statuses = {}
    for r in results:
        statuses[r[2]] = statuses.get(r[2], 0) + 1
    ck.check("only 200 and 503 answers %s" % statuses, set(statuses) <= {200, 503},
             [r for r in results if r[2] not in (200, 503)][:5])
    bad503 = []
    for model, _, status, out, retry in results:
        if status != 503:
            continue
        msg = out[1]
        m_need = re.search(r"needs about (\d+) MiB", msg)
        m_budget = re.search(r"budget is (\d+) MiB", msg)
        m_use = re.search(r"(\d+) MiB are in use", msg)
        want = est[IDS[model]]
        if not (m_need and m_budget and m_use and retry and abs(float(m_need.group(1)) - want) <= 1.0
                and abs(float(m_budget.group(1)) - budget) <= 1.0):
            bad503.append((model, msg, retry))
    if long_secs and max(long_secs) > 2.0:
        ck.check("503s happened while a long request (%d tokens, %.1f-%.1f s) held the other model" %
                 (long_tokens, min(long_secs), max(long_secs)), statuses.get(503, 0) > 0, statuses)
    ck.check("every 503 has Retry-After and the numbers (needs ~estimate, budget %d MiB, in use)" % budget,
             not bad503, bad503[:5])
    first = {}
    diff = []
    for model, prompt, status, out, _ in results:
        if status == 200:
            k = (model, prompt, out[0])
            if k in first and first[k] != out[1]:
                diff.append((k, first[k], out[1]))
            first.setdefault(k, out[1])
    ck.check("a reloaded model answers as before (temperature 0, same text)", not diff, diff[:3])
    ck.check("the models in /api/ps never exceeded the budget (sampled every 0.1 s)", not over_budget,
             over_budget[:5])

    log = srv.log()
    evictions = len(re.findall(r"unloading \S+ \(making room under the memory budget\)", log))
    loads = ks.metric_sum(srv, "kiln_model_loads_total")
    unloads = ks.metric_sum(srv, "kiln_model_unloads_total")
    ck.check("models evicted under the budget (%d log lines)" % evictions, evictions >= 1, log[-1500:])
    ck.check("models reloaded (kiln_model_loads_total %d > 2)" % loads, loads > 2, loads)
    ok, h, _ = srv.wait_idle(30)
    ck.check("/health at the end: 200, nothing running or waiting",
             ok and h.get("requests_running") == 0 and h.get("requests_waiting") == 0, h)
    n503 = statuses.get(503, 0)
    ck.exited_clean("SIGTERM", srv, srv.stop(60))
    print("SUMMARY memory: budget %d MiB (estimates %.1f / %.1f MiB), %d requests from %d threads in %.1f s: "
          "%d x 200, %d x 503; %d evictions, loads %d, unloads %d; long requests %d tokens: %s s" %
          (budget, ea, eb, len(results), N_THREADS, run_s, statuses.get(200, 0), n503, evictions, loads,
           unloads, long_tokens, " ".join("%.1f" % x for x in long_secs)), flush=True)


if __name__ == "__main__":
    main()
