"""test_server_house.py — what the generation session changed (issue 17),
against the real `kiln serve`:

1. Cache before load. A deterministic request whose answer is cached is
   answered without loading the model: after the model was unloaded
   (keep_alive 0), its cached answers come back as X-Cache hits on every
   generation route, streamed or not, with kiln_model_loads_total unchanged
   and /api/ps still empty; the same for a cached embedding. Then with a
   --memory-budget that holds one model but not both, and the other model
   pinned so that it fills the budget, a cached request is still a 200 hit
   with no load while an uncached one gets the 503 that proves the budget
   is full.
2. Push, not poll. On an idle server, the time from the request's arrival
   to its first token as the engine measured it (the TTFT histogram)
   against the time the client saw the first token: the difference
   (formatting, the socket, the client) stays within a few milliseconds,
   median of 20 streams (the check allows 40 ms, for the sanitizer builds;
   a reader that polled on a 100 ms timer would show about 50).
3. A body over --max-body gets its 413 also from clients that send the
   whole body without waiting for "100 Continue": Python's http.client and
   Node's fetch, with a 9 MiB body (more than the socket buffers hold).

Standard library only (and the node binary for fetch).
"""

import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kiln_server as ks  # noqa: E402

ck = ks.Checks()
SERVERS = []
FLAGS = ["-t", "1", "-c", "512", "-np", "2", "--unload-timeout", "300", "--cache-ram", "0"]


def loads(srv, model):
    return ks.metric_sum(srv, "kiln_model_loads_total", model=model)


def ps_ids(srv):
    r = srv.get("/api/ps", timeout=30)
    return [m["id"] for m in r.json()["models"]] if r.status == 200 else None


def wait_unloaded(srv, model, timeout=10):
    t_end = time.time() + timeout
    while time.time() < t_end:
        ids = ps_ids(srv)
        if ids is not None and model not in ids:
            return True
        time.sleep(0.05)
    return False


BODIES = {
    "/v1/chat/completions": lambda m, p, ka, st: {"model": m, "messages": [{"role": "user", "content": p}],
                                                  "max_tokens": 12, "temperature": 0, "stream": st},
    "/v1/completions": lambda m, p, ka, st: {"model": m, "prompt": p, "max_tokens": 12, "temperature": 0,
                                             "stream": st},
    "/api/generate": lambda m, p, ka, st: {"model": m, "prompt": p, "stream": st, "keep_alive": ka,
                                           "options": {"temperature": 0, "num_predict": 12}},
    "/api/chat": lambda m, p, ka, st: {"model": m, "messages": [{"role": "user", "content": p}], "stream": st,
                                       "keep_alive": ka, "options": {"temperature": 0, "num_predict": 12}},
}


def ask(srv, route, model, prompt, stream=False, keep_alive=0):
    """(status, X-Cache, the answer's text or error message)."""
    body = BODIES[route](model, prompt, keep_alive, stream)
    if not stream:
        r = srv.post(route, body, timeout=120)
        if r.status != 200:
            return r.status, r.header("X-Cache"), ks.error_message(r)
        j = r.json()
        if route == "/v1/chat/completions":
            text = j["choices"][0]["message"]["content"]
        elif route == "/v1/completions":
            text = j["choices"][0]["text"]
        else:
            text = j.get("response", j.get("message", {}).get("content"))
        return r.status, r.header("X-Cache"), text
    s = srv.open_stream(route, body)
    xc = s.header("X-Cache")
    if route.startswith("/v1/"):
        ev = [json.loads(e) for e in s.sse_events() if e != "[DONE]"]
        text = ks.sse_text(ev, route == "/v1/chat/completions")
    else:
        text = "".join(ln.get("response", ln.get("message", {}).get("content", ""))
                       for ln in s.ndjson_lines() if isinstance(ln, dict))
    s.close()
    return 200, xc, text


def test_cache_before_load(d):
    srv = ks.Server(["--models", d] + FLAGS, cache=True)
    SERVERS.append(srv)
    p = "Once upon a time, a fox"
    for route in BODIES:
        for stream in (False, True):
            name = "%s%s" % (route, " stream" if stream else "")
            prompt = "%s%s%s" % (p, route, " streamed" if stream else "")  # `stream` does not split the key
            first = ask(srv, route, "alpha", prompt, stream)
            ck.check("%s: the first answer is a miss (200)" % name, first[0] == 200 and first[1] == "miss", first)
            # /v1 routes have no keep_alive: unload by asking the Ollama route to
            if route.startswith("/v1/"):
                srv.post("/api/generate", {"model": "alpha", "prompt": "", "keep_alive": 0})
            ck.check("%s: alpha unloaded after keep_alive 0" % name, wait_unloaded(srv, "alpha"), ps_ids(srv))
            n0 = loads(srv, "alpha")
            again = ask(srv, route, "alpha", prompt, stream, keep_alive=None)
            ck.check("%s: the same request of the unloaded model is a hit with the same text" % name,
                     again[0] == 200 and again[1] == "hit" and again[2] == first[2], (again, first))
            ck.eq("%s: answered without a load (kiln_model_loads_total)" % name, loads(srv, "alpha"), n0)
            ck.check("%s: the model is still not loaded (/api/ps)" % name, "alpha" not in (ps_ids(srv) or []),
                     ps_ids(srv))
    # an embedding: cached per input, answered without the model
    body = {"model": "alpha", "input": ["the cached moon"], "keep_alive": 0}
    r1 = srv.post("/api/embed", body)
    ck.check("embed: a miss first", r1.status == 200 and r1.header("X-Cache") == "miss", r1)
    ck.check("embed: alpha unloaded", wait_unloaded(srv, "alpha"), ps_ids(srv))
    n0 = loads(srv, "alpha")
    r2 = srv.post("/api/embed", {"model": "alpha", "input": ["the cached moon"]})
    ck.check("embed: a hit without a load, the same vector",
             r2.status == 200 and r2.header("X-Cache") == "hit" and loads(srv, "alpha") == n0 and
             r2.json()["embeddings"] == r1.json()["embeddings"], (r2, loads(srv, "alpha"), n0))
    # a request that is not cached does load it (the check above can fail)
    r3 = ask(srv, "/api/generate", "alpha", "A new prompt", keep_alive=0)
    ck.check("an uncached request loads the model", r3[0] == 200 and loads(srv, "alpha") == n0 + 1,
             (r3, loads(srv, "alpha")))
    ck.exited_clean("cache-before-load server", srv, srv.stop(60))


def test_budget_full(d):
    probe = ks.Server(["--models", d, "--memory-budget", "4g", "--preload", "alpha,big"] + FLAGS)
    SERVERS.append(probe)
    est = ks.load_estimates(probe.log())
    ck.exited_clean("probe server", probe, probe.stop(60))
    if not ck.check("probe: estimates of alpha and big", "alpha" in est and "big" in est, est):
        return
    budget = int(max(est["alpha"], est["big"]) + min(est["alpha"], est["big"]) / 2) + 1
    if not ck.check("budget %d MiB holds big (%.1f) or alpha (%.1f), not both" % (budget, est["big"], est["alpha"]),
                    max(est.values()) < budget < est["alpha"] + est["big"], est):
        return
    srv = ks.Server(["--models", d, "--memory-budget", "%dm" % budget, "--pin", "big", "--queue-timeout", "1"]
                    + FLAGS, cache=True)
    SERVERS.append(srv)
    p = "The little owl"
    first = ask(srv, "/api/generate", "alpha", p)
    ck.check("budget: alpha's first answer (a miss)", first[0] == 200 and first[1] == "miss", first)
    ck.check("budget: alpha unloaded", wait_unloaded(srv, "alpha"), ps_ids(srv))
    r = ask(srv, "/api/generate", "big", "Hello", keep_alive=-1)
    ck.check("budget: big (pinned) loads and fills the budget", r[0] == 200 and "big" in (ps_ids(srv) or []),
             (r, ps_ids(srv)))
    n0 = loads(srv, "alpha")
    hit = ask(srv, "/api/generate", "alpha", p, keep_alive=None)
    ck.check("budget full: the cached request is a 200 hit with the same text, no 503",
             hit[0] == 200 and hit[1] == "hit" and hit[2] == first[2], (hit, first))
    ck.eq("budget full: no load for the hit", loads(srv, "alpha"), n0)
    miss = ask(srv, "/api/generate", "alpha", "An uncached prompt", keep_alive=None)
    ck.check("budget full: an uncached request gets 503 (the budget really is full)",
             miss[0] == 503 and "memory" in (miss[2] or ""), miss)
    ck.check("budget full: big stays loaded", "big" in (ps_ids(srv) or []), ps_ids(srv))
    ck.exited_clean("budget server", srv, srv.stop(60))


def first_token_times(srv, model, prompt, n_tokens):
    """(client TTFT, engine TTFT) of one stream, in seconds."""
    h0 = ks.metrics_of(srv, model=model)
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": n_tokens,
                       "temperature": 0, "stream": True, "cache": False}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    t_first = None
    buf = b""
    while True:
        line = resp.fp.readline()
        if not line:
            break
        if line.startswith(b"data: ") and b'"content"' in line and not t_first:
            ev = json.loads(line[6:])
            if ev["choices"][0]["delta"].get("content"):
                t_first = time.perf_counter() - t0
        buf += line
        if line.startswith(b"data: [DONE]"):
            break
    conn.close()
    h1 = ks.metrics_of(srv, model=model)
    key = "kiln_time_to_first_token_seconds_sum"
    return t_first, h1.get(key, 0) - h0.get(key, 0)


def test_push(model_file, model):
    srv = ks.Server(["-m", model_file, "-t", "1", "-np", "1", "--batch-wait-ms", "0"])
    SERVERS.append(srv)
    first_token_times(srv, model, "warm up", 4)
    gaps = []
    for i in range(20):
        client, engine = first_token_times(srv, model, "Tell me about the sea %d" % i, 24)
        if client is not None and engine > 0:
            gaps.append((client - engine) * 1e3)
    ck.check("push: 20 streams measured", len(gaps) == 20, gaps)
    if gaps:
        med = statistics.median(gaps)
        print("   first token: client - engine TTFT, median %.2f ms, max %.2f ms" % (med, max(gaps)))
        ck.check("push: the first token reaches the client within a few ms of the engine producing it "
                 "(median %.2f ms)" % med, med < 40, gaps)
    ck.exited_clean("push server", srv, srv.stop(60))


def post_big_http_client(port, path, n):
    """Sends n bytes with http.client (the whole body, no Expect); returns (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.putrequest("POST", path)
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(n))
    conn.endheaders()
    chunk = b" " * 65536
    sent = 0
    try:
        while sent < n:
            k = min(len(chunk), n - sent)
            conn.send(chunk[:k])
            sent += k
    except OSError as e:
        return ("send failed after %d bytes: %r" % (sent, e)), b""
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, body


NODE_FETCH = r"""
const [url, n] = [process.argv[1], Number(process.argv[2])];
fetch(url, {method: 'POST', headers: {'Content-Type': 'application/json'}, body: Buffer.alloc(n, 32)})
  .then(async r => { console.log(JSON.stringify({status: r.status, body: await r.text()})); })
  .catch(e => { console.log(JSON.stringify({error: String(e && (e.cause || e))})); });
"""


def test_body_too_large():
    srv = ks.Server(["-m", ks.model_path("stories260K"), "-t", "1"])
    SERVERS.append(srv)
    n = 9 << 20
    for path in ("/v1/chat/completions", "/api/chat"):
        st, body = post_big_http_client(srv.port, path, n)
        ck.check("http.client, 9 MiB body to %s: 413 with a JSON error naming the limit" % path,
                 st == 413 and b"limit" in body, (st, body[:200]))
    node = shutil.which("node")
    if ck.check("node is installed (for fetch)", node is not None, ""):
        out = subprocess.run([node, "-e", NODE_FETCH, "http://127.0.0.1:%d/v1/chat/completions" % srv.port, str(n)],
                             capture_output=True, text=True, timeout=120)
        try:
            res = json.loads(out.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            res = {"error": out.stdout + out.stderr}
        ck.check("Node fetch, 9 MiB body: 413 with the error body", res.get("status") == 413 and
                 "limit" in res.get("body", ""), res)
    # and the server still serves
    r = srv.post("/v1/completions", {"prompt": "Once", "max_tokens": 4})
    ck.eq("after the big bodies the server still answers", r.status, 200)
    # an answer with no token and logprobs asked for: an empty list (the
    # sanitizer builds check at exit that nothing leaked)
    r = srv.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0,
                                          "logprobs": True})
    ck.check("no token, logprobs: 200 with logprobs.content []", r.status == 200 and
             r.json()["choices"][0]["logprobs"] == {"content": []}, r)
    ck.exited_clean("413 server", srv, srv.stop(60))


def main():
    ks.need_env()
    t0 = time.time()
    root = tempfile.mkdtemp(prefix="kiln-house-")
    d = os.path.join(root, "models")
    os.makedirs(d)
    os.symlink(ks.model_path("stories260K"), os.path.join(d, "alpha.gguf"))
    os.symlink(ks.model_path("tiny-llama-Q8_0"), os.path.join(d, "big.gguf"))
    try:
        ck.run(test_cache_before_load, d)
        ck.run(test_budget_full, d)
        ck.run(test_push, ks.model_path("tiny-llama-Q8_0"), "tiny-llama-Q8_0")
        ck.run(test_body_too_large)
    finally:
        if ck.fails:
            for s in SERVERS:
                s.dump_log_tail(30)
        for s in SERVERS:
            s.kill()
        shutil.rmtree(root, ignore_errors=True)
        print("total %.1f s" % (time.time() - t0))
    ck.finish()


if __name__ == "__main__":
    main()
