#!/usr/bin/env python3
"""test_server_errors.py — every bad-input case of the server issue gets the
right status and a clear error body, and loses nothing:
 400 malformed JSON (where), wrong field type (param names it), unknown role,
 prompt longer than the context (both token counts), n != 1, missing fields;
 404 unknown model (lists the available ones) or route; 405 wrong method;
 413 body over --max-body; 401 without or with a wrong --api-key (/health
 stays open); model names cannot reach outside --models DIR. Bad requests
 sent while good streams run do not disturb them, and the server answers
 normally afterwards."""

import os
import re
import shutil
import sys
import tempfile
import time
import threading

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kiln_server as ks  # noqa: E402

ks.need_env()
ck = ks.Checks()
MODEL = "stories260K"
MFILE = ks.model_path(MODEL)
CTX = 64
MAX_BODY = 2048


def oai_error(name, r, status, param=None, mentions=()):
    """Checks an OpenAI-shaped error: status, {"error": {message, type, param,
    code}}, param and words in the message. Returns the message."""
    ck.eq(name + ": status %d" % status, r.status, status)
    try:
        body = r.json()
    except ValueError:
        ck.fail(name + ": JSON error body", r)
        return ""
    err = body.get("error") if isinstance(body, dict) else None
    if not ck.check(name + ": body is {error: {message, type, param, code}}",
                    isinstance(err, dict) and all(k in err for k in ("message", "type", "param", "code"))
                    and isinstance(err.get("message"), str) and err["message"], body):
        return ""
    ck.check(name + ": content type JSON", (r.header("content-type") or "").startswith("application/json"),
             r.header("content-type"))
    if param is not None:
        ck.eq(name + ": error.param", err.get("param"), param)
    msg = err["message"]
    for w in mentions:
        ck.check(name + ": message mentions %r" % w, w.lower() in msg.lower(), msg)
    return msg


def ollama_error(name, r, status, mentions=()):
    ck.eq(name + ": status %d" % status, r.status, status)
    try:
        body = r.json()
    except ValueError:
        ck.fail(name + ": JSON error body", r)
        return ""
    if not ck.check(name + ": Ollama error body {error: string}",
                    isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], body):
        return ""
    for w in mentions:
        ck.check(name + ": message mentions %r" % w, w.lower() in body["error"].lower(), body["error"])
    return body["error"]


def good_completion(srv, headers=None):
    return srv.post_json("/v1/completions", {"model": MODEL, "prompt": "Once", "max_tokens": 30,
                                             "temperature": 0, "ignore_eos": True}, headers=headers)


def test_malformed_json(srv):
    raw = b'{"prompt": "hi",\n  "max_tokens": }'
    msg = oai_error("malformed JSON /v1/completions", srv.post("/v1/completions", raw=raw), 400)
    ck.check("malformed JSON: message says the line (2)", re.search(r"line\D{0,3}2\b", msg) is not None, msg)
    ck.check("malformed JSON: message says the column", "column" in msg.lower() or "col" in msg.lower(), msg)
    oai_error("malformed JSON /v1/chat/completions", srv.post("/v1/chat/completions", raw=b'{"messages": [}'), 400)
    oai_error("malformed JSON /tokenize", srv.post("/tokenize", raw=b'{"content": "a"'), 400)
    msg = ollama_error("malformed JSON /api/generate", srv.post("/api/generate", raw=raw), 400)
    ck.check("malformed JSON /api/generate: says the line", "line" in msg.lower(), msg)
    oai_error("empty body", srv.post("/v1/completions", raw=b""), 400)
    oai_error("body is not an object", srv.post("/v1/completions", raw=b"[1, 2]"), 400)
    oai_error("invalid UTF-8 in a string", srv.post("/v1/completions", raw=b'{"prompt": "\xff\xfe"}'), 400)


def test_wrong_types(srv):
    msgs = [{"role": "user", "content": "hi"}]
    cases = [
        ("/v1/completions", {"prompt": "hi", "max_tokens": "ten"}, "max_tokens"),
        ("/v1/completions", {"prompt": "hi", "temperature": "hot"}, "temperature"),
        ("/v1/completions", {"prompt": 5}, "prompt"),
        ("/v1/completions", {"prompt": "hi", "seed": 1.5}, "seed"),
        ("/v1/completions", {"prompt": "hi", "top_p": [1]}, "top_p"),
        ("/v1/completions", {"prompt": "hi", "echo": "yes"}, "echo"),
        ("/v1/chat/completions", {"messages": "hi"}, "messages"),
        ("/v1/chat/completions", {"messages": msgs, "stream": "yes"}, "stream"),
        ("/v1/chat/completions", {"messages": msgs, "stop": 5}, "stop"),
        ("/v1/chat/completions", {"messages": msgs, "max_completion_tokens": {}}, "max_completion_tokens"),
        ("/v1/chat/completions", {"messages": msgs, "model": 7}, "model"),
        ("/v1/embeddings", {"input": 5}, "input"),
        ("/tokenize", {"content": 5}, "content"),
        ("/detokenize", {"tokens": "1 2"}, "tokens"),
    ]
    for route, body, field in cases:
        oai_error("wrong type %s %s" % (route, field), srv.post(route, body), 400, param=field)
    r = srv.post("/v1/chat/completions", {"messages": [{"role": "user", "content": 5}]})
    ck.eq("wrong type messages[0].content: 400", r.status, 400)
    if r.status == 400:
        p = (r.json().get("error") or {}).get("param") or ""
        ck.check("wrong type messages[0].content: param names messages", p.startswith("messages"), p)
    ollama_error("wrong type /api/generate options.num_predict",
                 srv.post("/api/generate", {"model": MODEL, "prompt": "hi", "options": {"num_predict": "x"}}), 400,
                 mentions=["num_predict"])
    ollama_error("wrong type /api/chat messages", srv.post("/api/chat", {"model": MODEL, "messages": 3}), 400,
                 mentions=["messages"])


def test_missing_and_n(srv):
    oai_error("chat without messages", srv.post("/v1/chat/completions", {"model": MODEL}), 400)
    oai_error("completions without prompt", srv.post("/v1/completions", {"model": MODEL}), 400)
    oai_error("n=2 completions", srv.post("/v1/completions", {"prompt": "hi", "n": 2}), 400, param="n")
    oai_error("n=2 chat", srv.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                                                           "n": 2}), 400, param="n")
    r = srv.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                                          "response_format": {"type": "bogus"}})
    oai_error("response_format type bogus", r, 400)
    if r.status == 400:
        p = (r.json().get("error") or {}).get("param") or ""
        ck.check("response_format type bogus: param names response_format", p.startswith("response_format"), p)


def test_unknown_role(srv):
    msg = oai_error("unknown role", srv.post("/v1/chat/completions",
                                             {"messages": [{"role": "wizard", "content": "hi"}]}), 400)
    ck.check("unknown role: message names the role", "wizard" in msg or "role" in msg.lower(), msg)
    ollama_error("unknown role /api/chat", srv.post("/api/chat", {"model": MODEL, "stream": False,
                                                                  "messages": [{"role": "wizard", "content": "hi"}]}),
                 400)


def test_too_long(srv):
    text = "Once upon a time there was a little girl named Lily. " * 8
    n = len(ks.kiln_tokenize(MFILE, text))
    if not ck.check("too long: precondition, prompt is over the context", n > CTX, n):
        return
    msg = oai_error("prompt over the context /v1/completions",
                    srv.post("/v1/completions", {"prompt": text, "max_tokens": 4}), 400)
    nums = re.findall(r"\d+", msg)
    ck.check("too long: message has the prompt's token count %d" % n, str(n) in nums, msg)
    ck.check("too long: message has the context size %d" % CTX, str(CTX) in nums, msg)
    ids = ks.kiln_tokenize(MFILE, text)
    msg = oai_error("token-list prompt over the context", srv.post("/v1/completions", {"prompt": ids}), 400)
    ck.check("too long token list: both counts", str(n) in re.findall(r"\d+", msg) and str(CTX) in msg, msg)
    msg = oai_error("chat over the context", srv.post("/v1/chat/completions",
                                                      {"messages": [{"role": "user", "content": text}]}), 400)
    nums = [int(x) for x in re.findall(r"\d+", msg)]
    ck.check("chat too long: message has the context and a larger count",
             CTX in nums and any(x > CTX for x in nums), msg)
    msg = ollama_error("prompt over the context /api/generate",
                       srv.post("/api/generate", {"model": MODEL, "prompt": text, "raw": True, "stream": False}), 400)
    ck.check("too long /api/generate: both counts", str(n) in re.findall(r"\d+", msg) and str(CTX) in msg, msg)
    # the embeddings route too (one input over the context)
    oai_error("embeddings input over the context", srv.post("/v1/embeddings", {"input": ["hi", text]}), 400)


def test_unknown_model_route_method(srv):
    for route, body in [("/v1/completions", {"model": "nope", "prompt": "hi"}),
                        ("/v1/chat/completions", {"model": "nope", "messages": [{"role": "user", "content": "hi"}]}),
                        ("/v1/embeddings", {"model": "nope", "input": "hi"}),
                        ("/tokenize", {"model": "nope", "content": "hi"})]:
        oai_error("unknown model " + route, srv.post(route, body), 404, mentions=[MODEL])
    ollama_error("unknown model /api/generate", srv.post("/api/generate", {"model": "nope", "prompt": "hi"}), 404,
                 mentions=[MODEL])
    ollama_error("unknown model /api/chat", srv.post("/api/chat", {"model": "nope", "stream": False,
                                                                  "messages": [{"role": "user", "content": "hi"}]}),
                 404, mentions=[MODEL])
    oai_error("unknown route GET /v1/nope", srv.get("/v1/nope"), 404)
    oai_error("unknown route POST /nope", srv.post("/nope", {}), 404)
    oai_error("unknown route GET /v1/chat", srv.get("/v1/chat"), 404)
    for method, route in [("GET", "/v1/chat/completions"), ("GET", "/v1/completions"), ("POST", "/v1/models"),
                          ("DELETE", "/health"), ("PUT", "/v1/embeddings"), ("GET", "/tokenize")]:
        r = srv.request(method, route, body={} if method in ("POST", "PUT") else None)
        oai_error("wrong method %s %s" % (method, route), r, 405)
        ck.check("wrong method %s %s: Allow header" % (method, route), bool(r.header("allow")), r.headers)
    r = srv.request("GET", "/api/generate")
    ollama_error("wrong method GET /api/generate", r, 405)


def test_body_limit(srv):
    small = b'{"prompt": "Once", "max_tokens": 3' + b" " * (MAX_BODY - 100) + b"}"
    r = srv.post("/v1/completions", raw=small)
    ck.eq("body just under --max-body: 200", r.status, 200)
    big = b'{"prompt": "Once", "max_tokens": 3' + b" " * (MAX_BODY + 1000) + b"}"
    oai_error("body over --max-body", srv.post("/v1/completions", raw=big), 413)
    ollama_error("body over --max-body /api/generate", srv.post("/api/generate", raw=big), 413)
    # the same without Content-Length (chunked)
    conn = srv.connect(30)
    try:
        def chunks():
            for i in range(0, len(big), 512):
                yield big[i:i + 512]
        conn.request("POST", "/v1/completions", body=chunks(), headers={"Content-Type": "application/json"},
                     encode_chunked=True)
        resp = conn.getresponse()
        ck.eq("chunked body over --max-body: 413", resp.status, 413)
        resp.read()
    except OSError as e:
        ck.fail("chunked body over --max-body: 413", "connection error %r" % e)
    finally:
        conn.close()


def test_storm(srv, baseline):
    """Bad requests fired while good streams run do not disturb them."""
    bads = [("/v1/completions", b'{"prompt": '), ("/v1/chat/completions", b'{"messages": [{"role": "x"}]}'),
            ("/v1/completions", b'{"prompt": "hi", "n": 3}'), ("/v1/completions", b'{"model": "../x", "prompt": "a"}'),
            ("/v1/completions", b'{"prompt": "hi", "max_tokens": -5, "temperature": "a"}')]
    results = {}
    stop = {"v": False, "bad_ok": True, "n": 0}

    def good(i):
        results[i] = srv.sse("/v1/completions", {"model": MODEL, "prompt": "Once", "max_tokens": 30,
                                                 "temperature": 0, "ignore_eos": True, "stream": True})

    def bad():
        while not stop["v"]:
            for route, raw in bads:
                r = srv.post(route, raw=raw)
                stop["n"] += 1
                if r.status not in (400, 404):
                    stop["bad_ok"] = False
                    stop["got"] = (route, raw, r)
    bt = [threading.Thread(target=bad) for _ in range(2)]
    for t in bt:
        t.start()
    gt = [threading.Thread(target=good, args=(i,)) for i in range(6)]
    for t in gt:
        t.start()
    for t in gt:
        t.join(60)
    stop["v"] = True
    for t in bt:
        t.join(60)
    ck.check("storm: bad requests got 400/404", stop["bad_ok"], stop.get("got"))
    for i in range(6):
        res = results.get(i)
        if ck.check("storm: good stream %d finished" % i, res is not None, "none"):
            text = ks.check_sse(ck, "storm stream %d" % i, res, chat=False, want_finish="length")
            ck.eq("storm stream %d: text unchanged" % i, text, baseline)
    print("   %d bad requests during the streams" % stop["n"])


def test_auth_and_paths(tmp):
    mdir = os.path.join(tmp, "models")
    os.mkdir(mdir)
    shutil.copyfile(MFILE, os.path.join(mdir, MODEL + ".gguf"))
    shutil.copyfile(MFILE, os.path.join(tmp, "outside.gguf"))  # loadable, but outside the models dir
    srv = ks.Server(["--models", mdir, "--api-key", "sekret", "-c", "128", "-t", "1", "-np", "1"])
    key = {"Authorization": "Bearer sekret"}
    try:
        r = srv.get("/health")
        ck.eq("api key: /health open without a key", r.status, 200)
        oai_error("api key: /v1/models without a key", srv.get("/v1/models"), 401)
        oai_error("api key: /v1/models with a wrong key", srv.get("/v1/models", headers={"Authorization":
                                                                                         "Bearer nope"}), 401)
        oai_error("api key: key without Bearer", srv.get("/v1/models", headers={"Authorization": "sekret"}), 401)
        oai_error("api key: completions without a key",
                  srv.post("/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 2}), 401)
        oai_error("api key: /tokenize without a key", srv.post("/tokenize", {"model": MODEL, "content": "hi"}), 401)
        ollama_error("api key: /api/tags without a key", srv.get("/api/tags"), 401)
        ck.eq("api key: /v1/models with the key: 200", srv.get("/v1/models", headers=key).status, 200)
        ck.eq("api key: /api/tags with the key: 200", srv.get("/api/tags", headers=key).status, 200)
        r = srv.post("/v1/completions", {"model": MODEL, "prompt": "Once", "max_tokens": 5, "temperature": 0,
                                         "ignore_eos": True}, headers=key)
        ck.eq("api key: completion with the key: 200", r.status, 200)
        ck.eq("api key: completion with the key: 5 tokens",
              r.json().get("usage", {}).get("completion_tokens") if r.status == 200 else None, 5)

        names = ["../outside", "../models/" + MODEL, os.path.join(tmp, "outside"), os.path.join(tmp, "outside.gguf"),
                 MODEL + "/../../outside", "..", ".", "outside", "./../outside", "..\\outside",
                 "%2e%2e/outside", MODEL + ".gguf/../../outside"]
        for name in names:
            r = srv.post("/v1/completions", {"model": name, "prompt": "hi", "max_tokens": 2}, headers=key)
            ck.eq("model name %r: 404" % name, r.status, 404)
        for name in names[:3]:
            r = srv.post("/api/generate", {"model": name, "prompt": "hi", "stream": False}, headers=key)
            ck.eq("/api/generate model %r: 404" % name, r.status, 404)
            r = srv.post("/api/show", {"model": name}, headers=key)
            ck.eq("/api/show model %r: 404" % name, r.status, 404)
            r = srv.post("/v1/embeddings", {"model": name, "input": "hi"}, headers=key)
            ck.eq("/v1/embeddings model %r: 404" % name, r.status, 404)
        ps = srv.get("/api/ps", headers=key).json().get("models", [])
        ck.check("paths: nothing outside the models dir is loaded",
                 all("outside" not in (m.get("name", "") + m.get("model", "")) for m in ps), ps)
        ids = [m.get("id") for m in srv.get("/v1/models", headers=key).json().get("data", [])]
        ck.eq("paths: /v1/models lists only the models dir", ids, [MODEL])
        ck.check("paths: the log shows no load of outside.gguf",
                 re.search(r"loaded [^\n]*outside", srv.log()) is None,
                 [ln for ln in srv.log().splitlines() if "outside" in ln][:5])
    finally:
        rc = srv.stop(30)
    ck.exited_clean("api-key server on SIGTERM", srv, rc)
    if ck.fails:
        srv.dump_log_tail()


def test_config_file(tmp):
    """--config YAML: its settings apply, flags override them, a bad key is an error naming key and line."""
    cfg = os.path.join(tmp, "kiln.yaml")
    with open(cfg, "w") as f:
        f.write("# kiln serve settings\nctx-size: %d\napi_key: fromfile\nparallel: 3\n" % CTX)
    srv = ks.Server(["--config", cfg, "-m", MFILE, "-np", "2", "-t", "1"])
    try:
        oai_error("config: api_key from the file applies", srv.get("/v1/models"), 401)
        ck.eq("config: the file's key works", srv.get("/v1/models", headers={"Authorization": "Bearer fromfile"}).status,
              200)
        st, h = srv.health()
        ck.eq("config: -np 2 on the command line overrides parallel: 3",
              [m.get("slots_total") for m in h.get("models", [])], [2])
        text = "Once upon a time there was a little girl named Lily. " * 8
        msg = oai_error("config: ctx-size from the file applies",
                        srv.post("/v1/completions", {"prompt": text}, headers={"Authorization": "Bearer fromfile"}),
                        400)
        ck.check("config: the context in the message is the file's", str(CTX) in re.findall(r"\d+", msg), msg)
    finally:
        rc = srv.stop(30)
    ck.exited_clean("config server on SIGTERM", srv, rc)
    bad = os.path.join(tmp, "bad.yaml")
    with open(bad, "w") as f:
        f.write("ctx-size: 64\nno-such-setting: 1\n")
    p = ks.subprocess.run([ks.KILN_BIN, "serve", "--config", bad, "-m", MFILE, "--port", "0"],
                          stdout=ks.subprocess.PIPE, stderr=ks.subprocess.PIPE, timeout=30)
    err = p.stderr.decode("utf-8", "replace")
    ck.check("bad config: kiln serve exits nonzero", p.returncode != 0, p.returncode)
    ck.check("bad config: the message names the key and the line",
             "no-such-setting" in err and re.search(r"line\D{0,3}2\b|\.yaml:2:", err) is not None, err[-500:])
    ck.check("bad config: it never listened", "listening on" not in err, err[-500:])


def test_idle_timeout_spares_waiting_requests(tmp):
    """--conn-timeout closes idle connections, not ones whose request waits
    in the queue for its first token longer than the timeout."""
    srv = ks.Server(["-m", MFILE, "-c", "8192", "-t", "1", "-np", "1", "--conn-timeout", "1"])
    try:
        res = {}
        # A request that takes >= 2.5 s alone at this build's speed, found by doubling (the per-token
        # cost grows with the position, so a short request's rate would mislead), so that the queued
        # stream waits well past the 1 s timeout.
        n_long = 200
        while n_long < 6000:
            t = time.time()
            srv.post("/v1/completions", {"model": MODEL, "prompt": "Once", "max_tokens": n_long, "temperature": 0,
                                         "ignore_eos": True, "cache": False}, timeout=600)
            if time.time() - t >= 2.5:
                break
            n_long *= 2

        def long_one():
            try:
                res["long"] = srv.post("/v1/completions", {"model": MODEL, "prompt": "Once", "max_tokens": n_long,
                                                           "temperature": 0, "ignore_eos": True}, timeout=600)
            except Exception as e:  # noqa: BLE001 - reported below
                res["long"] = e

        th = threading.Thread(target=long_one)
        th.start()
        time.sleep(0.3)
        t0 = time.time()
        queued = srv.sse("/v1/completions", {"model": MODEL, "prompt": "Once", "max_tokens": 8, "temperature": 0,
                                             "ignore_eos": True, "stream": True})
        waited = time.time() - t0
        th.join()
        ks.check_sse(ck, "queued stream behind a long request (waited %.1f s)" % waited, queued, chat=False,
                     want_finish="length")
        lr = res.get("long")
        ck.check("the long request itself completed", getattr(lr, "status", None) == 200, repr(lr)[:300])
        ck.check("the queued stream waited past the 1 s timeout (else this test proves nothing)", waited > 1.2,
                 "waited %.2f s" % waited)
    finally:
        rc = srv.stop(30)
    ck.exited_clean("serve --conn-timeout 1", srv, rc)


def main():
    srv = ks.Server(["-m", MFILE, "-c", str(CTX), "--max-body", str(MAX_BODY), "-t", "1", "-np", "2"])
    tmp = tempfile.mkdtemp(prefix="kiln-itest-")
    try:
        baseline = good_completion(srv)["choices"][0]["text"]
        stream_res = srv.sse("/v1/completions", {"model": MODEL, "prompt": "Once", "max_tokens": 30,
                                                 "temperature": 0, "ignore_eos": True, "stream": True})
        base_stream = ks.check_sse(ck, "baseline stream", stream_res, chat=False, want_finish="length")
        ck.eq("baseline stream equals non-stream", base_stream, baseline)
        for t in (test_malformed_json, test_wrong_types, test_missing_and_n, test_unknown_role, test_too_long,
                  test_unknown_model_route_method, test_body_limit):
            ck.run(t, srv)
        ck.run(test_storm, srv, baseline)
        ck.eq("after all bad input: the same good answer", good_completion(srv)["choices"][0]["text"], baseline)
        ok, h, _ = srv.wait_idle(5)
        ck.check("after all bad input: idle, health ok", ok, h)
    finally:
        rc = srv.stop(30)
    ck.exited_clean("server on SIGTERM", srv, rc)
    if ck.fails:
        srv.dump_log_tail()
    try:
        ck.run(test_auth_and_paths, tmp)
        ck.run(test_config_file, tmp)
        ck.run(test_idle_timeout_spares_waiting_requests, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ck.finish()


if __name__ == "__main__":
    main()
