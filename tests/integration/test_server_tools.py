#!/usr/bin/env python3
"""test_server_tools.py — tool calls, JSON formats and reasoning through the
real `kiln serve`, per model family, with random-weight models (their free
output is noise, so every well-formed call comes from the grammar):
 - for each tool-call syntax (hermes: Qwen 2.5's template; llama3: Llama
   3.2's; mistral: Mistral Nemo's; deepseek: DeepSeek R1's; granite:
   Granite 3.3's; harmony: gpt-oss's; generic: a template without tools),
   served with --chat-template-file on a tiny model:
   * tool_choice "required" with two tools: message.tool_calls is not
     empty, every call names a tool and its arguments (a JSON string) parse
     and satisfy the tool's parameters (checked here field by field),
     finish_reason is "tool_calls", and no markup reaches content;
   * the same request streamed: the tool_calls deltas give the same calls
     and the same content;
   * a named tool_choice: every call is that tool;
   * parallel_tool_calls false: exactly one call;
   * a tool round trip (the assistant's tool_calls and a role "tool" message
     sent back) is rendered and answered;
   * Ollama /api/chat with the same tools and the forced grammar off
     (Ollama has no tool_choice) answers 200;
   (KILN_SKIP_LONG=1, the sanitizer phases: hermes, harmony and generic only);
 - JSON formats: response_format json_object and json_schema, Ollama
   format "json" and a schema, llama-server's /completion json_schema and
   `kiln run --json-schema`: every answer that finished parses and
   satisfies its schema; the grammar is in the cache key (the same prompt
   with two schemas gets two answers);
 - reasoning: SmolLM3's template with a grammar that writes
   "<think>...</think>..." splits reasoning_content (OpenAI) / thinking
   (Ollama) from content, streamed and whole; think false renders the
   template's no-thinking prompt;
 - errors: tool_choice without tools, a tool that is not in tools, malformed
   tools, a bad tool_choice, an unknown response_format type, a grammar with
   a JSON format, a bad Ollama format or think value: each a 400 naming the
   field."""

import json
import os
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kiln_server as ks  # noqa: E402

ks.need_env()
ck = ks.Checks()
SERVERS = []
T = ks.shared("chat_templates")

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 12},
        "days": {"type": "integer", "minimum": 1, "maximum": 7}},
        "required": ["city", "days"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "The time in a time zone",
    "parameters": {"type": "object", "properties": {
        "zone": {"type": "string", "enum": ["UTC", "CET", "PST"]}},
        "required": ["zone"], "additionalProperties": False}}}
TOOLS = [WEATHER, TIME]
MARKUP = ["<tool_call>", "</tool_call>", "[TOOL_CALLS]", "<|tool_call|>", "<|channel|>", "<|message|>",
          "<|constrain|>", "tool\u2581call", "<think>", "</think>"]

FAMILIES = [
    # (syntax, model, template file or None for the model's own)
    ("hermes", "tiny-qwen2-Q4_K_M", "Qwen-Qwen2.5-7B-Instruct.jinja"),
    ("llama3", "tiny-llama3-Q8_0", "meta-llama-Llama-3.2-3B-Instruct.jinja"),
    ("mistral", "tiny-llama31-Q8_0", "mistralai-Mistral-Nemo-Instruct-2407.jinja"),
    ("deepseek", "tiny-qwen3-Q8_0", "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja"),
    ("granite", "tiny-qwen2-Q4_K_M", "ibm-granite-granite-3.3-2B-Instruct.jinja"),
    ("harmony", "tiny-gptoss-MXFP4", "openai-gpt-oss-120b.jinja"),
    ("generic", "stories260K", None),
]


def server(model, template=None, extra=()):
    args = ["-m", ks.model_path(model), "-t", "2", "-c", "2048", "--parallel", "2"] + list(extra)
    if template:
        args += ["--chat-template-file", os.path.join(T, template)]
    s = ks.Server(args)
    SERVERS.append(s)
    return s


def check_args(name, tool, args_text):
    """The arguments (a JSON string) against the tool's parameters."""
    try:
        a = json.loads(args_text)
    except ValueError:
        ck.fail(name, "arguments are not JSON: %r" % args_text)
        return
    if tool == "get_weather":
        ok = (isinstance(a, dict) and set(a) == {"city", "days"} and isinstance(a["city"], str) and
              len(a["city"]) <= 12 and isinstance(a["days"], int) and not isinstance(a["days"], bool) and
              1 <= a["days"] <= 7)
    elif tool == "get_time":
        ok = isinstance(a, dict) and set(a) == {"zone"} and a["zone"] in ("UTC", "CET", "PST")
    else:
        ok = False
    ck.check(name, ok, "arguments %r do not satisfy %s's parameters" % (args_text, tool))


def no_markup(name, text):
    bad = [m for m in MARKUP if text and m in text]
    ck.check(name, not bad, "markup %r in content %r" % (bad, (text or "")[:300]))


def calls_of(msg):
    return [(c["function"]["name"], c["function"]["arguments"]) for c in msg.get("tool_calls") or []]


def stream_calls(res):
    """Calls and content from a chat stream's deltas."""
    calls, content = {}, ""
    for ch in res.chunks:
        for c in ch.get("choices", []):
            d = c.get("delta", {})
            content += d.get("content") or ""
            for tc in d.get("tool_calls") or []:
                e = calls.setdefault(tc["index"], {"name": "", "arguments": ""})
                f = tc.get("function", {})
                e["name"] += f.get("name") or ""
                e["arguments"] += f.get("arguments") or ""
    return [(calls[i]["name"], calls[i]["arguments"]) for i in sorted(calls)], content


def finish_of(res):
    for ch in res.chunks:
        for c in ch.get("choices", []):
            if c.get("finish_reason"):
                return c["finish_reason"]
    return None


def family(syntax, model, template):
    s = server(model, template)
    # one call: a random model under a parallel grammar may add calls until
    # max_tokens (finish "length"); the parallel case is checked below
    base = {"messages": [{"role": "user", "content": "What is the weather in Paris for 3 days?"}],
            "tools": TOOLS, "tool_choice": "required", "max_tokens": 200, "temperature": 0,
            "parallel_tool_calls": False}
    r = s.post("/v1/chat/completions", base)
    ck.eq("%s: required: 200" % syntax, r.status, 200)
    if r.status != 200:
        ck.fail("%s: required" % syntax, ks.error_message(r))
        return
    ch = r.json()["choices"][0]
    msg = ch["message"]
    calls = calls_of(msg)
    ck.check("%s: required: one tool call" % syntax, len(calls) == 1, json.dumps(msg)[:600])
    ck.eq("%s: required: finish_reason" % syntax, ch["finish_reason"], "tool_calls")
    for i, (n, a) in enumerate(calls):
        ck.check("%s: call %d names a tool" % (syntax, i), n in ("get_weather", "get_time"), n)
        check_args("%s: call %d arguments" % (syntax, i), n, a)
    ids = [c["id"] for c in msg.get("tool_calls") or []]
    ck.check("%s: call ids are unique" % syntax, len(set(ids)) == len(ids) and all(ids), ids)
    no_markup("%s: required: no markup in content" % syntax, msg.get("content"))
    # streamed: the same calls
    st = s.sse("/v1/chat/completions", dict(base, stream=True))
    scalls, scontent = stream_calls(st)
    ck.eq("%s: streamed calls equal the whole answer's" % syntax, scalls, calls)
    ck.eq("%s: streamed content" % syntax, scontent, msg.get("content") or "")
    ck.eq("%s: streamed finish_reason" % syntax, finish_of(st), "tool_calls")
    ck.check("%s: stream framing" % syntax, not st.framing_errors, st.framing_errors)
    # named
    r = s.post("/v1/chat/completions", dict(base, tool_choice={"type": "function", "function": {"name": "get_time"}}))
    ok = r.status == 200
    ck.check("%s: named: 200" % syntax, ok, ks.error_message(r) if not ok else "")
    if ok:
        nc = calls_of(r.json()["choices"][0]["message"])
        ck.check("%s: named: calls are get_time" % syntax, nc and all(n == "get_time" for n, _ in nc), nc)
        for i, (n, a) in enumerate(nc):
            check_args("%s: named call %d" % (syntax, i), n, a)
    # parallel calls, sampled: every complete call is valid; an answer cut by
    # max_tokens says "length" (its unfinished last call stays text)
    for seed in (7, 8):
        r = s.post("/v1/chat/completions", dict(base, parallel_tool_calls=True, seed=seed, temperature=1.0))
        if r.status != 200:
            ck.fail("%s: parallel seed %d" % (syntax, seed), ks.error_message(r))
            continue
        c = r.json()["choices"][0]
        pc = calls_of(c["message"])
        ck.check("%s: parallel seed %d: calls" % (syntax, seed), len(pc) >= 1 or c["finish_reason"] == "length",
                 json.dumps(c)[:400])
        ck.check("%s: parallel seed %d: finish" % (syntax, seed), c["finish_reason"] in ("tool_calls", "length"),
                 c["finish_reason"])
        for i, (n, a) in enumerate(pc):
            check_args("%s: parallel seed %d call %d" % (syntax, seed, i), n, a)
        if c["finish_reason"] == "tool_calls":
            no_markup("%s: parallel seed %d: no markup" % (syntax, seed), c["message"].get("content"))
    # round trip
    if calls:
        n, a = calls[0]
        conv = base["messages"] + [
            {"role": "assistant", "content": None,
             "tool_calls": [{"id": ids[0], "type": "function", "function": {"name": n, "arguments": a}}]},
            {"role": "tool", "tool_call_id": ids[0], "content": "{\"temperature\": 21}"}]
        r = s.post("/v1/chat/completions", {"messages": conv, "tools": TOOLS, "max_tokens": 8,
                                                 "temperature": 0})
        ck.check("%s: tool round trip: 200" % syntax, r.status == 200, ks.error_message(r))
    # auto and Ollama: free text, the answer is well-formed
    r = s.post("/v1/chat/completions", dict(base, tool_choice="auto", max_tokens=16))
    ck.check("%s: auto: 200" % syntax, r.status == 200, ks.error_message(r))
    if syntax != "generic":
        r = s.post("/api/chat", {"messages": base["messages"], "tools": TOOLS, "stream": False,
                                      "options": {"num_predict": 16, "temperature": 0}})
        ck.check("%s: ollama chat with tools: 200" % syntax, r.status == 200, ks.error_message(r))
    s.stop()


def check_person(name, text):
    try:
        v = json.loads(text)
    except ValueError:
        ck.fail(name, "not JSON: %r" % text[:300])
        return
    ok = (isinstance(v, dict) and isinstance(v.get("name"), str) and len(v["name"]) <= 10 and
          isinstance(v.get("age"), int) and 0 <= v["age"] <= 120 and
          set(v) <= {"name", "age", "tags"} and
          all(isinstance(t, str) for t in v.get("tags", [])) and len(v.get("tags", [])) <= 3)
    ck.check(name, ok, "does not satisfy the schema: %r" % text[:300])


PERSON = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 10}, "age": {"type": "integer", "minimum": 0, "maximum": 120},
    "tags": {"type": "array", "items": {"type": "string", "maxLength": 5}, "maxItems": 3}},
    "required": ["name", "age"], "additionalProperties": False}


def json_formats():
    s = server("tiny-qwen2-Q4_K_M", extra=["--response-cache=true"])
    msgs = [{"role": "user", "content": "Describe a person."}]
    for seed in (1, 2, 3):
        r = s.post("/v1/chat/completions", {"messages": msgs, "max_tokens": 300, "temperature": 1.0, "seed": seed,
                                                 "response_format": {"type": "json_schema", "json_schema": {
                                                     "name": "person", "strict": True, "schema": PERSON}}})
        ck.eq("json_schema seed %d: 200" % seed, r.status, 200)
        if r.status == 200:
            c = r.json()["choices"][0]
            if c["finish_reason"] == "stop":
                check_person("json_schema seed %d" % seed, c["message"]["content"])
        r = s.post("/v1/chat/completions", {"messages": msgs, "max_tokens": 300, "temperature": 1.0, "seed": seed,
                                                 "response_format": {"type": "json_object"}})
        if r.status == 200 and r.json()["choices"][0]["finish_reason"] == "stop":
            try:
                ok = isinstance(json.loads(r.json()["choices"][0]["message"]["content"]), dict)
            except ValueError:
                ok = False
            ck.check("json_object seed %d is an object" % seed, ok, r.json()["choices"][0]["message"]["content"][:300])
        else:
            ck.check("json_object seed %d: 200" % seed, r.status == 200, ks.error_message(r))
    # streamed
    st = s.sse("/v1/chat/completions", {"messages": msgs, "max_tokens": 300, "temperature": 0, "stream": True,
                                        "response_format": {"type": "json_schema", "json_schema": {"name": "p",
                                                                                                   "schema": PERSON}}})
    text = "".join((c["choices"][0]["delta"].get("content") or "") for c in st.chunks if c.get("choices"))
    if finish_of(st) == "stop":
        check_person("json_schema streamed", text)
    # the cache key covers the grammar: the same request under two schemas
    # gets two answers, and each repeat is a hit with its own text
    other = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
             "additionalProperties": False}
    texts = {}
    for rnd in (1, 2):
        for name, sc in (("person", PERSON), ("ok", other)):
            a = s.post("/v1/chat/completions", {"messages": msgs, "max_tokens": 60, "temperature": 0,
                                                "response_format": {"type": "json_schema",
                                                                    "json_schema": {"name": name, "schema": sc}}})
            if a.status != 200:
                ck.fail("cache %s %d" % (name, rnd), ks.error_message(a))
                continue
            t = a.json()["choices"][0]["message"]["content"]
            ck.eq("cache %s round %d: X-Cache" % (name, rnd), a.header("X-Cache"), "miss" if rnd == 1 else "hit")
            if rnd == 1:
                texts[name] = t
            else:
                ck.eq("cache %s: the hit is its own answer" % name, t, texts.get(name))
    ck.check("the ok schema's answer is its own", texts.get("ok") in ('{"ok":true}', '{"ok":false}', '{"ok": true}',
                                                                     '{"ok": false}'), texts)
    # Ollama format
    for fmt in (PERSON, "json"):
        r = s.post("/api/chat", {"messages": msgs, "stream": False, "format": fmt,
                                      "options": {"num_predict": 300, "temperature": 0}})
        ck.eq("ollama format %s: 200" % ("schema" if fmt != "json" else "json"), r.status, 200)
        if r.status == 200 and r.json().get("done_reason") == "stop":
            c = r.json()["message"]["content"]
            if fmt == "json":
                try:
                    ck.check("ollama format json is an object", isinstance(json.loads(c), dict), c[:300])
                except ValueError:
                    ck.fail("ollama format json", c[:300])
            else:
                check_person("ollama format schema", c)
    r = s.post("/api/generate", {"prompt": "A person:", "stream": False, "format": PERSON,
                                      "options": {"num_predict": 300, "temperature": 0}})
    if r.status == 200 and r.json().get("done_reason") == "stop":
        check_person("ollama generate format", r.json()["response"])
    else:
        ck.check("ollama generate format: 200", r.status == 200, ks.error_message(r))
    # llama-server's /completion json_schema
    r = s.post("/completion", {"prompt": "A person:", "n_predict": 300, "temperature": 0, "json_schema": PERSON})
    if r.status == 200:
        check_person("/completion json_schema", r.json()["content"])
    else:
        ck.fail("/completion json_schema", ks.error_message(r))
    s.stop()
    # kiln run --json-schema
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(PERSON, f)
        sf = f.name
    try:
        p = subprocess.run([ks.KILN_BIN, "run", "-m", ks.model_path("tiny-qwen2-Q4_K_M"), "-p", "A person:", "-n", "300",
                            "--temp", "0", "-t", "2", "--json-schema", sf], capture_output=True, text=True, timeout=120)
        ck.eq("kiln run --json-schema exits 0", p.returncode, 0)
        check_person("kiln run --json-schema", p.stdout.rstrip("\n"))
        with open(sf, "w") as f:
            f.write('{"type": "object", "not": {}}')
        p = subprocess.run([ks.KILN_BIN, "run", "-m", ks.model_path("tiny-qwen2-Q4_K_M"), "-p", "x", "-n", "4",
                            "--json-schema", sf], capture_output=True, text=True, timeout=120)
        ck.check("kiln run --json-schema with an unsupported keyword fails naming it",
                 p.returncode != 0 and "not" in p.stderr, p.stderr)
    finally:
        os.unlink(sf)


def reasoning():
    s = server("tiny-qwen3-Q8_0", "HuggingFaceTB-SmolLM3-3B.jinja")
    g = 'root ::= "<think>" [a-z ]{4,12} "</think>" [a-z ]{3,10}'
    body = {"messages": [{"role": "user", "content": "Think first."}], "grammar": g, "max_tokens": 60,
            "temperature": 0}
    r = s.post("/v1/chat/completions", body)
    ck.eq("reasoning: 200", r.status, 200)
    if r.status == 200:
        m = r.json()["choices"][0]["message"]
        rc, c = m.get("reasoning_content") or "", m.get("content") or ""
        ck.check("reasoning_content holds the think text", 4 <= len(rc) <= 12 and "<think>" not in rc, m)
        ck.check("content holds the rest", 3 <= len(c) <= 10 and "think" not in c, m)
        st = s.sse("/v1/chat/completions", dict(body, stream=True))
        src = "".join((ch["choices"][0]["delta"].get("reasoning_content") or "") for ch in st.chunks if ch.get("choices"))
        sc = "".join((ch["choices"][0]["delta"].get("content") or "") for ch in st.chunks if ch.get("choices"))
        ck.eq("streamed reasoning_content", src, rc)
        ck.eq("streamed content", sc, c)
        o = s.post("/api/chat", {"messages": body["messages"], "stream": False,
                                      "options": {"num_predict": 60, "temperature": 0}, "think": True})
        ck.eq("ollama think: 200", o.status, 200)
        nd = s.ndjson("/api/chat", {"messages": body["messages"], "stream": True,
                                    "options": {"num_predict": 8, "temperature": 0}, "think": False})
        ck.eq("ollama think false streams", nd.status, 200)
    s.stop()


def open_think():
    """A template whose generation prompt opens <think> (DeepSeek R1's with
    enable_thinking): a JSON format or a forced call closes the block first,
    and the answer's content (or calls) come out clean."""
    s = server("tiny-qwen3-Q8_0", "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja")
    msgs = [{"role": "user", "content": "A person, please."}]
    kw = {"enable_thinking": True}
    r = s.post("/v1/chat/completions", {"messages": msgs, "max_tokens": 300, "temperature": 0,
                                        "chat_template_kwargs": kw,
                                        "response_format": {"type": "json_schema",
                                                            "json_schema": {"name": "p", "schema": PERSON}}})
    ck.eq("open think + json_schema: 200", r.status, 200)
    if r.status == 200:
        c = r.json()["choices"][0]
        if c["finish_reason"] == "stop":
            check_person("open think + json_schema: content", c["message"]["content"])
        ck.check("open think + json_schema: no reasoning text", not c["message"].get("reasoning_content"),
                 c["message"])
    r = s.post("/v1/chat/completions", {"messages": msgs, "max_tokens": 200, "temperature": 0,
                                        "chat_template_kwargs": kw, "tools": TOOLS, "tool_choice": "required",
                                        "parallel_tool_calls": False})
    ck.eq("open think + forced call: 200", r.status, 200)
    if r.status == 200:
        m = r.json()["choices"][0]["message"]
        calls = calls_of(m)
        ck.eq("open think + forced call: one call", len(calls), 1)
        for n, a in calls:
            check_args("open think + forced call", n, a)
        no_markup("open think + forced call: content", m.get("content"))
    s.stop()


def errors():
    s = server("tiny-qwen2-Q4_K_M", "Qwen-Qwen2.5-7B-Instruct.jinja")
    msgs = [{"role": "user", "content": "hi"}]

    def bad(name, path, body, param):
        r = s.post(path, body)
        ok = r.status == 400
        e = r.json().get("error") if ok else None
        got = e.get("param") if isinstance(e, dict) else None
        ck.check(name, ok and (param is None or got == param), "status %d param %r: %s" % (r.status, got, r.text()[:300]))

    bad("tool_choice required without tools", "/v1/chat/completions",
        {"messages": msgs, "tool_choice": "required"}, "tool_choice")
    bad("tool_choice names a tool not in tools", "/v1/chat/completions",
        {"messages": msgs, "tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
        "tool_choice")
    bad("a tool without a name", "/v1/chat/completions",
        {"messages": msgs, "tools": [{"type": "function", "function": {"parameters": {}}}]}, "tools[0]")
    bad("tool_choice not a known value", "/v1/chat/completions",
        {"messages": msgs, "tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice")
    bad("response_format type unknown", "/v1/chat/completions",
        {"messages": msgs, "response_format": {"type": "xml"}}, "response_format.type")
    bad("response_format schema not an object", "/v1/chat/completions",
        {"messages": msgs, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": 3}}},
        "response_format.json_schema.schema")
    bad("response_format with an unsupported keyword", "/v1/chat/completions",
        {"messages": msgs, "response_format": {"type": "json_schema", "json_schema": {
            "name": "x", "schema": {"type": "object", "properties": {"a": {"not": {"type": "string"}}}}}}},
        "response_format.json_schema.schema")
    bad("grammar and response_format together", "/v1/chat/completions",
        {"messages": msgs, "grammar": 'root ::= "a"', "response_format": {"type": "json_object"}}, "grammar")
    bad("ollama format not json", "/api/chat", {"messages": msgs, "format": "yaml", "stream": False}, None)
    bad("ollama think not a boolean", "/api/chat", {"messages": msgs, "think": "high", "stream": False}, None)
    r = s.post("/v1/chat/completions", {"messages": msgs, "response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "object", "properties": {"a": {"not": {"type": "string"}}}}}}})
    ck.check("the unsupported keyword and its pointer are named", "'not'" in ks.error_message(r) and
             "/properties/a" in ks.error_message(r), ks.error_message(r))
    s.stop()


# The sanitizer phases (KILN_SKIP_LONG=1) run three syntaxes of different
# kinds (tagged JSON, harmony's channels, the generic format); the Release
# phase runs all seven.
SHORT = bool(os.environ.get("KILN_SKIP_LONG"))


def main():
    ck.run(errors)
    for fam in FAMILIES:
        if SHORT and fam[0] not in ("hermes", "harmony", "generic"):
            continue
        ck.run(family, *fam)
    ck.run(json_formats)
    ck.run(reasoning)
    ck.run(open_think)
    ck.finish(SERVERS)


if __name__ == "__main__":
    main()
