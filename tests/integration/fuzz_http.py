#!/usr/bin/env python3
"""fuzz_http.py — a black-box HTTP fuzzer for a live `kiln serve`.

For a bounded time it sends requests built from valid seed bodies for every
route (OpenAI chat/completions/embeddings, Ollama generate/chat/embed,
/tokenize, /detokenize, /api/show, /cache/clear and the GET routes), mutated
at two levels:

  body   truncation, byte flips, NUL bytes (raw and \\u0000), invalid UTF-8,
         huge and weird numbers (1e309, -0, 2**64, 1e-400, NaN, Infinity),
         deep nesting (up to 10^5 '['), long strings, duplicate keys, wrong
         types per field, missing and unknown fields, odd model names;
  HTTP   wrong Content-Type, wrong methods, missing or lying Content-Length,
         conflicting Content-Length headers, chunked bodies (valid and
         broken), oversize headers and URLs, bad request lines and versions,
         Expect: 100-continue, pipelined requests; with --api-key, requests
         without it or with a wrong one; Origin headers and CORS preflights.

Every request opens its own connection (Connection: close, except the
pipelined ones) and the answer is read with a strict HTTP/1.1 parser. The
contract checked for each answer:

  * a well-formed HTTP response (status line, headers, a body framed by
    Content-Length or chunked encoding or the close) within --timeout s;
  * status 200, 4xx or 503 (never another 5xx); the exceptions are 505
    for a request line whose HTTP version is not 1.0/1.1 (libmicrohttpd's
    protocol answer) and 204 without a body for an OPTIONS request (a CORS
    preflight the server's --cors-origin allows);
  * an answer from kiln (any route reached, i.e. well-framed requests) with
    a status other than 200 has a JSON body {"error": "..."} (Ollama) or
    {"error": {"message": "..."}} (OpenAI); a 200 body is valid JSON, a
    complete SSE stream ending with data: [DONE], or NDJSON ending with a
    line whose done is true, as its Content-Type says (strict JSON: no NaN);
  * answers that libmicrohttpd writes itself (no application/json type) are
    accepted only for HTTP-level mutations: the malformed request never
    reached kiln, and their HTML body is not checked.

Where the server deliberately closes without an answer (and this is not a
failure): a request it cannot parse (a garbage request line, unfinished
headers or a chunked body broken off, a Content-Length longer than the body)
after which the fuzzer half-closes its side — the server sees EOF before the
request is complete and closes. Odd header lines (no colon, obs-fold, a
Transfer-Encoding other than chunked), bare-LF line ends, unknown methods and
HTTP versions may also leave libmicrohttpd waiting for a request it cannot
frame until --conn-timeout closes it. These kinds are marked `may_close`
below; every other dropped connection is a failure. A half-closed connection may
also be cut mid-answer: kiln treats a client whose side is closed as gone and
cancels its stream. libmicrohttpd itself also closes without an answer when
a URL's query arguments do not fit its per-connection memory (thousands of
`a=1&`), which is accepted for that mutation only.

libmicrohttpd 0.9.75 writes the status line and headers of some of its own
error answers twice (a non-numeric or over-large Content-Length); the parser
reads the first answer and counts the trailing bytes as `mhd_repeat` in the
summary line instead of failing (bytes after a Connection: close answer from
kiln itself do fail).

Afterwards GET /health must answer 200. The last line printed is
    fuzz_http: N requests, statuses {...}, M failures, seed S
and the exit status is 1 on any failure; each failure prints the request
(repr, truncated), its worker:index and the reason. `--replay W:I` (with the
same --seed) sends just that request again.

Standard library only.
"""

import argparse
import copy
import json
import random
import re
import socket
import sys
import threading
import time
import urllib.parse

# ---------------------------------------------------------------- HTTP

STATUS_LINE = re.compile(rb"^HTTP/1\.[01] (\d{3})(?: [^\r\n]*)?$")


class HttpError(Exception):
    """The answer is not well-formed HTTP."""


class Closed(Exception):
    """The server closed (or reset) the connection before any answer byte."""


class Answer:
    def __init__(self, status, headers, body, raw_head):
        self.status = status
        self.headers = headers  # list of (lower-case name, value)
        self.body = body
        self.raw_head = raw_head
        self.trailing = b""  # bytes after a Connection: close answer

    def header(self, name):
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def ctype(self):
        return (self.header("content-type") or "").split(";")[0].strip().lower()


class Reader:
    def __init__(self, sock, deadline):
        self.sock = sock
        self.buf = b""
        self.deadline = deadline
        self.eof = False
        self.got_any = False

    def _fill(self):
        left = self.deadline - time.time()
        if left <= 0:
            raise TimeoutError("no complete answer in time")
        self.sock.settimeout(min(left, 5.0))
        try:
            b = self.sock.recv(65536)
        except socket.timeout:
            return True
        except ConnectionResetError:
            b = b""
        if not b:
            self.eof = True
            return False
        self.got_any = True
        self.buf += b
        return True

    def until(self, sep, limit):
        while True:
            i = self.buf.find(sep)
            if i >= 0:
                out, self.buf = self.buf[:i], self.buf[i + len(sep):]
                return out
            if len(self.buf) > limit:
                raise HttpError("no %r within %d bytes" % (sep, limit))
            if self.eof or not self._fill():
                if not self.got_any:
                    raise Closed()
                raise HttpError("connection closed inside the answer head/chunk line (%d bytes buffered)"
                                % len(self.buf))

    def exactly(self, n):
        while len(self.buf) < n:
            if self.eof or not self._fill():
                raise HttpError("connection closed %d bytes short of the framed body" % (n - len(self.buf)))
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def rest(self, max_wait):
        """Everything until EOF (at most max_wait seconds)."""
        self.deadline = min(self.deadline, time.time() + max_wait)
        while not self.eof:
            try:
                if not self._fill():
                    break
            except TimeoutError:
                break
        out, self.buf = self.buf, b""
        return out


def read_answer(rd, head_only=False):
    """Reads one HTTP answer (skipping 100 Continue)."""
    while True:
        head = rd.until(b"\r\n\r\n", 64 * 1024)
        lines = head.split(b"\r\n")
        m = STATUS_LINE.match(lines[0])
        if not m:
            raise HttpError("bad status line %r" % lines[0][:200])
        status = int(m.group(1))
        headers = []
        for ln in lines[1:]:
            if b":" not in ln:
                raise HttpError("header line without a colon: %r" % ln[:200])
            k, v = ln.split(b":", 1)
            if not k or k != k.strip() or re.search(rb"[\x00-\x20\x7f]", k):
                raise HttpError("bad header name %r" % k[:100])
            headers.append((k.decode("latin-1").lower(), v.strip().decode("latin-1")))
        if status == 100:
            continue
        ans = Answer(status, headers, b"", head)
        te = (ans.header("transfer-encoding") or "").lower()
        cls = [v for k, v in headers if k == "content-length"]
        if head_only or status in (204, 304):
            return ans
        if te:
            if te != "chunked":
                raise HttpError("unexpected Transfer-Encoding %r" % te)
            if cls:
                raise HttpError("both Transfer-Encoding and Content-Length")
            parts = []
            while True:
                szl = rd.until(b"\r\n", 1024)
                szs = szl.split(b";")[0].strip()
                if not re.fullmatch(rb"[0-9a-fA-F]+", szs or b"-"):
                    raise HttpError("bad chunk size line %r" % szl[:100])
                sz = int(szs, 16)
                if sz == 0:
                    while rd.until(b"\r\n", 8192):  # trailers
                        pass
                    break
                parts.append(rd.exactly(sz))
                if rd.exactly(2) != b"\r\n":
                    raise HttpError("chunk not followed by CRLF")
            ans.body = b"".join(parts)
        elif cls:
            if len(set(cls)) != 1 or not cls[0].isdigit():
                raise HttpError("bad Content-Length %r" % cls)
            ans.body = rd.exactly(int(cls[0]))
        else:
            ans.body = rd.rest(30.0)
        return ans


# ---------------------------------------------------------------- checks

def strict_json(b):
    def bad_const(c):
        raise ValueError("non-standard JSON constant %s" % c)
    return json.loads(b.decode("utf-8"), parse_constant=bad_const)


def check_error_body(ans):
    """None when ans is a kiln error answer with a message, else the problem."""
    if ans.ctype() != "application/json":
        return "error answer with Content-Type %r (want application/json)" % ans.header("content-type")
    try:
        j = strict_json(ans.body)
    except (ValueError, UnicodeDecodeError) as e:
        return "error body is not JSON (%s): %r" % (e, ans.body[:300])
    err = j.get("error") if isinstance(j, dict) else None
    if isinstance(err, str) and err:
        return None
    if isinstance(err, dict) and isinstance(err.get("message"), str) and err["message"]:
        return None
    return "error body has no error message: %r" % ans.body[:300]


def check_ok_body(ans, method):
    if method == "HEAD":
        return None
    ct = ans.ctype()
    b = ans.body
    try:
        if ct == "application/json":
            strict_json(b)
        elif ct == "text/event-stream":
            s = b.decode("utf-8")
            if not s.endswith("\n\n"):
                return "SSE stream not ended by a blank line: %r" % s[-200:]
            events = [e for e in s.split("\n\n") if e]
            datas = []
            for e in events:
                if e.startswith(":"):
                    continue
                if not e.startswith("data: ") or "\n" in e:
                    return "bad SSE event %r" % e[:200]
                datas.append(e[6:])
            if not datas or datas[-1] != "[DONE]":
                return "SSE stream does not end with data: [DONE]: %r" % s[-200:]
            for d in datas[:-1]:
                strict_json(d.encode("utf-8"))
        elif ct == "application/x-ndjson":
            s = b.decode("utf-8")
            if not s.endswith("\n"):
                return "NDJSON not ended by a newline"
            objs = [strict_json(ln.encode("utf-8")) for ln in s.split("\n")[:-1]]
            if not objs or objs[-1].get("done") is not True:
                return "NDJSON does not end with done: true: %r" % s[-200:]
            if "error" in objs[-1]:
                return "NDJSON stream ended with an error line: %r" % s[-300:]
        elif ct.startswith("text/plain"):
            b.decode("utf-8")
        else:
            return "200 with unexpected Content-Type %r" % ans.header("content-type")
    except (ValueError, UnicodeDecodeError, AttributeError) as e:
        return "200 body does not parse as %s (%s): %r" % (ct, e, b[:300])
    return None


# ---------------------------------------------------------------- seeds

GET_ROUTES = ["/health", "/metrics", "/v1/models", "/api/tags", "/api/ps", "/api/version", "/cache/stats"]
POST_ROUTES = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/api/generate", "/api/chat",
               "/api/embed", "/tokenize", "/detokenize", "/api/show", "/cache/clear"]
OTHER_PATHS = ["/", "/v1", "/v1/", "/v1/chat/completions/", "/api/pull", "/api/delete", "/v1/models/x",
               "/health?x=1", "/../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/v1/completions%00", "//health",
               "/api/generate?model=x", "/metrics/../health", "*"]

WORDS = ["Once", "upon", "a", "time", "there", "was", "a", "little", "girl", "named", "Lily", "she", "liked", "to",
         "play", "outside", "\u00e9t\u00e9", "\u4e2d\u6587", "\U0001F600", "\n", "\t", "<s>", "</s>", "<|im_start|>"]


def text(rng, lo=1, hi=12):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def seed_body(rng, path, gen, emb):
    """A valid request body (a dict) for a POST route."""
    msgs = [{"role": "user", "content": text(rng)}]
    if rng.random() < 0.4:
        msgs = [{"role": "system", "content": text(rng)}, {"role": "user", "content": text(rng)},
                {"role": "assistant", "content": text(rng)}, {"role": "user", "content": text(rng)}]
    small = rng.randint(0, 6)
    stream = rng.random() < 0.5
    if path == "/v1/chat/completions":
        b = {"model": gen, "messages": msgs, "max_tokens": small, "stream": stream}
        if rng.random() < 0.5:
            b.update({"temperature": rng.choice([0, 0.7, 1.5]), "top_p": 0.9, "seed": rng.randint(0, 99)})
        if rng.random() < 0.3:
            b.update({"stop": ["\n", "the"], "logit_bias": {"5": -100, "7": 2}, "presence_penalty": 0.5,
                      "frequency_penalty": 0.2})
        if rng.random() < 0.2:
            b.update({"logprobs": True, "top_logprobs": 2})
        if stream and rng.random() < 0.5:
            b["stream_options"] = {"include_usage": True}
        return b
    if path == "/v1/completions":
        b = {"model": gen, "prompt": text(rng), "max_tokens": small, "stream": stream,
             "temperature": rng.choice([0, 0.8])}
        if rng.random() < 0.3:
            b.update({"echo": True, "logprobs": 1, "stop": "."})
        if rng.random() < 0.2:
            b["prompt"] = [rng.randint(1, 500) for _ in range(rng.randint(1, 8))]
        return b
    if path == "/v1/embeddings":
        inp = text(rng) if rng.random() < 0.5 else [text(rng) for _ in range(rng.randint(1, 4))]
        b = {"model": emb, "input": inp}
        if rng.random() < 0.3:
            b["encoding_format"] = rng.choice(["float", "base64"])
        return b
    if path == "/api/generate":
        b = {"model": gen, "prompt": text(rng), "stream": stream, "options": {"num_predict": small,
                                                                              "temperature": 0}}
        if rng.random() < 0.3:
            b.update({"system": text(rng), "raw": rng.random() < 0.5, "keep_alive": "5m"})
        return b
    if path == "/api/chat":
        b = {"model": gen, "messages": msgs, "stream": stream, "options": {"num_predict": small,
                                                                           "seed": rng.randint(0, 9)}}
        return b
    if path == "/api/embed":
        inp = text(rng) if rng.random() < 0.5 else [text(rng) for _ in range(rng.randint(1, 4))]
        b = {"model": emb, "input": inp}
        if rng.random() < 0.3:
            b["truncate"] = rng.random() < 0.5
        return b
    if path == "/tokenize":
        return {"model": gen, "content": text(rng), "add_special": rng.random() < 0.5}
    if path == "/detokenize":
        return {"model": gen, "tokens": [rng.randint(0, 511) for _ in range(rng.randint(0, 10))]}
    if path == "/api/show":
        return {"model": rng.choice([gen, emb])}
    if path == "/cache/clear":
        b = rng.choice([{}, {"type": "response"}, {"type": "embedding"}, {"type": "all"}])
        if rng.random() < 0.5:
            b["tier"] = rng.choice(["l1", "l2", "all"])
        if rng.random() < 0.3:
            b["model"] = rng.choice([gen, emb])
        return b
    raise ValueError(path)


# ---------------------------------------------------------------- body mutations

WEIRD_NUMBERS = ["1e309", "-1e309", "-0", "-0.0", "18446744073709551616", "18446744073709551615",
                 "9223372036854775808", "-9223372036854775809", "9223372036854775807", "1e-400", "NaN",
                 "Infinity", "-Infinity", "4294967296", "2147483648", "-2147483649", "-1", "0.5", "1.5e300",
                 "99999999999999999999999999999999", "0x10", "1E+2", "00", "-", "1.", ".5", "+1", "1e", "2.5e-324"]
WEIRD_VALUES = [None, True, False, 0, -1, 1.5, "", "x", "0", [], {}, [1, 2], {"a": 1}, [[]], [None], ["x"],
                {"": None}, 16777217, -16777217, 2**31, 2**53 + 1, 1e300, -1e300]
MODEL_NAMES = ["", " ", "../stories260K", "../../etc/passwd", "/etc/passwd", "stories260K/../stories260K",
               "a" * 300, "x" * 5000, "stories260K:latest", "STORIES260K", "stories260K\u0000x", "%2e%2e",
               "\u00e9", ".", "..", "models/../x", "~root", "\\..\\x", "stories260K.gguf", "con", "-m"]
BAD_UTF8 = [b"\xff", b"\xfe\xff", b"\xc0\x80", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82",
            b"\x80", b"\xf8\x88\x80\x80\x80"]
BAD_ESCAPES = [b"\\ud800", b"\\udc00x", b"\\u0000", b"\\x41", b"\\", b"\\u12", b"\\uZZZZ", b"\\ud83d\\u0041"]


def weird(rng):
    """A fresh copy of one of WEIRD_VALUES (a shared list or dict mutated later
    would change the table, and could even come to contain itself)."""
    return copy.deepcopy(rng.choice(WEIRD_VALUES))


def field_paths(obj, prefix=()):
    """Every (path, value) inside obj (dict keys and list indices)."""
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.append((prefix + (k,), v))
            out.extend(field_paths(v, prefix + (k,)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.append((prefix + (i,), v))
            out.extend(field_paths(v, prefix + (i,)))
    return out


def set_path(obj, path, value):
    for p in path[:-1]:
        obj = obj[p]
    obj[path[-1]] = value


def del_path(obj, path):
    for p in path[:-1]:
        obj = obj[p]
    del obj[path[-1]]


def force_small(rng, path, body):
    """Most requests keep generation cheap whatever the mutations did."""
    if not isinstance(body, dict) or path not in ("/v1/chat/completions", "/v1/completions", "/api/generate",
                                                  "/api/chat"):
        return
    n = rng.randint(0, 8)
    if path.startswith("/api/"):
        if not isinstance(body.get("options"), dict):
            body["options"] = {}
        body["options"]["num_predict"] = n
    else:
        body["max_tokens"] = n
        body.pop("max_completion_tokens", None)


def mutate_tree(rng, body, gen):
    """One structural mutation on the decoded body; returns (body, name)."""
    paths = field_paths(body)
    r = rng.randrange(9)
    if r == 0 and paths:
        p, _ = rng.choice(paths)
        set_path(body, p, weird(rng))
        return body, "wrong_type:" + ".".join(map(str, p))
    if r == 1 and paths:
        p, _ = rng.choice(paths)
        del_path(body, p)
        return body, "delete:" + ".".join(map(str, p))
    if r == 2:
        body[rng.choice(["unknown", "n", "best_of", "tools", "tool_choice", "functions", "suffix", "format",
                         "images", "template", "response_format", "user", "context", "keep_alive",
                         "dimensions", "options", "raw", "think"])] = rng.choice([weird(rng), "json", "5m"])
        return body, "add_field"
    if r == 3:
        body["model"] = rng.choice(MODEL_NAMES)
        return body, "model_name"
    if r == 4:
        strs = [p for p, v in paths if isinstance(v, str)]
        n = rng.choice([1000, 10000, 100000, 300000])
        if strs:
            p = rng.choice(strs)
            set_path(body, p, rng.choice(["a", " a", "\u00e9", "\U0001F600", "<s>", "\u0000"]) * n)
            return body, "long_string:%s:%d" % (".".join(map(str, p)), n)
        body["prompt"] = "a " * n
        return body, "long_string"
    if r == 5:
        lists = [p for p, v in paths if isinstance(v, list)]
        n = rng.choice([100, 1000, 20000])
        if lists:
            p = rng.choice(lists)
            v = body
            for q in p:
                v = v[q]
            item = v[0] if v else weird(rng)
            n = min(n, max(1, 2000000 // len(json.dumps(item))))  # the body stays a few MB at most
            js = json.dumps(item)
            set_path(body, p, [json.loads(js) for _ in range(n)] if isinstance(item, (dict, list)) else [item] * n)
            return body, "long_array:%s:%d" % (".".join(map(str, p)), n)
        body["stop"] = ["x%d" % i for i in range(n)]
        return body, "many_stops:%d" % n
    if r == 6:
        body["logit_bias"] = {str(rng.randint(-5, 10**6)): rng.choice([-100, 100, 1e308, -1e308, 0])
                              for _ in range(rng.choice([1, 10, 5000]))}
        return body, "logit_bias"
    if r == 7:
        msgs = body.get("messages")
        roles = ["user", "assistant", "system", "tool", "function", "developer", "", "USER", "x" * 100, None, 5]
        content = rng.choice(["", text(rng), None, [{"type": "text", "text": "hi"}],
                              [{"type": "image_url", "image_url": {"url": "data:x"}}], [{"type": "text"}], [], {},
                              5, [{"type": "text", "text": 5}]])
        m = {"role": rng.choice(roles), "content": content}
        if rng.random() < 0.3:
            m["tool_calls"] = rng.choice([[], [{"id": "1", "type": "function",
                                                "function": {"name": "f", "arguments": "{}"}}], "x"])
        if isinstance(msgs, list):
            msgs.insert(rng.randint(0, len(msgs)), m)
            if rng.random() < 0.2:
                msgs.extend({"role": "user", "content": "hi"} for _ in range(rng.choice([100, 5000])))
        else:
            body["messages"] = [m]
        return body, "messages"
    nums = [p for p, v in paths if isinstance(v, (int, float)) and not isinstance(v, bool)]
    knobs = ["temperature", "top_p", "top_k", "min_p", "seed", "max_tokens", "presence_penalty",
             "frequency_penalty", "repeat_penalty", "n", "logprobs", "top_logprobs", "num_predict", "num_ctx",
             "mirostat", "typical_p"]
    p = rng.choice(nums) if nums and rng.random() < 0.5 else (rng.choice(knobs),)
    if p[0] in ("num_predict", "num_ctx", "repeat_penalty", "mirostat") and isinstance(body.get("options"), dict):
        p = ("options",) + p
    set_path(body, p, "__NUM__")
    return body, "number:%s" % ".".join(map(str, p))


def serialize(rng, body):
    s = json.dumps(body, ensure_ascii=rng.random() < 0.5)
    return s.encode("utf-8")


def mutate_bytes(rng, raw):
    """One byte-level mutation of serialized JSON; returns (bytes, name)."""
    r = rng.randrange(8)
    if r == 0:
        return raw[:rng.randint(0, max(0, len(raw) - 1))], "truncate"
    if r == 1:
        b = bytearray(raw)
        for _ in range(rng.randint(1, 8)):
            if b:
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        return bytes(b), "bitflip"
    if r == 2:
        b = bytearray(raw)
        for _ in range(rng.randint(1, 4)):
            b.insert(rng.randint(0, len(b)), 0)
        return bytes(b), "nul_raw"
    if r == 3:
        # inside a string: after an opening quote of a value
        idx = [m.end() for m in re.finditer(rb': ?"', raw)]
        if idx:
            i = rng.choice(idx)
            ins = rng.choice(BAD_UTF8 + BAD_ESCAPES)
            return raw[:i] + ins + raw[i:], "bad_utf8:%r" % ins
        return raw + b"\xff", "bad_utf8_tail"
    if r == 4:
        n = rng.choice([100, 1000, 2049, 5000, 100000])
        kind = rng.randrange(3)
        if kind == 0:
            return b"[" * n, "deep_array_body:%d" % n
        i = raw.rfind(b"}")
        if i <= 0:
            return raw, "deep_none"
        nest = (b"[" * n + b"1" + b"]" * n) if kind == 1 else (b'{"a":' * n + b"1" + b"}" * n)
        if rng.random() < 0.5:
            nest = nest[:len(nest) // 2 + 1]
        return raw[:i] + b', "deep": ' + nest + raw[i:], "deep_field:%d" % n
    if r == 5:
        # a duplicate key with another value
        m = list(re.finditer(rb'"([a-z_]+)": ?', raw))
        if m:
            k = rng.choice(m).group(1)
            i = raw.rfind(b"}")
            val = rng.choice([b"null", b"1", b'"x"', b"[]", b"{}", b"-1", b"1e999"])
            return raw[:i] + b', "' + k + b'": ' + val + raw[i:], "dup_key:%s" % k.decode()
        return raw, "dup_none"
    if r == 6:
        return rng.choice([b"", b" ", b"null", b"[]", b"1", b'"x"', b"{", b"}", b"{}{}", b'{"a":1} x',
                           b"\xef\xbb\xbf{}", b"{'a': 1}", b"\x00", b'{"model": "a"} \x00', b"{}" + b" " * 10000,
                           b"\n" * 1000, b"{,}", b'{"a":}', b'{"":""}', b"[" * 100000]), "whole_body"
    # structure chars swapped
    b = bytearray(raw)
    for _ in range(rng.randint(1, 3)):
        idx = [i for i, c in enumerate(b) if c in b'{}[]:,"']
        if idx:
            b[rng.choice(idx)] = rng.choice(b'{}[]:,"\\ ')
    return bytes(b), "struct_swap"


def body_for(rng, path, gen, emb):
    """(bytes, description) of a mutated body for a POST route."""
    body = seed_body(rng, path, gen, emb)
    names = []
    for _ in range(rng.choice([0, 1, 1, 1, 2, 3])):
        body, n = mutate_tree(rng, body, gen)
        names.append(n)
    if rng.random() < 0.9:
        force_small(rng, path, body)
    raw = serialize(rng, body)
    if len(raw) > 4000000:  # several long mutations multiplied: keep the body (and this script) fast
        raw = raw[:4000000]
        names.append("cut")
    if b'"__NUM__"' in raw:
        raw = raw.replace(b'"__NUM__"', rng.choice(WEIRD_NUMBERS).encode(), 1).replace(b'"__NUM__"', b"1")
    if rng.random() < 0.45:
        raw, n = mutate_bytes(rng, raw)
        names.append(n)
    return raw, names


# ---------------------------------------------------------------- requests

class Req:
    """One request to send: the bytes, how to check the answer."""

    def __init__(self, raw, method, path, names, http_level=False, may_close=False, half_close=False,
                 pipelined=False, allow_505=False):
        self.raw = raw
        self.method = method
        self.path = path
        self.names = names
        self.http_level = http_level  # libmicrohttpd may answer itself (HTML)
        self.may_close = may_close    # the server may close without an answer
        self.half_close = half_close  # shut our write side after sending
        self.pipelined = pipelined    # a GET /health follows on the same connection
        self.allow_505 = allow_505


def head(method, path, hdrs, version=b"HTTP/1.1"):
    out = method + b" " + path + b" " + version + b"\r\n"
    for k, v in hdrs:
        out += k + b": " + v + b"\r\n"
    return out + b"\r\n"


def chunked(rng, body, ext=False):
    out = b""
    i = 0
    while i < len(body):
        n = rng.randint(1, max(1, min(len(body) - i, rng.choice([1, 7, 100, 4096]))))
        out += b"%x" % n + (b";x=y" if ext else b"") + b"\r\n" + body[i:i + n] + b"\r\n"
        i += n
    return out + b"0\r\n\r\n"


# set from the command line: --api-key (sent on most requests; some go without
# it or with a wrong one) and --origin (sent on some requests, with CORS
# preflights; other origins too)
AUTH = {"key": None, "origin": None}


def extra_headers(rng):
    out = []
    key = AUTH["key"]
    if key:
        r = rng.random()
        if r < 0.9:
            out.append((b"Authorization", b"Bearer " + key.encode()))
        elif r < 0.95:
            out.append((b"Authorization", rng.choice([b"Bearer " + key.encode()[:-1], b"Bearer", b"Basic eA==",
                                                      b"bearer " + key.encode() + b"x", b""])))
    if rng.random() < 0.3:
        out.append((b"Origin", rng.choice([(AUTH["origin"] or "http://a.example").encode(), b"http://evil.example",
                                           b"null", b"*", b"http://a.example:99999", b"x" * 3000])))
    return out


def make_request(rng, gen, emb):
    r = rng.random()
    base = [(b"Host", b"127.0.0.1")] + extra_headers(rng)
    if r < 0.03:  # a CORS preflight
        path = rng.choice(POST_ROUTES + GET_ROUTES + OTHER_PATHS[:3]).encode()
        hd = base + [(b"Connection", b"close"),
                     (b"Access-Control-Request-Method", rng.choice([b"POST", b"GET", b"PUT", b"x" * 100])),
                     (b"Access-Control-Request-Headers", rng.choice([b"authorization, content-type", b"x-foo", b""]))]
        if AUTH["origin"] and not any(k == b"Origin" for k, _ in hd):
            hd.append((b"Origin", AUTH["origin"].encode()))
        return Req(head(b"OPTIONS", path, hd), "OPTIONS", path.decode(), ["preflight"])
    close = [(b"Connection", b"close")]
    if r < 0.12:  # GET routes and unknown paths
        path = rng.choice(GET_ROUTES + OTHER_PATHS).encode()
        method = rng.choice([b"GET"] * 6 + [b"HEAD", b"DELETE", b"POST", b"OPTIONS", b"PUT", b"TRACE"])
        raw = head(method, path, base + close)
        if method == b"POST":
            raw = head(method, path, base + close + [(b"Content-Length", b"2")]) + b"{}"
        return Req(raw, method.decode(), path.decode(), ["get"])
    path = rng.choice(POST_ROUTES)
    body, names = body_for(rng, path, gen, emb)
    ct = b"application/json"
    method = b"POST"
    bpath = path.encode()
    if r < 0.75:
        return Req(head(method, bpath, base + close + [(b"Content-Type", ct),
                                                     (b"Content-Length", b"%d" % len(body))]) + body,
                   "POST", path, names)
    # HTTP-level mutations
    k = rng.randrange(16)
    cl = [(b"Content-Length", b"%d" % len(body))]
    ctl = [(b"Content-Type", ct)]
    if k == 0:
        ctv = rng.choice([b"text/plain", b"", b"application/x-www-form-urlencoded", b"multipart/form-data; boundary=x",
                          b"application/json; charset=latin-1", b"\xff\xfe", b"application/json" * 200])
        return Req(head(method, bpath, base + close + [(b"Content-Type", ctv)] + cl) + body, "POST", path,
                   names + ["content_type"], http_level=True)
    if k == 1:
        m = rng.choice([b"GET", b"PUT", b"DELETE", b"PATCH", b"HEAD", b"OPTIONS", b"FOO", b"get", b"POSTX"])
        return Req(head(m, bpath, base + close + ctl + cl) + body, m.decode(), path, names + ["method"],
                   http_level=True, may_close=m not in (b"GET", b"PUT", b"DELETE", b"PATCH", b"HEAD", b"OPTIONS"),
                   half_close=False)
    if k == 2:  # no Content-Length: the body is not read as the body
        return Req(head(method, bpath, base + close + ctl) + body, "POST", path, names + ["no_content_length"],
                   http_level=True)
    if k == 3 and len(body) > 1:  # shorter Content-Length
        n = rng.randint(0, len(body) - 1)
        return Req(head(method, bpath, base + close + ctl + [(b"Content-Length", b"%d" % n)]) + body, "POST", path,
                   names + ["short_content_length:%d" % n], http_level=True)
    if k == 4:  # longer Content-Length, then half-close
        n = len(body) + rng.randint(1, 1000)
        return Req(head(method, bpath, base + close + ctl + [(b"Content-Length", b"%d" % n)]) + body, "POST", path,
                   names + ["long_content_length:%d" % n], http_level=True, may_close=True, half_close=True)
    if k == 5:
        v = rng.choice([b"abc", b"-1", b"99999999999999999999999", b"1e3", b" 5", b"0x10", b"", b"18446744073709551616",
                        b"%d, %d" % (len(body), len(body))])
        return Req(head(method, bpath, base + close + ctl + [(b"Content-Length", v)]) + body, "POST", path,
                   names + ["bad_content_length:%r" % v], http_level=True, may_close=True, half_close=True)
    if k == 6:  # two different Content-Length headers
        return Req(head(method, bpath, base + close + ctl + cl + [(b"Content-Length", b"%d" % (len(body) // 2))]) + body,
                   "POST", path, names + ["dup_content_length"], http_level=True, may_close=True, half_close=True)
    if k == 7:  # valid chunked
        hd = base + close + ctl + [(b"Transfer-Encoding", b"chunked")]
        if rng.random() < 0.3:
            hd += cl
        return Req(head(method, bpath, hd) + chunked(rng, body, ext=rng.random() < 0.3), "POST", path,
                   names + ["chunked"], http_level=True)
    if k == 8:  # broken chunked
        ch = chunked(rng, body)
        cut = rng.randrange(4)
        if cut == 0:
            ch = ch[:rng.randint(0, len(ch) - 1)]
        elif cut == 1:
            ch = b"zz\r\n" + ch
        elif cut == 2:
            ch = b"ffffffffffffffffffff\r\n" + ch
        else:
            ch = ch.replace(b"\r\n", b"\n", 1)
        return Req(head(method, bpath, base + close + ctl + [(b"Transfer-Encoding", b"chunked")]) + ch, "POST", path,
                   names + ["bad_chunked:%d" % cut], http_level=True, may_close=True, half_close=True)
    if k == 9:  # oversize headers
        if rng.random() < 0.5:
            hd = [(b"X-Big", b"a" * rng.choice([1000, 8000, 40000, 200000]))]
        else:
            hd = [(b"X-H%d" % i, b"v" * 50) for i in range(rng.choice([50, 500, 3000]))]
        return Req(head(method, bpath, base + close + ctl + cl + hd) + body, "POST", path, names + ["big_headers"],
                   http_level=True)
    if k == 10:  # long or odd URL
        nq = rng.choice([10, 5000, 40000])
        p = rng.choice([bpath + b"?" + b"a=1&" * nq, bpath + b"/" + b"x" * 50000,
                        bpath + b"%00", bpath + b"?model=../../x", urllib.parse.quote(path).encode() + b"#frag",
                        b"/v1/../v1/completions", b"http://127.0.0.1" + bpath, bpath.upper()])
        # libmicrohttpd closes without an answer when the query arguments do not fit its per-connection memory
        return Req(head(method, p, base + close + ctl + cl) + body, "POST", p.decode("latin-1"),
                   names + ["url"], http_level=True, may_close=p.count(b"&") >= 1000)
    if k == 11:  # bad request lines
        v = rng.randrange(6)
        if v == 0:
            raw = rng.choice([b"\x00\x01garbage", b"POST", b"POST  /v1/completions  HTTP/1.1", b"\xff\xfe / HTTP/1.1",
                              b"POST /v1/completions HTTP/1.1 extra", b" POST /v1/completions HTTP/1.1"])
            return Req(raw + b"\r\n" + b"Host: x\r\nConnection: close\r\n\r\n", "?", path, names + ["request_line"],
                       http_level=True, may_close=True, half_close=True)
        if v == 1:
            ver = rng.choice([b"HTTP/2.0", b"HTTP/1.2", b"HTTP/0.9", b"HTTP/9.9", b"http/1.1", b"HTTP/1", b"HTTPS/1.1"])
            return Req(head(method, bpath, base + close + ctl + cl, version=ver) + body, "POST", path,
                       names + ["version:%s" % ver.decode()], http_level=True, may_close=True, allow_505=True)
        if v == 2:  # HTTP/1.0 without Host
            return Req(head(method, bpath, ctl + cl, version=b"HTTP/1.0") + body, "POST", path, names + ["http10"],
                       http_level=True)
        if v == 3:  # unfinished headers, then half-close
            raw = head(method, bpath, base + ctl + cl)[:-2]
            return Req(raw[:rng.randint(1, len(raw))], "POST", path, names + ["unfinished_head"], http_level=True,
                       may_close=True, half_close=True)
        if v == 4:  # bare LF line ends
            return Req(head(method, bpath, base + close + ctl + cl).replace(b"\r\n", b"\n") + body, "POST", path,
                       names + ["bare_lf"], http_level=True, may_close=True)
        return Req(head(method, bpath, base + close + ctl + cl).replace(b"Host: 127.0.0.1\r\n", b"") + body, "POST",
                   path, names + ["no_host"], http_level=True)
    if k == 12:  # odd header lines
        odd = rng.choice([b"X-Nul: a\x00b", b"X-Fold: a\r\n  b", b"NoColon", b": empty-name", b"X-Utf: \xff\xfe",
                          b"Authorization: Bearer " + b"k" * 5000, b"Content-Type: application/json",
                          b"Transfer-Encoding: gzip", b"X Space: 1", b"Connection: keep-alive, close"])
        raw = head(method, bpath, base + close + ctl + cl)
        raw = raw[:-2] + odd + b"\r\n\r\n" + body
        return Req(raw, "POST", path, names + ["odd_header:%r" % odd[:20]], http_level=True, may_close=True)
    if k == 13:  # Expect: 100-continue
        return Req(head(method, bpath, base + close + ctl + cl + [(b"Expect", b"100-continue")]) + body, "POST", path,
                   names + ["expect"], http_level=True)
    if k == 14:  # pipelined: then GET /health on the same connection
        raw = head(method, bpath, base + ctl + cl) + body + head(b"GET", b"/health", base + close)
        return Req(raw, "POST", path, names + ["pipelined"], pipelined=True)
    # split in many small writes is done by the sender: mark it
    q = Req(head(method, bpath, base + close + ctl + cl) + body, "POST", path, names + ["dribble"])
    q.dribble = True
    return q


# ---------------------------------------------------------------- sending

class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.n = 0
        self.statuses = {}
        self.failures = []
        self.closed = 0
        self.mhd_answers = 0
        self.mhd_repeat = 0
        self.mutations = {}
        self.slowest = []  # (seconds, where, names)
        self.log = None

    def add(self, status=None, closed=False, mhd=False, repeat=False, names=(), dt=0.0, where=""):
        with self.lock:
            self.n += 1
            self.slowest.append((dt, where, status, list(names)))
            self.slowest.sort(key=lambda x: -x[0])
            del self.slowest[5:]
            if status is not None:
                self.statuses[status] = self.statuses.get(status, 0) + 1
            self.closed += closed
            self.mhd_answers += mhd
            self.mhd_repeat += repeat
            for nm in names:
                k = nm.split(":")[0]
                self.mutations[k] = self.mutations.get(k, 0) + 1

    def fail(self, where, req, why):
        with self.lock:
            self.failures.append((where, req, why))
            if len(self.failures) <= 20:
                print("FAIL %s %s %s: %s\n     request (%d bytes): %s" % (where, req.method, _short(req.path, 80), why, len(req.raw),
                                                                       _short(repr(req.raw), 1200)), flush=True)
                print("     mutations: %s" % ", ".join(req.names), flush=True)


def _short(s, n):
    return s if len(s) <= n else s[:n] + "... (%d chars)" % len(s)


def send(host, port, req, timeout):
    """Sends req; returns (answers, closed_without_answer)."""
    deadline = time.time() + timeout
    s = socket.create_connection((host, port), timeout=10)
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if getattr(req, "dribble", False):
                i = 0
                while i < len(req.raw):
                    n = min(len(req.raw) - i, 1 + (i * 7919) % 97)
                    s.sendall(req.raw[i:i + n])
                    i += n
                    if i < 400:
                        time.sleep(0.001)
            else:
                s.sendall(req.raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered early (413, 431) and closed: read its answer
        if req.half_close:
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        rd = Reader(s, deadline)
        answers = []
        try:
            a = read_answer(rd, head_only=req.method == "HEAD")
        except Closed:
            return answers, True
        answers.append(a)
        conn_close = "close" in (a.header("connection") or "").lower()
        if req.pipelined and not conn_close:
            answers.append(read_answer(rd))
            conn_close = True
        if conn_close or req.half_close:
            a_last = answers[-1]
            a_last.trailing = rd.rest(2.0)
        return answers, False
    finally:
        s.close()


def judge(req, answers, closed):
    """(status or None, problem or None, mhd answer?, repeated head?)"""
    if closed:
        if req.may_close:
            return None, None, False, False
        return None, "connection closed without an answer", False, False
    a = answers[0]
    st = a.status
    mhd = a.ctype() != "application/json" and st != 200
    repeat = False
    ok_status = st == 200 or 400 <= st <= 499 or st == 503 or (st == 505 and req.allow_505) or \
        (st == 204 and req.method == "OPTIONS" and not a.body)  # a CORS preflight answered
    if not ok_status:
        return st, "status %d" % st, mhd, repeat
    if mhd and a.body.startswith(b"HTTP/1."):
        repeat = True  # libmicrohttpd's doubled head (see the docstring)
    if a.trailing:
        if repeat:
            pass
        elif not (req.method == "HEAD"):
            return st, "%d bytes after the answer: %r" % (len(a.trailing), a.trailing[:200]), mhd, repeat
    if st == 204:
        pass
    elif st == 200:
        if req.path in ("/metrics",) or req.method == "HEAD":
            pass
        else:
            prob = check_ok_body(a, req.method)
            if prob:
                return st, prob, mhd, repeat
    elif mhd:
        if not req.http_level:
            return st, "answer not from kiln (Content-Type %r, body %r) to a well-framed request" % (
                a.header("content-type"), a.body[:200]), mhd, repeat
    elif req.method != "HEAD":
        prob = check_error_body(a)
        if prob:
            return st, prob, mhd, repeat
    if req.pipelined and len(answers) > 1:
        b = answers[1]
        if b.status != 200:
            return st, "pipelined GET /health after it answered %d: %r" % (b.status, b.body[:200]), mhd, repeat
    return st, None, mhd, repeat


def run_one(host, port, req, timeout, stats, where):
    t0 = time.time()
    try:
        answers, closed = send(host, port, req, timeout)
        st, prob, mhd, rep = judge(req, answers, closed)
    except HttpError as e:
        if req.half_close and "connection closed" in str(e):
            st, prob, mhd, rep, closed = None, None, False, False, True
        else:
            st, prob, mhd, rep, closed = None, "%s: %s" % (type(e).__name__, e), False, False, False
    except (TimeoutError, UnicodeDecodeError) as e:
        st, prob, mhd, rep, closed = None, "%s: %s" % (type(e).__name__, e), False, False, False
    except OSError as e:
        st, prob, mhd, rep, closed = None, "socket error %r" % e, False, False, False
    except Exception as e:  # noqa: BLE001 - a bug of this script must not end a worker silently
        st, prob, mhd, rep, closed = None, "the fuzzer itself failed: %r" % e, False, False, False
    stats.add(st, closed, mhd, rep, req.names, time.time() - t0, where)
    if stats.log:
        with stats.lock:
            stats.log.write("%.3f %.3f %s %s %s %s %s\n" % (t0, time.time() - t0, where, st, "closed" if closed else "-",
                                                         req.path[:60], ",".join(req.names)))
    if prob:
        stats.fail(where, req, prob)


def req_rng(seed, worker, index):
    return random.Random("%d/%d/%d" % (seed, worker, index))


def worker_loop(args, host, port, gen, emb, w, stop_at, stats):
    i = 0
    while time.time() < stop_at:
        try:
            req = make_request(req_rng(args.seed, w, i), gen, emb)
        except Exception as e:  # noqa: BLE001 - a bug of this script must not pass silently
            stats.fail("%d:%d" % (w, i), Req(b"", "-", "-", ["make_request"]), "the fuzzer itself failed: %r" % e)
            return
        run_one(host, port, req, args.timeout, stats, "%d:%d" % (w, i))
        i += 1


def get_json(host, port, path, timeout=30):
    hd = [(b"Host", b"x"), (b"Connection", b"close")]
    if AUTH["key"]:
        hd.append((b"Authorization", b"Bearer " + AUTH["key"].encode()))
    req = Req(head(b"GET", path.encode(), hd), "GET", path, [])
    answers, closed = send(host, port, req, timeout)
    if closed or not answers:
        raise OSError("GET %s: connection closed" % path)
    return answers[0].status, (strict_json(answers[0].body) if answers[0].ctype() == "application/json" else None)


def pick_models(host, port, gen, emb):
    if gen and emb:
        return gen, emb
    st, j = get_json(host, port, "/v1/models")
    ids = [m.get("id") for m in (j or {}).get("data", [])] if st == 200 else []
    embs = [i for i in ids if "bert" in i or "embed" in i]
    gens = [i for i in ids if i not in embs]
    return gen or (gens[0] if gens else "stories260K"), emb or (embs[0] if embs else (gens[0] if gens else "x"))


def main():
    ap = argparse.ArgumentParser(description="black-box HTTP fuzzer for kiln serve")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--url", default=None, help="http://HOST:PORT of the server")
    ap.add_argument("--port", type=int, default=None, help="port on 127.0.0.1")
    ap.add_argument("--workers", type=int, default=2, help="concurrent connections")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds one answer may take")
    ap.add_argument("--model", default=None, help="generation model (default: from /v1/models)")
    ap.add_argument("--embed-model", default=None, help="embedding model (default: from /v1/models)")
    ap.add_argument("--replay", default=None, help="W:I: send only request I of worker W (same --seed)")
    ap.add_argument("--show", action="store_true", help="with --replay: print the request and the answer")
    ap.add_argument("--api-key", default=None, help="the server's --api-key (sent on most requests)")
    ap.add_argument("--origin", default=None, help="an origin the server's --cors-origin allows")
    ap.add_argument("--log", default=None, help="append one line per request (start, seconds, W:I, status, ...)")
    args = ap.parse_args()
    if args.url:
        u = urllib.parse.urlparse(args.url)
        host, port = u.hostname or "127.0.0.1", u.port or 80
    elif args.port:
        host, port = "127.0.0.1", args.port
    else:
        ap.error("give --url or --port")
    AUTH["key"], AUTH["origin"] = args.api_key, args.origin
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 31)
    gen, emb = pick_models(host, port, args.model, args.embed_model)
    stats = Stats()
    if args.log:
        stats.log = open(args.log, "a")
    t0 = time.time()
    if args.replay:
        w, i = (int(x) for x in args.replay.split(":"))
        req = make_request(req_rng(args.seed, w, i), gen, emb)
        if args.show:
            print("request: %s\nmutations: %s" % (_short(repr(req.raw), 4000), req.names))
            try:
                answers, closed = send(host, port, req, args.timeout)
                print("closed without answer" if closed else "\n".join(
                    "answer: %d %r %r trailing %r" % (a.status, a.headers, a.body[:2000], a.trailing[:300])
                    for a in answers))
            except Exception as e:  # noqa: BLE001 - show whatever happened
                print("error: %r" % e)
        run_one(host, port, req, args.timeout, stats, args.replay)
    else:
        print("fuzz_http: %s:%d for %.0f s, %d workers, models %s / %s, seed %d"
              % (host, port, args.seconds, args.workers, gen, emb, args.seed), flush=True)
        stop_at = t0 + args.seconds
        ths = [threading.Thread(target=worker_loop, args=(args, host, port, gen, emb, w, stop_at, stats), daemon=True)
               for w in range(args.workers)]
        for t in ths:
            t.start()
        for t in ths:
            t.join(args.seconds + args.timeout + 30)
            if t.is_alive():
                stats.fail("worker", Req(b"", "-", "-", []), "a worker did not finish (hung request)")
    health = None
    for _ in range(3):
        try:
            health, _ = get_json(host, port, "/health")
            break
        except OSError as e:
            health = repr(e)
            time.sleep(1)
    if health != 200:
        stats.fail("after", Req(b"GET /health", "GET", "/health", []), "/health answered %r after fuzzing" % health)
    muts = ", ".join("%s %d" % kv for kv in sorted(stats.mutations.items(), key=lambda kv: -kv[1]))
    print("fuzz_http: mutations: %s" % muts)
    print("fuzz_http: slowest: %s" % "; ".join("%.1f s %s (%s) %s" % (dt, w, st, ",".join(n))
                                                for dt, w, st, n in stats.slowest))
    print("fuzz_http: %.1f s, %d closed without answer (allowed), %d libmicrohttpd answers, %d with a repeated head "
          "(mhd_repeat), /health %s" % (time.time() - t0, stats.closed, stats.mhd_answers, stats.mhd_repeat, health))
    sts = "{" + ", ".join("%d: %d" % kv for kv in sorted(stats.statuses.items())) + "}"
    print("fuzz_http: %d requests, statuses %s, %d failures, seed %d" % (stats.n, sts, len(stats.failures), args.seed),
          flush=True)
    sys.exit(1 if stats.failures else 0)


if __name__ == "__main__":
    main()
