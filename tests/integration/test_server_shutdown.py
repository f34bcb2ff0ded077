#!/usr/bin/env python3
"""test_server_shutdown.py — the life cycle of `kiln serve`:
 0. startup with -m: /health is 503 loading until the model is loaded, and a
    request sent meanwhile waits for it;
 1. SIGTERM during a long stream: the stream still finishes properly (same
    text as without the signal, finish_reason, [DONE]); new connections are
    refused or get 503 while draining; the process exits 0 and its log shows
    the steps (stop accepting / drain, unload);
 2. --grace-period 1 cuts a much longer request: the stream ends with
    finish_reason "cancelled" or the connection closes, a non-stream request
    in flight returns too, and the process still exits 0 promptly;
 3. SIGINT on an idle server exits 0 at once."""

import http.client
import json
import os
import re
import signal
import socket
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kiln_server as ks  # noqa: E402

ks.need_env()
ck = ks.Checks()
SLOW = "tiny-qwen2-Q4_K_M"  # ~500 tok/s on one thread
SFILE = ks.model_path(SLOW)


def body(n, stream):
    return {"model": SLOW, "prompt": "Once upon a time", "max_tokens": n, "temperature": 0, "ignore_eos": True,
            "stream": stream}


class StreamReader(threading.Thread):
    """Reads an SSE stream to its end in the background."""

    def __init__(self, st, first):
        super().__init__(daemon=True)
        self.st = st
        self.chunks = list(first)
        self.done = False
        self.error = None
        self.end_time = None
        self.it = None

    def run(self):
        try:
            for data in self.it:
                if data == "[DONE]":
                    self.done = True
                else:
                    self.chunks.append(json.loads(data))
        except (OSError, http.client.HTTPException, ValueError) as e:
            self.error = e
        self.end_time = time.time()


def start_stream(srv, n, k=3):
    """Opens a stream and reads k events; returns a StreamReader (not started)
    holding the iterator, or None."""
    st = srv.open_stream("/v1/completions", body(n, True))
    if not ck.eq("long stream: status 200", st.status, 200):
        return None
    it = st.sse_events()
    first = []
    for data in it:
        first.append(json.loads(data))
        if len(first) == k:
            break
    r = StreamReader(st, first)
    r.it = it
    return r


def probe(srv):
    """A new connection while draining: returns ('refused'|'closed'|'timeout'|status, body)."""
    try:
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=2)
        c.request("GET", "/health")
        r = c.getresponse()
        b = r.read()
        c.close()
        return r.status, b
    except ConnectionRefusedError:
        return "refused", b""
    except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected, http.client.BadStatusLine):
        return "closed", b""
    except socket.timeout:
        return "timeout", b""


def test_drain():
    srv = ks.Server(["-m", SFILE, "-c", "2048", "-t", "1", "-np", "2"])
    try:
        n = ks.tokens_for(ks.token_rate(srv, SLOW), 2.0, 200, 2000)  # about 2 s
        t0 = time.time()
        base = srv.post_json("/v1/completions", body(n, False))
        t_full = time.time() - t0
        want = base["choices"][0]["text"]
        print("   %d tokens take %.2f s" % (n, t_full))
        rd = start_stream(srv, n)
        if rd is None:
            return
        log_before = len(srv.log())
        t_sig = time.time()
        srv.signal(signal.SIGTERM)
        rd.start()
        time.sleep(0.2)
        outcomes = []
        for _ in range(2):
            outcomes.append(probe(srv))
            time.sleep(0.1)
        still_streaming = rd.end_time is None
        print("   probes while draining: %r (stream still running: %s)" % ([o[0] for o in outcomes],
                                                                          still_streaming))
        ck.check("drain: the stream was still running during the probes (request long enough)", still_streaming,
                 "stream ended %.2f s after SIGTERM" % ((rd.end_time or 0) - t_sig))
        for st, b in outcomes:
            ok = st in ("refused", "closed") or st == 503
            ck.check("drain: a new connection is refused or gets 503", ok, "%r %r" % (st, b[:200]))
            if st == 503:
                try:
                    ck.eq("drain: /health says draining", json.loads(b).get("status"), "draining")
                except ValueError:
                    ck.fail("drain: /health 503 body is JSON", b)
        rd.join(60)
        ck.check("drain: the stream ended without a connection error", rd.error is None, repr(rd.error))
        ck.check("drain: the stream ended with data: [DONE]", rd.done, rd.chunks[-1:] if rd.chunks else None)
        finishes = [c["choices"][0].get("finish_reason") for c in rd.chunks if c.get("choices")]
        ck.eq("drain: the stream finished with finish_reason length", finishes[-1] if finishes else None, "length")
        ck.eq("drain: the stream text is the same as without the signal", ks.sse_text(rd.chunks, False), want)
        rc = srv.wait(15)
        t_exit = time.time()
        ck.exited_clean("drain", srv, rc)
        if rc is not None and rd.end_time:
            ck.check("drain: exits soon after the last request ends", t_exit - rd.end_time < 5.0,
                     "%.2f s" % (t_exit - rd.end_time))
        tail = srv.log()[log_before:]
        m_stop = re.search(r"(?i)shut|drain|stop accepting|signal", tail)
        m_unload = re.search(r"(?i)unload", tail)
        ck.check("drain: the log shows the shutdown starting", m_stop is not None, tail[-1500:])
        ck.check("drain: the log shows the models unloaded", m_unload is not None, tail[-1500:])
        if m_stop and m_unload:
            ck.check("drain: shutdown logged before unloading", m_stop.start() < m_unload.start(), tail[-1500:])
        print("   shutdown log:\n" + "\n".join("   | " + ln for ln in tail.splitlines()[-12:]))
    finally:
        srv.kill()
    if ck.fails:
        srv.dump_log_tail()


def test_grace_cut():
    srv = ks.Server(["-m", SFILE, "-c", "2048", "-t", "1", "-np", "2", "--grace-period", "1"])
    try:
        n = ks.tokens_for(ks.token_rate(srv, SLOW), 8.0, 200, 2000)  # far longer than the grace period
        print("   %d tokens: at least 8 s" % n)
        rd = start_stream(srv, n)
        if rd is None:
            return
        nonstream = {}

        def ns():
            try:
                nonstream["r"] = srv.post("/v1/completions", body(n, False), timeout=30)
            except (OSError, http.client.HTTPException) as e:
                nonstream["r"] = e
            nonstream["t"] = time.time()
        nt = threading.Thread(target=ns, daemon=True)
        nt.start()
        time.sleep(0.3)
        t_sig = time.time()
        srv.signal(signal.SIGTERM)
        rd.start()
        rc = srv.wait(10)
        t_exit = time.time()
        ck.exited_clean("grace 1 s", srv, rc)
        ck.check("grace 1 s: exits within 5 s of SIGTERM", rc is not None and t_exit - t_sig < 5.0,
                 "%.2f s" % (t_exit - t_sig))
        rd.join(10)
        nt.join(10)
        ck.check("grace 1 s: the stream reader returned", rd.end_time is not None, "still reading")
        finishes = [c["choices"][0].get("finish_reason") for c in rd.chunks if c.get("choices")]
        last = finishes[-1] if finishes else None
        cancelled = last == "cancelled" and rd.done
        closed = (rd.error is not None or not rd.done) and last is None
        print("   stream after the grace period: finish %r, [DONE] %s, error %r, %d chunks"
              % (last, rd.done, rd.error, len(rd.chunks)))
        ck.check("grace 1 s: the stream ends with finish_reason cancelled + [DONE], or the connection closes",
                 cancelled or closed, "finish %r done %s error %r" % (last, rd.done, rd.error))
        ntoks = len([c for c in rd.chunks if c.get("choices") and c["choices"][0].get("text")])
        ck.check("grace 1 s: the request was cut (fewer than %d tokens)" % n, ntoks < n, ntoks)
        r = nonstream.get("r")
        ck.check("grace 1 s: the non-stream request in flight returned", r is not None, "hung")
        if isinstance(r, ks.Response):
            print("   non-stream request: HTTP %d %s" % (r.status, r.text()[:200]))
            if r.status == 200:
                ck.eq("grace 1 s: a 200 non-stream answer says cancelled",
                      r.json()["choices"][0].get("finish_reason"), "cancelled")
            else:
                ck.check("grace 1 s: non-stream error status is 5xx", 500 <= r.status < 600, r)
        tail = srv.log()
        ck.check("grace 1 s: the log shows the models unloaded", re.search(r"(?i)unload", tail) is not None,
                 tail[-1500:])
    finally:
        srv.kill()
    if ck.fails:
        srv.dump_log_tail()


def test_sigint_idle():
    srv = ks.Server(["-m", ks.model_path("stories260K"), "-c", "128", "-t", "1"])
    try:
        ck.eq("sigint: a request first", srv.post("/v1/completions", {"prompt": "Once", "max_tokens": 3}).status, 200)
        t0 = time.time()
        srv.signal(signal.SIGINT)
        rc = srv.wait(10)
        ck.exited_clean("sigint", srv, rc)
        ck.check("sigint: idle server exits within 3 s", rc is not None and time.time() - t0 < 3.0,
                 "%.2f s" % (time.time() - t0))
    finally:
        srv.kill()


def test_startup_loading():
    """With -m the server listens at once and loads the model: /health is
    503 {"status":"loading"} until it is ready, and a request sent meanwhile
    is answered once the model is loaded."""
    srv = ks.Server(["-m", SFILE, "-c", "2048", "-t", "1"], wait_health=False)
    try:
        out = {}

        def early():
            try:
                out["r"] = srv.post("/v1/completions", {"prompt": "Once", "max_tokens": 3}, timeout=60)
            except (OSError, http.client.HTTPException) as e:
                out["r"] = e
        th = threading.Thread(target=early)
        th.start()
        seen = []
        deadline = time.time() + 60
        while time.time() < deadline:
            r = srv.get("/health", timeout=10)
            seen.append(r)
            if r.status == 200:
                break
            time.sleep(0.005)
        th.join(60)
        loading = [r for r in seen if r.status != 200]
        print("   /health answered %d times before ready (%d not 200)" % (len(seen), len(loading)))
        ck.check("startup: /health becomes 200", seen and seen[-1].status == 200, seen[-1:])
        ck.check("startup: /health said 503 loading while the model loaded (the case is exercised)",
                 len(loading) >= 1, "the first answer was already 200")

        def is_loading(r):
            try:
                return r.status == 503 and r.json().get("status") == "loading"
            except ValueError:
                return False
        ck.check("startup: every answer before ready is 503 {status: loading}", all(is_loading(r) for r in loading),
                 [r for r in loading if not is_loading(r)][:2])
        r = out.get("r")
        ck.eq("startup: a request sent while loading is answered 200 once loaded", getattr(r, "status", repr(r)), 200)
        st, h = srv.health()
        ck.check("startup: /health lists the model when ready",
                 [m.get("name") for m in h.get("models", [])] == [SLOW], h)
    finally:
        rc = srv.stop(30)
    ck.exited_clean("startup server on SIGTERM", srv, rc)

    # SIGTERM while the model is still loading
    srv = ks.Server(["-m", SFILE, "-c", "2048", "-t", "1"], wait_health=False)
    try:
        st, h = srv.health()
        srv.signal(signal.SIGTERM)
        t0 = time.time()
        rc = srv.wait(15)
        print("   SIGTERM during loading (health was %d): exit after %.2f s" % (st, time.time() - t0))
        ck.exited_clean("SIGTERM during loading", srv, rc)
        ck.check("SIGTERM during loading: exits within 5 s", rc is not None and time.time() - t0 < 5, rc)
    finally:
        srv.kill()


def main():
    ck.run(test_startup_loading)
    ck.run(test_drain)
    ck.run(test_grace_cut)
    ck.run(test_sigint_idle)
    ck.finish()


if __name__ == "__main__":
    main()
