#!/usr/bin/env python3
"""test_server_families.py — every model family through the real `kiln
serve`: qwen3, qwen3moe, gemma3, phi3, llama with Llama 3.1 RoPE factors and
gpt-oss (the tiny random-weight models of $KILN_SHARED/models), served
together from --models DIR, DIR being a temporary directory of symlinks
under the shared file names. Requests name the models as `kiln pull` does,
`tiny-qwen3:Q8_0`, and by file id, `tiny-qwen3-Q8_0`, at least once each.
Per family:

 load      the model serves a request. A family that does not load fails
           here, loudly, with the server's message; its other checks that
           need the model are not run (each says so), /api/show still is.
 equiv     greedy /v1/completions (24 tokens) equals `kiln run --temp 0
           --ignore-eos -c 2048` on the same file, for code.txt (also
           streamed, by file id) and a slice of long.txt longer than the
           32-token sliding windows; -c 2048 is past phi3's original context
           (1024), so its long RoPE factors are the ones in use, in both.
 batching  8 concurrent streams (16 tokens) of different prompts (slices of
           long.txt, 35 to 100 tokens) with -np 8: each equals the answer
           of the same request sent alone afterwards, and some forward step
           ran more than 4 sequences (kiln_batch_size), so prompts, decodes
           and the MoE expert grouping were shared across sequences.
 prefix    a prompt (over 40 tokens, so the windows are crossed), then the
           same prompt extended by a few words: the extension reuses at
           least the earlier prompt's full KV blocks but one
           (kiln_prefix_cache_hit_tokens_total; kiln's OpenAI usage has no
           cached-token field), and answers as a fresh server does, where it
           hits nothing.
 spec      on a repetitive prompt, "speculative": "ngram" gives the text of
           "none", with drafts proposed and accepted
           (kiln_spec_draft_tokens_total, kiln_spec_accepted_tokens_total).
 cache     on a server with the response cache on, the same request twice:
           X-Cache miss then hit, the hit generates no token
           (kiln_generated_tokens_total) and its body is byte-identical but
           for "id", "created" and usage "cached": true; a streamed pair
           likewise, piece by piece.
 show/ps   /api/show (by name and by id): details.family and
           general.architecture are the architecture; the MoE families have
           <arch>.expert_count and <arch>.expert_used_count as `kiln info`
           reads them, the others no expert_count; /api/ps lists each loaded
           model under its name with that family.
 memory    on a server of its own, sized so that what the estimate counts
           is touched by one request (-np 1 -c 128 -b 64 --cache-ram 0
           --draft-max 0: the KV of one 128-token context, scratch for 64
           tokens, no draft logits, no prefix-cache room), each model in
           turn: VmRSS of the server before the model is first named, after
           /tokenize (its front: vocabulary and template), after its load
           (/api/generate with no prompt) and after a request that fills
           its context with a ~50-token prompt. The growth over all three
           must be within 10% of the estimate the registry logs, plus 2 MiB
           for what does not scale with the model (the weight copy is
           rounded up to whole 2 MiB huge pages, and the model's threads
           bring their stacks and malloc arenas). No other test compares
           the estimate with RSS (test_reliability_memory only budgets with
           it; tests/unit/model/test_model_mem bounds it by the bytes the
           objects allocate); docs/server.md calls the estimate "the bytes
           the load will take", which is what this measures. Also: kiln_model_memory_estimate_error_bytes
           (the server's own RSS check of the load) agrees within 1 MiB with
           the growth measured from outside over the load alone, and the
           /api/ps size (weights and KV) is at least half the file and at
           most the estimate. The RSS checks are not run on a sanitizer
           build (ASan's and TSan's shadow memory; the test says so).

Every server exits 0 on SIGTERM with no sanitizer report in its log.
Standard library only."""

import os
import re
import shutil
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kiln_server as ks  # noqa: E402

ks.need_env()
ck = ks.Checks()
MIB = 1024.0 * 1024.0


class Family:
    def __init__(self, file_id, arch, moe):
        self.id = file_id                       # the file's name without .gguf: the id in answers
        base, quant = file_id.rsplit("-", 1)
        self.name = base + ":" + quant          # the `kiln pull` name
        self.arch = arch                        # general.architecture, Ollama's details.family
        self.moe = moe
        self.path = ks.model_path(file_id)
        self.serves = None                      # None until the load check ran; then True/False
        self.why = ""


FAMILIES = [
    Family("tiny-qwen3-Q8_0", "qwen3", False),
    Family("tiny-qwen3moe-Q8_0", "qwen3moe", True),
    Family("tiny-gemma3-Q8_0", "gemma3", False),
    Family("tiny-phi3-Q8_0", "phi3", False),
    Family("tiny-llama31-Q8_0", "llama", False),
    Family("tiny-gptoss-MXFP4", "gpt-oss", True),
]

CTX = 2048   # per sequence, the server's -c and kiln run's -c
N = 24       # tokens per greedy answer
N_BATCH = 16  # tokens per concurrent stream
BLOCK = 32   # the default --kv-block-size
LONG = ks.prompt_text("long")
# 8 prompts that share no prefix: slices of long.txt, 150 to 430 characters
BATCH_PROMPTS = [LONG[i * 600:i * 600 + 150 + 40 * i] for i in range(8)]
PREFIX_BASE = LONG[4700:5100]
PREFIX_EXT = " and then a few more words"
SENT = "The little dog ran to the big tree and the little cat ran to the big house. "
REPETITIVE = SENT * 4 + "The little dog ran"

SANITIZED = ks.sanitized_build()
SERVERS = []
TMP = tempfile.mkdtemp(prefix="kiln-families-")


def start(args, cache=False):
    srv = ks.Server(args, cache=cache)
    SERVERS.append(srv)
    return srv


def stop(srv, name):
    ck.exited_clean(name + " on SIGTERM", srv, srv.stop(60))


def models_dir():
    d = os.path.join(TMP, "models")
    os.makedirs(d)
    for f in FAMILIES:
        os.symlink(f.path, os.path.join(d, f.id + ".gguf"))
    return d


def serving(f, what):
    """True when f loaded; otherwise prints why `what` is not run for it
    (its load check already failed)."""
    if f.serves:
        return True
    print("     (not run for %s: %s; the model does not load: %s)" % (f.id, what, ks._short(f.why, 300)), flush=True)
    return False


def cmpl(srv, model, prompt, n=N, **extra):
    """A greedy raw completion that must answer 200; returns the JSON."""
    body = {"model": model, "prompt": prompt, "max_tokens": n, "temperature": 0, "ignore_eos": True}
    body.update(extra)
    return srv.post_json("/v1/completions", body)


def text_of(d):
    return d["choices"][0]["text"]


def metric(srv, f, name):
    return ks.metrics_of(srv, model=f.id).get(name, 0.0)


def hist_le(srv, f, name, le):
    """A histogram bucket of f's series (cumulative count of samples <= le)."""
    want = frozenset({("model", f.id), ("le", le)})
    for (n, ls), v in ks.metrics_map(srv).items():
        if n == name + "_bucket" and ls == want:
            return v
    return 0.0


def prompt_file(name, text):
    p = os.path.join(TMP, name + ".txt")
    with open(p, "wb") as fh:
        fh.write(text.encode("utf-8"))
    return p


# ---------------------------------------------------------------- load

def test_load(srv, f):
    r = srv.post("/v1/completions", {"model": f.name, "prompt": "Hello", "max_tokens": 2, "temperature": 0},
                 timeout=120)
    f.serves = r.status == 200
    f.why = "" if f.serves else "HTTP %d: %s" % (r.status, ks.error_message(r))
    ck.check("%s (%s) loads and serves through kiln serve as %s" % (f.id, f.arch, f.name), f.serves, f.why)
    if f.serves:
        ck.eq("%s: the answer names the file id" % f.name, r.json().get("model"), f.id)


# ---------------------------------------------------------------- equiv

def test_equiv(srv, f):
    if not serving(f, "kiln run equivalence"):
        return
    long_slice = LONG[:400]
    cases = [("code", ks.shared("reference", "prompts", "code.txt"), ks.prompt_text("code")),
             ("long[:400]", prompt_file("long400", long_slice), long_slice)]
    for label, path, text in cases:
        ref = ks.run_ref(f.path, ["-f", path, "-c", str(CTX)], N, True)
        d = cmpl(srv, f.name, text)
        ks.check_run_match(ck, "%s %s: /v1/completions == kiln run --temp 0" % (f.name, label), ref, text_of(d))
        ck.eq("%s %s: completion_tokens" % (f.name, label), d["usage"]["completion_tokens"], N)
        if label.startswith("long"):
            ck.check("%s %s: the prompt is longer than the 32-token windows (%d tokens)" %
                     (f.name, label, d["usage"]["prompt_tokens"]), d["usage"]["prompt_tokens"] > 40,
                     d["usage"])
        if label == "code":
            # the file id form, streamed
            res = srv.sse("/v1/completions", {"model": f.id, "prompt": text, "max_tokens": N, "temperature": 0,
                                              "ignore_eos": True, "stream": True})
            st = ks.check_sse(ck, "%s %s stream" % (f.id, label), res, chat=False, want_finish="length")
            ks.check_run_match(ck, "%s %s: streamed /v1/completions (by file id) == kiln run --temp 0" %
                               (f.id, label), ref, st)
            ck.check("%s: stream chunks name the file id" % f.id,
                     res.chunks and all(c.get("model") == f.id for c in res.chunks),
                     [c.get("model") for c in res.chunks][:3])


# ---------------------------------------------------------------- batching

def stream_text(srv, model, prompt):
    """One streamed greedy completion: (text, problem or None)."""
    res = srv.sse("/v1/completions", {"model": model, "prompt": prompt, "max_tokens": N_BATCH, "temperature": 0,
                                      "ignore_eos": True, "stream": True}, timeout=300)
    if res.status != 200:
        return None, "HTTP %s: %s" % (res.status, ks._short(res.body, 300))
    if res.framing_errors or not res.done:
        return None, "framing %r, [DONE] seen %s" % (res.framing_errors[:3], res.done)
    return ks.sse_text(res.chunks, False), None


def test_batching(srv, f):
    if not serving(f, "8 concurrent streams"):
        return
    n = len(BATCH_PROMPTS)
    out = [None] * n
    barrier = threading.Barrier(n)

    def worker(i):
        barrier.wait()
        try:
            out[i] = stream_text(srv, f.name, BATCH_PROMPTS[i])
        except Exception as e:  # noqa: BLE001 - reported below
            out[i] = (None, repr(e))

    count0 = metric(srv, f, "kiln_batch_size_count")
    le4_0 = hist_le(srv, f, "kiln_batch_size", "4")
    th = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in th:
        t.start()
    for t in th:
        t.join(300)
    big_steps = (metric(srv, f, "kiln_batch_size_count") - count0) - (hist_le(srv, f, "kiln_batch_size", "4") - le4_0)
    ck.check("%s: 8 concurrent streams: some forward step ran more than 4 sequences (%d such steps)" %
             (f.name, big_steps), big_steps > 0, big_steps)
    for i, p in enumerate(BATCH_PROMPTS):
        got, problem = out[i] if out[i] else (None, "no result (thread still running?)")
        if not ck.check("%s: concurrent stream %d answered" % (f.name, i), problem is None, problem):
            continue
        alone = text_of(cmpl(srv, f.name, p, N_BATCH))
        ck.eq("%s: concurrent stream %d == the same request alone" % (f.name, i), got, alone)


# ---------------------------------------------------------------- prefix

def test_prefix(srv, fresh, f):
    if not serving(f, "prefix caching"):
        return
    ext = PREFIX_BASE + PREFIX_EXT
    d = cmpl(srv, f.name, PREFIX_BASE, 8)
    n_base = d["usage"]["prompt_tokens"]
    ck.check("%s prefix: the first prompt spans several blocks and the windows (%d tokens)" % (f.name, n_base),
             n_base > 2 * BLOCK, n_base)
    h0 = metric(srv, f, "kiln_prefix_cache_hit_tokens_total")
    q0 = metric(srv, f, "kiln_prefix_cache_queried_tokens_total")
    warm = cmpl(srv, f.name, ext, 16)
    hit = metric(srv, f, "kiln_prefix_cache_hit_tokens_total") - h0
    queried = metric(srv, f, "kiln_prefix_cache_queried_tokens_total") - q0
    n_ext = warm["usage"]["prompt_tokens"]
    want = (n_base // BLOCK) * BLOCK - BLOCK
    print("   %s prefix: %d then %d prompt tokens; %d reused" % (f.name, n_base, n_ext, hit), flush=True)
    ck.check("%s prefix: the extension is a few tokens longer (%d -> %d)" % (f.name, n_base, n_ext),
             n_base < n_ext <= n_base + 12, (n_base, n_ext))
    ck.check("%s prefix: the extension reuses >= %d cached prompt tokens (hit %d)" % (f.name, want, hit),
             hit >= want, hit)
    ck.check("%s prefix: ... and fewer than its prompt (%d of %d)" % (f.name, hit, n_ext), hit < n_ext, hit)
    ck.check("%s prefix: its prompt tokens were looked up (%d)" % (f.name, queried), queried >= n_ext, queried)
    fh0 = metric(fresh, f, "kiln_prefix_cache_hit_tokens_total")
    cold = cmpl(fresh, f.name, ext, 16)
    ck.eq("%s prefix: a fresh server hits nothing for it" % f.name,
          metric(fresh, f, "kiln_prefix_cache_hit_tokens_total") - fh0, 0)
    ck.eq("%s prefix: the answer with the prefix cached == a fresh server's" % f.name, text_of(warm), text_of(cold))
    ck.eq("%s prefix: same usage" % f.name, warm["usage"], cold["usage"])


# ---------------------------------------------------------------- spec

SPEC_ACCEPTED = []

def test_spec(srv, f):
    if not serving(f, "speculative decoding"):
        return
    n = 48
    plain = cmpl(srv, f.name, REPETITIVE, n, speculative="none")
    d0 = metric(srv, f, "kiln_spec_draft_tokens_total")
    a0 = metric(srv, f, "kiln_spec_accepted_tokens_total")
    fast = cmpl(srv, f.name, REPETITIVE, n, speculative="ngram")
    drafted = metric(srv, f, "kiln_spec_draft_tokens_total") - d0
    accepted = metric(srv, f, "kiln_spec_accepted_tokens_total") - a0
    print("   %s spec ngram: %d drafted, %d accepted" % (f.name, drafted, accepted), flush=True)
    ck.eq("%s spec: greedy ngram text == speculative none" % f.name, text_of(fast), text_of(plain))
    ck.eq("%s spec: ngram completion_tokens" % f.name, fast["usage"]["completion_tokens"], n)
    ck.check("%s spec: drafts proposed (%d)" % (f.name, drafted), drafted > 0, drafted)
    ck.check("%s spec: no more accepted than drafted (%d of %d)" % (f.name, accepted, drafted),
             0 <= accepted <= drafted, (accepted, drafted))
    # whether a random model repeats itself (and so accepts drafts) is its own
    # business: acceptance is required of the families together (main)
    SPEC_ACCEPTED.append(accepted)


# ---------------------------------------------------------------- show / ps

def test_show(srv, f):
    info = ks.kiln_info(f.path)
    for req in (f.name, f.id):
        r = srv.post("/api/show", {"model": req})
        if not ck.eq("/api/show %s: 200" % req, r.status, 200):
            continue
        d = r.json()
        det = d.get("details") or {}
        mi = d.get("model_info") or {}
        ck.eq("/api/show %s: details.family" % req, det.get("family"), f.arch)
        ck.eq("/api/show %s: model_info general.architecture" % req, mi.get("general.architecture"), f.arch)
        if f.moe:
            ex = info.get("experts") or {}
            ck.eq("/api/show %s: model_info %s.expert_count" % (req, f.arch), mi.get(f.arch + ".expert_count"),
                  ex.get("count"))
            ck.eq("/api/show %s: model_info %s.expert_used_count" % (req, f.arch),
                  mi.get(f.arch + ".expert_used_count"), ex.get("used"))
            ck.check("/api/show %s: a mixture of experts (%s experts)" % (req, ex.get("count")),
                     isinstance(ex.get("count"), int) and ex["count"] > 1, info)
        else:
            ck.check("/api/show %s: no expert_count" % req, (f.arch + ".expert_count") not in mi,
                     sorted(k for k in mi if "expert" in k))


def test_ps(srv):
    ps = {m.get("name"): m for m in srv.get("/api/ps").json().get("models", [])}
    for f in FAMILIES:
        if not serving(f, "/api/ps"):
            continue
        e = ps.get(f.name)
        if not ck.check("/api/ps lists %s" % f.name, e is not None, sorted(ps)):
            continue
        ck.eq("/api/ps %s: details.family" % f.name, (e.get("details") or {}).get("family"), f.arch)
        ck.eq("/api/ps %s: id" % f.name, e.get("id"), f.id)


# ---------------------------------------------------------------- cache

def test_cache(srv, f):
    if not serving(f, "the response cache"):
        return
    body = {"model": f.name, "prompt": "The quick brown fox", "max_tokens": 12, "temperature": 0}
    g0 = metric(srv, f, "kiln_generated_tokens_total")
    r1 = srv.post("/v1/completions", body)
    g1 = metric(srv, f, "kiln_generated_tokens_total")
    r2 = srv.post("/v1/completions", body)
    g2 = metric(srv, f, "kiln_generated_tokens_total")
    if not ck.check("%s cache: both answers 200" % f.name, r1.status == 200 and r2.status == 200, (r1, r2)):
        return
    ck.eq("%s cache: X-Cache miss, then hit" % f.name, (r1.header("x-cache"), r2.header("x-cache")), ("miss", "hit"))
    ck.check("%s cache: the miss generated its tokens (%d)" % (f.name, g1 - g0), g1 - g0 >= 1, g1 - g0)
    ck.eq("%s cache: the hit generated none" % f.name, g2 - g1, 0)
    ck.eq("%s cache: the hit says usage.cached true" % f.name, r2.json()["usage"].get("cached"), True)

    def canon(b):
        b = re.sub(rb'"id":"[^"]*"', b'"id":""', b, count=1)
        b = re.sub(rb'"created":\d+', b'"created":0', b, count=1)
        return b.replace(b',"cached":true', b"")
    ck.eq("%s cache: the hit's body is byte-identical but for id, created and cached" % f.name, canon(r2.body),
          canon(r1.body))

    sbody = dict(body, prompt="Once upon a time, in a land far away", stream=True)
    s1 = srv.sse("/v1/completions", sbody)
    s2 = srv.sse("/v1/completions", sbody)
    ck.eq("%s cache stream: X-Cache miss, then hit" % f.name,
          (s1.headers.get("x-cache"), s2.headers.get("x-cache")), ("miss", "hit"))
    pieces = [[ch.get("text") for c in s.chunks for ch in c.get("choices", [])] for s in (s1, s2)]
    ck.check("%s cache stream: the hit streams the same pieces (%d)" % (f.name, len(pieces[0])),
             s1.status == 200 and s1.done and s2.done and pieces[0] == pieces[1] and len(pieces[0]) > 1, pieces)


# ---------------------------------------------------------------- memory

def test_memory(d):
    srv = start(["--models", d, "-t", "2", "-np", "1", "-c", "128", "-b", "64", "--cache-ram", "0",
                 "--draft-max", "0"])
    try:
        for f in FAMILIES:
            if serving(f, "the memory estimate"):
                memory_one(srv, f)
    finally:
        stop(srv, "memory server")


def memory_one(srv, f):
    pid = srv.proc.pid
    prompt = LONG[:220]
    m0 = ks.proc_memory(pid)
    toks = srv.post_json("/tokenize", {"model": f.name, "content": prompt, "add_special": True})["tokens"]
    m1 = ks.proc_memory(pid)
    r = srv.post("/api/generate", {"model": f.name})  # no prompt: loads the model
    m2 = ks.proc_memory(pid)
    if not ck.eq("%s memory: /api/generate without a prompt loads it: 200" % f.name, r.status, 200):
        return
    use = cmpl(srv, f.name, prompt, 120 - len(toks))
    m3 = ks.proc_memory(pid)
    ck.eq("%s memory: the request filled its context" % f.name,
          use["usage"]["prompt_tokens"] + use["usage"]["completion_tokens"], 120)
    est = ks.load_estimates(srv.log()).get(f.id)
    if not ck.check("%s memory: the estimate is logged" % f.name, est is not None, srv.log()[-800:]):
        return
    est *= MIB
    e = next((m for m in srv.get("/api/ps").json().get("models", []) if m.get("name") == f.name), {})
    size = e.get("size", 0)
    fsize = os.path.getsize(f.path)
    ck.check("%s memory: /api/ps size %.1f MiB is at least half the file (%.1f MiB) and at most the estimate "
             "(%.1f MiB)" % (f.name, size / MIB, fsize / MIB, est / MIB), fsize / 2 <= size <= est, e)
    if SANITIZED:
        print("   %s memory: RSS not compared with the estimate (sanitizer build)" % f.name, flush=True)
        return

    def mib(k, a, b):
        return (b[k] - a[k]) / MIB
    grew = m3["VmRSS"] - m0["VmRSS"]
    tol = 0.10 * est + 2 * MIB
    detail = ("estimate %.1f MiB, RSS grew %.1f MiB: front %.1f, load %.1f (anonymous %.1f, file-backed %.1f), "
              "request %.1f; allowed %.1f to %.1f MiB" %
              (est / MIB, grew / MIB, mib("VmRSS", m0, m1), mib("VmRSS", m1, m2), mib("RssAnon", m1, m2),
               mib("RssFile", m1, m2), mib("VmRSS", m2, m3), (est - tol) / MIB, (est + tol) / MIB))
    print("   %s memory: %s" % (f.name, detail), flush=True)
    ck.check("%s memory: RSS growth (front, load, a full context) within 10%% + 2 MiB of the estimate" % f.name,
             abs(grew - est) <= tol, detail)
    # the server's own check: RSS growth over load() minus the estimate
    err = ks.metrics_of(srv, model=f.id).get("kiln_model_memory_estimate_error_bytes")
    load_grew = m2["VmRSS"] - m1["VmRSS"]
    ck.check("%s memory: kiln_model_memory_estimate_error_bytes (%s) + estimate is the RSS growth over the load "
             "measured from outside (%.1f MiB) within 1 MiB" % (f.name, err, load_grew / MIB),
             err is not None and abs(err + est - load_grew) <= MIB, (err, est, load_grew))


# ---------------------------------------------------------------- main

def main():
    t0 = time.time()
    d = models_dir()
    try:
        srv = start(["--models", d, "-t", "2", "-np", "8", "-c", str(CTX)])
        try:
            tags = sorted(m.get("name") for m in srv.get("/api/tags").json().get("models", []))
            ck.eq("/api/tags lists the six families under their kiln pull names", tags,
                  sorted(f.name for f in FAMILIES))
            for f in FAMILIES:
                ck.run(test_load, srv, f)
            for f in FAMILIES:
                ck.run(test_show, srv, f)
            fresh = start(["--models", d, "-t", "2", "-np", "8", "-c", str(CTX)])
            try:
                for f in FAMILIES:
                    ck.run(test_equiv, srv, f)
                    ck.run(test_batching, srv, f)
                    ck.run(test_prefix, srv, fresh, f)
                    ck.run(test_spec, srv, f)
            finally:
                stop(fresh, "fresh server")
            ck.check("spec: drafts were accepted on the families together (%s)" % SPEC_ACCEPTED,
                     sum(SPEC_ACCEPTED) > 0, SPEC_ACCEPTED)
            ck.run(test_ps, srv)
        finally:
            stop(srv, "main server")
        cached = start(["--models", d, "-t", "2", "-np", "2", "-c", str(CTX)], cache=True)
        try:
            for f in FAMILIES:
                ck.run(test_cache, cached, f)
        finally:
            stop(cached, "response-cache server")
        ck.run(test_memory, d)
    finally:
        for s in SERVERS:
            s.kill()
        shutil.rmtree(TMP, ignore_errors=True)
        broken = [f.id for f in FAMILIES if not f.serves]
        if broken:
            print("NOT SERVED (each is a failure above): " + ", ".join(broken), flush=True)
        print("total %.1f s" % (time.time() - t0), flush=True)
    ck.finish(SERVERS)


if __name__ == "__main__":
    main()
