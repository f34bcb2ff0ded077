"""test_reliability_limits.py — the limits and security defaults that keep a
shared `kiln serve` safe (issue 11), against the real server on 127.0.0.1.

1. Request limits (--limit-messages, --limit-max-tokens, --limit-embed-inputs,
   --limit-stops, --limit-logit-bias, --limit-json-depth, --max-body), each set
   small: a request at the limit succeeds, one past it gets a 400 (413 for the
   body) with code limit_exceeded, the offending field as param, and a message
   naming the count, the limit and the flag, in the OpenAI and the Ollama shape.
   --limit-max-tokens also caps a generation that asks for no limit: with
   ignore_eos it stops at exactly that many tokens.
2. CORS: off by default (no Access-Control-* header, OPTIONS is a 405); with
   --cors-origin LIST an allowed Origin is echoed (with Vary: Origin), another
   is not, a preflight is a 204 naming the methods; "*" answers "*".
3. Logs: with KILN_LOG=debug and no --log-prompts, neither the prompt nor the
   completion reaches the log; with --log-prompts both do, verbatim.
4. Bind: 127.0.0.1 is the default; --host 0.0.0.0 without --api-key logs a
   warning, with a key it does not.
5. API key: only the exact key passes (same length but different, a prefix,
   the key plus a byte, another scheme and no header are 401); /health stays
   open.
Every server exits cleanly on SIGTERM with no sanitizer report.
"""

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kiln_server as ks  # noqa: E402

MODEL = None


def kiln(args):
    return subprocess.run([ks.KILN_BIN] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)


def err_of(r):
    try:
        e = r.json().get("error")
    except ValueError:
        return None
    return e


def check_limit(ck, name, r, param, flag, count, limit, ollama=False, status=400):
    ck.eq(name + ": status", r.status, status)
    e = err_of(r)
    if ollama:
        ck.check(name + ": Ollama error shape", isinstance(e, str) and flag in e, repr(r))
        return
    ck.check(name + ": OpenAI error shape", isinstance(e, dict), repr(r))
    if not isinstance(e, dict):
        return
    if status == 400:
        ck.eq(name + ": code", e.get("code"), "limit_exceeded")
        ck.eq(name + ": param", e.get("param"), param)
    msg = e.get("message", "")
    for want in [flag, str(limit)] + ([str(count)] if count is not None else []):
        ck.check(name + ": message names %s" % want, want in msg, msg)


def test_limits(ck):
    srv = ks.Server(["-m", MODEL, "--limit-messages", "3", "--limit-max-tokens", "12", "--limit-embed-inputs", "2",
                     "--limit-stops", "2", "--limit-logit-bias", "3", "--limit-json-depth", "6",
                     "--max-body", "4k"])
    try:
        msg = {"role": "user", "content": "Once upon a time"}
        three = [msg, {"role": "assistant", "content": "there was"}, msg]
        # messages
        r = srv.post("/v1/chat/completions", {"messages": three, "max_tokens": 2})
        ck.eq("3 messages at --limit-messages 3: 200", r.status, 200)
        r = srv.post("/v1/chat/completions", {"messages": [msg] * 4, "max_tokens": 2})
        check_limit(ck, "4 messages", r, "messages", "--limit-messages", 4, 3)
        r = srv.post("/api/chat", {"messages": [msg] * 4, "stream": False})
        check_limit(ck, "ollama 4 messages", r, "messages", "--limit-messages", 4, 3, ollama=True)
        # max_tokens
        r = srv.post("/v1/completions", {"prompt": "Once", "max_tokens": 12})
        ck.eq("max_tokens 12 at the limit: 200", r.status, 200)
        r = srv.post("/v1/completions", {"prompt": "Once", "max_tokens": 13})
        check_limit(ck, "max_tokens 13", r, "max_tokens", "--limit-max-tokens", 13, 12)
        r = srv.post("/v1/chat/completions", {"messages": [msg], "max_completion_tokens": 50})
        check_limit(ck, "max_completion_tokens 50", r, "max_tokens", "--limit-max-tokens", 50, 12)
        r = srv.post("/api/generate", {"prompt": "Once", "stream": False, "options": {"num_predict": 13}})
        check_limit(ck, "ollama num_predict 13", r, "options.num_predict", "--limit-max-tokens", 13, 12, ollama=True)
        # the limit caps a generation that sets none
        r = srv.post("/v1/completions", {"prompt": "Once", "ignore_eos": True, "temperature": 0})
        ck.eq("no max_tokens: 200", r.status, 200)
        if r.status == 200:
            j = r.json()
            ck.eq("no max_tokens: capped at 12 tokens", j["usage"]["completion_tokens"], 12)
            ck.eq("no max_tokens: finish_reason length", j["choices"][0]["finish_reason"], "length")
        # stops
        r = srv.post("/v1/completions", {"prompt": "Once", "max_tokens": 2, "stop": ["a", "b"]})
        ck.eq("2 stops at the limit: 200", r.status, 200)
        r = srv.post("/v1/completions", {"prompt": "Once", "max_tokens": 2, "stop": ["a", "b", "c"]})
        check_limit(ck, "3 stops", r, "stop", "--limit-stops", 3, 2)
        r = srv.post("/api/generate", {"prompt": "Once", "stream": False,
                                       "options": {"num_predict": 2, "stop": ["a", "b", "c"]}})
        check_limit(ck, "ollama 3 stops", r, "options.stop", "--limit-stops", 3, 2, ollama=True)
        # logit_bias
        r = srv.post("/v1/completions", {"prompt": "Once", "max_tokens": 2, "logit_bias": {"1": 1, "2": 1, "3": 1}})
        ck.eq("3 logit_bias entries at the limit: 200", r.status, 200)
        r = srv.post("/v1/completions", {"prompt": "Once", "max_tokens": 2,
                                         "logit_bias": {"1": 1, "2": 1, "3": 1, "4": 1}})
        check_limit(ck, "4 logit_bias entries", r, "logit_bias", "--limit-logit-bias", 4, 3)
        # embedding inputs
        r = srv.post("/v1/embeddings", {"input": ["a b", "c d"]})
        ck.eq("2 embedding inputs at the limit: 200", r.status, 200)
        r = srv.post("/v1/embeddings", {"input": ["a", "b", "c"]})
        check_limit(ck, "3 embedding inputs", r, "input", "--limit-embed-inputs", 3, 2)
        r = srv.post("/api/embed", {"input": ["a", "b", "c"]})
        check_limit(ck, "ollama 3 embedding inputs", r, "input", "--limit-embed-inputs", 3, 2, ollama=True)
        # JSON depth: {"prompt": "x", "x": [[[[1]]]]} nests 5 levels; 6 is the limit
        def nested(d):
            return ('{"prompt":"Once","max_tokens":1,"x":' + "[" * (d - 1) + "1" + "]" * (d - 1) + "}").encode()
        r = srv.post("/v1/completions", raw=nested(6))
        ck.eq("JSON depth 6 at the limit: 200", r.status, 200)
        r = srv.post("/v1/completions", raw=nested(7))
        check_limit(ck, "JSON depth 7", r, None, "--limit-json-depth", None, 6)
        r = srv.post("/v1/completions", raw=b'{"prompt":"Once","max_tokens":1,"x":"' + b"[{" * 1500 + b'"}')
        ck.eq("brackets inside a string do not count as depth", r.status, 200)
        r = srv.post("/v1/completions", raw=b"[" * 4000)
        check_limit(ck, "4000 open brackets", r, None, "--limit-json-depth", None, 6)
        # body size
        body = json.dumps({"prompt": "x" * 5000, "max_tokens": 1}).encode()
        r = srv.post("/v1/completions", raw=body)
        ck.eq("a 5 KB body over --max-body 4k: 413", r.status, 413)
        e = err_of(r)
        ck.check("413 names the limit", isinstance(e, dict) and "4096" in e.get("message", ""), repr(r))
        ck.eq("still serving after the breaches", srv.get("/health").status, 200)
    finally:
        ck.exited_clean("limits server", srv, srv.stop())


def test_cors(ck):
    srv = ks.Server(["-m", MODEL])
    try:
        r = srv.get("/health", headers={"Origin": "http://evil.example"})
        ck.check("CORS off by default: no Access-Control-Allow-Origin",
                 "access-control-allow-origin" not in r.headers, repr(r.headers))
        r = srv.request("OPTIONS", "/v1/chat/completions", headers={"Origin": "http://evil.example"})
        ck.eq("CORS off: a preflight is 405", r.status, 405)
    finally:
        ck.exited_clean("cors off server", srv, srv.stop())
    srv = ks.Server(["-m", MODEL, "--cors-origin", "http://app.example, https://ui.example:8443"])
    try:
        r = srv.post("/v1/completions", {"prompt": "Once", "max_tokens": 1},
                     headers={"Origin": "https://ui.example:8443"})
        ck.eq("allowed origin: 200", r.status, 200)
        ck.eq("allowed origin echoed", r.header("access-control-allow-origin"), "https://ui.example:8443")
        ck.eq("Vary: Origin", r.header("vary"), "Origin")
        r = srv.post("/v1/completions", {"prompt": "Once", "max_tokens": 1}, headers={"Origin": "http://evil.example"})
        ck.check("other origin: no Access-Control-Allow-Origin", "access-control-allow-origin" not in r.headers,
                 repr(r.headers))
        r = srv.request("OPTIONS", "/v1/chat/completions", headers={
            "Origin": "http://app.example", "Access-Control-Request-Method": "POST"})
        ck.eq("preflight: 204", r.status, 204)
        ck.check("preflight names POST", "POST" in (r.header("access-control-allow-methods") or ""), repr(r.headers))
        ck.check("preflight allows Authorization", "Authorization" in (r.header("access-control-allow-headers") or ""),
                 repr(r.headers))
        ck.eq("preflight origin", r.header("access-control-allow-origin"), "http://app.example")
        r = srv.request("OPTIONS", "/v1/chat/completions", headers={"Origin": "http://evil.example"})
        ck.eq("preflight from another origin: 405", r.status, 405)
        r = srv.post("/v1/completions", {"prompt": "Once", "max_tokens": 2, "stream": True},
                     headers={"Origin": "http://app.example"})
        ck.eq("stream from an allowed origin echoed", r.header("access-control-allow-origin"), "http://app.example")
    finally:
        ck.exited_clean("cors list server", srv, srv.stop())
    srv = ks.Server(["-m", MODEL, "--cors-origin", "*"])
    try:
        r = srv.get("/v1/models", headers={"Origin": "http://any.example"})
        ck.eq("cors *: answers *", r.header("access-control-allow-origin"), "*")
    finally:
        ck.exited_clean("cors * server", srv, srv.stop())
    rc = kiln(["serve", "-m", MODEL, "--cors-origin", "ftp://x.example", "--print-config"])
    ck.check("a bad origin is a config error", rc.returncode == 2 and b"cors-origin" in rc.stderr, repr(rc))


def test_log_prompts(ck):
    marker_p = "Zebulonquartz prompt"
    marker_c = "Xylophorix chat"
    for on in (False, True):
        args = ["-m", MODEL] + (["--log-prompts"] if on else [])
        srv = ks.Server(args, env={"KILN_LOG": "debug"})
        tag = "--log-prompts" if on else "default"
        try:
            r = srv.post("/v1/completions", {"prompt": marker_p, "max_tokens": 8, "temperature": 0})
            comp = r.json()["choices"][0]["text"] if r.status == 200 else ""
            r2 = srv.post("/v1/chat/completions", {"messages": [{"role": "user", "content": marker_c}],
                                                   "max_tokens": 8, "stream": True})
            ck.eq(tag + ": requests 200", (r.status, r2.status), (200, 200))
            nd = srv.ndjson("/api/generate", {"prompt": marker_p + " again", "options": {"num_predict": 4}})
            ck.eq(tag + ": ollama stream 200", nd.status, 200)
            time.sleep(0.3)
            log = srv.log()
            ck.check(tag + ": the completion is not empty", len(comp.strip()) > 0, repr(comp))
            if on:
                ck.check("--log-prompts: the prompt is logged", marker_p in log, log[-2000:])
                ck.check("--log-prompts: chat messages are logged", marker_c in log, log[-2000:])
                ck.check("--log-prompts: the completion is logged verbatim", "): " + comp in log, log[-2000:])
                ck.check("--log-prompts: completions of streams are logged", log.count("completion (") >= 3,
                         log[-2000:])
            else:
                ck.check("default at debug level: no prompt text in the log", marker_p not in log, log[-3000:])
                ck.check("default at debug level: no chat text in the log", marker_c not in log, log[-3000:])
                ck.check("default at debug level: no completion text in the log",
                         "completion (" not in log and (len(comp.strip()) < 4 or comp not in log), log[-3000:])
        finally:
            ck.exited_clean(tag + " log server", srv, srv.stop())


def test_bind(ck):
    rc = kiln(["serve", "-m", MODEL, "--print-config"])
    ck.check("the default host is 127.0.0.1", b'host: "127.0.0.1"' in rc.stdout, rc.stdout[:400])
    srv = ks.Server(["-m", MODEL])
    try:
        ck.check("loopback: no public-bind warning", "not a loopback address" not in srv.log(), srv.log()[-800:])
    finally:
        ck.exited_clean("loopback server", srv, srv.stop())
    for key in (None, "s3cret-key"):
        args = ["-m", MODEL, "--host", "0.0.0.0"] + (["--api-key", key] if key else [])
        srv = ks.Server(args, wait_health=False)
        try:
            time.sleep(0.3)
            warned = "not a loopback address" in srv.log() and "--api-key" in srv.log()
            if key:
                ck.check("0.0.0.0 with --api-key: no warning", not warned, srv.log()[-800:])
            else:
                ck.check("0.0.0.0 without --api-key: a warning", warned, srv.log()[-800:])
        finally:
            ck.exited_clean("public bind server", srv, srv.stop())


def test_api_key(ck):
    key = "k-0123456789abcdef"
    srv = ks.Server(["-m", MODEL, "--api-key", key])
    try:
        def status(auth):
            h = {"Authorization": auth} if auth is not None else {}
            return srv.post("/v1/completions", {"prompt": "Once", "max_tokens": 1}, headers=h).status
        ck.eq("the right key: 200", status("Bearer " + key), 200)
        ck.eq("the right key, scheme in lower case: 200", status("bearer " + key), 200)
        ck.eq("same length, one byte different: 401", status("Bearer " + key[:-1] + "0"), 401)
        ck.eq("a prefix of the key: 401", status("Bearer " + key[:-1]), 401)
        ck.eq("the key plus a byte: 401", status("Bearer " + key + "0"), 401)
        ck.eq("another scheme: 401", status("Basic " + key), 401)
        ck.eq("no header: 401", status(None), 401)
        ck.eq("empty key: 401", status("Bearer "), 401)
        ck.eq("/health stays open", srv.get("/health").status, 200)
        ck.check("the key never reaches the log", key not in srv.log(), "key found in the log")
    finally:
        ck.exited_clean("api key server", srv, srv.stop())


def main():
    global MODEL
    ks.need_env()
    MODEL = ks.model_path("stories260K")
    ck = ks.Checks()
    for t in (test_limits, test_cors, test_log_prompts, test_bind, test_api_key):
        ck.run(t, ck)
    ck.finish()


if __name__ == "__main__":
    main()
