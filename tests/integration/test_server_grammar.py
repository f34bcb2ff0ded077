#!/usr/bin/env python3
"""test_server_grammar.py — constrained decoding (the `grammar` field, GBNF)
through the real `kiln serve` and `kiln run`, with random-weight models
whose free output matches none of the grammars:
 - /v1/completions, /v1/chat/completions and llama-server's /completion
   (whole and streamed), greedy and seeded sampling,
   under `"yes" | "no"`, `[0-9]{3} "-" [0-9]{4}` and a small JSON object
   grammar, on an SPM model (stories260K) and a byte-level BPE one
   (tiny-qwen2): every text matches (Python's re / json.loads), and
   finish_reason is "stop" when the grammar completes;
 - a stop string inside constrained text cuts it as usual;
 - a constrained and an unconstrained request running together both
   finish, and the unconstrained one equals its answer alone;
 - speculative decoding (ngram, on a repetitive prompt whose drafts the
   grammar partly refuses; and a draft model, stories260K-Q8_0 drafting for
   stories260K) gives the same constrained greedy text as
   "speculative": "none";
 - a malformed grammar is a 400 on param "grammar" whose message has
   line:column; a grammar that is not a string is a 400 naming "grammar";
   a grammar so ambiguous that its parse stacks pass the bound ends the
   request with an error (500, or an error event in a stream);
 - the response cache: one prompt under two grammars gets two different
   answers (the second is not the first's cache entry), and each repeat is
   a hit with its own text;
 - `kiln run --grammar FILE` prints text matching the grammar, and a
   malformed FILE fails with line:column."""

import json
import os
import re
import subprocess
import sys
import tempfile
import threading

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kiln_server as ks  # noqa: E402

ks.need_env()
ck = ks.Checks()
MODEL = "stories260K"
MFILE = ks.model_path(MODEL)
BPE = "tiny-qwen2-Q4_K_M"
BFILE = ks.model_path(BPE)
SERVERS = []

YESNO = 'root ::= "yes" | "no"'
YESNO_RE = re.compile(r"^(yes|no)$")
PHONE = 'root ::= [0-9]{3} "-" [0-9]{4}'
PHONE_RE = re.compile(r"^[0-9]{3}-[0-9]{4}$")
JSONG = r'''root ::= "{" ws "\"name\"" ws ":" ws str "," ws "\"age\"" ws ":" ws num ws "}"
str  ::= "\"" [a-z]{1,8} "\""
num  ::= [1-9] [0-9]{0,2}
ws   ::= " "?
'''


def json_ok(text):
    try:
        v = json.loads(text)
    except ValueError:
        return False
    return (isinstance(v, dict) and sorted(v) == ["age", "name"] and isinstance(v["name"], str)
            and re.fullmatch(r"[a-z]{1,8}", v["name"]) is not None and isinstance(v["age"], int)
            and 1 <= v["age"] <= 999)


GRAMMARS = [("yes|no", YESNO, lambda t: YESNO_RE.match(t) is not None),
            ("phone", PHONE, lambda t: PHONE_RE.match(t) is not None),
            ("json", JSONG, json_ok)]
# No grammar on its own would make these (the models are random).
PROMPT = "Once upon a time"
REPETITIVE = "The little dog ran to the big tree and the little cat ran to the big house. " * 4 + "The little dog ran"


def start(args, **kw):
    srv = ks.Server(list(args), **kw)
    SERVERS.append(srv)
    return srv


def completion(srv, body, path="/v1/completions"):
    r = srv.post(path, body, timeout=120)
    if r.status != 200:
        return r, None, None
    j = r.json()
    if path == "/completion":  # llama-server's shape
        fin = {"eos": "stop", "limit": "length"}.get(j.get("stop_type")) if j.get("stop") is True else None
        return r, j.get("content"), fin
    c = j["choices"][0]
    text = c["message"]["content"] if "message" in c else c["text"]
    return r, text, c.get("finish_reason")


def check_grammars(srv, model, chat, path=None):
    path = path or ("/v1/chat/completions" if chat else "/v1/completions")
    for gname, g, ok in GRAMMARS:
        runs = [("greedy", {"temperature": 0})] + [("seed %d" % s, {"temperature": 1.0, "seed": s})
                                                    for s in (1, 2, 3)]
        for how, extra in runs:
            name = "%s %s %s %s" % (model, path, gname, how)
            body = {"model": model, "grammar": g}
            body["n_predict" if path == "/completion" else "max_tokens"] = 64
            body.update(extra)
            if chat:
                body["messages"] = [{"role": "user", "content": PROMPT}]
            else:
                body["prompt"] = PROMPT
            r, text, fin = completion(srv, body, path)
            if not ck.eq(name + ": status", r.status, 200):
                print("   " + ks._short(r.text()))
                continue
            ck.check(name + ": text matches the grammar", ok(text), repr(text))
            ck.eq(name + ": finish_reason", fin, "stop")


def test_grammars(srv):
    check_grammars(srv, MODEL, chat=False)
    check_grammars(srv, MODEL, chat=True)
    check_grammars(srv, MODEL, chat=False, path="/completion")
    # llama-server's stream: pieces, then a final object with stop: true
    res = srv.sse("/completion", {"prompt": PROMPT, "n_predict": 64, "temperature": 0, "grammar": JSONG,
                                  "stream": True})
    pieces = [c.get("content", "") for c in res.chunks]
    ck.check("/completion stream: ends with stop: true, stop_type eos",
             res.chunks and res.chunks[-1].get("stop") is True and res.chunks[-1].get("stop_type") == "eos",
             res.chunks[-1:])
    ck.check("/completion stream: the text matches", json_ok("".join(pieces)), "".join(pieces))
    # streamed: the same text as the whole answer
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 64, "temperature": 0, "grammar": JSONG}
    _, whole, _ = completion(srv, body)
    body["stream"] = True
    res = srv.sse("/v1/completions", body)
    text = ks.check_sse(ck, "stream json grammar", res, chat=False, want_finish="stop")
    ck.eq("stream json grammar: text equals the whole answer", text, whole)


def test_unconstrained_differs(srv):
    """The grammars are not what the model says anyway (else the tests above prove nothing)."""
    _, free, _ = completion(srv, {"model": MODEL, "prompt": PROMPT, "max_tokens": 64, "temperature": 0})
    ck.check("free text matches none of the grammars", free is not None and not any(ok(free) for _, _, ok in GRAMMARS),
             repr(free))


def test_stop_string(srv):
    r, text, fin = completion(srv, {"model": MODEL, "prompt": PROMPT, "max_tokens": 64, "temperature": 0,
                                    "grammar": PHONE, "stop": ["-"]})
    ck.check("grammar + stop '-': the text is the 3 digits before it", text is not None and
             re.fullmatch(r"[0-9]{3}", text) is not None, repr(text))
    ck.eq("grammar + stop '-': finish_reason", fin, "stop")


def test_concurrent(srv):
    free = {"model": MODEL, "prompt": "The cat", "max_tokens": 48, "temperature": 0, "ignore_eos": True}
    _, alone, _ = completion(srv, free)
    for round_ in range(3):
        out = {}

        def run(key, body):
            out[key] = completion(srv, body)

        ts = [threading.Thread(target=run, args=("free", free)),
              threading.Thread(target=run, args=("json", {"model": MODEL, "prompt": PROMPT, "max_tokens": 64,
                                                          "temperature": 0.8, "seed": 7 + round_,
                                                          "grammar": JSONG}))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        ck.eq("concurrent %d: unconstrained equals its answer alone" % round_, out["free"][1], alone)
        ck.eq("concurrent %d: unconstrained finish_reason" % round_, out["free"][2], "length")
        ck.check("concurrent %d: constrained matches" % round_, out["json"][1] is not None and json_ok(out["json"][1]),
                 repr(out["json"][1]))
        ck.eq("concurrent %d: constrained finish_reason" % round_, out["json"][2], "stop")


def test_speculative(srv):
    # drafts from prompt lookup continue the repeated sentence; "e" is refused,
    # so most drafts are cut by the grammar
    g = r'root ::= [^e\n]{20,40} "."'
    texts = {}
    drafted = {}
    for spec in ("none", "ngram"):
        m0 = ks.metrics_of(srv, model=MODEL)
        r, text, fin = completion(srv, {"model": MODEL, "prompt": REPETITIVE, "max_tokens": 64, "temperature": 0,
                                        "grammar": g, "speculative": spec})
        texts[spec] = text
        m1 = ks.metrics_of(srv, model=MODEL)
        drafted[spec] = (m1["kiln_spec_draft_tokens_total"] - m0["kiln_spec_draft_tokens_total"],
                         m1["kiln_spec_accepted_tokens_total"] - m0["kiln_spec_accepted_tokens_total"])
        ck.check("speculative %s: matches" % spec, text is not None and re.fullmatch(r"[^e\n]{20,40}\.", text)
                 is not None, repr(text))
        ck.eq("speculative %s: finish_reason" % spec, fin, "stop")
    ck.eq("speculative ngram gives the text of none", texts["ngram"], texts["none"])
    ck.eq("speculative none: no drafts", drafted["none"][0], 0)
    ck.check("speculative ngram: drafts were fed, and some refused", drafted["ngram"][0] > drafted["ngram"][1] >= 0,
             drafted["ngram"])
    print("   (ngram drafted %d, accepted %d)" % drafted["ngram"])
    # and one that the drafts can satisfy: drafts are accepted
    g2 = r'root ::= [a-z .]{30,60} "!"'
    t2 = {}
    for spec in ("none", "ngram"):
        m0 = ks.metrics_of(srv, model=MODEL)
        _, t2[spec], _ = completion(srv, {"model": MODEL, "prompt": REPETITIVE, "max_tokens": 80, "temperature": 0,
                                          "grammar": g2, "speculative": spec})
        m1 = ks.metrics_of(srv, model=MODEL)
        drafted[spec] = (m1["kiln_spec_draft_tokens_total"] - m0["kiln_spec_draft_tokens_total"],
                         m1["kiln_spec_accepted_tokens_total"] - m0["kiln_spec_accepted_tokens_total"])
    ck.check("speculative (letters): matches", t2["none"] is not None and
             re.fullmatch(r"[a-z .]{30,60}!", t2["none"]) is not None, repr(t2["none"]))
    ck.eq("speculative (letters): ngram gives the text of none", t2["ngram"], t2["none"])
    ck.check("speculative (letters): drafts were accepted", drafted["ngram"][1] > 0, drafted["ngram"])
    print("   (letters: ngram drafted %d, accepted %d; text %r)" % (drafted["ngram"] + (t2["ngram"],)))


def test_errors(srv):
    for path in ("/v1/completions", "/v1/chat/completions", "/completion"):
        body = {"model": MODEL, "max_tokens": 8, "grammar": 'root ::= "a"\nitem ::= foo'}
        if path.endswith("chat/completions"):
            body["messages"] = [{"role": "user", "content": "hi"}]
        else:
            body["prompt"] = "hi"
        r = srv.post(path, body)
        ck.eq(path + " malformed grammar: status", r.status, 400)
        try:
            err = r.json()["error"]
        except (ValueError, KeyError, TypeError):
            ck.fail(path + " malformed grammar: error body", r)
            continue
        ck.eq(path + " malformed grammar: param", err.get("param"), "grammar")
        ck.check(path + " malformed grammar: message has line:column (2:10)", "2:10" in err.get("message", ""),
                 err.get("message"))
        ck.check(path + " malformed grammar: message names the rule", "foo" in err.get("message", ""),
                 err.get("message"))
        body["grammar"] = 'root ::= "unterminated'
        r = srv.post(path, body)
        ck.eq(path + " unterminated grammar: status", r.status, 400)
        ck.check(path + " unterminated grammar: line:column", re.search(r"\b1:\d+", ks.error_message(r) or "")
                 is not None, ks.error_message(r))
        for bad in (123, ["root ::= \"a\""], {"g": 1}, True):
            body["grammar"] = bad
            r = srv.post(path, body)
            ck.eq("%s grammar %r: status" % (path, bad), r.status, 400)
            try:
                ck.eq("%s grammar %r: param" % (path, bad), r.json()["error"].get("param"), "grammar")
            except (ValueError, KeyError, TypeError, AttributeError):
                ck.fail("%s grammar %r: error body" % (path, bad), r)
    # a grammar whose parse stacks outgrow GRAM_MAX_STACKS on the model's
    # output: the request ends with an error (whole: 500, stream: an error
    # event), the server lives on
    amb = 'root ::= s\ns ::= "a" s "a" | "a" s "a" "a" | "a"'
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 200, "temperature": 0, "grammar": amb}
    r = srv.post("/v1/completions", body)
    ck.eq("ambiguous grammar over the stack bound: status 500", r.status, 500)
    ck.check("ambiguous grammar: the message names the bound", "parse stacks" in (ks.error_message(r) or ""),
             ks.error_message(r))
    body["stream"] = True
    res = srv.sse("/v1/completions", body)
    errs = [c for c in res.chunks if isinstance(c, dict) and "error" in c]
    ck.check("ambiguous grammar streamed: an error event naming the bound",
             len(errs) == 1 and "parse stacks" in errs[0]["error"].get("message", ""), res.chunks[-2:])
    # the server still answers
    r, text, _ = completion(srv, {"model": MODEL, "prompt": PROMPT, "max_tokens": 8, "grammar": YESNO,
                                  "temperature": 0})
    ck.check("after the errors: a grammar request works", r.status == 200 and YESNO_RE.match(text or ""), r)


def test_bpe():
    srv = start(["-m", BFILE, "-t", "1", "-c", "256"])
    check_grammars(srv, BPE, chat=False)
    rc = srv.stop(60)
    ck.exited_clean("BPE server on SIGTERM", srv, rc)


def test_cache():
    srv = start(["-m", MFILE, "-t", "1", "-c", "256"], cache=True)
    base = {"model": MODEL, "prompt": PROMPT, "max_tokens": 64, "temperature": 0}
    got = {}
    for label, g in (("yes|no", YESNO), ("phone", PHONE), ("yes|no again", YESNO), ("phone again", PHONE),
                     ("none", None)):
        body = dict(base)
        if g:
            body["grammar"] = g
        r, text, _ = completion(srv, body)
        got[label] = (r.header("x-cache"), text)
    ck.eq("cache: first yes|no is a miss", got["yes|no"][0], "miss")
    ck.eq("cache: phone after yes|no is a miss (another key)", got["phone"][0], "miss")
    ck.check("cache: phone answer matches its grammar", PHONE_RE.match(got["phone"][1] or "") is not None,
             got["phone"])
    ck.check("cache: yes|no answer matches its grammar", YESNO_RE.match(got["yes|no"][1] or "") is not None,
             got["yes|no"])
    ck.eq("cache: yes|no again is a hit", got["yes|no again"][0], "hit")
    ck.eq("cache: yes|no again has its text", got["yes|no again"][1], got["yes|no"][1])
    ck.eq("cache: phone again is a hit", got["phone again"][0], "hit")
    ck.eq("cache: phone again has its text", got["phone again"][1], got["phone"][1])
    ck.eq("cache: no grammar is a miss", got["none"][0], "miss")
    rc = srv.stop(60)
    ck.exited_clean("cache server on SIGTERM", srv, rc)


def test_run():
    d = tempfile.mkdtemp(prefix="kiln-itest-grammar-")
    for gname, g, ok in GRAMMARS:
        path = os.path.join(d, gname.replace("|", "_") + ".gbnf")
        with open(path, "w") as f:
            f.write(g)
        for args in (["--temp", "0"], ["--temp", "1", "-s", "5"]):
            out = ks.run_kiln(["run", "-m", MFILE, "-p", PROMPT, "-n", "64", "-t", "1", "--grammar", path] + args)
            text = ks.strip_run_newline(out.decode("utf-8", "replace"))
            ck.check("kiln run --grammar %s %s: matches" % (gname, " ".join(args)), ok(text), repr(text))
    bad = os.path.join(d, "bad.gbnf")
    with open(bad, "w") as f:
        f.write('root ::= "a"\nitem ::= foo\n')
    p = subprocess.run([ks.KILN_BIN, "run", "-m", MFILE, "-p", PROMPT, "-n", "8", "--grammar", bad],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    err = p.stderr.decode("utf-8", "replace")
    ck.eq("kiln run malformed grammar: exit 1", p.returncode, 1)
    ck.check("kiln run malformed grammar: names the file and 2:10", "bad.gbnf" in err and "2:10" in err, err)
    p = subprocess.run([ks.KILN_BIN, "run", "--help"], stdout=subprocess.PIPE, timeout=60)
    ck.check("kiln run --help lists --grammar", b"--grammar" in p.stdout, "")


def test_draft_model():
    """Draft-model speculation under a grammar: the draft's tokens are
    checked against the grammar (a refused one ends the draft), and the
    greedy text equals the one without speculation."""
    srv = start(["-m", MFILE, "-t", "1", "-c", "512", "-np", "1", "--spec", "draft",
                 "-md", ks.model_path("stories260K-Q8_0")])
    for g, rx in ((r'root ::= [^e\n]{20,40} "."', r"[^e\n]{20,40}\."), (r'root ::= [a-z .]{30,60} "!"', r"[a-z .]{30,60}!")):
        texts, drafted = {}, {}
        for spec in ("none", "draft"):
            m0 = ks.metrics_of(srv, model=MODEL)
            _, texts[spec], fin = completion(srv, {"model": MODEL, "prompt": REPETITIVE, "max_tokens": 80,
                                                   "temperature": 0, "grammar": g, "speculative": spec})
            m1 = ks.metrics_of(srv, model=MODEL)
            drafted[spec] = (m1["kiln_spec_draft_tokens_total"] - m0["kiln_spec_draft_tokens_total"],
                             m1["kiln_spec_accepted_tokens_total"] - m0["kiln_spec_accepted_tokens_total"])
            ck.check("draft model %s %s: matches" % (g, spec), texts[spec] is not None and
                     re.fullmatch(rx, texts[spec]) is not None, repr(texts[spec]))
            ck.eq("draft model %s %s: finish_reason" % (g, spec), fin, "stop")
        ck.eq("draft model %s: same text as none" % g, texts["draft"], texts["none"])
        ck.check("draft model %s: the draft model drafted" % g, drafted["draft"][0] > 0, drafted)
        print("   (draft model, %s: drafted %d, accepted %d)" % ((g,) + drafted["draft"]))
    rc = srv.stop(60)
    ck.exited_clean("draft-model server on SIGTERM", srv, rc)


def main():
    srv = start(["-m", MFILE, "-t", "1", "-c", "512", "-np", "2", "--spec", "ngram"])
    ck.run(test_unconstrained_differs, srv)
    ck.run(test_grammars, srv)
    ck.run(test_stop_string, srv)
    ck.run(test_concurrent, srv)
    ck.run(test_speculative, srv)
    ck.run(test_errors, srv)
    rc = srv.stop(60)
    ck.exited_clean("server on SIGTERM", srv, rc)
    ck.run(test_draft_model)
    ck.run(test_bpe)
    ck.run(test_cache)
    ck.run(test_run)
    ck.finish(SERVERS)


if __name__ == "__main__":
    main()
