#!/usr/bin/env python3
"""test_server_api.py — every endpoint of `kiln serve`, streaming and not,
on stories260K: response shapes (OpenAI and Ollama), SSE and NDJSON framing,
usage counts, tokenize/detokenize against `kiln tokenize`, embeddings
(length n_embd, unit norm, batched == alone), logprobs, stop strings
(against `kiln run` cut at the stop string), echo, token-list prompts,
logit_bias, seeds and max_tokens."""

import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kiln_server as ks  # noqa: E402

ks.need_env()
MODEL = "stories260K"
MFILE = ks.model_path(MODEL)
PROMPT = "Once upon a time"
ck = ks.Checks()
srv = None


def run_ref(n, prompt=PROMPT, ignore_eos=True, extra=()):
    args = ["run", "-m", MFILE, "-p", prompt, "-n", str(n), "--temp", "0", "-t", "1"]
    if ignore_eos:
        args.append("--ignore-eos")
    return ks.run_kiln(args + list(extra)).decode("utf-8")


def completion(**kw):
    body = {"model": MODEL, "prompt": PROMPT, "temperature": 0}
    body.update(kw)
    return srv.post_json("/v1/completions", body)


def chat(**kw):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}], "temperature": 0}
    body.update(kw)
    return srv.post_json("/v1/chat/completions", body)


def check_usage(name, u, prompt_tokens=None, completion_tokens=None):
    if not ck.check(name + ": usage present", isinstance(u, dict), u):
        return
    ck.check(name + ": usage total = prompt + completion",
             u.get("total_tokens") == u.get("prompt_tokens", 0) + u.get("completion_tokens", 0), u)
    if prompt_tokens is not None:
        ck.eq(name + ": usage.prompt_tokens", u.get("prompt_tokens"), prompt_tokens)
    if completion_tokens is not None:
        ck.eq(name + ": usage.completion_tokens", u.get("completion_tokens"), completion_tokens)


# ---------------------------------------------------------------- kiln routes

def test_health():
    st, h = srv.health()
    ck.eq("health: status 200", st, 200)
    ck.eq("health: status ok", h.get("status"), "ok")
    ck.eq("health: requests_running 0", h.get("requests_running"), 0)
    ck.eq("health: requests_waiting 0", h.get("requests_waiting"), 0)
    models = {m.get("name"): m for m in h.get("models", [])}
    ck.check("health: lists the loaded model", MODEL in models, h)
    m = models.get(MODEL, {})
    ck.eq("health: slots_total is -np", m.get("slots_total"), 2)
    ck.eq("health: slots_busy 0", m.get("slots_busy"), 0)


def test_tokenize():
    text = "Once upon a time, there was a girl named Lily."
    want_special = ks.kiln_tokenize(MFILE, text)
    want_raw = ks.kiln_tokenize(MFILE, text, raw=True)
    r = srv.post_json("/tokenize", {"model": MODEL, "content": text, "add_special": True})
    ck.eq("tokenize add_special=true equals kiln tokenize", r.get("tokens"), want_special)
    r = srv.post_json("/tokenize", {"model": MODEL, "content": text, "add_special": False})
    ck.eq("tokenize add_special=false equals kiln tokenize --raw", r.get("tokens"), want_raw)
    r = srv.post_json("/tokenize", {"content": text, "add_special": False})
    ck.eq("tokenize without model uses the -m model", r.get("tokens"), want_raw)
    r = srv.post_json("/detokenize", {"model": MODEL, "tokens": want_raw})
    ck.eq("detokenize(tokenize(text)) == text", r.get("content"), text)
    uni = "Hello, world! \U0001f999 \u00c4pfel \u4f60\u597d\n\tcode(x) { return 42; }\n"
    ids = ks.kiln_tokenize(MFILE, uni, raw=True)
    r = srv.post_json("/tokenize", {"model": MODEL, "content": uni, "add_special": False})
    ck.eq("tokenize multi-byte text equals kiln tokenize --raw", r.get("tokens"), ids)
    r = srv.post_json("/detokenize", {"model": MODEL, "tokens": ids})
    ck.eq("detokenize round trip of multi-byte text", r.get("content"), uni)
    cli = ks.run_kiln(["detokenize", "-m", MFILE],
                      stdin=(" ".join(map(str, want_special)) + "\n").encode()).decode("utf-8")
    r = srv.post_json("/detokenize", {"model": MODEL, "tokens": want_special})
    ck.eq("detokenize equals kiln detokenize (BOS included)", r.get("content"), cli)


# ---------------------------------------------------------------- model lists

def test_model_lists():
    r = srv.get("/v1/models")
    ck.eq("/v1/models: 200", r.status, 200)
    d = r.json()
    ck.eq("/v1/models: object list", d.get("object"), "list")
    ids = [m.get("id") for m in d.get("data", [])]
    ck.check("/v1/models: lists " + MODEL, MODEL in ids, ids)
    ck.check("/v1/models: entries have object model",
             all(m.get("object") == "model" for m in d.get("data", [])), d)

    r = srv.get("/api/tags")
    ck.eq("/api/tags: 200", r.status, 200)
    tags = r.json().get("models", [])
    # Ollama-style names: model:QUANT (the label of an unsuffixed file is its file type)
    t = [m for m in tags if m.get("name") in (MODEL, MODEL + ":latest", MODEL + ":F32")]
    if ck.check("/api/tags: lists " + MODEL, len(t) == 1, tags):
        ck.eq("/api/tags: size is the file size", t[0].get("size"), os.path.getsize(MFILE))
        ck.check("/api/tags: has model and details", "model" in t[0] and isinstance(t[0].get("details"), dict), t[0])

    r = srv.get("/api/ps")
    ck.eq("/api/ps: 200", r.status, 200)
    ps = [m.get("name") for m in r.json().get("models", [])]
    ck.check("/api/ps: lists the loaded model", MODEL in ps or MODEL + ":latest" in ps or MODEL + ":F32" in ps, ps)

    r = srv.post("/api/show", {"model": MODEL})
    ck.eq("/api/show: 200", r.status, 200)
    if r.status == 200:
        d = r.json()
        ck.check("/api/show: details is an object", isinstance(d.get("details"), dict), d)
        mi = d.get("model_info") or {}
        ck.eq("/api/show: model_info general.architecture", mi.get("general.architecture"), "llama")
    r = srv.post("/api/show", {"model": "no-such-model"})
    ck.eq("/api/show unknown model: 404", r.status, 404)
    try:
        ck.check("/api/show unknown model: Ollama error shape {error: string}",
                 isinstance(r.json().get("error"), str), r)
    except ValueError:
        ck.fail("/api/show unknown model: JSON body", r)

    r = srv.get("/api/version")
    ck.eq("/api/version: 200", r.status, 200)
    v = r.json().get("version") if r.status == 200 else None
    ck.check("/api/version: version is a non-empty string", isinstance(v, str) and v != "", v)


# ---------------------------------------------------------------- completions

def test_completions():
    n_prompt = len(ks.kiln_tokenize(MFILE, PROMPT))
    ref = ks.strip_run_newline(run_ref(20))
    d = completion(max_tokens=20, ignore_eos=True)
    ck.eq("completions: object", d.get("object"), "text_completion")
    ck.check("completions: id and created", isinstance(d.get("id"), str) and isinstance(d.get("created"), int), d)
    ck.eq("completions: model", d.get("model"), MODEL)
    ch = (d.get("choices") or [{}])[0]
    ck.eq("completions: temperature 0 text equals kiln run", ch.get("text"), ref)
    ck.eq("completions: index 0", ch.get("index"), 0)
    ck.eq("completions: finish_reason length", ch.get("finish_reason"), "length")
    check_usage("completions", d.get("usage"), n_prompt, 20)

    res = srv.sse("/v1/completions", {"model": MODEL, "prompt": PROMPT, "temperature": 0, "max_tokens": 20,
                                      "ignore_eos": True, "stream": True,
                                      "stream_options": {"include_usage": True}})
    text = ks.check_sse(ck, "completions stream", res, chat=False, include_usage=True, want_finish="length")
    ck.eq("completions stream: text equals the non-stream text", text, ch.get("text"))
    if res.chunks:
        check_usage("completions stream usage chunk", res.chunks[-1].get("usage"), n_prompt, 20)

    res = srv.sse("/v1/completions", {"prompt": PROMPT, "temperature": 0, "max_tokens": 8,
                                      "ignore_eos": True, "stream": True})
    text = ks.check_sse(ck, "completions stream without usage", res, chat=False, want_finish="length")
    ck.eq("completions stream (no model field): text", text, ks.strip_run_newline(run_ref(8)))


def test_keep_alive_connection():
    """Several requests, a stream among them, on one persistent HTTP/1.1 connection."""
    import json
    conn = srv.connect(30)
    try:
        want = completion(max_tokens=6, ignore_eos=True)["choices"][0]["text"]
        body = json.dumps({"model": MODEL, "prompt": PROMPT, "max_tokens": 6, "temperature": 0,
                           "ignore_eos": True}).encode()
        sbody = json.dumps({"model": MODEL, "prompt": PROMPT, "max_tokens": 6, "temperature": 0,
                            "ignore_eos": True, "stream": True}).encode()
        for i, (path, b) in enumerate([("/v1/completions", body), ("/v1/completions", sbody), ("/health", None),
                                       ("/v1/completions", body)]):
            conn.request("POST" if b else "GET", path, body=b, headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            data = r.read()
            ck.eq("keep-alive request %d: 200" % i, r.status, 200)
            if b is body:
                ck.eq("keep-alive request %d: text" % i, json.loads(data)["choices"][0]["text"], want)
            elif b is sbody:
                ck.check("keep-alive stream %d: ends with [DONE]" % i, data.endswith(b"data: [DONE]\n\n"), data[-80:])
        sock_before = conn.sock
        conn.request("GET", "/v1/models")
        conn.getresponse().read()
        ck.check("keep-alive: the connection was reused", conn.sock is sock_before and sock_before is not None,
                 "reconnected")
    finally:
        conn.close()


def test_expect_continue():
    """curl sends `Expect: 100-continue` with bodies over 1 KiB."""
    import json
    b = json.dumps({"model": MODEL, "prompt": PROMPT, "max_tokens": 3, "temperature": 0,
                    "stop": ["x" * 10]}).encode() + b" " * 1500
    r = srv.post("/v1/completions", raw=b, headers={"Expect": "100-continue"})
    ck.eq("Expect: 100-continue body: 200", r.status, 200)


def test_max_tokens():
    for n in (1, 13):
        d = completion(max_tokens=n, ignore_eos=True)
        ch = d["choices"][0]
        ck.eq("max_tokens %d: finish_reason length" % n, ch.get("finish_reason"), "length")
        ck.eq("max_tokens %d: completion_tokens" % n, d.get("usage", {}).get("completion_tokens"), n)
    d = chat(max_completion_tokens=7, ignore_eos=True)
    ck.eq("chat max_completion_tokens 7: finish_reason length", d["choices"][0].get("finish_reason"), "length")
    ck.eq("chat max_completion_tokens 7: completion_tokens", d.get("usage", {}).get("completion_tokens"), 7)


def test_echo_and_token_prompt():
    plain = completion(max_tokens=10, ignore_eos=True)["choices"][0]["text"]
    d = completion(max_tokens=10, ignore_eos=True, echo=True)
    ck.eq("echo: text is prompt + completion", d["choices"][0].get("text"), PROMPT + plain)
    ids = ks.kiln_tokenize(MFILE, PROMPT)
    d = completion(prompt=ids, max_tokens=10, ignore_eos=True)
    ck.eq("token-list prompt: same text as the string prompt", d["choices"][0].get("text"), plain)
    ck.eq("token-list prompt: prompt_tokens = list length", d.get("usage", {}).get("prompt_tokens"), len(ids))


def test_stop():
    full = ks.strip_run_newline(run_ref(60))
    cases = []
    if "Lily" in full:
        cases.append(["Lily"])
    else:
        ck.fail("stop: precondition 'Lily' in the greedy text", full)
    mid = full[len(full) // 2: len(full) // 2 + 5]
    cases.append(["zzzq", mid])  # list form; the stop string may start inside a token
    for stop in cases:
        cut = min(full.find(s) for s in stop if s in full)
        want = full[:cut]
        d = completion(max_tokens=60, ignore_eos=True, stop=stop if len(stop) > 1 else stop[0])
        ch = d["choices"][0]
        name = "stop %r" % (stop,)
        ck.eq(name + ": text is kiln run's cut at the stop string", ch.get("text"), want)
        ck.check(name + ": text never contains the stop string",
                 not any(s in ch.get("text", "") for s in stop), ch.get("text"))
        ck.eq(name + ": finish_reason stop", ch.get("finish_reason"), "stop")
        res = srv.sse("/v1/completions", {"model": MODEL, "prompt": PROMPT, "temperature": 0, "max_tokens": 60,
                                          "ignore_eos": True, "stream": True, "stop": stop})
        text = ks.check_sse(ck, name + " stream", res, chat=False, want_finish="stop")
        ck.eq(name + " stream: text", text, want)
    # kiln run --stop agrees
    if "Lily" in full:
        run_stop = ks.strip_run_newline(run_ref(60, extra=["--stop", "Lily"]))
        ck.eq("stop: kiln run --stop gives the same text", run_stop, full[:full.find("Lily")])


def test_chat_stop_and_stream_logprobs():
    full = chat(max_tokens=40, ignore_eos=True)["choices"][0]["message"]["content"]
    stop = full[len(full) // 2: len(full) // 2 + 4]
    want = full[:full.find(stop)]
    d = chat(max_tokens=40, ignore_eos=True, stop=stop)
    ck.eq("chat stop: content cut at the stop string", d["choices"][0]["message"]["content"], want)
    ck.eq("chat stop: finish_reason stop", d["choices"][0].get("finish_reason"), "stop")
    res = srv.sse("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}],
                                           "temperature": 0, "max_tokens": 40, "ignore_eos": True, "stop": [stop],
                                           "stream": True})
    text = ks.check_sse(ck, "chat stop stream", res, chat=True, want_finish="stop")
    ck.eq("chat stop stream: content", text, want)
    o = srv.post_json("/api/chat", {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}],
                                    "stream": False, "options": {"num_predict": 40, "temperature": 0, "stop": [stop]}})
    # without ignore_eos the model may end earlier; it must never pass the stop string
    oc = (o.get("message") or {}).get("content", "")
    ck.check("api/chat options.stop: never contains the stop string, a prefix of the full text",
             stop not in oc and full.startswith(oc), (oc, stop))

    res = srv.sse("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}],
                                           "temperature": 0, "max_tokens": 5, "ignore_eos": True, "stream": True,
                                           "logprobs": True, "top_logprobs": 2})
    text = ks.check_sse(ck, "chat stream logprobs", res, chat=True, want_finish="length")
    ents = [e for c in res.chunks for ch in c.get("choices", []) for e in ((ch.get("logprobs") or {}).get("content")
                                                                            or [])]
    ck.eq("chat stream logprobs: one entry per token", len(ents), 5)
    ck.eq("chat stream logprobs: tokens join to the text", "".join(e.get("token", "") for e in ents), text)
    ck.check("chat stream logprobs: 2 sorted top entries each",
             all(len(e.get("top_logprobs", [])) == 2 and e["top_logprobs"][0]["logprob"] >= e["top_logprobs"][1]["logprob"]
                 for e in ents), ents[:1])


def test_logprobs():
    d = completion(max_tokens=8, ignore_eos=True, logprobs=3)
    ch = d["choices"][0]
    lp = ch.get("logprobs") or {}
    toks = lp.get("tokens") or []
    tlp = lp.get("token_logprobs") or []
    top = lp.get("top_logprobs") or []
    ck.eq("completions logprobs: one entry per token", (len(toks), len(tlp), len(top)), (8, 8, 8))
    ck.eq("completions logprobs: tokens join to the text", "".join(toks), ch.get("text"))
    ck.check("completions logprobs: values <= 0", all(isinstance(x, (int, float)) and x <= 0 for x in tlp), tlp)
    ck.check("completions logprobs: top_logprobs has 3 entries each", all(len(t) == 3 for t in top), top[:2])
    ok = all(list(t.values()) == sorted(t.values(), reverse=True) for t in top)
    ck.check("completions logprobs: top_logprobs sorted", ok, top[:2])
    ok = all(abs(max(t.values()) - x) < 1e-4 for t, x in zip(top, tlp) if t)
    ck.check("completions logprobs: greedy token has the top logprob", ok, list(zip(tlp, top))[:2])

    d = chat(max_tokens=6, ignore_eos=True, logprobs=True, top_logprobs=2)
    ch = d["choices"][0]
    content = (ch.get("logprobs") or {}).get("content") or []
    ck.eq("chat logprobs: one entry per token", len(content), 6)
    ck.eq("chat logprobs: tokens join to the content", "".join(c.get("token", "") for c in content),
          ch.get("message", {}).get("content"))
    ck.check("chat logprobs: logprob <= 0", all(c.get("logprob", 1) <= 0 for c in content), content[:2])
    ck.check("chat logprobs: bytes are the token's UTF-8",
             all(c.get("bytes") == list(c.get("token", "").encode()) for c in content), content[:2])
    tops = [c.get("top_logprobs") or [] for c in content]
    ck.check("chat logprobs: 2 top_logprobs each", all(len(t) == 2 for t in tops), tops[:2])
    ck.check("chat logprobs: top_logprobs sorted descending",
             all(t[0]["logprob"] >= t[1]["logprob"] for t in tops if len(t) == 2), tops[:2])
    ck.check("chat logprobs: greedy token is top_logprobs[0]",
             all(t and t[0].get("token") == c.get("token") and abs(t[0]["logprob"] - c["logprob"]) < 1e-4
                 for c, t in zip(content, tops)), content[:2])
    ck.check("chat logprobs: top values <= 0", all(x["logprob"] <= 0 for t in tops for x in t), tops[:2])


def test_logit_bias():
    first = completion(max_tokens=1)["choices"][0]["text"]
    p = ks.kiln_tokenize(MFILE, PROMPT)
    p1 = ks.kiln_tokenize(MFILE, PROMPT + first)
    if not ck.check("logit_bias: precondition, greedy first token is one token after the prompt",
                    p1[:len(p)] == p and len(p1) == len(p) + 1, (p, p1, first)):
        return
    tid = p1[-1]
    d = completion(max_tokens=1, logit_bias={str(tid): -100})
    got = d["choices"][0]["text"]
    ck.check("logit_bias -100 on the greedy token changes the first token", got != first and got != "",
             "first %r, with bias %r" % (first, got))
    # and a positive bias forces a chosen token
    p2 = ks.kiln_tokenize(MFILE, PROMPT + " there")
    if ck.check("logit_bias: precondition, ' there' is one token", p2[:len(p)] == p and len(p2) == len(p) + 1, p2):
        d = completion(max_tokens=1, logit_bias={str(p2[-1]): 100})
        ck.eq("logit_bias +100 forces that token", d["choices"][0]["text"], " there")


def test_seed():
    kw = dict(max_tokens=30, temperature=0.8, ignore_eos=True)
    a = completion(seed=42, **kw)["choices"][0]["text"]
    b = completion(seed=42, **kw)["choices"][0]["text"]
    c = completion(seed=43, **kw)["choices"][0]["text"]
    ck.eq("seed 42 at temperature 0.8 twice gives the same text", b, a)
    ck.check("seed 43 gives another text", c != a, "both %r" % a)
    g = ks.strip_run_newline(run_ref(30))
    ck.check("temperature 0.8 differs from greedy", a != g, a)
    o1 = srv.post_json("/api/generate", {"model": MODEL, "prompt": PROMPT, "raw": True, "stream": False,
                                         "options": {"seed": 7, "temperature": 0.8, "num_predict": 30}})
    o2 = srv.post_json("/api/generate", {"model": MODEL, "prompt": PROMPT, "raw": True, "stream": False,
                                         "options": {"seed": 7, "temperature": 0.8, "num_predict": 30}})
    ck.eq("ollama options.seed reproducible", o2.get("response"), o1.get("response"))


def test_model_omitted():
    """-m FILE: every route may omit "model"."""
    msgs = [{"role": "user", "content": "Hello"}]
    for route, body in [("/v1/completions", {"prompt": PROMPT, "max_tokens": 3}),
                        ("/v1/chat/completions", {"messages": msgs, "max_tokens": 3}),
                        ("/v1/embeddings", {"input": "hello"}),
                        ("/detokenize", {"tokens": [1, 403]}),
                        ("/api/generate", {"prompt": PROMPT, "stream": False, "options": {"num_predict": 3}}),
                        ("/api/chat", {"messages": msgs, "stream": False, "options": {"num_predict": 3}}),
                        ("/api/embed", {"input": "hello"}),
                        ("/api/show", {})]:
        r = srv.post(route, body)
        ck.eq("-m FILE: %s without model: 200" % route, r.status, 200)


def test_sampling_fields_accepted():
    d = completion(max_tokens=5, top_p=0.9, top_k=20, min_p=0.05, repeat_penalty=1.1, presence_penalty=0.5,
                   frequency_penalty=0.5, seed=1, response_format={"type": "text"})
    ck.check("completions: all sampling fields accepted", isinstance(d["choices"][0].get("text"), str), d)
    d = chat(max_tokens=5, top_p=0.9, top_k=20, min_p=0.05, repeat_penalty=1.1, response_format={"type": "text"},
             n=1)
    ck.check("chat: sampling fields, n=1 and response_format text accepted",
             isinstance(d["choices"][0]["message"].get("content"), str), d)


# ---------------------------------------------------------------- chat

def test_chat():
    d = chat(max_tokens=12, ignore_eos=True)
    ck.eq("chat: object", d.get("object"), "chat.completion")
    ck.eq("chat: model", d.get("model"), MODEL)
    ch = (d.get("choices") or [{}])[0]
    msg = ch.get("message") or {}
    ck.eq("chat: message.role assistant", msg.get("role"), "assistant")
    ck.check("chat: content is a non-empty string", isinstance(msg.get("content"), str) and msg["content"], msg)
    ck.eq("chat: finish_reason", ch.get("finish_reason"), "length")
    check_usage("chat", d.get("usage"), None, 12)
    ref = ks.strip_run_newline(ks.run_kiln(["run", "-m", MFILE, "--chat", "-p", "Hello", "-n", "12", "--temp", "0",
                                            "--ignore-eos", "-t", "1"]).decode())
    ck.eq("chat: temperature 0 equals kiln run --chat", msg.get("content"), ref)

    res = srv.sse("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}],
                                           "temperature": 0, "max_tokens": 12, "ignore_eos": True, "stream": True,
                                           "stream_options": {"include_usage": True}})
    text = ks.check_sse(ck, "chat stream", res, chat=True, include_usage=True, want_finish="length")
    ck.eq("chat stream: text equals the non-stream content", text, msg.get("content"))
    if res.chunks:
        check_usage("chat stream usage chunk", res.chunks[-1].get("usage"), d.get("usage", {}).get("prompt_tokens"), 12)

    # a system message and a multi-turn conversation are accepted
    d = chat(messages=[{"role": "system", "content": "You tell stories."},
                       {"role": "user", "content": "Hi"},
                       {"role": "assistant", "content": "Hello!"},
                       {"role": "user", "content": "Tell me one."}], max_tokens=5)
    ck.check("chat: system + multi-turn accepted",
             d["choices"][0]["message"]["role"] == "assistant" and d["usage"]["prompt_tokens"] > 10, d)


# ---------------------------------------------------------------- ollama

def test_ollama_generate():
    body = {"model": MODEL, "prompt": PROMPT, "raw": True, "keep_alive": "5m",
            "options": {"num_predict": 20, "temperature": 0}}
    res = srv.ndjson("/api/generate", body)
    text, final = ks.check_ndjson(ck, "api/generate stream", res, chat=False, want_done_reason="length")
    ref = ks.strip_run_newline(run_ref(20, ignore_eos=False))
    ck.eq("api/generate stream: text equals kiln run", text, ref)
    if final:
        ck.eq("api/generate stream: eval_count = num_predict", final.get("eval_count"), 20)
        ck.eq("api/generate stream: prompt_eval_count", final.get("prompt_eval_count"),
              len(ks.kiln_tokenize(MFILE, PROMPT)))
    body["stream"] = False
    r = srv.post("/api/generate", body)
    ck.eq("api/generate stream false: 200", r.status, 200)
    d = r.json()
    ck.check("api/generate stream false: Content-Type application/json",
             r.header("content-type", ).startswith("application/json"), r.header("content-type"))
    ck.eq("api/generate stream false: response", d.get("response"), ref)
    ck.eq("api/generate stream false: done", d.get("done"), True)
    ck.eq("api/generate stream false: done_reason", d.get("done_reason"), "length")
    ck.eq("api/generate stream false: eval_count", d.get("eval_count"), 20)
    ck.check("api/generate stream false: durations", all(isinstance(d.get(k), int) and d[k] >= 0 for k in
                                                         ("total_duration", "load_duration", "prompt_eval_duration",
                                                          "eval_duration")), d)
    # stop in options
    full = ks.strip_run_newline(run_ref(40, ignore_eos=False))
    if "Lily" in full:
        d = srv.post_json("/api/generate", {"model": MODEL, "prompt": PROMPT, "raw": True, "stream": False,
                                            "options": {"num_predict": 40, "temperature": 0, "stop": ["Lily"]}})
        ck.eq("api/generate options.stop: text cut at the stop string", d.get("response"), full[:full.find("Lily")])
        ck.eq("api/generate options.stop: done_reason stop", d.get("done_reason"), "stop")


def test_ollama_chat():
    msgs = [{"role": "user", "content": "Hello"}]
    want = chat(max_tokens=10)["choices"][0]["message"]["content"]
    res = srv.ndjson("/api/chat", {"model": MODEL, "messages": msgs, "options": {"num_predict": 10, "temperature": 0}})
    text, final = ks.check_ndjson(ck, "api/chat stream", res, chat=True)
    ck.eq("api/chat stream: same text as /v1/chat/completions", text, want)
    d = srv.post_json("/api/chat", {"model": MODEL, "messages": msgs, "stream": False,
                                    "options": {"num_predict": 10, "temperature": 0}})
    ck.eq("api/chat stream false: message.role", (d.get("message") or {}).get("role"), "assistant")
    ck.eq("api/chat stream false: message.content", (d.get("message") or {}).get("content"), want)
    ck.eq("api/chat stream false: done", d.get("done"), True)
    if final:
        ck.eq("api/chat: eval_count stream == non-stream", final.get("eval_count"), d.get("eval_count"))


# ---------------------------------------------------------------- embeddings

def test_embeddings():
    n_embd = ks.kiln_info(MFILE)["embedding_length"]
    d = srv.post_json("/v1/embeddings", {"model": MODEL, "input": "hello world"})
    ck.eq("embeddings: object list", d.get("object"), "list")
    data = d.get("data") or []
    if not ck.eq("embeddings: one item", len(data), 1):
        return
    v = data[0].get("embedding") or []
    ck.eq("embeddings: item object", data[0].get("object"), "embedding")
    ck.eq("embeddings: index", data[0].get("index"), 0)
    ck.eq("embeddings: length = n_embd", len(v), n_embd)
    ck.check("embeddings: L2 norm ~ 1", abs(ks.l2norm(v) - 1) < 1e-3, ks.l2norm(v))
    n_tok = len(ks.kiln_tokenize(MFILE, "hello world"))
    ck.eq("embeddings: usage.prompt_tokens", (d.get("usage") or {}).get("prompt_tokens"), n_tok)

    texts = ["hello world", "Once upon a time, there was a little girl.", "hello world"]
    d = srv.post_json("/v1/embeddings", {"model": MODEL, "input": texts})
    data = d.get("data") or []
    if not ck.eq("embeddings list: one vector per input", len(data), 3):
        return
    ck.eq("embeddings list: indexes", [x.get("index") for x in data], [0, 1, 2])
    vs = [x.get("embedding") for x in data]
    ck.check("embeddings list: every vector has norm 1", all(abs(ks.l2norm(x) - 1) < 1e-3 for x in vs),
             [ks.l2norm(x) for x in vs])
    ck.check("embeddings list: same text batched == alone (1e-4)", ks.maxdiff(vs[0], v) < 1e-4, ks.maxdiff(vs[0], v))
    ck.check("embeddings list: same text twice in a batch agrees", ks.maxdiff(vs[0], vs[2]) < 1e-4,
             ks.maxdiff(vs[0], vs[2]))
    ck.check("embeddings list: different texts differ", ks.maxdiff(vs[0], vs[1]) > 1e-3, ks.maxdiff(vs[0], vs[1]))
    alone = srv.post_json("/v1/embeddings", {"model": MODEL, "input": texts[1]})["data"][0]["embedding"]
    ck.check("embeddings list: second text batched == alone (1e-4)", ks.maxdiff(vs[1], alone) < 1e-4,
             ks.maxdiff(vs[1], alone))

    r = srv.post("/api/embed", {"model": MODEL, "input": "hello world"})
    ck.eq("api/embed: 200", r.status, 200)
    e = r.json().get("embeddings") if r.status == 200 else None
    if ck.check("api/embed: embeddings is one vector", isinstance(e, list) and len(e) == 1, e):
        ck.check("api/embed: same vector as /v1/embeddings", ks.maxdiff(e[0], v) < 1e-4, ks.maxdiff(e[0], v))
    d = srv.post_json("/api/embed", {"model": MODEL, "input": texts[:2]})
    e = d.get("embeddings") or []
    ck.eq("api/embed list: two vectors", len(e), 2)
    if len(e) == 2:
        ck.check("api/embed list: second equals /v1 alone", ks.maxdiff(e[1], alone) < 1e-4, ks.maxdiff(e[1], alone))


def main():
    global srv
    srv = ks.Server(["-m", MFILE, "-c", "256", "-t", "1", "-np", "2"])
    try:
        for t in (test_health, test_tokenize, test_model_lists, test_completions, test_max_tokens,
                  test_keep_alive_connection, test_expect_continue, test_echo_and_token_prompt, test_stop, test_chat_stop_and_stream_logprobs, test_logprobs, test_logit_bias, test_seed,
                  test_sampling_fields_accepted, test_model_omitted, test_chat, test_ollama_generate, test_ollama_chat,
                  test_embeddings, test_health):
            ck.run(t)
        ok, h, _ = srv.wait_idle(5)
        ck.check("idle after all requests", ok, h)
    finally:
        rc = srv.stop(30)
    ck.exited_clean("server on SIGTERM", srv, rc)
    ck.finish([srv])


if __name__ == "__main__":
    main()
