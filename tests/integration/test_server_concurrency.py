#!/usr/bin/env python3
"""test_server_concurrency.py — many clients at once:
 - 16 concurrent streaming clients at temperature 0 with different prompts,
   mixing routes (completions, chat, Ollama NDJSON) and two models; each
   stream must equal the answer its prompt gets alone;
 - a client that disconnects mid-stream: its sequence is cancelled at once
   (/health shows no running request and no busy slot within a short time,
   much shorter than the request would take) while another client's stream
   completes correctly;
 - overload: with -np 1 --queue-len 1, several long requests at once give at
   least one 503 with Retry-After and an error body, and the server keeps
   serving afterwards."""

import http.client
import os
import re
import socket
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kiln_server as ks  # noqa: E402

ks.need_env()
ck = ks.Checks()
SMALL = "stories260K"
SLOW = "tiny-qwen2-Q4_K_M"  # ~500 tok/s on one thread: long requests take seconds
PROMPTS = ["Once upon a time", "The cat", "Lily went to the park", "Tom had a big red ball",
           "One day, a little bird", "The sun was hot", "A dog and a frog", "Mom said", "In the forest",
           "There was a boy named Ben", "The car was fast", "She looked at the sky", "The box was",
           "It was a rainy day", "Sam and Sue", "The king"]
N = 48


def gen_body(p, stream):
    return {"model": SMALL, "prompt": p, "raw": True, "stream": stream,
            "options": {"num_predict": N, "temperature": 0}}


def cmpl_body(p, stream, model=SMALL, n=N):
    return {"model": model, "prompt": p, "max_tokens": n, "temperature": 0, "ignore_eos": True, "stream": stream}


def test_lazy_load_race(srv):
    """Concurrent first requests to a model not loaded yet: one load, all answered alike."""
    model = "tiny-llama-Q4_K_M"
    out = [None] * 8
    barrier = threading.Barrier(len(out))

    def client(i):
        barrier.wait()
        try:
            out[i] = srv.post("/v1/completions", cmpl_body("The cat", False, model, 16))
        except Exception as e:  # noqa: BLE001
            out[i] = e
    th = [threading.Thread(target=client, args=(i,)) for i in range(len(out))]
    for t in th:
        t.start()
    for t in th:
        t.join(120)
    statuses = [getattr(r, "status", repr(r)) for r in out]
    ck.eq("lazy load race: 8 concurrent first requests all 200", statuses, [200] * len(out))
    texts = {r.json()["choices"][0]["text"] for r in out if getattr(r, "status", None) == 200}
    ck.eq("lazy load race: one answer for all", len(texts), 1)
    loads = [ln for ln in srv.log().splitlines() if re.search(r"loading %s\b" % re.escape(model), ln)]
    ck.eq("lazy load race: the model was loaded once", len(loads), 1)


def kind_of(i):
    """The 16 clients mix routes and models: completions SSE on stories260K,
    chat SSE on stories260K, completions SSE on tiny-llama-Q4_K_M, Ollama
    NDJSON on stories260K."""
    return ("cmpl", "chat", "cmpl2", "gen")[i % 4]


def request_of(i, stream):
    p = PROMPTS[i]
    k = kind_of(i)
    if k == "cmpl":
        return "/v1/completions", cmpl_body(p, stream)
    if k == "cmpl2":
        return "/v1/completions", cmpl_body(p, stream, model="tiny-llama-Q4_K_M")
    if k == "chat":
        return "/v1/chat/completions", {"model": SMALL, "messages": [{"role": "user", "content": p}],
                                        "max_tokens": N, "temperature": 0, "ignore_eos": True, "stream": stream}
    return "/api/generate", gen_body(p, stream)


def answer_of(k, d):
    if k == "gen":
        return d.get("response")
    if k == "chat":
        return d["choices"][0]["message"].get("content")
    return d["choices"][0].get("text")


def test_16_streams(srv):
    # answers alone, one at a time
    alone = []
    for i, p in enumerate(PROMPTS):
        route, body = request_of(i, False)
        alone.append(answer_of(kind_of(i), srv.post_json(route, body)))
    for i in (0, 2, 5):
        args = ["--chat"] if kind_of(i) == "chat" else []
        model = "tiny-llama-Q4_K_M" if kind_of(i) == "cmpl2" else SMALL
        ref = ks.run_kiln(["run", "-m", ks.model_path(model), "-p", PROMPTS[i], "-n", str(N), "--temp", "0",
                           "--ignore-eos", "-t", "1"] + args).decode()
        ck.check("alone answer %d (%s) equals kiln run" % (i, kind_of(i)), ks.run_text_matches(ref, alone[i]),
                 (ref, alone[i]))
    ck.check("the 16 prompts give distinct answers", len(set(alone)) >= 12, alone)

    results = [None] * len(PROMPTS)
    barrier = threading.Barrier(len(PROMPTS))
    health = {"max_busy": 0, "max_seen": 0, "bad": [], "stop": False}

    def client(i):
        barrier.wait()
        try:
            route, body = request_of(i, True)
            if kind_of(i) == "gen":
                results[i] = ("nd", srv.ndjson(route, body))
            else:
                results[i] = ("sse", srv.sse(route, body))
        except Exception as e:  # noqa: BLE001
            results[i] = ("exc", e)

    def poll():
        while not health["stop"]:
            try:
                st, h = srv.health()
                if st == 200:
                    for m in h.get("models", []):
                        health["max_busy"] = max(health["max_busy"], m.get("slots_busy", 0))
                        if m.get("slots_busy", 0) > m.get("slots_total", 0):
                            health["bad"].append(h)
                    health["max_seen"] = max(health["max_seen"],
                                             h.get("requests_running", 0) + h.get("requests_waiting", 0))
                else:
                    health["bad"].append((st, h))
            except Exception as e:  # noqa: BLE001
                health["bad"].append(repr(e))
            time.sleep(0.01)

    th = [threading.Thread(target=client, args=(i,)) for i in range(len(PROMPTS))]
    pt = threading.Thread(target=poll)
    pt.start()
    t0 = time.time()
    for t in th:
        t.start()
    for t in th:
        t.join(120)
    health["stop"] = True
    pt.join(10)
    print("   16 concurrent streams took %.2f s; max slots busy %d, max requests seen %d"
          % (time.time() - t0, health["max_busy"], health["max_seen"]))
    for i, r in enumerate(results):
        name = "concurrent client %d (%s %r)" % (i, kind_of(i), PROMPTS[i])
        if r is None or r[0] == "exc":
            ck.fail(name, "no result: %r" % (r,))
            continue
        if r[0] == "sse":
            text = ks.check_sse(ck, name, r[1], chat=kind_of(i) == "chat", want_finish="length")
        else:
            text, final = ks.check_ndjson(ck, name, r[1], chat=False)
        ck.eq(name + ": stream equals its answer alone", text, alone[i])
    ck.check("/health answered 200 during the load, slots_busy <= slots_total", not health["bad"], health["bad"][:3])
    ck.check("/health saw requests in flight during the load", health["max_seen"] >= 1, health)
    ok, h, waited = srv.wait_idle(5)
    ck.check("idle after the 16 streams", ok, h)


def test_disconnect(srv):
    # a long request: about 4 s alone (a lower bound: later tokens are slower)
    rate = ks.token_rate(srv, SLOW)
    n_long = ks.tokens_for(rate, 4.0, 200, 2000)
    t_full = n_long / rate
    print("   %.0f tok/s: a %d-token request takes at least %.2f s" % (rate, n_long, t_full))
    other_alone = srv.post_json("/v1/completions", cmpl_body("The cat", False, SLOW, 40))["choices"][0]["text"]

    for route in ("/v1/completions", "/api/generate"):
        if route == "/v1/completions":
            body = cmpl_body("Once upon a time", True, SLOW, n_long)
        else:
            body = {"model": SLOW, "prompt": "Once upon a time", "raw": True,
                    "options": {"num_predict": n_long, "temperature": 0}}
        t_open = time.time()
        st = srv.open_stream(route, body)
        if not ck.eq(route + " long stream: status 200", st.status, 200):
            st.close()
            continue
        got = 0
        it = st.sse_events() if route.startswith("/v1") else st.ndjson_lines()
        for _ in it:
            got += 1
            if got == 2:
                break
        ck.eq(route + " long stream: got 2 chunks before leaving", got, 2)
        t_first = time.time() - t_open
        ck.check(route + ": tokens go out as they are sampled (2 chunks within a quarter of the request's time)",
                 t_first < t_full / 4, "2 chunks after %.2f s, whole request %.2f s" % (t_first, t_full))
        st_h, h = srv.health()
        ck.check(route + ": /health shows the request running before the disconnect",
                 st_h == 200 and h.get("requests_running", 0) >= 1, h)
        # another client streams while the first one leaves
        other = {}

        def run_other():
            other["res"] = srv.sse("/v1/completions", cmpl_body("The cat", True, SLOW, 40))
        ot = threading.Thread(target=run_other)
        ot.start()
        time.sleep(0.05)
        t_abort = time.time()
        st.abort()
        ot.join(60)
        res = other.get("res")
        if ck.check(route + ": the other client's stream finished", res is not None, "no result"):
            text = ks.check_sse(ck, route + ": other client", res, chat=False, want_finish="length")
            ck.eq(route + ": other client's text is its answer alone", text, other_alone)
        limit = max(0.5, min(3.0, t_full / 3))
        ok, h, _ = srv.wait_idle(limit)
        waited = time.time() - t_abort
        ck.check(route + ": after the disconnect, requests_running 0 and slots_busy 0 within %.1f s" % limit,
                 ok and waited <= limit + 0.2, "after %.2f s: %r" % (waited, h))
    # the server keeps serving
    d = srv.post_json("/v1/completions", cmpl_body("The cat", False, SLOW, 40))
    ck.eq("after disconnects: a request gets its usual answer", d["choices"][0].get("text"), other_alone)


def test_tokenizing_does_not_block(srv):
    """Parsing and tokenizing a big request (4 MB of text) must not stall the
    tokens of a stream in progress."""
    big = ks.prompt_text("long") * 700
    rate = ks.token_rate(srv, SLOW)
    t = time.time()
    r = srv.post("/v1/completions", {"model": SLOW, "prompt": big, "max_tokens": 1}, timeout=120)
    t_big = time.time() - t
    ck.eq("big-prompt alone: 400 (longer than the context)", r.status, 400)
    # the stream must outlast two big requests with room to spare
    n = ks.tokens_for(rate, 3.0 * t_big + 3.0, 200, 2000)
    st = srv.open_stream("/v1/completions", cmpl_body("Once upon a time", True, SLOW, n))
    if not ck.eq("big-prompt: stream 200", st.status, 200):
        st.close()
        return
    times = []

    def reader():
        try:
            for _ in st.sse_events():
                times.append(time.time())
        except (OSError, ValueError, http.client.HTTPException):
            pass  # aborted below
    rt = threading.Thread(target=reader)
    rt.start()
    while len(times) < 5 and rt.is_alive():
        time.sleep(0.01)
    durs = []
    t0 = time.time()
    for i in range(2):
        t = time.time()
        r = srv.post("/v1/completions" if i != 1 else "/v1/chat/completions",
                     {"model": SLOW, "prompt": big, "max_tokens": 1} if i != 1 else
                     {"model": SLOW, "messages": [{"role": "user", "content": big}], "max_tokens": 1}, timeout=120)
        durs.append(time.time() - t)
        ck.eq("big-prompt %d: 400 (longer than the context)" % i, r.status, 400)
    t1 = time.time()
    done_early = not rt.is_alive()
    st.abort()  # the rest of the stream is not needed
    rt.join(30)
    during = [x for x in times if t0 <= x <= t1]
    gaps = [b - a for a, b in zip(during, during[1:])]
    # also the gap from the last token before t0 / to the first after t1
    before = [x for x in times if x < t0][-1:]
    after = [x for x in times if x > t1][:1]
    edge = before + during + after
    gap = max((b - a for a, b in zip(edge, edge[1:])), default=float("inf"))
    limit = 0.6 * min(durs)
    print("   big requests took %s s; longest pause of the stream meanwhile %.3f s (%d tokens)"
          % (["%.2f" % d for d in durs], gap, len(during)))
    ck.check("big-prompt: the stream was still running throughout (the case is exercised)", not done_early,
             "stream ended before the big requests did")
    ck.check("big-prompt: the stream never paused for more than 0.6x a big request's time (%.2f s)" % limit,
             gap < limit, "pause %.3f s, gaps %s" % (gap, sorted(gaps)[-3:]))


def test_slow_reader(srv):
    """A client that does not read its stream (tiny receive buffer) holds up
    nobody: another request is answered at once, and the slow client later
    reads its whole, correct stream."""
    rate = ks.token_rate(srv, SLOW)
    n = ks.tokens_for(rate, 1.5, 200, 2000)
    want = srv.post_json("/v1/completions", cmpl_body("Once upon a time", False, SLOW, n))["choices"][0]["text"]
    other_want = srv.post_json("/v1/completions", cmpl_body("The cat", False, SLOW, 40))["choices"][0]["text"]
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect(("127.0.0.1", srv.port))
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    conn.sock = sock
    try:
        conn.request("POST", "/v1/completions", body=ks.json.dumps(cmpl_body("Once upon a time", True, SLOW, n)),
                     headers={"Content-Type": "application/json"})
        time.sleep(0.5)  # the slow client reads nothing meanwhile
        t = time.time()
        d = srv.post_json("/v1/completions", cmpl_body("The cat", False, SLOW, 40), timeout=30)
        took = time.time() - t
        ck.eq("slow reader: another request gets its answer", d["choices"][0]["text"], other_want)
        limit = 3 * 40 / rate + 2.0
        ck.check("slow reader: ... without waiting for the slow client (under %.1f s)" % limit, took < limit,
                 "%.2f s" % took)
        time.sleep(1.0)
        resp = conn.getresponse()
        st = ks.Stream(conn, resp)
        chunks, done = [], False
        for data in st.sse_events():
            if data == "[DONE]":
                done = True
            else:
                chunks.append(ks.json.loads(data))
        ck.check("slow reader: the stream is complete", done and not st.framing_errors, st.framing_errors)
        ck.eq("slow reader: the stream text is right", ks.sse_text(chunks, False), want)
    finally:
        conn.close()


def test_overload():
    srv = ks.Server(["-m", ks.model_path(SLOW), "-c", "2048", "-t", "1", "-np", "1", "--queue-len", "1"])
    try:
        k = 6
        n = ks.tokens_for(ks.token_rate(srv, SLOW), 1.0, 100, 2000)  # about 1 s each
        out = [None] * k
        barrier = threading.Barrier(k)

        def client(i):
            barrier.wait()
            try:
                out[i] = srv.post("/v1/completions", cmpl_body("Once upon a time", False, SLOW, n), timeout=120)
            except Exception as e:  # noqa: BLE001
                out[i] = e
        th = [threading.Thread(target=client, args=(i,)) for i in range(k)]
        for t in th:
            t.start()
        for t in th:
            t.join(180)
        statuses = [getattr(r, "status", repr(r)) for r in out]
        print("   statuses: %r" % statuses)
        n503 = [r for r in out if getattr(r, "status", None) == 503]
        n200 = [r for r in out if getattr(r, "status", None) == 200]
        ck.check("overload: at least one 503", len(n503) >= 1, statuses)
        ck.check("overload: at least one 200", len(n200) >= 1, statuses)
        ck.check("overload: at most np + queue-len = 2 accepted", len(n200) <= 2, statuses)
        ck.check("overload: only 200 and 503", len(n503) + len(n200) == k, statuses)
        for r in n503[:1]:
            ra = r.header("retry-after")
            ck.check("overload 503: Retry-After is a number of seconds", ra is not None and ra.strip().isdigit(), ra)
            try:
                err = r.json().get("error")
                ck.check("overload 503: error body with a message",
                         isinstance(err, dict) and isinstance(err.get("message"), str) and err["message"], r)
            except ValueError:
                ck.fail("overload 503: JSON error body", r)
        for r in n200:
            ck.eq("overload: accepted request completed", r.json().get("usage", {}).get("completion_tokens"), n)
        ok, h, _ = srv.wait_idle(5)
        ck.check("overload: idle afterwards", ok, h)

        # a client that leaves while it waits in the queue never runs
        long_body = cmpl_body("Once upon a time", True, SLOW, 2 * n)  # the queued one would run >= 2 s
        a = srv.open_stream("/v1/completions", long_body)
        ck.eq("queued leave: first stream 200", a.status, 200)
        it = a.sse_events()
        next(it)
        b = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        payload = ks.json.dumps(long_body).encode()
        b.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload))
        time.sleep(0.3)
        st, h = srv.health()
        ck.check("queued leave: /health shows one request waiting", h.get("requests_waiting") == 1, h)
        b.close()
        rest = list(it)
        a.close()
        ck.eq("queued leave: first stream ends with [DONE]", rest[-1:], ["[DONE]"])
        t_end = time.time()
        ok, h, _ = srv.wait_idle(1.0)
        ck.check("queued leave: idle within 1 s after the running request ends (the queued one never ran)",
                 ok and time.time() - t_end <= 1.2, h)
        r = srv.post("/v1/completions", cmpl_body("The cat", False, SLOW, 5))
        ck.eq("overload: the server serves again afterwards", r.status, 200)
    finally:
        rc = srv.stop(30)
    ck.exited_clean("overload server on SIGTERM", srv, rc)
    if ck.fails:
        srv.dump_log_tail()


def test_timeouts():
    """--conn-timeout closes idle connections but never a request that is
    generating; --queue-timeout turns a long wait for a slot into 503."""
    srv = ks.Server(["-m", ks.model_path(SLOW), "-c", "4096", "-t", "1", "-np", "1", "--conn-timeout", "1",
                     "--queue-timeout", "1"])
    try:
        # at least 3 s: up to 4000 tokens, since a quiet machine makes 2000 in ~1.2 s
        n = ks.tokens_for(ks.token_rate(srv, SLOW), 3.0, 200, 4000)
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        t0 = time.time()
        try:
            got = s.recv(100)
        except OSError as e:
            got = e
        waited = time.time() - t0
        s.close()
        ck.check("conn-timeout 1: an idle connection is closed after about 1 s",
                 got == b"" and 0.5 <= waited <= 4.0, "recv %r after %.2f s" % (got, waited))
        out = {}

        def long_req():
            t = time.time()
            try:
                out["r"] = srv.post("/v1/completions", cmpl_body("Once upon a time", False, SLOW, n), timeout=120)
            except Exception as e:  # noqa: BLE001
                out["r"] = e
            out["t"] = time.time() - t
        th = threading.Thread(target=long_req)
        th.start()
        time.sleep(0.3)
        t1 = time.time()
        r = srv.post("/v1/completions", cmpl_body("The cat", False, SLOW, 5))
        qw = time.time() - t1
        busy = "t" not in out  # the long request was still running when this one gave up
        ck.eq("queue-timeout 1: a request waiting for the busy slot gets 503", r.status, 503)
        ck.check("queue-timeout 1: after about 1 s", 0.7 <= qw <= 3.0, "%.2f s" % qw)
        ra = r.header("retry-after")
        ck.check("queue-timeout 1: Retry-After", ra is not None and ra.strip().isdigit(), ra)
        ck.check("queue-timeout 1: the slot was busy all along (long request still running)", busy, out)
        th.join(120)
        lr = out.get("r")
        ck.eq("conn-timeout 1: a non-stream request generating for %.1f s still gets 200" % out.get("t", 0),
              getattr(lr, "status", repr(lr)), 200)
        if getattr(lr, "status", None) == 200:
            ck.eq("conn-timeout 1: ... with all its tokens", lr.json()["usage"]["completion_tokens"], n)
        ck.check("conn-timeout 1: the long request took longer than the timeout (the case is exercised)",
                 out.get("t", 0) > 1.5, out.get("t"))
    finally:
        rc = srv.stop(30)
    ck.exited_clean("timeouts server on SIGTERM", srv, rc)


def main():
    srv = ks.Server(["--models", ks.shared("models"), "-c", "2048", "-t", "1", "-np", "4"])
    try:
        ck.run(test_lazy_load_race, srv)
        ck.run(test_16_streams, srv)
        ck.run(test_disconnect, srv)
        ck.run(test_tokenizing_does_not_block, srv)
        ck.run(test_slow_reader, srv)
    finally:
        rc = srv.stop(30)
    ck.exited_clean("server on SIGTERM", srv, rc)
    if ck.fails:
        srv.dump_log_tail()
    ck.run(test_overload)
    ck.run(test_timeouts)
    ck.finish()


if __name__ == "__main__":
    main()
