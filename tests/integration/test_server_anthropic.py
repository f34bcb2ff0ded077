#!/usr/bin/env python3
"""test_server_anthropic.py — the Anthropic Messages routes (POST /v1/messages,
POST /v1/messages/count_tokens) through the real `kiln serve`:
 - free text (stories260K, greedy): the text, stop_reason and usage of a
   /v1/messages answer are what /v1/chat/completions gives for the same
   conversation (system as a string or text blocks, user content as a string
   or text blocks, an assistant turn), max_tokens -> "max_tokens";
 - the stream: named SSE events in Anthropic's order (message_start, ping,
   content_block_start / delta / stop per block, message_delta,
   message_stop), each event's name equal to its data's type, block indices
   in order, text deltas concatenating to the unstreamed text;
 - stop_sequences: a word of the greedy text ends the answer before it, with
   stop_reason "stop_sequence" and stop_sequence set (whole and streamed),
   as "stop" does on /v1/chat/completions;
 - tools (tiny-qwen2 served with Qwen2.5's chat template, hermes tool calls):
   tool_choice any and tool force a tool_use block (stop_reason "tool_use",
   id toolu_..., the input valid against the input_schema: ajv through
   node), streamed as content_block_start + input_json_delta with the same
   input; a conversation with tool_use and tool_result blocks renders as its
   OpenAI twin does (same input tokens, same greedy text);
 - thinking (tiny-qwen2 with the built-in qwen3 template, the answer forced by
   a grammar): a thinking block before the text, as reasoning_content and
   content on /v1/chat/completions, whole and streamed (thinking_delta);
   thinking disabled renders enable_thinking=false;
 - count_tokens equals usage.input_tokens of the same request, with and
   without tools;
 - errors, each in Anthropic's shape {"type": "error", "error": {"type",
   "message"}} with the right status: missing max_tokens, a bad role, an
   image block, an unknown tool_choice name, tool_choice without tools, a
   server tool, an unsupported field, malformed JSON, unknown model (404),
   x-api-key missing or wrong (401) and right (200), Bearer still accepted;
 - the official @anthropic-ai/sdk (tests/e2e/sdk/anthropic.mjs).
"""

import json
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kiln_server as ks  # noqa: E402

ks.need_env()
ck = ks.Checks()
KEY = "sk-kiln-anthropic-test"
TEXT = "stories260K"
TFILE = ks.model_path(TEXT)
TOOL = "tiny-qwen2-Q4_K_M"
QFILE = ks.model_path(TOOL)
QWEN_TEMPLATE = ks.shared("chat_templates", "Qwen-Qwen2.5-7B-Instruct.jinja")
AUTH = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
SERVERS = []
SYSTEM = "You are a storyteller."
PROMPT = "Once upon a time"

WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"],
    },
}
TIME = {"name": "get_time", "description": "The time in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def start(args):
    srv = ks.Server(list(args))
    SERVERS.append(srv)
    return srv


def messages(srv, body, headers=AUTH):
    return srv.post("/v1/messages", body, headers=headers, timeout=120)


def chat(srv, body):
    r = srv.post("/v1/chat/completions", body, headers={"Authorization": "Bearer " + KEY}, timeout=120)
    if r.status != 200:
        raise ks.ServerError("chat: %r" % r)
    return r.json()


def events(srv, body, headers=AUTH):
    """POSTs a streamed request; returns (status, [(event, data)] or the
    error body, framing errors, content type) of its named SSE events."""
    st = srv.open_stream("/v1/messages", body, headers=headers)
    out, errs = [], []
    try:
        if st.status != 200:
            return st.status, st.read_all(), errs, st.header("content-type")
        for name, data in st.sse_named_events():
            if name is None:
                errs.append("an event without a name: %r" % data)
                continue
            try:
                out.append((name, json.loads(data)))
            except ValueError:
                errs.append("data is not JSON: %r" % data)
        return st.status, out, errs + st.framing_errors, st.header("content-type")
    finally:
        st.close()


def text_of(msg):
    return "".join(b["text"] for b in msg["content"] if b["type"] == "text")


def check_stream_shape(name, evs):
    """The event grammar: message_start ping (block_start delta* block_stop)*
    message_delta message_stop; names equal data types; indices in order.
    Returns (blocks as rebuilt from the deltas, message_start's message,
    message_delta)."""
    seq = [e for e, _ in evs]
    ck.check(name + ": names equal data types", all(e == d.get("type") for e, d in evs), seq)
    ck.check(name + ": starts message_start, ping", seq[:2] == ["message_start", "ping"], seq[:4])
    ck.check(name + ": ends message_delta, message_stop", seq[-2:] == ["message_delta", "message_stop"], seq[-4:])
    blocks, cur, order_ok = [], None, True
    for e, d in evs[2:-2]:
        if e == "content_block_start":
            order_ok &= cur is None and d.get("index") == len(blocks)
            cur = dict(d["content_block"])
            cur["_json"] = ""
            blocks.append(cur)
        elif e == "content_block_delta":
            order_ok &= cur is not None and d.get("index") == len(blocks) - 1
            dl = d["delta"]
            if dl["type"] == "text_delta":
                order_ok &= cur["type"] == "text"
                cur["text"] += dl["text"]
            elif dl["type"] == "thinking_delta":
                order_ok &= cur["type"] == "thinking"
                cur["thinking"] += dl["thinking"]
            elif dl["type"] == "input_json_delta":
                order_ok &= cur["type"] == "tool_use"
                cur["_json"] += dl["partial_json"]
            else:
                order_ok = False
        elif e == "content_block_stop":
            order_ok &= cur is not None and d.get("index") == len(blocks) - 1
            cur = None
        else:
            order_ok = False
    ck.check(name + ": blocks start, take deltas and stop in order", order_ok and cur is None, seq)
    for b in blocks:
        if b["type"] == "tool_use":
            b["input"] = json.loads(b["_json"]) if b["_json"] else b["input"]
        del b["_json"]
    start_msg = evs[0][1].get("message", {})
    ck.check(name + ": message_start holds an empty message",
             start_msg.get("type") == "message" and start_msg.get("role") == "assistant" and
             start_msg.get("content") == [] and start_msg.get("id", "").startswith("msg_") and
             start_msg.get("stop_reason") is None, start_msg)
    return blocks, start_msg, evs[-2][1]


def check_error(name, r, status, etype, needle=None):
    ck.eq(name + ": status", r.status, status)
    try:
        j = r.json()
    except ValueError:
        return ck.fail(name + ": JSON body", r.text())
    ok = (sorted(j) == ["error", "type"] and j["type"] == "error" and isinstance(j["error"], dict) and
          j["error"].get("type") == etype and isinstance(j["error"].get("message"), str))
    ck.check(name + ": Anthropic error shape, type " + etype, ok, j)
    if needle:
        ck.check(name + ": message names %r" % needle, needle in j.get("error", {}).get("message", ""), j)


# ---------------------------------------------------------------- free text


def test_text_equals_chat(srv):
    convs = [
        ("string system and content", {"system": SYSTEM, "messages": [{"role": "user", "content": PROMPT}]},
         [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]),
        ("blocks", {"system": [{"type": "text", "text": "You are a "}, {"type": "text", "text": "storyteller."}],
                    "messages": [{"role": "user", "content": [{"type": "text", "text": "Once upon "},
                                                              {"type": "text", "text": "a time"}]}]},
         [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]),
        ("multi-turn", {"messages": [{"role": "user", "content": "Tell me a story."},
                                     {"role": "assistant", "content": [{"type": "text", "text": "Once upon a time"}]},
                                     {"role": "user", "content": "Go on."}]},
         [{"role": "user", "content": "Tell me a story."}, {"role": "assistant", "content": "Once upon a time"},
          {"role": "user", "content": "Go on."}]),
    ]
    for name, anth, oai in convs:
        for n in (24, 200):
            body = dict(anth, model=TEXT, max_tokens=n, temperature=0)
            r = messages(srv, body)
            if not ck.eq("%s n=%d: status" % (name, n), r.status, 200):
                print("   " + ks._short(r.text()))
                continue
            m = r.json()
            c = chat(srv, {"model": TEXT, "max_tokens": n, "temperature": 0, "messages": oai})
            want = c["choices"][0]["message"]["content"]
            fin = c["choices"][0]["finish_reason"]
            ck.eq("%s n=%d: text equals /v1/chat/completions" % (name, n), text_of(m), want)
            ck.eq("%s n=%d: stop_reason" % (name, n), m["stop_reason"],
                  {"length": "max_tokens", "stop": "end_turn"}[fin])
            ck.eq("%s n=%d: stop_sequence null" % (name, n), m["stop_sequence"], None)
            ck.eq("%s n=%d: usage" % (name, n), m["usage"],
                  {"input_tokens": c["usage"]["prompt_tokens"], "output_tokens": c["usage"]["completion_tokens"]})
            ck.check("%s n=%d: message fields" % (name, n),
                     m["type"] == "message" and m["role"] == "assistant" and m["id"].startswith("msg_") and
                     m["model"] and [b["type"] for b in m["content"]] == (["text"] if want else []), m)
    # one of the answers ran into max_tokens and one did not (else the mapping is untested)
    short = messages(srv, {"model": TEXT, "max_tokens": 4, "temperature": 0, "messages": [
        {"role": "user", "content": PROMPT}]}).json()
    ck.eq("max_tokens 4: stop_reason max_tokens", short["stop_reason"], "max_tokens")
    ck.eq("max_tokens 4: output_tokens", short["usage"]["output_tokens"], 4)


def test_stream(srv):
    for n in (24, 200):
        body = {"model": TEXT, "max_tokens": n, "temperature": 0, "system": SYSTEM,
                "messages": [{"role": "user", "content": PROMPT}]}
        whole = messages(srv, body).json()
        st, evs, errs, ctype = events(srv, dict(body, stream=True))
        name = "stream n=%d" % n
        if not ck.eq(name + ": status", st, 200):
            print("   " + ks._short(evs))
            continue
        ck.check(name + ": text/event-stream", (ctype or "").startswith("text/event-stream"), ctype)
        ck.eq(name + ": framing", errs, [])
        blocks, start_msg, delta = check_stream_shape(name, evs)
        ck.eq(name + ": text deltas concatenate to the whole answer", "".join(
            b.get("text", "") for b in blocks), text_of(whole))
        ck.eq(name + ": blocks", [b["type"] for b in blocks], [b["type"] for b in whole["content"]])
        ck.eq(name + ": message_start usage.input_tokens", start_msg.get("usage", {}).get("input_tokens"),
              whole["usage"]["input_tokens"])
        ck.eq(name + ": message_delta", (delta["delta"], delta["usage"]["output_tokens"]),
              ({"stop_reason": whole["stop_reason"], "stop_sequence": None}, whole["usage"]["output_tokens"]))


def test_stop_sequences(srv):
    base = {"model": TEXT, "max_tokens": 48, "temperature": 0, "messages": [{"role": "user", "content": PROMPT}]}
    free = text_of(messages(srv, base).json())
    words = [w for w in free.split() if w.isalpha() and len(w) >= 3]
    if not ck.check("the free text has a word to stop at", len(words) >= 2, free):
        return
    stop = words[1]
    r = messages(srv, dict(base, stop_sequences=["zzzq", stop]))
    m = r.json()
    c = chat(srv, {"model": TEXT, "max_tokens": 48, "temperature": 0, "stop": ["zzzq", stop],
                   "messages": base["messages"]})
    ck.eq("stop_sequences: text as chat's stop", text_of(m), c["choices"][0]["message"]["content"])
    ck.eq("stop_sequences: the text before the stop", text_of(m), free[:free.index(stop)])
    ck.eq("stop_sequences: stop_reason", m["stop_reason"], "stop_sequence")
    ck.eq("stop_sequences: stop_sequence", m["stop_sequence"], stop)
    st, evs, _, _ = events(srv, dict(base, stop_sequences=["zzzq", stop], stream=True))
    if ck.eq("stop_sequences stream: status", st, 200):
        blocks, _, delta = check_stream_shape("stop_sequences stream", evs)
        ck.eq("stop_sequences stream: text", "".join(b.get("text", "") for b in blocks), text_of(m))
        ck.eq("stop_sequences stream: message_delta", delta["delta"],
              {"stop_reason": "stop_sequence", "stop_sequence": stop})


def test_count_tokens_text(srv):
    body = {"model": TEXT, "system": SYSTEM, "messages": [{"role": "user", "content": PROMPT}]}
    r = srv.post("/v1/messages/count_tokens", body, headers=AUTH)
    if not ck.eq("count_tokens: status", r.status, 200):
        print("   " + ks._short(r.text()))
        return
    m = messages(srv, dict(body, max_tokens=4, temperature=0)).json()
    ck.eq("count_tokens: {input_tokens} equal to usage.input_tokens", r.json(),
          {"input_tokens": m["usage"]["input_tokens"]})


def test_errors(srv):
    ok = {"model": TEXT, "max_tokens": 8, "messages": [{"role": "user", "content": PROMPT}]}
    check_error("missing max_tokens", messages(srv, {"model": TEXT, "messages": ok["messages"]}), 400,
                "invalid_request_error", "max_tokens")
    check_error("max_tokens 0", messages(srv, dict(ok, max_tokens=0)), 400, "invalid_request_error", "max_tokens")
    check_error("missing model", messages(srv, {"max_tokens": 8, "messages": ok["messages"]}), 400,
                "invalid_request_error", "model")
    check_error("bad role", messages(srv, dict(ok, messages=[{"role": "tool", "content": "x"}])), 400,
                "invalid_request_error", "messages[0].role")
    img = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
    check_error("image block", messages(srv, dict(ok, messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is this?"}, img]}])), 400, "invalid_request_error", "messages[0].content[1]")
    check_error("image block names its type", messages(srv, dict(ok, messages=[{"role": "user", "content": [img]}])),
                400, "invalid_request_error", "image")
    check_error("tool_use in a user message", messages(srv, dict(ok, messages=[{"role": "user", "content": [
        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]}])), 400, "invalid_request_error",
        "messages[0].content[0]")
    check_error("unknown tool_choice name", messages(srv, dict(ok, tools=[WEATHER],
                                                                 tool_choice={"type": "tool", "name": "nope"})),
                400, "invalid_request_error", "nope")
    check_error("tool_choice any without tools", messages(srv, dict(ok, tool_choice={"type": "any"})), 400,
                "invalid_request_error", "tool_choice")
    check_error("bad tool_choice type", messages(srv, dict(ok, tools=[WEATHER], tool_choice={"type": "maybe"})), 400,
                "invalid_request_error", "tool_choice.type")
    check_error("server tool", messages(srv, dict(ok, tools=[{"type": "web_search_20250305", "name": "web_search"}])),
                400, "invalid_request_error", "tools[0].type")
    check_error("tool without input_schema", messages(srv, dict(ok, tools=[{"name": "f"}])), 400,
                "invalid_request_error", "tools[0].input_schema")
    check_error("mcp_servers", messages(srv, dict(ok, mcp_servers=[{"type": "url", "url": "http://x", "name": "x"}])),
                400, "invalid_request_error", "mcp_servers")
    check_error("output_config.effort", messages(srv, dict(ok, output_config={"effort": "high"})), 400,
                "invalid_request_error", "effort")
    check_error("bad thinking type", messages(srv, dict(ok, thinking={"type": "sometimes"})), 400,
                "invalid_request_error", "thinking.type")
    check_error("stop_sequences not strings", messages(srv, dict(ok, stop_sequences=[1])), 400,
                "invalid_request_error", "stop_sequences")
    check_error("malformed JSON", srv.post("/v1/messages", raw=b'{"model": ', headers=AUTH), 400,
                "invalid_request_error")
    check_error("unknown model", messages(srv, dict(ok, model="no-such-model")), 404, "not_found_error")
    check_error("count_tokens without messages", srv.post("/v1/messages/count_tokens", {"model": TEXT},
                                                          headers=AUTH), 400, "invalid_request_error", "messages")
    check_error("count_tokens unknown model", srv.post("/v1/messages/count_tokens", dict(ok, model="no-such-model"),
                                                       headers=AUTH), 404, "not_found_error")
    # auth: x-api-key as well as Authorization: Bearer
    check_error("no key", messages(srv, ok, headers={"anthropic-version": "2023-06-01"}), 401,
                "authentication_error", "x-api-key")
    check_error("wrong x-api-key", messages(srv, ok, headers={"x-api-key": KEY + "x"}), 401, "authentication_error")
    check_error("x-api-key prefix of the key", messages(srv, ok, headers={"x-api-key": KEY[:-1]}), 401,
                "authentication_error")
    check_error("count_tokens wrong key", srv.post("/v1/messages/count_tokens", ok, headers={"x-api-key": "no"}),
                401, "authentication_error")
    ck.eq("x-api-key: 200", messages(srv, ok).status, 200)
    ck.eq("Authorization: Bearer: 200", messages(srv, ok, headers={"Authorization": "Bearer " + KEY}).status, 200)
    ck.eq("x-api-key on an OpenAI route: 200", srv.post("/v1/chat/completions", ok, headers=AUTH).status, 200)
    check_error("GET /v1/messages", srv.get("/v1/messages", headers=AUTH), 405, "invalid_request_error")
    # accepted and without effect: metadata, service_tier, cache_control
    plain = messages(srv, dict(ok, temperature=0)).json()
    extra = messages(srv, dict(ok, temperature=0, metadata={"user_id": "u1"}, service_tier="auto",
                               messages=[{"role": "user", "content": [
                                   {"type": "text", "text": PROMPT, "cache_control": {"type": "ephemeral"}}]}])).json()
    ck.eq("metadata, service_tier, cache_control change nothing", text_of(extra), text_of(plain))


# ---------------------------------------------------------------- tools


def ajv_valid(pairs):
    """[(valid, errors)] of each (schema, value) with ajv (node)."""
    p = ks.run_node("anthropic_ajv.mjs", [json.dumps(pairs)])
    try:
        return json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise ks.ServerError("anthropic_ajv.mjs: %s %s" % (p.stdout[-500:], p.stderr[-1500:]))


def test_tools(srv):
    q = [{"role": "user", "content": "What is the weather in Paris?"}]
    # one call each: under a parallel grammar a random model may add calls
    # until max_tokens
    for how, tc, want in (("any", {"type": "any", "disable_parallel_tool_use": True}, None),
                          ("tool get_time", {"type": "tool", "name": "get_time"}, "get_time")):
        body = {"model": TOOL, "max_tokens": 200, "temperature": 0, "tools": [WEATHER, TIME], "tool_choice": tc,
                "messages": q}
        r = messages(srv, body)
        if not ck.eq("tool_choice %s: status" % how, r.status, 200):
            print("   " + ks._short(r.text()))
            continue
        m = r.json()
        uses = [b for b in m["content"] if b["type"] == "tool_use"]
        ck.eq("tool_choice %s: stop_reason" % how, m["stop_reason"], "tool_use")
        if not ck.check("tool_choice %s: tool_use blocks" % how, len(uses) >= 1, m["content"]):
            continue
        for u in uses:
            ck.check("tool_choice %s: id toolu_, known name" % how, u["id"].startswith("toolu_") and
                     u["name"] in ("get_weather", "get_time") and (want is None or u["name"] == want), u)
        pairs = [[(WEATHER if u["name"] == "get_weather" else TIME)["input_schema"], u["input"]] for u in uses]
        for (schema, value), (valid, errors) in zip(pairs, ajv_valid(pairs)):
            ck.check("tool_choice %s: input valid against input_schema (ajv)" % how, valid,
                     "%s: %s" % (json.dumps(value), json.dumps(errors)))
        ck.eq("tool_choice %s: distinct ids" % how, len({u["id"] for u in uses}), len(uses))
        st, evs, errs, _ = events(srv, dict(body, stream=True))
        if ck.eq("tool_choice %s stream: status" % how, st, 200):
            ck.eq("tool_choice %s stream: framing" % how, errs, [])
            blocks, _, delta = check_stream_shape("tool_choice %s stream" % how, evs)
            ck.eq("tool_choice %s stream: the same blocks" % how,
                  [(b["type"], b.get("name"), b.get("input"), b.get("text")) for b in blocks],
                  [(b["type"], b.get("name"), b.get("input"), b.get("text")) for b in m["content"]])
            ck.check("tool_choice %s stream: tool_use starts with an empty input" % how,
                     all(d["content_block"]["input"] == {} for e, d in evs if e == "content_block_start" and
                         d["content_block"]["type"] == "tool_use"), evs)
            ck.eq("tool_choice %s stream: stop_reason" % how, delta["delta"]["stop_reason"], "tool_use")
        c = srv.post("/v1/messages/count_tokens", {"model": TOOL, "tools": [WEATHER, TIME], "messages": q},
                     headers=AUTH)
        ck.eq("tool_choice %s: count_tokens equals usage.input_tokens" % how,
              c.json() if c.status == 200 else c.text(), {"input_tokens": m["usage"]["input_tokens"]})
    bare = srv.post("/v1/messages/count_tokens", {"model": TOOL, "messages": q}, headers=AUTH).json()
    tools = srv.post("/v1/messages/count_tokens", {"model": TOOL, "messages": q, "tools": [WEATHER]},
                     headers=AUTH).json()
    ck.check("count_tokens: tools add tokens", 0 < bare["input_tokens"] < tools["input_tokens"], (bare, tools))


# A grammar makes the random model write two hermes tool calls after some text.
CALLS_GRAMMAR = (r'root ::= "Checking." "\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": '
                 r'{\"city\": \"Paris\", \"unit\": \"celsius\"}}\n</tool_call>\n<tool_call>\n'
                 r'{\"name\": \"get_time\", \"arguments\": {\"city\": \"Rome\"}}\n</tool_call>"')


def test_tool_calls_parsed(srv):
    """tool_choice auto: calls the model wrote (forced by a grammar here)
    become tool_use blocks, as /v1/chat/completions makes them tool_calls."""
    q = [{"role": "user", "content": "Weather in Paris, time in Rome?"}]
    body = {"model": TOOL, "max_tokens": 200, "temperature": 0, "tools": [WEATHER, TIME], "grammar": CALLS_GRAMMAR,
            "messages": q}
    r = messages(srv, body)
    if not ck.eq("parsed calls: status", r.status, 200):
        print("   " + ks._short(r.text()))
        return
    m = r.json()
    oai_tools = [{"type": "function", "function": {"name": t["name"], "description": t["description"],
                                                   "parameters": t["input_schema"]}} for t in (WEATHER, TIME)]
    c = chat(srv, {"model": TOOL, "max_tokens": 200, "temperature": 0, "tools": oai_tools, "grammar": CALLS_GRAMMAR,
                   "messages": q})["choices"][0]
    want = [("get_weather", {"city": "Paris", "unit": "celsius"}), ("get_time", {"city": "Rome"})]
    uses = [b for b in m["content"] if b["type"] == "tool_use"]
    ck.eq("parsed calls: tool_use blocks", [(u["name"], u["input"]) for u in uses], want)
    ck.eq("parsed calls: as /v1/chat/completions's tool_calls", [(u["name"], u["input"]) for u in uses],
          [(t["function"]["name"], json.loads(t["function"]["arguments"])) for t in c["message"].get("tool_calls") or []])
    ck.eq("parsed calls: text as chat's content", text_of(m), c["message"]["content"] or "")
    ck.check("parsed calls: text first, then the calls", [b["type"] for b in m["content"]] ==
             (["text"] if text_of(m) else []) + ["tool_use", "tool_use"], m["content"])
    ck.check("parsed calls: ids toolu_, distinct", all(u["id"].startswith("toolu_") for u in uses) and
             len({u["id"] for u in uses}) == len(uses), uses)
    ck.eq("parsed calls: stop_reason", m["stop_reason"], "tool_use")
    st, evs, errs, _ = events(srv, dict(body, stream=True))
    if ck.eq("parsed calls stream: status", st, 200):
        ck.eq("parsed calls stream: framing", errs, [])
        blocks, _, delta = check_stream_shape("parsed calls stream", evs)
        ck.eq("parsed calls stream: the same blocks",
              [(b["type"], b.get("name"), b.get("input"), b.get("text")) for b in blocks],
              [(b["type"], b.get("name"), b.get("input"), b.get("text")) for b in m["content"]])
        ck.eq("parsed calls stream: stop_reason", delta["delta"]["stop_reason"], "tool_use")
    # tool_choice none: the markup is text
    r = messages(srv, dict(body, tool_choice={"type": "none"}))
    if ck.eq("tool_choice none: status", r.status, 200):
        m = r.json()
        ck.check("tool_choice none: no tool_use, the markup stays text", [b["type"] for b in m["content"]] == ["text"]
                 and "<tool_call>" in text_of(m) and m["stop_reason"] == "end_turn", m)


def test_tool_conversation(srv):
    """tool_use and tool_result blocks render as their OpenAI twins."""
    anth = [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_a", "name": "get_weather",
             "input": {"city": "Paris", "unit": "celsius"}},
            {"type": "tool_use", "id": "toolu_b", "name": "get_weather", "input": {"city": "Rome", "unit": "celsius"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_a", "content": "Sunny, 21"},
            {"type": "tool_result", "tool_use_id": "toolu_b", "content": [{"type": "text", "text": "Rain, 14"}]},
            {"type": "text", "text": "Summarize."}]},
    ]
    oai = [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": "toolu_a", "type": "function",
             "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris", "unit": "celsius"})}},
            {"id": "toolu_b", "type": "function",
             "function": {"name": "get_weather", "arguments": json.dumps({"city": "Rome", "unit": "celsius"})}}]},
        {"role": "tool", "tool_call_id": "toolu_a", "content": "Sunny, 21"},
        {"role": "tool", "tool_call_id": "toolu_b", "content": "Rain, 14"},
        {"role": "user", "content": "Summarize."},
    ]
    oai_tools = [{"type": "function", "function": {"name": WEATHER["name"], "description": WEATHER["description"],
                                                   "parameters": WEATHER["input_schema"]}}]
    r = messages(srv, {"model": TOOL, "max_tokens": 24, "temperature": 0, "tools": [WEATHER],
                       "tool_choice": {"type": "none"}, "messages": anth})
    if not ck.eq("tool conversation: status", r.status, 200):
        print("   " + ks._short(r.text()))
        return
    m = r.json()
    c = chat(srv, {"model": TOOL, "max_tokens": 24, "temperature": 0, "tools": oai_tools, "tool_choice": "none",
                   "messages": oai})
    ck.eq("tool conversation: input_tokens equal the OpenAI twin's", m["usage"]["input_tokens"],
          c["usage"]["prompt_tokens"])
    ck.eq("tool conversation: text equals the OpenAI twin's", text_of(m), c["choices"][0]["message"]["content"] or "")
    # without the results the prompt is shorter: they were rendered
    cut = srv.post("/v1/messages/count_tokens", {"model": TOOL, "tools": [WEATHER], "messages": anth[:2] + [
        {"role": "user", "content": "Summarize."}]}, headers=AUTH).json()
    ck.check("tool conversation: the results are in the prompt", cut["input_tokens"] < m["usage"]["input_tokens"],
             (cut, m["usage"]))
    # is_error reaches the model as text
    err = [dict(anth[2], content=[dict(anth[2]["content"][0], is_error=True)] + anth[2]["content"][1:])]
    n_err = srv.post("/v1/messages/count_tokens", {"model": TOOL, "tools": [WEATHER], "messages": anth[:2] + err},
                     headers=AUTH).json()
    ck.check("tool conversation: is_error changes the prompt", n_err["input_tokens"] > m["usage"]["input_tokens"],
             (n_err, m["usage"]))


# ---------------------------------------------------------------- thinking

THINK_GRAMMAR = r'root ::= "<think>\nLet me see.\n</think>\n\nIt is sunny."'


def test_thinking(srv):
    """A template that reasons (qwen3): the reasoning is a thinking block
    before the text, as reasoning_content is on /v1/chat/completions;
    thinking enabled / disabled switch the template's enable_thinking."""
    q = [{"role": "user", "content": "Weather?"}]
    body = {"model": TOOL, "max_tokens": 64, "temperature": 0, "grammar": THINK_GRAMMAR, "messages": q,
            "thinking": {"type": "enabled", "budget_tokens": 1024}}
    r = messages(srv, body)
    if not ck.eq("thinking: status", r.status, 200):
        print("   " + ks._short(r.text()))
        return
    m = r.json()
    c = chat(srv, {"model": TOOL, "max_tokens": 64, "temperature": 0, "grammar": THINK_GRAMMAR, "messages": q})
    msg = c["choices"][0]["message"]
    ck.eq("thinking: blocks", [b["type"] for b in m["content"]], ["thinking", "text"])
    ck.eq("thinking: thinking as reasoning_content, text as content",
          (m["content"][0].get("thinking"), text_of(m)), (msg.get("reasoning_content"), msg.get("content")))
    ck.check("thinking: the reasoning is the grammar's", "Let me see." in m["content"][0].get("thinking", "") and
             "It is sunny." in text_of(m), m["content"])
    ck.eq("thinking: signature", m["content"][0].get("signature"), "")
    st, evs, errs, _ = events(srv, dict(body, stream=True))
    if ck.eq("thinking stream: status", st, 200):
        ck.eq("thinking stream: framing", errs, [])
        blocks, _, _ = check_stream_shape("thinking stream", evs)
        ck.eq("thinking stream: the same blocks", [(b["type"], b.get("thinking"), b.get("text")) for b in blocks],
              [(b["type"], b.get("thinking"), b.get("text")) for b in m["content"]])
    counts = {}
    for t in ("enabled", "disabled"):
        th = {"type": t, "budget_tokens": 1024} if t == "enabled" else {"type": t}
        cr = srv.post("/v1/messages/count_tokens", {"model": TOOL, "messages": q, "thinking": th}, headers=AUTH)
        counts[t] = cr.json().get("input_tokens") if cr.status == 200 else cr.text()
    ck.check("thinking disabled renders the template's enable_thinking=false (an empty think block)",
             isinstance(counts["enabled"], int) and isinstance(counts["disabled"], int) and
             counts["disabled"] > counts["enabled"], counts)


# ---------------------------------------------------------------- SDK


def test_sdk(text_srv, tool_srv):
    body = {"model": TEXT, "max_tokens": 24, "temperature": 0, "system": SYSTEM,
            "messages": [{"role": "user", "content": PROMPT}]}
    raw = messages(text_srv, body).json()
    cfg = {"text_url": "http://127.0.0.1:%d" % text_srv.port, "tool_url": "http://127.0.0.1:%d" % tool_srv.port,
           "key": KEY, "text_model": TEXT, "tool_model": TOOL, "prompt": PROMPT, "system": SYSTEM, "max_tokens": 24,
           "expect_text": text_of(raw), "expect_stop": raw["stop_reason"],
           "expect_input_tokens": raw["usage"]["input_tokens"]}
    p = ks.run_node("anthropic.mjs", [json.dumps(cfg)])
    for ln in p.stdout.splitlines():
        print("   node: " + ln)
    ck.eq("@anthropic-ai/sdk: anthropic.mjs exit code", p.returncode, 0)
    if p.returncode:
        print(p.stderr[-3000:])


def main():
    text_srv = start(["-m", TFILE, "-t", "1", "-c", "512", "-np", "2", "--api-key", KEY])
    tool_srv = start(["-m", QFILE, "-t", "1", "-c", "1024", "-np", "2", "--api-key", KEY,
                      "--chat-template-file", QWEN_TEMPLATE])
    ck.run(test_text_equals_chat, text_srv)
    ck.run(test_stream, text_srv)
    ck.run(test_stop_sequences, text_srv)
    ck.run(test_count_tokens_text, text_srv)
    ck.run(test_errors, text_srv)
    ck.run(test_tool_calls_parsed, tool_srv)
    ck.run(test_tools, tool_srv)
    ck.run(test_tool_conversation, tool_srv)
    ck.run(test_sdk, text_srv, tool_srv)
    think_srv = start(["-m", QFILE, "-t", "1", "-c", "512", "--api-key", KEY, "--chat-template", "qwen3"])
    ck.run(test_thinking, think_srv)
    for s in SERVERS:
        rc = s.stop(60)
        ck.exited_clean("server %s on SIGTERM" % s.args[s.args.index("-m") + 1], s, rc)
    ck.finish(SERVERS)


if __name__ == "__main__":
    main()
