"""kiln_server.py — shared helpers for the `kiln serve` integration tests.

Starts the real server from $KILN_BIN on 127.0.0.1 with --port 0, reads the
port from its stderr line `listening on http://HOST:PORT` (stderr and stdout
are drained by threads into buffers, so the pipes never block; `log()`
returns the text so far), waits for GET /health to answer 200, and offers
request helpers for JSON, SSE (OpenAI streams) and NDJSON (Ollama streams).
`stop()` sends SIGTERM and waits for the exit status.

Also: `Checks`, a tiny assertion counter (every check prints ok/FAIL with
the details, and `finish()` exits nonzero on any failure), `run_kiln` to run
other kiln commands as references (`run_ref`: the greedy `kiln run` text,
`check_run_match`: an API answer against it), `load_estimates` (the memory
estimates the registry logs), `proc_memory` (a process's RSS from /proc),
`sanitized_build` (whether RSS means anything), `shared()` for files in
KILN_SHARED, and `npm_modules()` / `run_node()` for the tests that drive the
server with the apps' own npm SDKs (tests/e2e/sdk).

Standard library only.
"""

import http.client
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

KILN_BIN = os.environ.get("KILN_BIN", "")
KILN_SHARED = os.environ.get("KILN_SHARED", "")


def need_env():
    missing = [v for v in ("KILN_BIN", "KILN_SHARED") if not os.environ.get(v)]
    if missing:
        print("FAIL: environment variables not set: " + ", ".join(missing))
        sys.exit(2)
    if not os.access(KILN_BIN, os.X_OK):
        print("FAIL: KILN_BIN=%s is not executable" % KILN_BIN)
        sys.exit(2)


def shared(*parts):
    return os.path.join(KILN_SHARED, *parts)


def model_path(name):
    return shared("models", name + ".gguf")


SRC_DIR = os.environ.get("KILN_SRC") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def npm_modules(e2e="sdk"):
    """node_modules of tests/e2e/<e2e>'s pinned packages, installed outside the
    tree by tests/integration/npm_deps.sh (raises on failure: no skip)."""
    r = subprocess.run(["bash", os.path.join(SRC_DIR, "tests", "integration", "npm_deps.sh"),
                        os.path.join(SRC_DIR, "tests", "e2e", e2e)], capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise RuntimeError("npm_deps.sh failed: " + r.stderr[-2000:])
    return r.stdout.strip().splitlines()[-1]


def run_node(script, args=(), e2e="sdk", env=None, timeout=600):
    """Runs tests/e2e/<e2e>/<script> with node from a temporary copy of the
    directory beside a node_modules link (ESM resolves packages from the
    importing file's directory). Returns the CompletedProcess (text)."""
    mods = npm_modules(e2e)
    d = tempfile.mkdtemp(prefix="kiln-node-")
    try:
        src = os.path.join(SRC_DIR, "tests", "e2e", e2e)
        for f in os.listdir(src):
            if f.endswith((".mjs", ".js", ".json")) and f not in ("package.json", "package-lock.json"):
                shutil.copy(os.path.join(src, f), d)
        os.symlink(mods, os.path.join(d, "node_modules"))
        e = dict(os.environ)
        if env:
            e.update(env)
        return subprocess.run(["node", script] + list(args), cwd=d, capture_output=True, text=True,
                              timeout=timeout, env=e)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def prompt_text(name):
    with open(shared("reference", "prompts", name + ".txt"), "rb") as f:
        return f.read().decode("utf-8")


# ---------------------------------------------------------------- checks

class Checks:
    """Counts checks; each prints `ok   NAME` or `FAIL NAME: detail`."""

    def __init__(self):
        self.total = 0
        self.fails = 0
        self.lock = threading.Lock()

    def check(self, name, cond, detail=""):
        with self.lock:
            self.total += 1
            if cond:
                print("ok   " + name, flush=True)
            else:
                self.fails += 1
                msg = "FAIL " + name
                if detail:
                    msg += ": " + _short(detail)
                print(msg, flush=True)
        return bool(cond)

    def eq(self, name, got, want):
        return self.check(name, got == want, "got %s, want %s" % (_short(repr(got)), _short(repr(want))))

    def exited_clean(self, name, srv, rc):
        """The server exited 0 and its log holds no sanitizer report."""
        self.eq(name + ": exit code 0", rc, 0)
        reports = sanitizer_reports(srv.log())
        return self.check(name + ": no sanitizer report in the server log", not reports, "\n".join(reports[:20]))

    def fail(self, name, detail):
        return self.check(name, False, detail)

    def run(self, fn, *args):
        """Runs one test function; an exception counts as one failure."""
        print("== " + fn.__name__, flush=True)
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - any error is a test failure
            self.fail(fn.__name__ + " raised", traceback.format_exc())

    def finish(self, servers=()):
        for s in servers:
            if s is not None and self.fails:
                s.dump_log_tail()
        print("%d passed, %d failed" % (self.total - self.fails, self.fails), flush=True)
        sys.exit(1 if self.fails else 0)


def sanitizer_reports(log):
    """Lines of ASan/UBSan/LSan/TSan reports in a log."""
    pat = re.compile(r"runtime error:|ERROR: (Address|Leak|Thread|Memory|UndefinedBehavior)Sanitizer|"
                     r"WARNING: ThreadSanitizer|SUMMARY: \w+Sanitizer")
    return [ln for ln in log.splitlines() if pat.search(ln)]


def error_message(r):
    """The message of an error answer: OpenAI's error.message, Ollama's
    error string, or the raw body when it is not JSON."""
    try:
        e = r.json().get("error")
    except (ValueError, AttributeError):
        return r.text()
    return e.get("message", "") if isinstance(e, dict) else (e or "")


def _short(s, n=1500):
    s = str(s)
    return s if len(s) <= n else s[:n] + "... (%d chars)" % len(s)


# ---------------------------------------------------------------- kiln CLI

def run_kiln(args, stdin=None, timeout=120):
    """Runs `kiln ARGS`; returns stdout bytes. Raises on a nonzero exit."""
    p = subprocess.run([KILN_BIN] + list(args), input=stdin, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError("kiln %s exited %d: %s" % (" ".join(args), p.returncode,
                                                      p.stderr.decode("utf-8", "replace")[-2000:]))
    return p.stdout


def kiln_tokenize(model_file, text, raw=False):
    args = ["tokenize", "-m", model_file] + (["--raw"] if raw else [])
    out = run_kiln(args, stdin=text.encode("utf-8"))
    return [int(x) for x in out.split()]


def kiln_info(model_file):
    return json.loads(run_kiln(["info", model_file, "--json"]))


def run_text_matches(run_out, api_text):
    """kiln run prints the generated text plus a final newline when the text
    does not end with one; True when run_out (str) is what api_text gives.
    An invalid UTF-8 sequence (a random model's stray byte tokens) is one
    U+FFFD in run_out (Python's maximal subpart) and one per byte in the API,
    so runs of U+FFFD compare as one."""
    fffd = re.compile("\ufffd+")
    run_out, api_text = fffd.sub("\ufffd", run_out), fffd.sub("\ufffd", api_text)
    if run_out == api_text:
        return True
    return not api_text.endswith("\n") and run_out == api_text + "\n"


def strip_run_newline(run_out):
    return run_out[:-1] if run_out.endswith("\n") else run_out


def run_ref(model_file, args, n, ignore_eos, threads=2):
    """The greedy reference: the text of `kiln run -m FILE -n N --temp 0 -t
    THREADS ARGS [--ignore-eos]` (a prompt and any -c go in ARGS)."""
    a = ["run", "-m", model_file, "-n", str(n), "--temp", "0", "-t", str(threads)] + list(args)
    if ignore_eos:
        a.append("--ignore-eos")
    # a random model can end on a partial UTF-8 sequence; the API replaces
    # an invalid sequence by U+FFFD as Python's "replace" does
    return run_kiln(a).decode("utf-8", "replace")


def check_run_match(ck, name, run_out, api_text):
    """Checks that an API answer's text is what `kiln run` printed."""
    return ck.check(name, api_text is not None and run_text_matches(run_out, api_text),
                    "kiln run %r\n     API      %r" % (run_out, api_text))


def load_estimates(log):
    """{id: MiB} from the registry's `loading ID (NAME:QUANT) from PATH
    (context N, estimate X MiB)` log lines (the last one of each id)."""
    return {m.group(1): float(m.group(2)) for m in
            re.finditer(r"loading (\S+) \(.*?\) from .*?\(context \d+[^)]*?estimate ([0-9.]+) MiB\)", log)}


def sanitized_build():
    """True when $KILN_BIN carries an ASan or TSan runtime (shadow memory and
    quarantines make its RSS mean nothing)."""
    with open(KILN_BIN, "rb") as f:
        data = f.read()
    return b"__asan_init" in data or b"__tsan_init" in data


def proc_memory(pid):
    """{VmRSS, RssAnon, RssFile: bytes} of a process, from /proc/PID/status."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            k, _, v = ln.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile"):
                out[k] = int(v.split()[0]) * 1024
    return out


# ---------------------------------------------------------------- server

class ServerError(Exception):
    pass


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # dict, lower-case names
        self.body = body        # bytes

    def header(self, name):
        return self.headers.get(name.lower())

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def text(self):
        return self.body.decode("utf-8", "replace")

    def __repr__(self):
        return "<HTTP %d %s>" % (self.status, _short(self.text(), 600))


class Stream:
    """A streamed response read event by event (SSE) or line by line (NDJSON)."""

    def __init__(self, conn, resp):
        self.conn = conn
        self.resp = resp
        self.status = resp.status
        self.headers = {k.lower(): v for k, v in resp.getheaders()}
        self.framing_errors = []

    def header(self, name):
        return self.headers.get(name.lower())

    def sse_events(self):
        """Yields the data string of each SSE event. Checks the framing: each
        event is `data: ...` lines ended by an empty line; records problems in
        framing_errors. Ends at EOF."""
        for _, data in self.sse_named_events(named=False):
            yield data

    def sse_named_events(self, named=True):
        """Yields (event name or None, data) of each SSE event: the named
        events of the Anthropic and Responses streams (`event: NAME` then
        `data: ...`). With named=False an `event:` line is a framing error."""
        data_lines = []
        name = None
        while True:
            line = self.resp.readline()
            if not line:
                if data_lines:
                    self.framing_errors.append("stream ended inside an event: %r" % data_lines)
                return
            if not line.endswith(b"\n"):
                self.framing_errors.append("line without newline at EOF: %r" % line)
            s = line.decode("utf-8")
            if s.endswith("\r\n"):
                self.framing_errors.append("CRLF line ending in SSE: %r" % s)
            s = s.rstrip("\r\n")
            if s == "":
                if not data_lines:
                    self.framing_errors.append("empty event (blank line with no data)")
                    continue
                yield name, "\n".join(data_lines)
                data_lines = []
                name = None
            elif named and s.startswith("event: ") and not data_lines and name is None:
                name = s[7:]
            elif s.startswith("data: "):
                if data_lines:
                    self.framing_errors.append("event with several data lines (no blank line between?): %r" % s)
                data_lines.append(s[6:])
            elif s.startswith(":"):
                continue  # SSE comment (keep-alive)
            else:
                self.framing_errors.append("unexpected SSE line: %r" % s)

    def ndjson_lines(self):
        while True:
            line = self.resp.readline()
            if not line:
                return
            if not line.endswith(b"\n"):
                self.framing_errors.append("NDJSON line without newline: %r" % line)
            s = line.decode("utf-8").strip()
            if s == "":
                self.framing_errors.append("empty NDJSON line")
                continue
            yield json.loads(s)

    def read_all(self):
        return self.resp.read()

    def abort(self):
        """Closes the socket at once (a client disconnecting mid-stream)."""
        try:
            if self.conn.sock is not None:
                self.conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.conn.close()

    def close(self):
        self.conn.close()


class SSEResult:
    def __init__(self):
        self.status = None
        self.headers = {}
        self.chunks = []       # parsed JSON objects before [DONE]
        self.done = False      # saw data: [DONE]
        self.after_done = []   # anything after [DONE] (must be empty)
        self.framing_errors = []
        self.body = b""        # the error body when status != 200


class NDResult:
    def __init__(self):
        self.status = None
        self.headers = {}
        self.objs = []
        self.framing_errors = []
        self.body = b""


class Server:
    """One `kiln serve` process on 127.0.0.1 with a free port."""

    def __init__(self, args, ready_timeout=60, wait_health=True, env=None, cache=False):
        args = list(args)
        # The response and embedding caches would turn the repeated requests
        # of the other tests into cache hits: they are off unless a test asks
        # for them (cache=True, or a cache flag of its own). The disk cache
        # never goes to the user's ~/.cache: a fresh directory per server.
        self._cache_tmp = None
        if not any(a.startswith("--cache-dir") for a in args):
            self._cache_tmp = tempfile.mkdtemp(prefix="kiln-cache-")
            args += ["--cache-dir", self._cache_tmp]
        if not cache and not any(a.startswith(("--response-cache", "--embedding-cache")) for a in args):
            args += ["--response-cache=false", "--embedding-cache=false"]
        self.args = ["serve", "--host", "127.0.0.1", "--port", "0"] + args
        self._err = bytearray()
        self._out = bytearray()
        self._lock = threading.Lock()
        self.port = None
        self.exit_code = None
        e = dict(os.environ)
        if env:
            e.update(env)
        self.proc = subprocess.Popen([KILN_BIN] + self.args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e)
        self._threads = [threading.Thread(target=self._drain, args=(self.proc.stderr, self._err), daemon=True),
                         threading.Thread(target=self._drain, args=(self.proc.stdout, self._out), daemon=True)]
        for t in self._threads:
            t.start()
        try:
            self._wait_port(ready_timeout)
            if wait_health:
                self.wait_ready(ready_timeout)
        except Exception:
            self.kill()
            raise

    def _drain(self, pipe, buf):
        while True:
            b = pipe.read1(65536) if hasattr(pipe, "read1") else pipe.read(4096)
            if not b:
                return
            with self._lock:
                buf.extend(b)

    def log(self):
        """Everything the server wrote to stderr so far."""
        with self._lock:
            return self._err.decode("utf-8", "replace")

    def log_count(self, pattern, at_least, timeout=10.0):
        """How often the regex pattern occurs in the log, waiting up to
        timeout s for at least at_least occurrences: stderr reaches the
        test through a pipe and a reader thread, so a line the server wrote
        before it answered can arrive after the answer."""
        deadline = time.time() + timeout
        while True:
            n = len(re.findall(pattern, self.log(), flags=re.M))
            if n >= at_least or time.time() >= deadline:
                return n
            time.sleep(0.02)

    def stdout_text(self):
        with self._lock:
            return self._out.decode("utf-8", "replace")

    def dump_log_tail(self, n=40):
        lines = self.log().splitlines()
        print("---- last %d lines of the server log (kiln %s) ----" % (min(n, len(lines)), " ".join(self.args)))
        for ln in lines[-n:]:
            print("   | " + ln)
        print("----")

    def _wait_port(self, timeout):
        deadline = time.time() + timeout
        pat = re.compile(r"listening on http://([^\s:/]+|\[[^\]]+\]):(\d+)")
        while time.time() < deadline:
            m = pat.search(self.log())
            if m:
                self.port = int(m.group(2))
                return
            if self.proc.poll() is not None:
                time.sleep(0.1)
                raise ServerError("kiln serve exited with %s before listening; stderr:\n%s"
                                  % (self.proc.returncode, self.log()[-3000:]))
            time.sleep(0.02)
        raise ServerError("no 'listening on http://HOST:PORT' line on stderr within %d s; stderr:\n%s"
                          % (timeout, self.log()[-3000:]))

    def wait_ready(self, timeout=60):
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            try:
                r = self.get("/health", timeout=5)
                if r.status == 200:
                    return r
                last = r
            except OSError as e:
                last = e
            if self.proc.poll() is not None:
                raise ServerError("kiln serve exited with %s while waiting for /health; stderr:\n%s"
                                  % (self.proc.returncode, self.log()[-3000:]))
            time.sleep(0.05)
        raise ServerError("/health not 200 within %d s (last: %r)" % (timeout, last))

    # ------------------------------------------------------------ requests

    def connect(self, timeout=60):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=60, raw=None):
        """One request on a fresh connection. body: a JSON-able value, or
        raw=bytes to send verbatim. Returns a Response."""
        h = {}
        data = None
        if raw is not None:
            data = raw
            h["Content-Type"] = "application/json"
        elif body is not None:
            data = json.dumps(body).encode("utf-8")
            h["Content-Type"] = "application/json"
        if headers:
            h.update(headers)
        conn = self.connect(timeout)
        try:
            conn.request(method, path, body=data, headers=h)
            resp = conn.getresponse()
            payload = resp.read()
            return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, payload)
        finally:
            conn.close()

    def get(self, path, headers=None, timeout=60):
        return self.request("GET", path, headers=headers, timeout=timeout)

    def post(self, path, body=None, headers=None, timeout=60, raw=None):
        return self.request("POST", path, body=body, headers=headers, timeout=timeout, raw=raw)

    def post_json(self, path, body, headers=None, timeout=120):
        """POST and decode a 200 JSON answer; raises ServerError otherwise."""
        r = self.post(path, body, headers=headers, timeout=timeout)
        if r.status != 200:
            raise ServerError("POST %s %s -> %r" % (path, _short(json.dumps(body), 300), r))
        return r.json()

    def open_stream(self, path, body, headers=None, timeout=120):
        """POSTs body and returns a Stream positioned at the response body."""
        h = {"Content-Type": "application/json"}
        if headers:
            h.update(headers)
        conn = self.connect(timeout)
        conn.request("POST", path, body=json.dumps(body).encode("utf-8"), headers=h)
        resp = conn.getresponse()
        return Stream(conn, resp)

    def sse(self, path, body, headers=None, timeout=120):
        """Runs a whole SSE stream; returns an SSEResult."""
        res = SSEResult()
        st = self.open_stream(path, body, headers, timeout)
        try:
            res.status = st.status
            res.headers = st.headers
            if st.status != 200:
                res.body = st.read_all()
                return res
            for data in st.sse_events():
                if res.done:
                    res.after_done.append(data)
                elif data == "[DONE]":
                    res.done = True
                else:
                    try:
                        res.chunks.append(json.loads(data))
                    except ValueError:
                        res.framing_errors.append("event data is not JSON: %r" % data)
            res.framing_errors.extend(st.framing_errors)
            return res
        finally:
            st.close()

    def ndjson(self, path, body, headers=None, timeout=120):
        res = NDResult()
        st = self.open_stream(path, body, headers, timeout)
        try:
            res.status = st.status
            res.headers = st.headers
            if st.status != 200:
                res.body = st.read_all()
                return res
            for obj in st.ndjson_lines():
                res.objs.append(obj)
            res.framing_errors.extend(st.framing_errors)
            return res
        finally:
            st.close()

    def health(self):
        r = self.get("/health", timeout=10)
        return r.status, (r.json() if r.body else None)

    def wait_idle(self, timeout=5.0):
        """Polls /health until requests_running == 0 and every slots_busy == 0.
        Returns (ok, last_body, seconds_waited)."""
        t0 = time.time()
        last = None
        while True:
            try:
                st, h = self.health()
                last = h
                if st == 200 and h.get("requests_running") == 0 and \
                        all(m.get("slots_busy") == 0 for m in h.get("models", [])):
                    return True, h, time.time() - t0
            except (OSError, ValueError) as e:
                last = repr(e)
            if time.time() - t0 > timeout:
                return False, last, time.time() - t0
            time.sleep(0.05)

    # ------------------------------------------------------------ lifetime

    def signal(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout):
        """Waits for the process; returns its exit code or None on timeout."""
        try:
            self.exit_code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        for t in self._threads:
            t.join(timeout=5)
        return self.exit_code

    def stop(self, timeout=30):
        """SIGTERM and wait; returns the exit code (kills and returns None if
        the server did not exit within timeout)."""
        if self.proc.poll() is not None:
            return self.wait(1)
        self.signal(signal.SIGTERM)
        rc = self.wait(timeout)
        if rc is None:
            self.kill()
        self._drop_cache_tmp()
        return rc

    def _drop_cache_tmp(self):
        if self._cache_tmp and self.proc.poll() is not None:
            shutil.rmtree(self._cache_tmp, ignore_errors=True)
            self._cache_tmp = None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self._drop_cache_tmp()


# ---------------------------------------------------------------- /metrics and kiln bench

METRIC_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$')
METRIC_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metrics_map(srv):
    """{(name, frozenset(labels.items())): value} of GET /metrics."""
    r = srv.get("/metrics", timeout=30)
    if r.status != 200:
        raise ServerError("GET /metrics -> %r" % r)
    out = {}
    for ln in r.text().splitlines():
        if not ln or ln.startswith("#"):
            continue
        m = METRIC_LINE.match(ln)
        if m:
            out[(m.group(1), frozenset(METRIC_LABEL.findall(m.group(3) or "")))] = float(m.group(4))
    return out


def metrics_of(srv, **labels):
    """{name: value} summed over the series whose labels include `labels`."""
    want = set(labels.items())
    out = {}
    for (name, ls), v in metrics_map(srv).items():
        if want <= ls:
            out[name] = out.get(name, 0.0) + v
    return out


def metric_sum(srv, name, **labels):
    """The sum of the series of `name` whose labels include `labels` (0 when none)."""
    return metrics_of(srv, **labels).get(name, 0.0)


def run_bench(url, args, out_dir, model, timeout=120):
    """Runs `kiln bench server --quiet` with --output in out_dir; returns
    (exit code, the parsed JSON or None, stdout + stderr)."""
    out = os.path.join(out_dir, "out.json")
    if os.path.exists(out):
        os.remove(out)
    cmd = [KILN_BIN, "bench", "server", "--url", url, "--model", model, "--output", out, "--quiet"] + list(args)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    doc = None
    if os.path.exists(out):
        with open(out) as f:
            doc = json.load(f)
    return p.returncode, doc, p.stdout.decode("utf-8", "replace") + p.stderr.decode("utf-8", "replace")


# ---------------------------------------------------------------- checks on results

def sse_text(chunks, chat):
    """Concatenates the text of a list of OpenAI stream chunks."""
    out = []
    for c in chunks:
        for ch in c.get("choices", []):
            if chat:
                d = ch.get("delta") or {}
                if d.get("content"):
                    out.append(d["content"])
            else:
                if ch.get("text"):
                    out.append(ch["text"])
    return "".join(out)


def check_sse(ck, name, res, chat, include_usage=False, want_finish=None):
    """Checks an SSEResult against the stream contract; returns the text."""
    if not ck.eq(name + ": status 200", res.status, 200):
        print("   body: " + _short(res.body))
        return None
    ct = res.headers.get("content-type", "")
    ck.check(name + ": Content-Type text/event-stream", ct.startswith("text/event-stream"), ct)
    cc = res.headers.get("cache-control", "")
    ck.check(name + ": Cache-Control no-cache", "no-cache" in cc, cc)
    ck.check(name + ": SSE framing (data: ...\\n\\n)", not res.framing_errors, res.framing_errors)
    ck.check(name + ": ends with data: [DONE]", res.done and not res.after_done,
             "done=%s after=%r" % (res.done, res.after_done))
    chunks = res.chunks
    if not ck.check(name + ": has chunks", len(chunks) >= 2, "%d chunks" % len(chunks)):
        return None
    obj = "chat.completion.chunk" if chat else "text_completion"
    ck.check(name + ": every chunk's object is " + obj, all(c.get("object") == obj for c in chunks),
             [c.get("object") for c in chunks][:5])
    ids = {c.get("id") for c in chunks}
    ck.check(name + ": one id across chunks", len(ids) == 1 and None not in ids, ids)
    usage_chunk = None
    body = chunks
    if include_usage:
        usage_chunk = chunks[-1]
        body = chunks[:-1]
        ck.check(name + ": usage chunk last, with choices []",
                 usage_chunk.get("choices") == [] and isinstance(usage_chunk.get("usage"), dict), usage_chunk)
        ck.check(name + ": no usage in earlier chunks",
                 all(not c.get("usage") for c in body), [c.get("usage") for c in body if c.get("usage")][:2])
    else:
        ck.check(name + ": no usage chunk without include_usage",
                 all(c.get("choices") for c in chunks) and all(not c.get("usage") for c in chunks),
                 chunks[-1])
    if not body:
        return None
    if chat:
        d0 = (body[0].get("choices") or [{}])[0].get("delta", {})
        ck.eq(name + ": first chunk delta.role", d0.get("role"), "assistant")
    finishes = [ch.get("finish_reason") for c in body for ch in c.get("choices", [])]
    ck.check(name + ": only the last choice chunk has finish_reason",
             all(f is None for f in finishes[:-1]) and finishes[-1] is not None, finishes[-5:])
    if want_finish is not None:
        ck.eq(name + ": finish_reason", finishes[-1], want_finish)
    else:
        ck.check(name + ": finish_reason is stop/length", finishes[-1] in ("stop", "length"), finishes[-1])
    return sse_text(body, chat)


def check_ndjson(ck, name, res, chat, want_done_reason=None):
    """Checks an NDResult against the Ollama stream shape; returns (text, final)."""
    if not ck.eq(name + ": status 200", res.status, 200):
        print("   body: " + _short(res.body))
        return None, None
    ct = res.headers.get("content-type", "")
    ck.check(name + ": Content-Type application/x-ndjson", ct.startswith("application/x-ndjson"), ct)
    ck.check(name + ": NDJSON framing", not res.framing_errors, res.framing_errors)
    objs = res.objs
    if not ck.check(name + ": several lines", len(objs) >= 2, len(objs)):
        return None, None
    ck.check(name + ": only the last line has done true",
             all(o.get("done") is False for o in objs[:-1]) and objs[-1].get("done") is True,
             [o.get("done") for o in objs][-5:])
    final = objs[-1]
    for k in ("done_reason", "prompt_eval_count", "eval_count", "total_duration", "eval_duration"):
        ck.check(name + ": final line has " + k, k in final, sorted(final))
    if want_done_reason:
        ck.eq(name + ": done_reason", final.get("done_reason"), want_done_reason)
    ck.check(name + ": model field", all(o.get("model") for o in objs), objs[0])
    if chat:
        ck.check(name + ": message.role assistant",
                 all((o.get("message") or {}).get("role") == "assistant" for o in objs[:-1]), objs[0])
        text = "".join((o.get("message") or {}).get("content", "") for o in objs)
    else:
        ck.check(name + ": each line has response", all(isinstance(o.get("response"), str) for o in objs), objs[0])
        text = "".join(o.get("response", "") for o in objs)
    return text, final


def token_rate(srv, model, n=200):
    """Generation speed (tokens/s, HTTP included) of one request alone, so
    long requests can be sized in seconds whatever the build (Release is
    ~10x faster than the sanitizer builds)."""
    t = time.time()
    srv.post_json("/v1/completions", {"model": model, "prompt": "Once upon a time", "max_tokens": n,
                                      "temperature": 0, "ignore_eos": True})
    return n / max(time.time() - t, 1e-3)


def tokens_for(rate, seconds, lo=32, hi=2000):
    """Tokens that take about `seconds` at `rate`, clamped to [lo, hi]."""
    return max(lo, min(hi, int(rate * seconds)))


def l2norm(v):
    return math.sqrt(sum(x * x for x in v))


def maxdiff(a, b):
    if len(a) != len(b):
        return float("inf")
    return max((abs(x - y) for x, y in zip(a, b)), default=0.0)
