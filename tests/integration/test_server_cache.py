#!/usr/bin/env python3
"""test_server_cache.py — the response and embedding cache (issue 9) seen
through the real `kiln serve` with stories260K:
 - a deterministic request twice on /v1/chat/completions, /v1/completions,
   /api/generate and /api/chat, streamed and not: miss then hit with the
   text, finish reason and token counts of a "cache": false reference,
   usage.cached true only on an OpenAI hit; a non-stream miss makes the
   stream request a hit and the other way round;
 - a sampled request without a seed is a bypass every time (the hit
   counters do not move); with a seed it is a miss then a hit;
 - opt-outs ("cache": false, Cache-Control: no-cache / no-store) bypass
   and do not fill the cache;
 - output-changing parameters split the key (max_tokens, stop, prompt,
   seed, logit_bias, a system message), others do not (user, stream,
   stream_options, top_p at temperature 0); the same prompt tokens share an
   entry across routes (completions, raw generate, token ids; both chats);
 - a hit is the whole answer of a "cache": false request, also with echo,
   logprobs (streamed too), tools, penalties and an Ollama system prompt;
 - 8 concurrent clients (the same request, distinct ones, embeddings);
 - an embeddings batch with partial hits (OpenAI and Ollama): X-Cache-Hits
   K/N, cached vectors float32-identical to the ones computed (base64
   compares the bits), only the misses counted as lookups that missed and
   as prompt tokens;
 - a restart on the same --cache-dir: L2 hits (responses and embeddings);
 - kill -9 during a burst of writes, then a restart: every hit served is
   the reference text, as many hits as entries, no corrupt record;
 - a corrupted LMDB value: detected (WARN "corrupt", l2 corrupt = 1), not
   served, recomputed and stored again;
 - POST /cache/clear by type, model (a --models dir of two models), tier
   and all, and its 400/404 answers;
 - /metrics kiln_cache_* equal /cache/stats;
 - config: --cache-policy bogus fails naming cache-policy, a --cache-dir inside
   the models directory (directly or through a symlink) is refused, the policy shows
   in /cache/stats, --response-cache=false / --embedding-cache=false bypass;
 - a stream the client drops is not stored;
 - --cache-mib 0 (L2 only), --cache-disk-size 0 (L1 only), YAML settings;
 - TTL: --cache-ttl-response 1 expires an entry;
 - `kiln cache stats|clear --cache-dir D` offline (when that command exists).
Every server exits 0 on SIGTERM with no sanitizer report in its log."""

import base64
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kiln_server as ks  # noqa: E402

ks.need_env()
ck = ks.Checks()
MODEL = "stories260K"
MFILE = ks.model_path(MODEL)
BASE = ["-m", MFILE, "-t", "1", "-c", "512"]
N = 12          # max_tokens of the generation requests
SERVERS = []    # every server started, for the log tails on failure
TMP = tempfile.mkdtemp(prefix="kiln-itest-cache-")

CHAT_ROUTES = ("/v1/chat/completions", "/api/chat")
OLLAMA_ROUTES = ("/api/generate", "/api/chat")
ROUTES = ("/v1/chat/completions", "/v1/completions", "/api/generate", "/api/chat")

TIMING_RE = re.compile(r"^total;dur=\d+(\.\d+)?$")
ANSWERS = {"n": 0, "bad_xcache": [], "bad_timing": []}  # checked once at the end
ABSENT = "<absent>"


# ---------------------------------------------------------------- helpers

def start(args, models=False, **kw):
    """A cache-enabled server (-m stories260K unless models)."""
    srv = ks.Server((["-t", "1"] if models else BASE) + list(args), cache=True, **kw)
    SERVERS.append(srv)
    return srv


def stop(srv, name):
    rc = srv.stop(60)
    ck.exited_clean(name + " server on SIGTERM", srv, rc)


def note_answer(headers, where):
    """Every 200 answer has X-Cache hit|miss|bypass and Server-Timing."""
    ANSWERS["n"] += 1
    xc = headers.get("x-cache")
    if xc not in ("hit", "miss", "bypass"):
        ANSWERS["bad_xcache"].append((where, xc))
    t = headers.get("server-timing")
    if t is None or not TIMING_RE.match(t.strip()):
        ANSWERS["bad_timing"].append((where, t))
    return xc


class Ans:
    """One generation answer, whatever the route and framing."""

    def __init__(self):
        self.status = None
        self.xc = None
        self.text = None
        self.finish = None
        self.counts = None          # (prompt tokens, completion tokens)
        self.cached = ABSENT        # OpenAI usage.cached (ABSENT when missing)
        self.body = None

    def same(self):
        return (self.text, self.finish, self.counts)

    def __repr__(self):
        return "<%s %s %r %s %s cached=%s>" % (self.status, self.xc, self.text, self.finish, self.counts, self.cached)


def gen_body(route, prompt, n=N, stream=False, cache=None, temperature=0.0, seed=None, model=MODEL, extra=None):
    ollama = route in OLLAMA_ROUTES
    body = {"model": model, "stream": stream}
    if route in CHAT_ROUTES:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    if ollama:
        opts = {"temperature": temperature, "num_predict": n}
        if seed is not None:
            opts["seed"] = seed
        body["options"] = opts
    else:
        body["max_tokens"] = n
        body["temperature"] = temperature
        if seed is not None:
            body["seed"] = seed
        if stream:
            body["stream_options"] = {"include_usage": True}
    if cache is not None:
        body["cache"] = cache
    if extra:
        body.update(extra)
    return body


def ask(srv, route, prompt, name=None, headers=None, **kw):
    """Sends one generation request; returns an Ans. Stream answers are
    checked against the SSE/NDJSON shape (ks.check_sse / check_ndjson)."""
    body = gen_body(route, prompt, **kw)
    return ask_body(srv, route, body, name, headers)


def ask_body(srv, route, body, name=None, headers=None):
    name = name or "%s %s" % (route, "stream" if body.get("stream") else "")
    chat = route in CHAT_ROUTES
    a = Ans()
    if not body.get("stream"):
        r = srv.post(route, body, headers=headers, timeout=120)
        a.status = r.status
        a.body = r.text()
        if r.status != 200:
            return a
        a.xc = note_answer(r.headers, name)
        j = r.json()
        if route in OLLAMA_ROUTES:
            a.text = (j.get("message") or {}).get("content") if chat else j.get("response")
            a.finish = j.get("done_reason")
            a.counts = (j.get("prompt_eval_count"), j.get("eval_count"))
        else:
            c = (j.get("choices") or [{}])[0]
            a.text = (c.get("message") or {}).get("content") if chat else c.get("text")
            a.finish = c.get("finish_reason")
            u = j.get("usage") or {}
            a.counts = (u.get("prompt_tokens"), u.get("completion_tokens"))
            a.cached = u.get("cached", ABSENT)
        return a
    if route in OLLAMA_ROUTES:
        res = srv.ndjson(route, body, headers=headers)
        a.status = res.status
        if res.status != 200:
            a.body = res.body
            return a
        a.xc = note_answer(res.headers, name)
        text, final = ks.check_ndjson(ck, name, res, chat=chat)
        if final is None:
            return a
        a.text = text
        a.finish = final.get("done_reason")
        a.counts = (final.get("prompt_eval_count"), final.get("eval_count"))
        return a
    res = srv.sse(route, body, headers=headers)
    a.status = res.status
    if res.status != 200:
        a.body = res.body
        return a
    a.xc = note_answer(res.headers, name)
    usage = bool((body.get("stream_options") or {}).get("include_usage"))
    text = ks.check_sse(ck, name, res, chat=chat, include_usage=usage)
    if text is None:
        return a
    a.text = text
    a.finish = [ch.get("finish_reason") for c in res.chunks for ch in c.get("choices", [])][-1]
    if usage:
        u = res.chunks[-1].get("usage") or {}
        a.counts = (u.get("prompt_tokens"), u.get("completion_tokens"))
        a.cached = u.get("cached", ABSENT)
    return a


def want(name, a, xc, ref=None, cached=None):
    """Checks an answer: 200, X-Cache xc, and (ref) the reference's text,
    finish reason and counts; (cached) usage.cached True / ABSENT."""
    if not ck.eq(name + ": 200", a.status, 200):
        print("   body: " + ks._short(a.body))
        return False
    ok = ck.eq(name + ": X-Cache " + xc, a.xc, xc)
    if ref is not None:
        ok &= ck.eq(name + ": text, finish reason and token counts of the reference", a.same(), ref.same())
    if cached is not None:
        ok &= ck.eq(name + ": usage.cached " + ("true" if cached is True else "absent"), a.cached, cached)
    return ok


def stats(srv):
    r = srv.get("/cache/stats", timeout=30)
    if r.status != 200:
        raise ks.ServerError("GET /cache/stats -> %r" % r)
    return r.json()


def sv(s, tier, typ, field):
    return s[tier][typ][field]


def wait_until(pred, timeout=20.0, interval=0.05):
    """Polls pred() until it returns a true value; returns it (or the last)."""
    t0 = time.time()
    while True:
        v = pred()
        if v or time.time() - t0 > timeout:
            return v
        time.sleep(interval)


def wait_l2(srv, typ, entries, timeout=20.0):
    """Waits for the asynchronous L2 writes: l2.<typ>.entries == entries."""
    got = wait_until(lambda: sv(stats(srv), "l2", typ, "entries") == entries, timeout)
    if not got:
        ck.eq("l2.%s.entries reaches %d" % (typ, entries), sv(stats(srv), "l2", typ, "entries"), entries)
    return got


def settle(srv, timeout=20.0):
    """On a server whose entries never leave L1 (no eviction, expiry or
    tier clear): waits until the asynchronous L2 writes caught up, that is
    until L2 holds as many entries of each type as L1."""
    def caught_up():
        s = stats(srv)
        return all(sv(s, "l1", t, "entries") == sv(s, "l2", t, "entries") for t in ("response", "embedding"))
    if not wait_until(caught_up, timeout):
        ck.fail("the L2 writes catch up with L1 within %d s" % timeout, stats(srv))


def embed(srv, inputs, ollama=False, model=MODEL, cache=None, headers=None):
    """Returns (status, X-Cache, X-Cache-Hits, vectors, prompt tokens)."""
    path = "/api/embed" if ollama else "/v1/embeddings"
    body = {"model": model, "input": inputs}
    if cache is not None:
        body["cache"] = cache
    r = srv.post(path, body, headers=headers, timeout=120)
    if r.status != 200:
        return r.status, None, None, r.text(), None
    xc = note_answer(r.headers, path)
    j = r.json()
    if ollama:
        vecs = j.get("embeddings")
        ptok = j.get("prompt_eval_count")
    else:
        data = sorted(j.get("data") or [], key=lambda d: d.get("index"))
        vecs = [d.get("embedding") for d in data]
        ptok = (j.get("usage") or {}).get("prompt_tokens")
    return r.status, xc, r.header("X-Cache-Hits"), vecs, ptok


def embed_b64(srv, inputs, cache=None):
    """/v1/embeddings with encoding_format base64: (X-Cache, X-Cache-Hits,
    [bytes of each float32 vector])."""
    body = {"model": MODEL, "input": inputs, "encoding_format": "base64"}
    if cache is not None:
        body["cache"] = cache
    r = srv.post("/v1/embeddings", body, timeout=120)
    if r.status != 200:
        raise ks.ServerError("base64 embeddings -> %r" % r)
    note_answer(r.headers, "/v1/embeddings base64")
    data = sorted(r.json()["data"], key=lambda d: d["index"])
    return r.header("X-Cache"), r.header("X-Cache-Hits"), [base64.b64decode(d["embedding"]) for d in data]


def f32_bytes(vec):
    """A JSON vector as the float32 bytes it stands for."""
    return struct.pack("<%df" % len(vec), *vec)


def scrape(srv):
    return ks.metrics_map(srv)


def prompt_tokens_metric(srv):
    """Sum of kiln_prompt_tokens_total over its label sets."""
    return sum(v for (n, _), v in scrape(srv).items() if n == "kiln_prompt_tokens_total")


def run(t, *args):
    """Runs one test; on a failure, shows the log tails of the servers it started."""
    fails, n = ck.fails, len(SERVERS)
    ck.run(t, *args)
    if ck.fails > fails:
        for s in SERVERS[n:]:
            s.dump_log_tail(30)


# ---------------------------------------------------------------- tests on one server

def test_stats_shape(srv):
    s = stats(srv)
    s1 = ("entries", "bytes", "hits", "misses", "hit_rate", "evictions", "expirations")
    s2 = s1 + ("corrupt", "dropped")
    for tier, fields in (("l1", s1), ("l2", s2)):
        for typ in ("response", "embedding"):
            got = (s.get(tier) or {}).get(typ) or {}
            ck.check("/cache/stats %s.%s has %s" % (tier, typ, ", ".join(fields)),
                     all(isinstance(got.get(f), (int, float)) for f in fields), got)
    ck.eq("/cache/stats enabled", s.get("enabled"), {"response": True, "embedding": True})
    ck.eq("/cache/stats policy (default lru)", s.get("policy"), "lru")
    ck.check("/cache/stats l1_entry_overhead_bytes is a positive int",
             isinstance(s.get("l1_entry_overhead_bytes"), int) and s["l1_entry_overhead_bytes"] > 0,
             s.get("l1_entry_overhead_bytes"))
    ck.check("/cache/stats on a fresh store: no entries", all(
        sv(s, t, y, "entries") == 0 for t in ("l1", "l2") for y in ("response", "embedding")), s)


def test_routes(srv):
    """Each route: "cache": false reference, then miss, hit, stream hit; and
    a second prompt stream miss, stream hit, non-stream hit."""
    prompts = {"/v1/chat/completions": "Tell me about the red ball",
               "/v1/completions": "Once upon a time, a little fox",
               "/api/generate": "The big dog ran to the",
               "/api/chat": "Where did the cat go"}
    for route in ROUTES:
        p = prompts[route]
        openai = route not in OLLAMA_ROUTES
        ref = ask(srv, route, p, cache=False)
        want(route + " \"cache\": false (the reference)", ref, "bypass", cached=ABSENT if openai else None)
        ck.check(route + ": the reference has text", bool(ref.text), ref)
        ref2 = ask(srv, route, p, cache=False)
        want(route + " \"cache\": false again: still bypass (a bypass stores nothing)", ref2, "bypass", ref)
        m = ask(srv, route, p)
        want(route + " first", m, "miss", ref, cached=ABSENT if openai else None)
        h = ask(srv, route, p)
        want(route + " second", h, "hit", ref, cached=True if openai else None)
        hs = ask(srv, route, p, stream=True, name=route + " stream after non-stream")
        want(route + " stream after non-stream", hs, "hit", ref, cached=True if openai else None)

        p2 = p + " and then"
        ref = ask(srv, route, p2, cache=False)
        want(route + " (2) reference", ref, "bypass")
        sm = ask(srv, route, p2, stream=True, name=route + " (2) stream first")
        want(route + " (2) stream first", sm, "miss", ref, cached=ABSENT if openai else None)
        sh = ask(srv, route, p2, stream=True, name=route + " (2) stream second")
        want(route + " (2) stream second", sh, "hit", ref, cached=True if openai else None)
        nh = ask(srv, route, p2)
        want(route + " (2) non-stream after stream", nh, "hit", ref, cached=True if openai else None)


def test_sampled(srv):
    route = "/v1/completions"
    p = "A sampled story about a frog"
    settle(srv)
    s0 = stats(srv)
    texts = []
    for i in range(3):
        a = ask(srv, route, p, temperature=0.9)
        want("temperature 0.9 without seed, #%d" % (i + 1), a, "bypass", cached=ABSENT)
        texts.append(a.text)
    a = ask(srv, "/api/generate", p, temperature=0.9)
    want("ollama options.temperature 0.9 without seed", a, "bypass")
    a = ask(srv, route, p, temperature=0.9, stream=True, name="temperature 0.9 stream")
    want("temperature 0.9 without seed, stream", a, "bypass")
    s1 = stats(srv)
    for tier in ("l1", "l2"):
        for f in ("hits", "entries"):
            ck.eq("sampled without seed: %s.response.%s unchanged" % (tier, f),
                  sv(s1, tier, "response", f), sv(s0, tier, "response", f))

    ref = ask(srv, route, p, temperature=0.9, seed=4242, cache=False)
    want("temperature 0.9 seed 4242 \"cache\": false (reference)", ref, "bypass")
    m = ask(srv, route, p, temperature=0.9, seed=4242)
    want("temperature 0.9 seed 4242 first", m, "miss", ref, cached=ABSENT)
    h = ask(srv, route, p, temperature=0.9, seed=4242)
    want("temperature 0.9 seed 4242 second", h, "hit", ref, cached=True)
    o = ask(srv, route, p, temperature=0.9, seed=4243)
    want("temperature 0.9 another seed: a miss (the seed splits the key)", o, "miss")
    ref = ask(srv, "/api/generate", p, temperature=0.9, seed=99, cache=False)
    want("ollama options.seed 99 reference", ref, "bypass")
    m = ask(srv, "/api/generate", p, temperature=0.9, seed=99)
    want("ollama options.seed 99 first", m, "miss", ref)
    h = ask(srv, "/api/generate", p, temperature=0.9, seed=99)
    want("ollama options.seed 99 second", h, "hit", ref)


def test_optouts(srv):
    for route in ("/v1/completions", "/api/generate"):
        p = "The opt-out story of a small bird (%s)" % route
        s0 = stats(srv)
        ref = ask(srv, route, p, cache=False)
        want(route + " \"cache\": false", ref, "bypass")
        for hv in ("no-cache", "no-store"):
            a = ask(srv, route, p, headers={"Cache-Control": hv})
            want(route + " Cache-Control: " + hv, a, "bypass", ref)
        a = ask(srv, route, p, stream=True, cache=False, name=route + " stream \"cache\": false")
        want(route + " stream \"cache\": false", a, "bypass", ref)
        s1 = stats(srv)
        ck.eq(route + " opt-outs store nothing: l1.response.entries unchanged",
              sv(s1, "l1", "response", "entries"), sv(s0, "l1", "response", "entries"))
        m = ask(srv, route, p)
        want(route + " a normal request after the opt-outs is a miss", m, "miss", ref)
        h = ask(srv, route, p)
        want(route + " ... then a hit", h, "hit", ref)
        a = ask(srv, route, p, cache=False)
        want(route + " \"cache\": false with the entry present: still bypass", a, "bypass", ref)
        a = ask(srv, route, p, headers={"Cache-Control": "no-cache"})
        want(route + " Cache-Control: no-cache with the entry present: still bypass", a, "bypass", ref)


def test_key_split(srv):
    for route in ("/v1/completions", "/v1/chat/completions"):
        p = "The key of a little red hen (%s)" % route
        base = ask(srv, route, p, n=5)
        want(route + " max_tokens 5 first", base, "miss")
        ref = ask(srv, route, p, n=5, cache=False)
        want(route + " max_tokens 5 reference", ref, "bypass", base)
        a = ask(srv, route, p, n=6)
        want(route + " max_tokens 6: miss", a, "miss")
        if base.finish == "length" and a.text is not None:
            ck.check(route + " max_tokens 6 extends the max_tokens 5 text", a.text.startswith(base.text),
                     (a.text, base.text))
        a = ask(srv, route, p, n=5, extra={"stop": ["zebra"]})
        want(route + " a stop string: miss", a, "miss", base)
        a = ask(srv, route, p + " today", n=5)
        want(route + " another prompt: miss", a, "miss")
        a = ask(srv, route, p, n=5, temperature=0.5, seed=7)
        want(route + " temperature 0.5 seed 7: miss", a, "miss")
        a = ask(srv, route, p, n=5, extra={"user": "alice"})
        want(route + " \"user\" does not split the key: hit", a, "hit", base)
        a = ask(srv, route, p, n=5, extra={"top_p": 0.5})
        want(route + " top_p 0.5 at temperature 0 does not split the key: hit", a, "hit", base)
        a = ask(srv, route, p, n=5, stream=True, name=route + " stream (key)")
        want(route + " \"stream\" does not split the key: hit", a, "hit", base)
        a = ask(srv, route, p, n=5, stream=True, extra={"stream_options": {"include_usage": False}},
                name=route + " stream without usage")
        ck.eq(route + " stream_options does not split the key: hit", a.xc, "hit")
    # logit_bias changes a greedy output: it splits the key
    route = "/v1/completions"
    p = "The key of a little red hen (%s)" % route
    base = ask(srv, route, p, n=5, cache=False)
    toks = srv.post_json("/tokenize", {"model": MODEL, "content": p + base.text, "add_special": True})["tokens"]
    bias = {"logit_bias": {str(toks[-1]): -100}}
    ref = ask(srv, route, p, n=5, cache=False, extra=bias)
    ck.check("logit_bias: precondition: a bias against the last greedy token changes the text", ref.text != base.text,
             (ref.text, base.text))
    want("logit_bias: first: miss", ask(srv, route, p, n=5, extra=bias), "miss", ref)
    want("logit_bias: second: hit", ask(srv, route, p, n=5, extra=bias), "hit", ref)
    # a stop string that occurs: the stored answer is the stopped one
    word = base.text.split()[-1] if base.text.split() else "the"
    stop = {"stop": [word]}
    ref = ask(srv, route, p, n=5, cache=False, extra=stop)
    ck.eq("stop %r: precondition: the reference stops" % word, ref.finish, "stop")
    want("stop %r: first: miss" % word, ask(srv, route, p, n=5, extra=stop), "miss", ref)
    want("stop %r: second: hit (finish stop)" % word, ask(srv, route, p, n=5, extra=stop), "hit", ref)
    want("stop %r: stream: hit" % word, ask(srv, route, p, n=5, extra=stop, stream=True,
                                            name="stop stream"), "hit", ref)
    # the chat template renders a system message into the prompt: a miss
    route = "/v1/chat/completions"
    p = "The key of a little red hen (%s)" % route
    body = gen_body(route, p, n=5)
    body["messages"] = [{"role": "system", "content": "Be brief."}] + body["messages"]
    a = ask_body(srv, route, body, "chat with a system message")
    want(route + " a system message: miss", a, "miss")


def test_sharing(srv):
    """The key is the prompt tokens and the output-changing parameters: an
    OpenAI completion, an Ollama raw generate and a token-array prompt with
    the same tokens share an entry; so do the two chat routes."""
    p = "The shared key of the little mouse"
    ref = ask(srv, "/v1/completions", p, n=7, cache=False)
    want("sharing: /v1/completions first", ask(srv, "/v1/completions", p, n=7), "miss", ref)
    a = ask_body(srv, "/api/generate", dict(gen_body("/api/generate", p, n=7), raw=True), "generate raw")
    want("sharing: /api/generate raw with the same tokens and parameters", a, "hit", ref)
    a = ask_body(srv, "/api/generate", dict(gen_body("/api/generate", p, n=7, stream=True), raw=True),
                 "generate raw stream")
    want("sharing: /api/generate raw stream", a, "hit", ref)
    toks = srv.post_json("/tokenize", {"model": MODEL, "content": p, "add_special": True})["tokens"]
    ck.eq("sharing: /tokenize gives the completion's prompt token count", len(toks), ref.counts[0])
    a = ask(srv, "/v1/completions", toks, n=7)
    want("sharing: /v1/completions with the prompt as token ids", a, "hit", ref)
    a = ask(srv, "/v1/completions", toks[1:], n=7)
    want("sharing: the token ids without BOS: another prompt, a miss", a, "miss")

    p = "Hi there from the mouse"
    ref = ask(srv, "/v1/chat/completions", p, n=7, cache=False)
    want("sharing: /v1/chat/completions first", ask(srv, "/v1/chat/completions", p, n=7), "miss", ref)
    a = ask(srv, "/api/chat", p, n=7)
    want("sharing: /api/chat with the same messages and parameters", a, "hit", ref)


VOLATILE = ("id", "created", "created_at", "usage", "total_duration", "load_duration", "prompt_eval_duration",
            "eval_duration", "system_fingerprint")


def stable(j):
    """An answer without the fields that differ between two identical requests."""
    return {k: v for k, v in j.items() if k not in VOLATILE}


def test_answer_shapes(srv):
    """Fields that shape the answer (echo, logprobs, tools) and penalties:
    the hit is the whole answer a "cache": false request gives."""
    P = "Once upon a time, the little owl"
    cmpl = {"model": MODEL, "prompt": P, "max_tokens": 10, "temperature": 0}
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "Hello owl"}], "max_tokens": 10, "temperature": 0}
    gen = {"model": MODEL, "prompt": P, "stream": False, "options": {"temperature": 0, "num_predict": 10}}
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]
    cases = [("/v1/completions", cmpl, {}, None),
             ("/v1/completions", cmpl, {"frequency_penalty": 1.5}, "miss"),
             ("/v1/completions", cmpl, {"presence_penalty": 1.5}, "miss"),
             ("/v1/completions", cmpl, {"repeat_penalty": 1.5}, "miss"),
             ("/v1/completions", cmpl, {"echo": True}, None),
             ("/v1/completions", cmpl, {"logprobs": 2}, None),
             ("/v1/completions", cmpl, {"max_completion_tokens": 10}, None),
             ("/v1/chat/completions", chat, {}, None),
             ("/v1/chat/completions", chat, {"logprobs": True, "top_logprobs": 2}, None),
             ("/v1/chat/completions", chat, {"tools": tools}, None),
             ("/api/generate", gen, {}, None),
             ("/api/generate", gen, {"options": {"temperature": 0, "num_predict": 10, "repeat_penalty": 1.8}}, "miss"),
             ("/api/generate", gen, {"system": "You are an owl."}, None)]
    for route, base, extra, first in cases:
        name = "%s %s" % (route, json.dumps(extra) if extra else "(base)")
        body = dict(base, **extra)
        r0 = srv.post(route, dict(body, cache=False), timeout=120)
        r1 = srv.post(route, body, timeout=120)
        r2 = srv.post(route, body, timeout=120)
        if not ck.eq(name + ": 200 x3", (r0.status, r1.status, r2.status), (200, 200, 200)):
            print("   " + ks._short(r0.text() + r1.text() + r2.text()))
            continue
        xs = [note_answer(r.headers, name) for r in (r0, r1, r2)]
        ck.check(name + ": X-Cache bypass, %s, hit" % (first or "miss|hit"),
                 xs[0] == "bypass" and xs[1] == (first or xs[1]) and xs[1] in ("miss", "hit") and xs[2] == "hit", xs)
        ck.eq(name + ": the first answer is the reference", stable(r1.json()), stable(r0.json()))
        ck.eq(name + ": the hit is the reference", stable(r2.json()), stable(r0.json()))
    # logprobs streamed from the cache
    body = dict(cmpl, prompt=P + " flew", logprobs=2, stream=True)
    ref = srv.sse("/v1/completions", dict(body, cache=False))
    srv.post("/v1/completions", dict(body, stream=False))
    hit = srv.sse("/v1/completions", body)
    ck.eq("stream logprobs: bypass then hit", (ref.headers.get("x-cache"), hit.headers.get("x-cache")),
          ("bypass", "hit"))

    def lp(res):
        return [ch.get("logprobs") for c in res.chunks for ch in c.get("choices", []) if ch.get("logprobs")]
    ck.check("stream logprobs: the reference stream carries logprobs", lp(ref), ref.chunks[:2])
    ck.eq("stream logprobs: the hit streams the reference's logprobs (joined)",
          join_logprobs(lp(hit)), join_logprobs(lp(ref)))


def join_logprobs(parts):
    """The completions logprobs of a stream's chunks as one list per field
    (a hit may cut the text into other chunks than the computation)."""
    out = {}
    for p in parts:
        for k, v in p.items():
            if isinstance(v, list):
                out.setdefault(k, []).extend(v)
    out.pop("text_offset", None)
    return out


def test_concurrent(srv):
    """8 clients at once: the same new request (misses and hits, one text),
    then 8 different prompts twice over, and embeddings sharing a text."""
    route = "/v1/completions"
    p = "Eight friends asked at once about the moon"
    ref = ask(srv, route, p, cache=False)

    def together(fn, n=8):
        out = [None] * n
        bar = threading.Barrier(n)

        def w(i):
            bar.wait()
            try:
                out[i] = fn(i)
            except Exception as e:  # noqa: BLE001 - checked by the caller
                out[i] = e
        th = [threading.Thread(target=w, args=(i,)) for i in range(n)]
        for t in th:
            t.start()
        for t in th:
            t.join(300)
        return out

    res = together(lambda i: ask(srv, route, p, stream=bool(i % 2), name="concurrent same"))
    ok = [r for r in res if isinstance(r, Ans) and r.status == 200]
    ck.eq("concurrent same request: 8 answers 200", len(ok), 8)
    ck.check("concurrent same request: every text is the reference", all(r.same() == ref.same() for r in ok),
             [r for r in ok if r.same() != ref.same()][:2])
    ck.check("concurrent same request: each miss or hit, at least one miss",
             all(r.xc in ("miss", "hit") for r in ok) and any(r.xc == "miss" for r in ok), [r.xc for r in ok])
    want("concurrent same request: afterwards a hit", ask(srv, route, p), "hit", ref)

    prompts = ["Friend %d looked at the stars" % i for i in range(8)]
    refs = [ask(srv, route, q, n=6, cache=False) for q in prompts]
    for rnd, xc in ((1, "miss"), (2, "hit")):
        res = together(lambda i: ask(srv, route, prompts[i], n=6))
        ck.check("concurrent 8 prompts, round %d: every answer a %s with the reference text" % (rnd, xc),
                 all(isinstance(r, Ans) and r.xc == xc and r.same() == refs[i].same() for i, r in enumerate(res)),
                 [(i, r) for i, r in enumerate(res) if not (isinstance(r, Ans) and r.xc == xc)][:3])

    res = together(lambda i: embed(srv, ["the moon is shared", "moon text %d" % i]))
    ck.check("concurrent embeddings: 8 answers 200 with two vectors",
             all(isinstance(r, tuple) and r[0] == 200 and len(r[3]) == 2 for r in res), res[:1])
    ck.check("concurrent embeddings: X-Cache-Hits K/2 with K < 2 (each own text is new)",
             all(isinstance(r, tuple) and r[2] in ("0/2", "1/2") for r in res), [r[2] for r in res if isinstance(r, tuple)])
    st, xc, hits, vecs, _ = embed(srv, ["moon text %d" % i for i in range(8)] + ["the moon is shared"])
    ck.eq("concurrent embeddings: afterwards every text is a hit", (st, xc, hits), (200, "hit", "9/9"))
    if all(isinstance(r, tuple) and r[0] == 200 for r in res) and st == 200:
        d = max(ks.maxdiff(res[i][3][1], vecs[i]) for i in range(8))
        ck.check("concurrent embeddings: the cached vectors are the ones served (1e-6)", d <= 1e-6, d)


def test_embeddings(srv):
    st0 = stats(srv)
    for ollama in (False, True):
        name = "/api/embed" if ollama else "/v1/embeddings"
        tag = " (ollama)" if ollama else ""
        A, B, C = "a red apple" + tag, "a blue boat" + tag, "a green cat" + tag

        def l1e(field):
            return sv(stats(srv), "l1", "embedding", field)

        st, xc, hits, ref_ab, ptok_ab = embed(srv, [A, B], ollama, cache=False)
        ck.eq(name + " [A,B] \"cache\": false: bypass", (st, xc), (200, "bypass"))
        h0, m0 = l1e("hits"), l1e("misses")
        st, xc, hits, e1, ptok = embed(srv, [A, B], ollama)
        ck.eq(name + " [A,B]: miss", (st, xc), (200, "miss"))
        ck.eq(name + " [A,B]: X-Cache-Hits 0/2", hits, "0/2")
        ck.eq(name + " [A,B]: l1 embedding hits +0, misses +2", (l1e("hits") - h0, l1e("misses") - m0), (0, 2))
        ck.check(name + " [A,B]: vectors identical to the bypass request's", e1 == ref_ab,
                 "max diff %s" % (max(ks.maxdiff(x, y) for x, y in zip(e1, ref_ab)) if e1 and ref_ab else None))
        ck.eq(name + " [A,B]: prompt tokens of the bypass request", ptok, ptok_ab)

        st, _, _, ref_c, ptok_c = embed(srv, [C], ollama, cache=False)
        st, _, _, ref_bca, ptok_bca = embed(srv, [B, C, A], ollama, cache=False)
        pt_c0 = prompt_tokens_metric(srv)
        embed(srv, [C], ollama, cache=False)
        pt_c = prompt_tokens_metric(srv) - pt_c0
        h0, m0 = l1e("hits"), l1e("misses")
        pt0 = prompt_tokens_metric(srv)
        st, xc, hits, e2, ptok = embed(srv, [B, C, A], ollama)
        pt = prompt_tokens_metric(srv) - pt0
        ck.eq(name + " [B,C,A]: miss", (st, xc), (200, "miss"))
        ck.eq(name + " [B,C,A]: X-Cache-Hits 2/3", hits, "2/3")
        ck.eq(name + " [B,C,A]: l1 embedding hits +2, misses +1 (only C looked up in vain)",
              (l1e("hits") - h0, l1e("misses") - m0), (2, 1))
        if pt_c > 0:
            ck.eq(name + " [B,C,A]: kiln_prompt_tokens_total grows by C's tokens alone (only C went through "
                  "the model)", pt, pt_c)
        else:
            print("   (kiln_prompt_tokens_total does not count embeddings: %s)" % pt_c)
        if ck.eq(name + " [B,C,A]: three vectors", len(e2 or []), 3):
            ck.check(name + " [B,C,A]: B and A identical to the vectors computed by [A,B]",
                     e2[0] == e1[1] and e2[2] == e1[0],
                     (ks.maxdiff(e2[0], e1[1]), ks.maxdiff(e2[2], e1[0])))
            ck.check(name + " [B,C,A]: C identical to C computed alone", e2[1] == ref_c[0],
                     ks.maxdiff(e2[1], ref_c[0]))
            d = max(ks.maxdiff(x, y) for x, y in zip(e2, ref_bca))
            ck.check(name + " [B,C,A]: equal to the bypass [B,C,A] request's vectors (1e-7)", d <= 1e-7, d)
            print("   %s: max diff against the bypass batch [B,C,A]: %g" % (name, d))
        ck.eq(name + " [B,C,A]: prompt tokens of the bypass request", ptok, ptok_bca)

        h0, m0 = l1e("hits"), l1e("misses")
        st, _, _, ref_ca, ptok_ca = embed(srv, [C, A], ollama, cache=False)
        st, xc, hits, e3, ptok = embed(srv, [C, A], ollama)
        ck.eq(name + " [C,A]: hit", (st, xc), (200, "hit"))
        ck.eq(name + " [C,A]: X-Cache-Hits 2/2", hits, "2/2")
        ck.eq(name + " [C,A]: l1 embedding hits +2, misses +0", (l1e("hits") - h0, l1e("misses") - m0), (2, 0))
        if e2 and len(e2) == 3:
            ck.check(name + " [C,A]: identical to the vectors served before", e3 == [e2[1], e2[2]],
                     "max diff %s" % (max(ks.maxdiff(x, y) for x, y in zip(e3 or [], e2[1:]))
                                      if e3 else None))
        ck.eq(name + " [C,A]: prompt tokens of the bypass request", ptok, ptok_ca)

        st, xc, hits, e4, _ = embed(srv, [C, A], ollama, headers={"Cache-Control": "no-cache"})
        ck.eq(name + " [C,A] Cache-Control: no-cache: bypass", (st, xc), (200, "bypass"))
        ck.check(name + " [C,A] no-cache: vectors within 1e-5 of the cached ones",
                 e4 and e3 and max(ks.maxdiff(x, y) for x, y in zip(e4, e3)) <= 1e-5, "")
    # the same text twice in one batch, then alone
    st, xc, hits, ev, _ = embed(srv, ["twin text", "twin text"])
    ck.eq("embeddings [T,T]: miss 0/2", (st, xc, hits), (200, "miss", "0/2"))
    st, xc, hits, ev1, _ = embed(srv, ["twin text"])
    ck.eq("embeddings [T] after [T,T]: hit 1/1", (st, xc, hits), (200, "hit", "1/1"))
    ck.check("embeddings [T,T]: one vector for both, served again", ev and ev1 and ev[0] == ev[1] == ev1[0], "")
    # base64 carries the float32 bits: cached vectors are bit-identical
    xc, hits, ref = embed_b64(srv, ["bits of a text"], cache=False)
    ck.eq("base64 \"cache\": false: bypass", xc, "bypass")
    xc, hits, m = embed_b64(srv, ["bits of a text"])
    ck.eq("base64 first: miss 0/1", (xc, hits), ("miss", "0/1"))
    ck.check("base64 first: the bits of the bypass computation", m == ref, "")
    st, xc, hits, fv, _ = embed(srv, ["bits of a text"])
    ck.eq("float after base64: hit 1/1", (st, xc, hits), (200, "hit", "1/1"))
    ck.check("float after base64: the JSON floats are exactly the computed float32 values",
             fv and [f32_bytes(v) for v in fv] == ref, "")
    xc, hits, h = embed_b64(srv, ["bits of a text"])
    ck.eq("base64 again: hit 1/1", (xc, hits), ("hit", "1/1"))
    ck.check("base64 again: the bits of the bypass computation", h == ref, "")
    st1 = stats(srv)
    ck.check("embeddings: response cache untouched by the embedding traffic",
             sv(st1, "l1", "response", "hits") == sv(st0, "l1", "response", "hits"),
             (sv(st0, "l1", "response", "hits"), sv(st1, "l1", "response", "hits")))


def test_metrics(srv):
    settle(srv)
    ms = scrape(srv)
    s = stats(srv)
    for tier in ("l1", "l2"):
        for typ in ("response", "embedding"):
            lab = frozenset({("tier", tier), ("type", typ)})
            for metric, field in (("kiln_cache_hits_total", "hits"), ("kiln_cache_misses_total", "misses"),
                                  ("kiln_cache_evictions_total", "evictions"),
                                  ("kiln_cache_expirations_total", "expirations"),
                                  ("kiln_cache_entries", "entries"), ("kiln_cache_bytes", "bytes")):
                got = ms.get((metric, lab))
                ck.eq('%s{tier="%s",type="%s"} = /cache/stats %s.%s.%s' % (metric, tier, typ, tier, typ, field),
                      got, float(sv(s, tier, typ, field)))
    ck.check("metrics: the traffic made l1 response and embedding hits",
             sv(s, "l1", "response", "hits") > 0 and sv(s, "l1", "embedding", "hits") > 0, s["l1"])
    ck.check("metrics: L2 holds the responses and embeddings stored",
             sv(s, "l2", "response", "entries") > 0 and sv(s, "l2", "embedding", "entries") > 0, s["l2"])
    for tier in ("l1", "l2"):
        for typ in ("response", "embedding"):
            x = s[tier][typ]
            rate = x["hits"] / (x["hits"] + x["misses"]) if x["hits"] + x["misses"] else 0.0
            ck.check("/cache/stats %s.%s.hit_rate = hits / (hits + misses)" % (tier, typ),
                     abs(x["hit_rate"] - rate) < 1e-6, (x["hit_rate"], rate))
    ck.check("/cache/stats: l1.response.misses counts the L2 lookups too (l1 misses >= l2 hits + l2 misses)",
             sv(s, "l1", "response", "misses") >= sv(s, "l2", "response", "hits") + sv(s, "l2", "response", "misses"),
             (s["l1"]["response"], s["l2"]["response"]))


# ---------------------------------------------------------------- tests with their own servers

def test_restart():
    d = os.path.join(TMP, "restart")
    p = "After the restart, the little bear"
    pbig = "A very long story"
    ref = big_ref = None
    a = start(["--cache-dir", d])
    try:
        ref = ask(a, "/v1/completions", p, cache=False)
        want("restart A: reference", ref, "bypass")
        want("restart A: first", ask(a, "/v1/completions", p), "miss", ref)
        st, xc, _, ev, _ = embed(a, ["the bear sleeps", "the bird sings"])
        ck.eq("restart A: embeddings miss", (st, xc), (200, "miss"))
        big_ref = ask(a, "/v1/completions", pbig, n=500, cache=False, extra={"ignore_eos": True})
        ck.check("restart A: the long answer is over 1 KiB (stored compressed)", len(big_ref.text or "") > 1024,
                 len(big_ref.text or ""))
        want("restart A: long answer first", ask(a, "/v1/completions", pbig, n=500, extra={"ignore_eos": True}),
             "miss", big_ref)
        want("restart A: long answer second (L1)", ask(a, "/v1/completions", pbig, n=500, extra={"ignore_eos": True}),
             "hit", big_ref)
    finally:
        stop(a, "restart A")  # SIGTERM flushes the pending L2 writes
    b = start(["--cache-dir", d])
    try:
        s0 = stats(b)
        ck.eq("restart B: l2.response.entries = 2 (flushed on SIGTERM)", sv(s0, "l2", "response", "entries"), 2)
        ck.eq("restart B: l2.embedding.entries = 2", sv(s0, "l2", "embedding", "entries"), 2)
        ck.check("restart B: l2.response.misses survived the restart (>= 1)",
                 sv(s0, "l2", "response", "misses") >= 1, s0["l2"]["response"])
        h = ask(b, "/v1/completions", p)
        want("restart B: the same request", h, "hit", ref, cached=True)
        s1 = stats(b)
        ck.eq("restart B: l2.response.hits +1", sv(s1, "l2", "response", "hits") - sv(s0, "l2", "response", "hits"), 1)
        ck.eq("restart B: l1.response.hits +0 (served from L2)",
              sv(s1, "l1", "response", "hits") - sv(s0, "l1", "response", "hits"), 0)
        h = ask(b, "/v1/completions", p, stream=True, name="restart B stream")
        want("restart B: again, streamed", h, "hit", ref)
        s2 = stats(b)
        ck.eq("restart B: promoted: the next hit is in L1 (l1 hits +1, l2 hits +0)",
              (sv(s2, "l1", "response", "hits") - sv(s1, "l1", "response", "hits"),
               sv(s2, "l2", "response", "hits") - sv(s1, "l2", "response", "hits")), (1, 0))
        st, xc, hits, ev2, _ = embed(b, ["the bird sings", "the bear sleeps"])
        ck.eq("restart B: embeddings hit 2/2", (st, xc, hits), (200, "hit", "2/2"))
        ck.check("restart B: embeddings identical to those computed before the restart",
                 ev and ev2 and ev2 == [ev[1], ev[0]], "")
        ck.eq("restart B: l2.embedding.hits +2",
              sv(stats(b), "l2", "embedding", "hits") - sv(s0, "l2", "embedding", "hits"), 2)
        want("restart B: long answer from L2", ask(b, "/v1/completions", pbig, n=500, extra={"ignore_eos": True}),
             "hit", big_ref)
        s_end = stats(b)
    finally:
        stop(b, "restart B")
    test_cli_offline(d, s_end)


def cli_available():
    p = subprocess.run([ks.KILN_BIN, "cache", "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return p.returncode == 0 and b"stats" in (p.stdout + p.stderr)


def test_cli_offline(d, s_before):
    """`kiln cache stats --json` shows what /cache/stats said before the stop;
    `kiln cache clear --type response` empties the responses."""
    if not cli_available():
        print("   (kiln cache stats|clear not available: the offline CLI part is skipped)")
        return
    j = json.loads(ks.run_kiln(["cache", "stats", "--cache-dir", d, "--json"]))
    l2 = j.get("l2") or {}
    fields = ("entries", "bytes", "hits", "misses", "evictions", "expirations", "corrupt")
    for typ in ("response", "embedding"):
        ck.eq("kiln cache stats --json: l2 %s %s = /cache/stats before the stop" % (typ, ", ".join(fields)),
              [(l2.get(typ) or {}).get(f) for f in fields], [sv(s_before, "l2", typ, f) for f in fields])
    n_resp, n_emb = sv(s_before, "l2", "response", "entries"), sv(s_before, "l2", "embedding", "entries")
    out = ks.run_kiln(["cache", "clear", "--cache-dir", d, "--type", "response"]).decode()
    ck.check("kiln cache clear --type response: says it removed %d entries" % n_resp,
             re.search(r"\b%d entries" % n_resp, out), out)
    l2 = json.loads(ks.run_kiln(["cache", "stats", "--cache-dir", d, "--json"])).get("l2") or {}
    ck.eq("kiln cache clear --type response: 0 response entries, the embeddings stay",
          ((l2.get("response") or {}).get("entries"), (l2.get("embedding") or {}).get("entries")), (0, n_emb))
    out = ks.run_kiln(["cache", "clear", "--cache-dir", d, "--model", "nosuch"]).decode()
    l2 = json.loads(ks.run_kiln(["cache", "stats", "--cache-dir", d, "--json"])).get("l2") or {}
    ck.eq("kiln cache clear --model nosuch: the embeddings stay", (l2.get("embedding") or {}).get("entries"), n_emb)
    out = ks.run_kiln(["cache", "clear", "--cache-dir", d, "--model", MODEL]).decode()
    ck.check("kiln cache clear --model %s: says it removed %d entries" % (MODEL, n_emb),
             re.search(r"\b%d entries" % n_emb, out), out)
    l2 = json.loads(ks.run_kiln(["cache", "stats", "--cache-dir", d, "--json"])).get("l2") or {}
    ck.eq("kiln cache clear --model %s: no entries left" % MODEL,
          ((l2.get("response") or {}).get("entries"), (l2.get("embedding") or {}).get("entries")), (0, 0))

def burst(srv, prompts, nthreads, body_of, stop_at=None, on_stop=None):
    """Sends every prompt from nthreads threads; returns {i: (status, xc, text)}
    or {i: exception}. When stop_at, on_stop() runs once stop_at answers are in."""
    out = {}
    lock = threading.Lock()
    nxt = [0]
    fired = [False]

    def worker():
        while True:
            with lock:
                i = nxt[0]
                if i >= len(prompts):
                    return
                nxt[0] += 1
            try:
                r = srv.post("/v1/completions", body_of(prompts[i]), timeout=120)
                res = (r.status, r.header("X-Cache"),
                       r.json()["choices"][0]["text"] if r.status == 200 else r.text())
            except Exception as e:  # noqa: BLE001 - the server may be killed under us
                res = e
            fire = False
            with lock:
                out[i] = res
                if stop_at is not None and not fired[0] and \
                        sum(1 for v in out.values() if isinstance(v, tuple) and v[0] == 200) >= stop_at:
                    fired[0] = fire = True
            if fire:
                on_stop()
    th = [threading.Thread(target=worker) for _ in range(nthreads)]
    for t in th:
        t.start()
    for t in th:
        t.join(300)
    return out


def test_kill9():
    d = os.path.join(TMP, "kill9")
    prompts = ["Tale number %d. Once upon a time, a %s" % (i, ("cat", "dog", "boy", "girl", "bird")[i % 5])
               for i in range(150)]

    def body(p, cache=None):
        b = {"model": MODEL, "prompt": p, "max_tokens": 8, "temperature": 0}
        if cache is not None:
            b["cache"] = cache
        return b

    a = start(["--cache-dir", d, "-np", "4"])
    t0 = time.time()

    def kill_after_a_write():
        # The disk writes are asynchronous and may lag the answers on a loaded machine: kill once at
        # least one batch has reached L2, while the burst keeps answering and writing.
        t_end = time.time() + 30
        while time.time() < t_end:
            try:
                if sv(stats(a), "l2", "response", "entries") >= 1:
                    break
            except Exception:  # noqa: BLE001 - then kill anyway
                break
            time.sleep(0.01)
        a.proc.kill()

    first = burst(a, prompts, 8, body, stop_at=len(prompts) // 3, on_stop=kill_after_a_write)
    a.wait(30)
    done = sum(1 for v in first.values() if isinstance(v, tuple) and v[0] == 200)
    print("   kill -9 after %d of %d answers (%.1f s)" % (done, len(prompts), time.time() - t0))
    ck.check("kill -9: the server died during the burst (some answers missing)", done < len(prompts), done)
    ck.check("kill -9: every answer before the kill was a miss",
             all(v[1] == "miss" for v in first.values() if isinstance(v, tuple) and v[0] == 200),
             [v for v in first.values() if isinstance(v, tuple) and v[1] != "miss"][:3])
    b = start(["--cache-dir", d, "-np", "4"])
    try:
        s0 = stats(b)
        entries = sv(s0, "l2", "response", "entries")
        print("   L2 entries after the restart: %d" % entries)
        ck.check("kill -9: some entries survived in L2 (written before the kill)", entries >= 1, s0["l2"]["response"])
        ck.check("kill -9: no more entries than answers computed before the kill (%d, + 8 in flight)" % done,
                 entries <= done + 8, entries)
        again = burst(b, prompts, 8, body)
        refs = burst(b, prompts, 8, lambda p: body(p, cache=False))
        bad = [i for i in range(len(prompts)) if not (isinstance(again.get(i), tuple) and again[i][0] == 200)]
        ck.check("kill -9: every re-request after the restart answers 200", not bad,
                 [(i, again.get(i)) for i in bad[:3]])
        badref = [i for i in range(len(prompts)) if not (isinstance(refs.get(i), tuple) and refs[i][0] == 200
                                                         and refs[i][1] == "bypass")]
        ck.check("kill -9: every reference (\"cache\": false) is a 200 bypass", not badref,
                 [(i, refs.get(i)) for i in badref[:3]])
        hits = [i for i in range(len(prompts)) if i not in bad and again[i][1] == "hit"]
        wrong = [(i, again[i][2], refs[i][2]) for i in range(len(prompts))
                 if i not in bad and i not in badref and again[i][2] != refs[i][2]]
        ck.check("kill -9: every answer (hits included) is the reference text", not wrong, wrong[:3])
        ck.eq("kill -9: as many hits as L2 entries at the restart", len(hits), entries)
        ck.check("kill -9: the other answers are misses",
                 all(again[i][1] == "miss" for i in range(len(prompts)) if i not in bad and i not in hits),
                 [again[i] for i in range(len(prompts)) if i not in bad and i not in hits][:3])
        s1 = stats(b)
        ck.eq("kill -9: l2.response.corrupt = 0", sv(s1, "l2", "response", "corrupt"), 0)
        ck.check("kill -9: no corrupt record in the log", "corrupt" not in b.log().lower(),
                 [ln for ln in b.log().splitlines() if "corrupt" in ln.lower()][:3])
    finally:
        stop(b, "kill -9 restart")


def test_corrupt():
    d = os.path.join(TMP, "corrupt")
    p = "The corrupt record of the old owl"
    a = start(["--cache-dir", d])
    try:
        ref = ask(a, "/v1/completions", p, cache=False)
        want("corrupt A: reference", ref, "bypass")
        want("corrupt A: first", ask(a, "/v1/completions", p), "miss", ref)
    finally:
        stop(a, "corrupt A")
    path = os.path.join(d, "data.mdb")
    with open(path, "rb") as f:
        data = bytearray(f.read())
    at = [m.start() for m in re.finditer(b"KLC1", bytes(data))]
    if not ck.eq("corrupt: data.mdb holds exactly one KLC1 record", len(at), 1):
        return
    off = at[0] + 48 + 2
    ck.check("corrupt: the payload byte is inside the file", off < len(data), (off, len(data)))
    data[off] ^= 0x5A
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(bytes([data[off]]))
    b = start(["--cache-dir", d])
    try:
        m = ask(b, "/v1/completions", p)
        want("corrupt B: the request over the corrupt record is a miss", m, "miss", ref, cached=ABSENT)
        warn = [ln for ln in b.log().splitlines() if "corrupt" in ln and "WARN" in ln.upper()]
        ck.check("corrupt B: a WARN line with \"corrupt\" in the log", warn, b.log()[-1500:])
        s = stats(b)
        ck.eq("corrupt B: l2.response.corrupt = 1", sv(s, "l2", "response", "corrupt"), 1)
        h = ask(b, "/v1/completions", p)
        want("corrupt B: the next identical request is a hit", h, "hit", ref, cached=True)
        wait_l2(b, "response", 1)
    finally:
        stop(b, "corrupt B")
    c = start(["--cache-dir", d])
    try:
        s0 = stats(c)
        h = ask(c, "/v1/completions", p)
        want("corrupt C: the re-stored record is an L2 hit after another restart", h, "hit", ref)
        s1 = stats(c)
        ck.eq("corrupt C: l2.response.hits +1", sv(s1, "l2", "response", "hits") - sv(s0, "l2", "response", "hits"), 1)
        ck.eq("corrupt C: l2.response.corrupt still 1 (a lifetime counter)", sv(s1, "l2", "response", "corrupt"), 1)
    finally:
        stop(c, "corrupt C")


def test_clear():
    md = os.path.join(TMP, "models")
    os.makedirs(md)
    os.symlink(ks.model_path("stories260K"), os.path.join(md, "alpha.gguf"))
    os.symlink(ks.model_path("stories260K-Q8_0"), os.path.join(md, "beta-Q8_0.gguf"))
    srv = start(["--models", md], models=True)
    p, t = "Two models and one clear", "the clear text"
    R = "/v1/completions"

    def clear(body):
        r = srv.post("/cache/clear", body, timeout=60)
        return r.status, (r.json() if r.status == 200 else r.text())

    def entries(s, typ):
        return (sv(s, "l1", typ, "entries"), sv(s, "l2", typ, "entries"))

    try:
        ref = {m: ask(srv, R, p, model=m, cache=False) for m in ("alpha", "beta")}
        for m in ("alpha", "beta"):
            want("clear: %s response first" % m, ask(srv, R, p, model=m), "miss", ref[m])
            st, xc, _, _, _ = embed(srv, [t], model=m)
            ck.eq("clear: %s embedding first" % m, (st, xc), (200, "miss"))
        wait_l2(srv, "response", 2)
        wait_l2(srv, "embedding", 2)
        s = stats(srv)
        ck.eq("clear: 2 response and 2 embedding entries in each tier",
              (entries(s, "response"), entries(s, "embedding")), ((2, 2), (2, 2)))

        st, j = clear({"type": "embedding"})
        ck.eq("clear {type: embedding}: 200 {cleared: 4} (2 in L1 + 2 in L2)", (st, j), (200, {"cleared": 4}))
        s = stats(srv)
        ck.eq("clear {type: embedding}: embedding entries 0, response entries stay",
              (entries(s, "response"), entries(s, "embedding")), ((2, 2), (0, 0)))
        want("clear {type: embedding}: alpha response still a hit", ask(srv, R, p, model="alpha"), "hit", ref["alpha"])
        for m in ("alpha", "beta"):
            st, xc, _, _, _ = embed(srv, [t], model=m)
            ck.eq("clear {type: embedding}: %s embedding is a miss" % m, (st, xc), (200, "miss"))
        wait_l2(srv, "embedding", 2)

        st, j = clear({"model": "alpha"})
        ck.eq("clear {model: alpha}: 200 {cleared: 4} (response and embedding, L1 and L2)", (st, j),
              (200, {"cleared": 4}))
        s = stats(srv)
        ck.eq("clear {model: alpha}: beta's entries stay", (entries(s, "response"), entries(s, "embedding")),
              ((1, 1), (1, 1)))
        want("clear {model: alpha}: beta response hit", ask(srv, R, p, model="beta"), "hit", ref["beta"])
        st, xc, _, _, _ = embed(srv, [t], model="beta")
        ck.eq("clear {model: alpha}: beta embedding hit", (st, xc), (200, "hit"))
        want("clear {model: alpha}: alpha response miss", ask(srv, R, p, model="alpha"), "miss", ref["alpha"])
        st, xc, _, _, _ = embed(srv, [t], model="alpha")
        ck.eq("clear {model: alpha}: alpha embedding miss", (st, xc), (200, "miss"))
        wait_l2(srv, "response", 2)

        s0 = stats(srv)
        wait_l2(srv, "embedding", 2)
        st, j = clear({"tier": "l1"})
        ck.eq("clear {tier: l1}: 200 {cleared: 4}", (st, j), (200, {"cleared": 4}))
        s = stats(srv)
        ck.eq("clear {tier: l1}: L1 empty, L2 stays", (entries(s, "response"), entries(s, "embedding")),
              ((0, 2), (0, 2)))
        want("clear {tier: l1}: beta response served from L2", ask(srv, R, p, model="beta"), "hit", ref["beta"])
        ck.eq("clear {tier: l1}: l2.response.hits +1",
              sv(stats(srv), "l2", "response", "hits") - sv(s0, "l2", "response", "hits"), 1)

        # beta-Q8_0.gguf by its name:quant; it has its response (L1, L2) and embedding (L2)
        st, j = clear({"model": "beta:Q8_0"})
        ck.eq("clear {model: beta:Q8_0}: 200 {cleared: 3}", (st, j), (200, {"cleared": 3}))
        s = stats(srv)
        ck.eq("clear {model: beta:Q8_0}: alpha's L2 entries stay", (entries(s, "response"), entries(s, "embedding")),
              ((0, 1), (0, 1)))
        want("clear {model: beta:Q8_0}: beta response miss", ask(srv, R, p, model="beta"), "miss", ref["beta"])
        wait_l2(srv, "response", 2)  # the miss's asynchronous L2 write, or it lands after the count

        s = stats(srv)
        total = sum(sum(entries(s, typ)) for typ in ("response", "embedding"))
        st, j = clear({})
        ck.eq("clear {}: 200 {cleared: every entry}", (st, j), (200, {"cleared": total}))
        s = stats(srv)
        ck.eq("clear {}: every tier and type empty", (entries(s, "response"), entries(s, "embedding")),
              ((0, 0), (0, 0)))
        want("clear {}: alpha response miss", ask(srv, R, p, model="alpha"), "miss", ref["alpha"])

        st, j = clear({"type": "bogus"})
        ck.eq("clear {type: bogus}: 400", st, 400)
        ck.check("clear {type: bogus}: the message names type", "type" in str(j), j)
        st, j = clear({"tier": "l3"})
        ck.eq("clear {tier: l3}: 400", st, 400)
        st, j = clear({"model": "nosuch"})
        ck.eq("clear {model: nosuch}: 404", st, 404)
        r = srv.get("/cache/clear")
        ck.check("GET /cache/clear is not a clear (405 or 404)", r.status in (404, 405), r)
    finally:
        stop(srv, "clear (--models)")


def serve_fails(args, setting):
    """`kiln serve ARGS` must exit nonzero at once with a message naming setting."""
    try:
        p = subprocess.run([ks.KILN_BIN, "serve", "--host", "127.0.0.1", "--port", "0",
                            "--cache-dir", os.path.join(TMP, "fails")] + args,
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    except subprocess.TimeoutExpired:
        ck.fail("serve %s: exits at once" % " ".join(args), "still running after 30 s")
        return
    err = p.stderr.decode("utf-8", "replace")
    ck.check("serve %s: exit code nonzero" % " ".join(args), p.returncode != 0, "rc=%d" % p.returncode)
    ck.check("serve %s: the message names %s" % (" ".join(args), setting), setting in err, err[-800:])


def test_config():
    serve_fails(["-m", MFILE, "--cache-policy", "bogus"], "cache-policy")
    # the disk cache never goes inside the models directory, even through a symlink
    mdir = os.path.join(TMP, "models-with-cache")
    os.makedirs(mdir, exist_ok=True)
    if not os.path.exists(os.path.join(mdir, "stories260K.gguf")):
        os.symlink(MFILE, os.path.join(mdir, "stories260K.gguf"))
    alias = os.path.join(TMP, "models-alias")
    if not os.path.islink(alias):
        os.symlink(mdir, alias)
    for cdir in (os.path.join(mdir, "cache"), os.path.join(alias, "sub", "cache")):
        serve_fails(["--models", mdir, "--cache-dir", cdir], "inside the models directory")
    ck.eq("cache-dir inside the models directory: nothing created there", sorted(os.listdir(mdir)),
          ["stories260K.gguf"])
    p = "The config story of the sleepy cat"
    srv = ks.Server(BASE + ["--response-cache=false", "--cache-policy", "lfu"])
    SERVERS.append(srv)
    try:
        s = stats(srv)
        ck.eq("--response-cache=false: enabled", s.get("enabled"), {"response": False, "embedding": True})
        ck.eq("--cache-policy lfu: /cache/stats policy", s.get("policy"), "lfu")
        a = ask(srv, "/v1/completions", p)
        want("--response-cache=false: greedy request", a, "bypass", cached=ABSENT)
        want("--response-cache=false: greedy request again", ask(srv, "/v1/completions", p), "bypass", a)
        st, xc, _, _, _ = embed(srv, ["lfu text"])
        st2, xc2, _, _, _ = embed(srv, ["lfu text"])
        ck.eq("--response-cache=false: embeddings still cached (miss, hit)", (xc, xc2), ("miss", "hit"))
    finally:
        stop(srv, "--response-cache=false")
    srv = ks.Server(BASE + ["--embedding-cache=false", "--cache-policy", "fifo"])
    SERVERS.append(srv)
    try:
        ck.eq("--cache-policy fifo: /cache/stats policy", stats(srv).get("policy"), "fifo")
        st, xc, _, _, _ = embed(srv, ["fifo text"])
        st2, xc2, _, _, _ = embed(srv, ["fifo text"])
        ck.eq("--embedding-cache=false: embeddings bypass", (xc, xc2), ("bypass", "bypass"))
        a = ask(srv, "/v1/completions", p)
        want("--embedding-cache=false: greedy request miss", a, "miss")
        want("--embedding-cache=false: greedy request hit", ask(srv, "/v1/completions", p), "hit", a)
    finally:
        stop(srv, "--embedding-cache=false")


def test_tiers_off():
    """--cache-mib 0: no L1 (hits come from L2); --cache-disk-size 0: no L2
    (nothing survives a restart); both settings from a YAML --config too."""
    p = "One tier at a time for the brown cow"
    srv = start(["--cache-mib", "0"])
    try:
        ref = ask(srv, "/v1/completions", p, cache=False)
        want("--cache-mib 0: first", ask(srv, "/v1/completions", p), "miss", ref)
        wait_l2(srv, "response", 1)
        want("--cache-mib 0: second, from L2", ask(srv, "/v1/completions", p), "hit", ref, cached=True)
        s = stats(srv)
        ck.eq("--cache-mib 0: l1 entries 0, l1 hits 0, l2 hits 1",
              (sv(s, "l1", "response", "entries"), sv(s, "l1", "response", "hits"), sv(s, "l2", "response", "hits")),
              (0, 0, 1))
    finally:
        stop(srv, "--cache-mib 0")
    d = os.path.join(TMP, "nol2")
    cfg = os.path.join(TMP, "nol2.yaml")
    with open(cfg, "w") as f:
        f.write("cache-disk-size: 0\ncache-policy: random\ncache-dir: %s\n" % d)
    srv = start(["--config", cfg])
    try:
        ref = ask(srv, "/v1/completions", p, cache=False)
        ck.eq("YAML cache-policy: random", stats(srv).get("policy"), "random")
        want("cache-disk-size 0: first", ask(srv, "/v1/completions", p), "miss", ref)
        want("cache-disk-size 0: second, from L1", ask(srv, "/v1/completions", p), "hit", ref)
        srv.post("/cache/clear", {"type": "embedding"})  # flushes the pending L2 writes
        s = stats(srv)
        ck.eq("cache-disk-size 0: l2 entries 0, l1 entries 1",
              (sv(s, "l2", "response", "entries"), sv(s, "l1", "response", "entries")), (0, 1))
    finally:
        stop(srv, "cache-disk-size 0")
    srv = start(["--cache-dir", d])
    try:
        want("cache-disk-size 0: nothing on disk after a restart: miss", ask(srv, "/v1/completions", p), "miss", ref)
    finally:
        stop(srv, "after cache-disk-size 0")


def test_cancelled():
    """A stream the client drops after its first event is not stored: the
    same request afterwards is a miss (then stored, then a hit)."""
    srv = start(["-c", "2048"])
    try:
        n = ks.tokens_for(ks.token_rate(srv, MODEL, 300), 0.5, lo=300, hi=1900)
        body = gen_body("/v1/completions", "The tale that was cut short", n=n, stream=True, extra={"ignore_eos": True})
        srv.post("/cache/clear", {"type": "embedding"})  # flushes the rate request's L2 write
        s0 = stats(srv)
        st = srv.open_stream("/v1/completions", body)
        ck.eq("cancelled: stream 200 miss", (st.status, st.header("X-Cache")), (200, "miss"))
        first = next(st.sse_events(), None)
        ck.check("cancelled: got a first event", first is not None, first)
        st.abort()
        ok, last, _ = srv.wait_idle(30)
        ck.check("cancelled: the server goes idle", ok, last)
        srv.post("/cache/clear", {"type": "embedding"})  # flushes the pending L2 writes
        s1 = stats(srv)
        ck.eq("cancelled: no entry stored (l1, l2 response entries unchanged)",
              (sv(s1, "l1", "response", "entries"), sv(s1, "l2", "response", "entries")),
              (sv(s0, "l1", "response", "entries"), sv(s0, "l2", "response", "entries")))
        ref = ask(srv, "/v1/completions", "The tale that was cut short", n=n, cache=False, extra={"ignore_eos": True})
        ck.eq("cancelled: the reference gets all %d tokens" % n, (ref.counts or (0, 0))[1], n)
        a = ask(srv, "/v1/completions", "The tale that was cut short", n=n, extra={"ignore_eos": True})
        want("cancelled: the same request afterwards is a miss", a, "miss", ref)
        a = ask_body(srv, "/v1/completions", body, "cancelled: stream again")
        want("cancelled: ... and then a hit, streamed", a, "hit", ref)
    finally:
        stop(srv, "cancelled")


def test_ttl():
    p = "A short-lived story about snow"
    srv = start(["--cache-ttl-response", "1"])
    try:
        ref = ask(srv, "/v1/completions", p, cache=False)
        t0 = time.time()
        want("ttl 1 s: first", ask(srv, "/v1/completions", p), "miss", ref)
        h = ask(srv, "/v1/completions", p)
        dt = time.time() - t0
        if dt < 0.9:
            want("ttl 1 s: right away a hit", h, "hit", ref)
        else:
            print("   (the first two requests took %.2f s: the hit check is skipped)" % dt)
        time.sleep(2.5)
        s0 = stats(srv)
        want("ttl 1 s: after 2.5 s a miss (expired)", ask(srv, "/v1/completions", p), "miss", ref)
        s1 = stats(srv)
        exp = sum(sv(s1, t, "response", "expirations") - sv(s0, t, "response", "expirations") for t in ("l1", "l2"))
        ck.check("ttl 1 s: the expired lookup counts an expiration (l1 or l2)", exp >= 1,
                 (s1["l1"]["response"], s1["l2"]["response"]))
        want("ttl 1 s: stored again: a hit", ask(srv, "/v1/completions", p), "hit", ref)
    finally:
        stop(srv, "ttl")


# ---------------------------------------------------------------- main

def main():
    t0 = time.time()
    srv = start([])
    try:
        for t in (test_stats_shape, test_routes, test_sampled, test_optouts, test_key_split, test_sharing,
                  test_answer_shapes,
                  test_embeddings, test_concurrent, test_metrics):
            run(t, srv)
    finally:
        stop(srv, "main")
    for t in (test_restart, test_kill9, test_corrupt, test_clear, test_config, test_tiers_off, test_cancelled,
              test_ttl):
        run(t)
    ck.check("every 200 answer (%d) has X-Cache hit|miss|bypass" % ANSWERS["n"], not ANSWERS["bad_xcache"],
             ANSWERS["bad_xcache"][:5])
    ck.check("every 200 answer has Server-Timing: total;dur=<ms>", not ANSWERS["bad_timing"],
             ANSWERS["bad_timing"][:5])
    print("   total %.1f s" % (time.time() - t0))
    for s in SERVERS:
        if s.proc.poll() is None:
            s.kill()
    shutil.rmtree(TMP, ignore_errors=True)
    ck.finish(SERVERS[:1])


if __name__ == "__main__":
    main()
