#!/usr/bin/env python3
"""test_server_embed.py — encoder (bert) models through the real `kiln serve`
(issue 10), with the shared tiny-bert models:
 - /v1/embeddings and /api/embed return each reference item's vector
   (../shared/reference/<model>.embed.json: cosine >= 0.9995, 0.999 for
   Q8_0), L2-normalized (norm 1); usage counts the reference tokens;
   encoding_format base64 decodes (little-endian float32) to exactly the
   float vector;
 - micro-batching: 32 threads each send a different text at once; each gets
   the vector of its own text as requested alone (cosine >= 0.99999), and
   kiln_embedding_batch_requests shows fewer encoder forwards than requests
   (checked by the metric, never by timing); a request of several inputs
   gives the vectors of the inputs requested one by one;
 - bad requests get 400: an empty input list, non-string items, an
   over-long input without "truncate" (the message names both lengths;
   with "truncate": true it is cut to the context, [SEP] kept), `dimensions`,
   a bad encoding_format, and generation on an embedding model (every
   generation route, naming the model);
 - the embedding cache in front still works (a repeat is a hit, no forward);
 - the server exits cleanly on SIGTERM (no sanitizer report)."""

import base64
import math
import os
import re
import struct
import sys
import threading

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kiln_server as ks  # noqa: E402

ks.need_env()
ck = ks.Checks()
MODEL = "tiny-bert-mean-f16"
N_CONC = 32

EXTRA = ["Retrieval runs on small encoder models.", "one", "Two words here", "Search, retrieval and RAG.",
         "Micro-batching gathers concurrent requests into one forward pass.", "The quick brown fox",
         "Vectors of every request must come back to the right caller.", "Cosine similarity near one",
         "A lone sentence about bread.", "Sixteen threads, then thirty-two.", "Paris is the capital of France.",
         "Rust and C and Python.", "The server batches embeddings.", "What is the weather like today?",
         "Numbers: 1, 2, 3, 42 and 1000.", "Short", "An unusually long sentence that keeps going with many "
         "words so that its token count differs clearly from the others in the batch.",
         "Tokens, pooling and normalization.", "GGUF files hold the weights.", "Mean pooling over tokens.",
         "The CLS token starts every input.", "Lowercase and accents: café, naïve.", "Good night!",
         "Embeddings for search engines.", "Deterministic outputs are easier to test.",
         "Thirty-two threads wait at a barrier.", "Each answer lists its vectors in order."]


def cosine(a, b):
    ab = sum(x * y for x, y in zip(a, b))
    return ab / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def norm(v):
    return math.sqrt(sum(x * x for x in v))


def load_ref(name):
    import json
    with open(ks.shared("reference", name + ".embed.json")) as f:
        return json.load(f)


def embed(srv, texts, route="/v1/embeddings", model=MODEL, cache=False, **extra):
    """The vectors of texts (a str or a list) through one route."""
    body = {"model": model, "input": texts, "cache": cache}
    body.update(extra)
    doc = srv.post_json(route, body)
    if route == "/api/embed":
        return doc["embeddings"], doc
    return [d["embedding"] for d in sorted(doc["data"], key=lambda d: d["index"])], doc


def forwards(srv):
    return ks.metric_sum(srv, "kiln_embedding_batch_requests_count", model=MODEL)


def batched_requests(srv):
    return ks.metric_sum(srv, "kiln_embedding_batch_requests_sum", model=MODEL)


def test_references(srv, name):
    ref = load_ref(name)
    items = ref["items"]
    min_cos = 0.999 if "Q8_0" in name else 0.9995
    for route in ("/v1/embeddings", "/api/embed"):
        vecs, doc = embed(srv, [it["text"] for it in items], route=route, model=name)
        ck.eq("%s %s: one vector per item" % (name, route), len(vecs), len(items))
        for it, v in zip(items, vecs):
            ck.eq("%s %s %r: n_embd" % (name, route, it["text"]), len(v), ref["n_embd"])
            c = cosine(v, it["embedding"])
            ck.check("%s %s %r: cosine %.6f with the reference >= %g" % (name, route, it["text"], c, min_cos),
                     c >= min_cos)
            ck.check("%s %s %r: L2-normalized (norm %.6f)" % (name, route, it["text"], norm(v)),
                     abs(norm(v) - 1) < 1e-4)
        ntok = sum(len(it["tokens"]) for it in items)
        got = doc["prompt_eval_count"] if route == "/api/embed" else doc["usage"]["prompt_tokens"]
        ck.eq("%s %s: token count of the reference tokens" % (name, route), got, ntok)


def test_base64(srv):
    text = "Embeddings map text to vectors!"
    fl, _ = embed(srv, [text])
    doc = srv.post_json("/v1/embeddings", {"model": MODEL, "input": [text], "encoding_format": "base64",
                                           "cache": False})
    raw = base64.b64decode(doc["data"][0]["embedding"])
    ck.eq("base64: 4 bytes per value", len(raw), 4 * len(fl[0]))
    dec = list(struct.unpack("<%df" % (len(raw) // 4), raw))
    # the float answer prints each value to the shortest text of the float32
    ck.check("base64 decodes to the float vector", all(abs(a - b) <= 1e-7 * max(1, abs(b)) for a, b in
                                                       zip(dec, fl[0])), "max diff %g" % ks.maxdiff(dec, fl[0]))
    ck.check("base64: norm 1", abs(norm(dec) - 1) < 1e-4, "norm %g" % norm(dec))


def test_concurrent(srv, alone):
    texts = list(alone.keys())[:N_CONC]
    f0, q0 = forwards(srv), batched_requests(srv)
    results = {}
    errors = []
    barrier = threading.Barrier(len(texts))

    def one(i, t):
        try:
            barrier.wait(30)
            route = "/v1/embeddings" if i % 2 == 0 else "/api/embed"
            v, _ = embed(srv, t, route=route)
            results[t] = v[0]
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append("%r: %s" % (t, e))

    th = [threading.Thread(target=one, args=(i, t)) for i, t in enumerate(texts)]
    for t in th:
        t.start()
    for t in th:
        t.join(120)
    ck.check("%d concurrent requests all answered" % len(texts), not errors and len(results) == len(texts),
             "; ".join(errors[:5]))
    worst = min((cosine(results[t], alone[t]), t) for t in results) if results else (0, "")
    ck.check("every concurrent request got its own text's vector (worst cosine %.7f for %r)" % worst,
             worst[0] >= 0.99999)
    # a wrong hand-back would show as another text's vector: cosine with the others is lower
    mixed = [t for t in results if any(cosine(results[t], alone[o]) > cosine(results[t], alone[t])
                                       for o in texts if o != t)]
    ck.check("no request got a vector closer to another text than to its own", not mixed, repr(mixed[:3]))
    df, dq = forwards(srv) - f0, batched_requests(srv) - q0
    ck.eq("the metric counted every request in some forward", dq, float(len(texts)))
    ck.check("micro-batching happened: %d encoder forwards for %d requests" % (df, len(texts)),
             0 < df < len(texts))


def test_multi_input(srv, alone):
    texts = list(alone.keys())[:12]
    for route in ("/v1/embeddings", "/api/embed"):
        vecs, _ = embed(srv, texts, route=route)
        worst = min(cosine(v, alone[t]) for v, t in zip(vecs, texts))
        ck.check("%s: %d inputs in one request equal each alone (worst cosine %.7f)" % (route, len(texts), worst),
                 worst >= 0.99999)


def test_bad_requests(srv):
    def bad(name, route, body, *needles):
        r = srv.post(route, body)
        ck.eq(name + ": 400", r.status, 400)
        for n in needles:
            ck.check(name + ": the message says %r" % n, n in r.text(), r.text())
        return r

    for route in ("/v1/embeddings", "/api/embed"):
        bad(route + " empty input list", route, {"model": MODEL, "input": []}, "input")
        bad(route + " non-string item", route, {"model": MODEL, "input": ["ok", 3]}, "input[1]")
        bad(route + " object item", route, {"model": MODEL, "input": [{"text": "x"}]}, "input")
        bad(route + " number input", route, {"model": MODEL, "input": 1.5}, "input")
        long_text = " ".join(["word"] * 600)
        r = bad(route + " over-long input", route, {"model": MODEL, "input": ["fine", long_text], "cache": False},
                "512", "truncate")
        nums = [int(x) for x in re.findall(r"\d+", r.text())]
        ck.check(route + " over-long input: names its own length (602 tokens)", 602 in nums, r.text())
        vecs, doc = embed(srv, [long_text], route=route, truncate=True)
        got = doc["prompt_eval_count"] if route == "/api/embed" else doc["usage"]["prompt_tokens"]
        ck.eq(route + " truncate: cut to the context", got, 512)
        ck.check(route + " truncate: a normalized vector", abs(norm(vecs[0]) - 1) < 1e-4)
    bad("dimensions", "/v1/embeddings", {"model": MODEL, "input": "x", "dimensions": 64}, "dimensions")
    bad("encoding_format", "/v1/embeddings", {"model": MODEL, "input": "x", "encoding_format": "int8"},
        "encoding_format")
    gens = [("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}),
            ("/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 2}),
            ("/api/generate", {"model": MODEL, "prompt": "hi", "stream": False}),
            ("/api/chat", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": False})]
    for route, body in gens:
        bad("generation on %s" % route, route, body, "embedding model", "tiny-bert-mean")


def test_cache(srv):
    text = "A sentence for the cache test."
    f0 = forwards(srv)
    r1 = srv.post("/v1/embeddings", {"model": MODEL, "input": [text]})
    r2 = srv.post("/v1/embeddings", {"model": MODEL, "input": [text]})
    ck.eq("cache: first answer 200", r1.status, 200)
    ck.eq("cache: a repeat is a hit", (r2.header("X-Cache") or "").lower(), "hit")
    ck.eq("cache: one forward for the two requests", forwards(srv) - f0, 1.0)
    if r1.status == 200 and r2.status == 200:
        ck.eq("cache: the hit is the computed vector", r2.json()["data"][0]["embedding"],
              r1.json()["data"][0]["embedding"])


def main():
    # a directory with the three tiny-bert files (served by name)
    import tempfile
    d = tempfile.mkdtemp(prefix="kiln-embed-")
    names = ["tiny-bert-mean-f16", "tiny-bert-mean-Q8_0", "tiny-bert-cls-f16"]
    for n in names:
        os.symlink(ks.model_path(n), os.path.join(d, n + ".gguf"))
    # a batch wait of 20 ms: concurrent arrivals share forwards even under sanitizers
    srv = ks.Server(["--models", d, "-t", "2", "--batch-wait-ms", "20"], cache=True)
    try:
        for n in names:
            ck.run(test_references, srv, n)
        texts = [it["text"] for it in load_ref(MODEL)["items"]] + EXTRA
        texts = list(dict.fromkeys(texts))[:N_CONC]
        alone = {}
        for t in texts:
            alone[t] = embed(srv, [t])[0][0]
        ck.eq("%d distinct texts" % N_CONC, len(alone), N_CONC)
        ck.run(test_base64, srv)
        ck.run(test_concurrent, srv, alone)
        ck.run(test_multi_input, srv, alone)
        ck.run(test_bad_requests, srv)
        ck.run(test_cache, srv)
    finally:
        rc = srv.stop(30)
        for n in names:
            os.unlink(os.path.join(d, n + ".gguf"))
        os.rmdir(d)
    ck.exited_clean("server on SIGTERM", srv, rc)
    ck.finish([srv])


if __name__ == "__main__":
    main()
