#!/usr/bin/env python3
"""test_server_batching.py — the paged KV cache, the scheduler and
speculative decoding seen through the real `kiln serve` (issue 8):
 - cross-conversation prefix cache: with -np 2 --kv-block-size 16, a long
   conversation A, then two others (B, C), then A again and A extended by
   its own answer and a new turn: every output equals what a fresh server
   gives, and the repeat of A and its extension reuse A's full blocks
   (kiln_prefix_cache_hit_tokens_total grows by at least the full blocks
   of A's prompt minus one);
 - speculative decoding: on a repetitive prompt, greedy "ngram" gives the
   text of "none" and the draft/accepted counters grow; a sampled request
   with a seed gets all its tokens; a `--spec draft -md FILE` server (the
   model as its own draft) gives the "none" text with drafts accepted;
 - preemption: --kv-tokens 160 -c 128 -np 4 --cache-ram 0 oversubscribes
   the pool; 4 concurrent greedy requests give what each gives alone,
   kiln_preemptions_total grows, and the pool drains to 0 blocks used;
 - shared-prefix memory: 8 concurrent streams sharing a long prefix share
   its blocks (kiln_kv_logical_bytes > kiln_kv_used_bytes at some point),
   and the pool drains afterwards;
 - bad values: "speculative": "fast" and "speculative.n_max": 99 get a 400
   naming the field (OpenAI and Ollama routes); --spec bogus and
   --kv-block-size 24 stop `kiln serve` with a message naming the setting."""

import os
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kiln_server as ks  # noqa: E402

ks.need_env()
ck = ks.Checks()
MODEL = "stories260K"
MFILE = ks.model_path(MODEL)
BLOCK = 16

# A long first conversation (several 16-token blocks) and two others that
# share no full block with it.
CONV_A = ("Once upon a time, there was a little girl named Lily. She loved to play in the park with her "
          "friend Tom. One day, they found a big red ball under a tree. Lily said, \"Let's play with the "
          "ball!\" Tom was happy and they played all day. When the sun went down, their mom called them")
CONV_B = ("The cat sat on the mat and looked at the bird in the sky. The bird was blue and it sang a song. "
          "The cat wanted to")
CONV_C = "Ben had a toy car. He liked to make it go fast on the floor. One day the car"
NEW_TURN = "\nLily asked her mom, \"Can we play again tomorrow?\" Her mom smiled and said"

SENT = "The little dog ran to the big tree and the little cat ran to the big house. "
REPETITIVE = SENT * 4 + "The little dog ran"

# Prompts for the preemption and shared-prefix tests.
SHORT_PROMPTS = ["Once upon a time", "The cat", "Lily went to the park", "Tom had a big red ball"]
SHARED_PREFIX = ("Once upon a time, in a small house near the woods, there lived a kind old man and his "
                 "little dog. Every morning they walked to the river and watched the fish swim. ")
ENDINGS = ["The dog barked", "One day the man", "The fish said", "A bird came", "It was cold and",
           "The sun was", "Then a frog", "The man smiled"]


# ---------------------------------------------------------------- helpers

def metrics(srv):
    """The /metrics series of MODEL as {name: value}."""
    return ks.metrics_of(srv, model=MODEL)


def metric(srv, name):
    v = metrics(srv).get(name)
    if v is None:
        raise ks.ServerError("/metrics has no %s{model=%s}" % (name, MODEL))
    return v


def cmpl(srv, prompt, n, **extra):
    """A greedy raw completion; returns (text, usage)."""
    body = {"model": MODEL, "prompt": prompt, "max_tokens": n, "temperature": 0}
    body.update(extra)
    r = srv.post_json("/v1/completions", body)
    return r["choices"][0]["text"], r["usage"]


def n_tokens(srv, text):
    """Tokens of a completions prompt (BOS included, as the route adds it)."""
    return len(srv.post_json("/tokenize", {"model": MODEL, "content": text, "add_special": True})["tokens"])


def wait_drained(srv, timeout=5.0):
    """Polls /metrics until no KV block is used and no request runs;
    returns the last (blocks_used, requests_running)."""
    t0 = time.time()
    while True:
        m = metrics(srv)
        last = (m.get("kiln_kv_blocks_used"), m.get("kiln_requests_running"))
        if last == (0, 0) or time.time() - t0 > timeout:
            return last
        time.sleep(0.05)


def run_concurrent(fns):
    """Runs the callables at once (after a barrier); returns their results
    (an exception object where one raised)."""
    out = [None] * len(fns)
    barrier = threading.Barrier(len(fns))

    def worker(i):
        barrier.wait()
        try:
            out[i] = fns[i]()
        except Exception as e:  # noqa: BLE001 - reported by the caller
            out[i] = e
    th = [threading.Thread(target=worker, args=(i,)) for i in range(len(fns))]
    for t in th:
        t.start()
    for t in th:
        t.join(120)
    return out


def serve_fails(args, setting):
    """`kiln serve ARGS` must exit nonzero at once with a message naming setting."""
    try:
        p = subprocess.run([ks.KILN_BIN, "serve", "--host", "127.0.0.1", "--port", "0"] + args,
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
    except subprocess.TimeoutExpired:
        ck.fail("serve %s: exits at once" % " ".join(args), "still running after 20 s")
        return
    err = p.stderr.decode("utf-8", "replace")
    ck.check("serve %s: exit code nonzero" % " ".join(args), p.returncode != 0, "rc=%d" % p.returncode)
    ck.check("serve %s: the message names %s" % (" ".join(args), setting), setting in err, err[-800:])


# ---------------------------------------------------------------- tests

def cold_outputs(prompts, n):
    """Each prompt's greedy answer from its own fresh server (a cold run)."""
    out = []
    for i, p in enumerate(prompts):
        cold = ks.Server(["-m", MFILE, "-t", "1", "-np", "2", "--kv-block-size", str(BLOCK)])
        try:
            out.append(cmpl(cold, p, n)[0])
            ck.eq("prefix: reference %d hit nothing" % i, metric(cold, "kiln_prefix_cache_hit_tokens_total"), 0)
        finally:
            rc = cold.stop(30)
        ck.exited_clean("prefix: reference server %d on SIGTERM" % i, cold, rc)
    return out


def test_prefix_cache(srv):
    """-np 2 --kv-block-size 16: A, B, C, A again, A extended by its answer
    and a new turn, then A's first 6 blocks as token ids (a whole-prompt
    hit) and its first 90 tokens (a partial block). Outputs equal cold
    runs'; A's blocks (its answer's too) are reused across conversations."""
    n = 16
    m0 = metrics(srv)
    a1, ua = cmpl(srv, CONV_A, n)
    m1 = metrics(srv)
    ck.eq("prefix: the first A on a fresh server hits nothing",
          m1["kiln_prefix_cache_hit_tokens_total"] - m0["kiln_prefix_cache_hit_tokens_total"], 0)
    ck.check("prefix: queried tokens counted", m1["kiln_prefix_cache_queried_tokens_total"] -
             m0["kiln_prefix_cache_queried_tokens_total"] >= ua["prompt_tokens"],
             (m0["kiln_prefix_cache_queried_tokens_total"], m1["kiln_prefix_cache_queried_tokens_total"], ua))
    toks_a = srv.post_json("/tokenize", {"model": MODEL, "content": CONV_A, "add_special": True})["tokens"]
    len_a = len(toks_a)
    ck.eq("prefix: /tokenize counts A's prompt like usage.prompt_tokens", len_a, ua["prompt_tokens"])
    ck.check("prefix: A spans several blocks", len_a >= 6 * BLOCK + 2, len_a)
    ck.eq("prefix: A gets all its tokens", ua["completion_tokens"], n)
    b1, _ = cmpl(srv, CONV_B, n)
    c1, _ = cmpl(srv, CONV_C, n)

    def hits_of(prompt):
        h0 = metric(srv, "kiln_prefix_cache_hit_tokens_total")
        text, usage = cmpl(srv, prompt, n)
        return text, usage, metric(srv, "kiln_prefix_cache_hit_tokens_total") - h0

    want_hit = (len_a // BLOCK) * BLOCK - BLOCK
    a2, ua2, hit = hits_of(CONV_A)
    print("   A: %d prompt tokens; hits on the repeat: %d" % (len_a, hit))
    ck.check("prefix: A again after B and C reuses >= %d tokens" % want_hit, hit >= want_hit, hit)
    ck.check("prefix: ... and not more than its prompt", hit <= len_a, (hit, len_a))
    ck.eq("prefix: A again gives the same text as the first (cold) A", a2, a1)
    ck.eq("prefix: A again reports the same usage", ua2, ua)

    ext = CONV_A + a1 + NEW_TURN
    e1, ue, hit_ext = hits_of(ext)
    print("   A extended: %d prompt tokens; hits: %d" % (ue["prompt_tokens"], hit_ext))
    # A's answer was cached with its prompt: the blocks of prompt + answer
    # (but the last, where the text's tokenization may differ) are reused
    want_ext = ((len_a + n) // BLOCK) * BLOCK - BLOCK
    ck.check("prefix: A extended reuses >= %d tokens of A's prompt and answer" % want_ext, hit_ext >= want_ext,
             hit_ext)
    ck.eq("prefix: A extended usage.prompt_tokens", ue["prompt_tokens"], n_tokens(srv, ext))

    whole = toks_a[:6 * BLOCK]  # exactly A's first 6 blocks: every block cached
    w1, uw, hit_w = hits_of(whole)
    ck.eq("prefix: whole-prompt hit: prompt_tokens", uw["prompt_tokens"], len(whole))
    ck.check("prefix: whole-prompt hit reuses >= %d tokens" % (len(whole) - BLOCK), hit_w >= len(whole) - BLOCK,
             hit_w)
    part = toks_a[:5 * BLOCK + 10]  # 5 cached blocks and a partial one
    p1, _, hit_p = hits_of(part)
    ck.eq("prefix: partial-block hit reuses the 5 full blocks", hit_p, 5 * BLOCK)

    ca, cb, cc, ce, cw, cp = cold_outputs([CONV_A, CONV_B, CONV_C, ext, whole, part], n)
    ck.eq("prefix: A equals a fresh server's A", a1, ca)
    ck.eq("prefix: B equals a fresh server's B", b1, cb)
    ck.eq("prefix: C equals a fresh server's C", c1, cc)
    ck.eq("prefix: A extended (hit) equals a fresh server's answer (cold)", e1, ce)
    ck.eq("prefix: whole-prompt hit equals a fresh server's answer", w1, cw)
    ck.eq("prefix: partial-block hit equals a fresh server's answer", p1, cp)
    ck.check("prefix: the three conversations differ", len({a1, b1, c1}) == 3, (a1, b1, c1))
    ck.eq("prefix: no KV block used after the requests", wait_drained(srv), (0, 0))
    st, h = srv.health()
    kv = (h.get("models") or [{}])[0].get("kv", {})
    ck.eq("prefix: /health kv.block_tokens", kv.get("block_tokens"), BLOCK)
    ck.check("prefix: /health kv.blocks_cached > 0 (A stays cached)", (kv.get("blocks_cached") or 0) > 0, kv)


def test_spec_ngram(srv):
    """Greedy prompt lookup gives the plain text; drafts are proposed and accepted."""
    n = 48
    plain, up = cmpl(srv, REPETITIVE, n, ignore_eos=True, speculative="none")
    m0 = metrics(srv)
    fast, uf = cmpl(srv, REPETITIVE, n, ignore_eos=True, speculative="ngram")
    m1 = metrics(srv)
    ck.eq("spec ngram: greedy text equals speculative none", fast, plain)
    ck.eq("spec ngram: completion_tokens", uf["completion_tokens"], n)
    ck.eq("spec none: completion_tokens", up["completion_tokens"], n)
    drafted = m1["kiln_spec_draft_tokens_total"] - m0["kiln_spec_draft_tokens_total"]
    accepted = m1["kiln_spec_accepted_tokens_total"] - m0["kiln_spec_accepted_tokens_total"]
    ck.check("spec ngram: draft tokens proposed", drafted > 0, drafted)
    ck.check("spec ngram: draft tokens accepted", accepted > 0, accepted)
    ck.check("spec ngram: accepted <= drafted", accepted <= drafted, (accepted, drafted))
    # "none" must not draft
    cmpl(srv, REPETITIVE, 8, ignore_eos=True, speculative="none")
    m2 = metrics(srv)
    ck.eq("spec none: no draft tokens", m2["kiln_spec_draft_tokens_total"] - m1["kiln_spec_draft_tokens_total"], 0)
    # a boolean and n_max, and the Ollama route (field at the top level)
    t_bool, _ = cmpl(srv, REPETITIVE, n, ignore_eos=True, speculative=True, **{"speculative.n_max": 3})
    ck.eq("spec true + n_max 3: greedy text equals none", t_bool, plain)
    m2 = metrics(srv)
    r = srv.post_json("/api/generate", {"model": MODEL, "prompt": REPETITIVE, "raw": True, "stream": False,
                                        "options": {"num_predict": n, "temperature": 0, "ignore_eos": True,
                                                    "speculative": "ngram", "speculative.n_max": 4}})
    ck.eq("spec ngram on /api/generate (in options): greedy text equals none", r.get("response"), plain)
    ck.check("spec ngram on /api/generate: draft tokens proposed",
             metric(srv, "kiln_spec_draft_tokens_total") > m2["kiln_spec_draft_tokens_total"], r)
    # sampled, with a seed: drafts go through the acceptance rule
    m3 = metrics(srv)
    body = {"model": MODEL, "prompt": REPETITIVE, "max_tokens": n, "temperature": 0.8, "seed": 42,
            "ignore_eos": True, "speculative": "ngram"}
    r = srv.post("/v1/completions", body)
    ck.eq("spec ngram sampled: status 200", r.status, 200)
    if r.status == 200:
        ck.eq("spec ngram sampled: completion_tokens", r.json()["usage"]["completion_tokens"], n)
        r2 = srv.post_json("/v1/completions", body)
        ck.eq("spec ngram sampled: same seed, same text", r2["choices"][0]["text"], r.json()["choices"][0]["text"])
    m4 = metrics(srv)
    ck.check("spec ngram sampled: draft tokens proposed",
             m4["kiln_spec_draft_tokens_total"] > m3["kiln_spec_draft_tokens_total"],
             (m3["kiln_spec_draft_tokens_total"], m4["kiln_spec_draft_tokens_total"]))


def test_spec_draft():
    """--spec draft -md FILE (the model as its own draft): greedy output equals none."""
    n = 48
    srv = ks.Server(["-m", MFILE, "-t", "1", "-np", "2", "--spec", "draft", "-md", MFILE])
    try:
        plain, _ = cmpl(srv, REPETITIVE, n, ignore_eos=True, speculative="none")
        other, _ = cmpl(srv, CONV_B, n, ignore_eos=True, speculative="none")
        m0 = metrics(srv)
        fast, u = cmpl(srv, REPETITIVE, n, ignore_eos=True, speculative="draft")
        dflt, _ = cmpl(srv, CONV_B, n, ignore_eos=True)  # the server's default is draft
        m1 = metrics(srv)
        ck.eq("spec draft: greedy text equals speculative none", fast, plain)
        ck.eq("spec draft (server default): greedy text equals none", dflt, other)
        ck.eq("spec draft: completion_tokens", u["completion_tokens"], n)
        drafted = m1["kiln_spec_draft_tokens_total"] - m0["kiln_spec_draft_tokens_total"]
        accepted = m1["kiln_spec_accepted_tokens_total"] - m0["kiln_spec_accepted_tokens_total"]
        ck.check("spec draft: draft tokens proposed", drafted > 0, drafted)
        ck.check("spec draft: draft tokens accepted", accepted > 0, accepted)
        # the model drafting for itself under greedy: every draft is accepted,
        # and so counted (including the drafts accepted in a request's last step)
        ck.eq("spec draft: the model as its own draft has every draft accepted (and counted)", accepted, drafted)
        ck.eq("spec draft: no KV block used afterwards", wait_drained(srv), (0, 0))
    finally:
        rc = srv.stop(30)
    ck.exited_clean("spec draft server on SIGTERM", srv, rc)


def test_preemption():
    """An oversubscribed pool: 4 concurrent requests need ~20 blocks of 10."""
    n = 60
    srv = ks.Server(["-m", MFILE, "-t", "1", "--kv-tokens", "160", "--kv-block-size", "16", "-c", "128",
                     "-np", "4", "--cache-ram", "0"])
    try:
        st, h = srv.health()
        mh = (h.get("models") or [{}])[0]
        ck.eq("preempt: 4 slots despite the small pool", mh.get("slots_total"), 4)
        ck.check("preempt: the pool holds fewer blocks than 4 full sequences need",
                 mh.get("kv", {}).get("blocks_total", 1 << 30) < 4 * (128 // 16), mh.get("kv"))
        alone = [cmpl(srv, p, n, ignore_eos=True)[0] for p in SHORT_PROMPTS]
        p0 = metric(srv, "kiln_preemptions_total")
        ck.eq("preempt: no preemption while the requests run alone", p0, 0)
        res = run_concurrent([lambda p=p: srv.post("/v1/completions", {
            "model": MODEL, "prompt": p, "max_tokens": n, "temperature": 0, "ignore_eos": True})
            for p in SHORT_PROMPTS])
        statuses = [getattr(r, "status", repr(r)) for r in res]
        ck.eq("preempt: 4 concurrent requests all 200", statuses, [200] * 4)
        for i, r in enumerate(res):
            if getattr(r, "status", None) != 200:
                continue
            j = r.json()
            ck.eq("preempt: request %d equals its run alone" % i, j["choices"][0]["text"], alone[i])
            ck.eq("preempt: request %d completion_tokens" % i, j["usage"]["completion_tokens"], n)
        p1 = metric(srv, "kiln_preemptions_total")
        ck.check("preempt: kiln_preemptions_total > 0", p1 > 0, p1)
        ck.eq("preempt: blocks used and requests running back to 0", wait_drained(srv), (0, 0))
    finally:
        rc = srv.stop(30)
    ck.exited_clean("preemption server on SIGTERM", srv, rc)


def test_shared_prefix():
    """8 concurrent streams sharing a long prefix share its KV blocks. The
    streams are long enough (~0.2 s on stories260K) for /metrics to be
    sampled while they run."""
    n = 160
    srv = ks.Server(["-m", MFILE, "-t", "1", "-np", "8", "--kv-block-size", "16", "-c", "256"])
    try:
        n_prefix = n_tokens(srv, SHARED_PREFIX) - 1  # the prompts' common tokens (BOS included, last one may merge)
        ck.check("shared: the common prefix spans several blocks", n_prefix >= 3 * BLOCK, n_prefix)
        alone = [cmpl(srv, SHARED_PREFIX + e, n, ignore_eos=True)[0] for e in ENDINGS]
        samples = []
        done = threading.Event()

        def sampler():
            while not done.is_set():
                try:
                    m = metrics(srv)
                    samples.append((m.get("kiln_kv_logical_bytes", 0), m.get("kiln_kv_used_bytes", 0),
                                    m.get("kiln_kv_blocks_used", 0)))
                except (OSError, ks.ServerError):
                    pass
        th = threading.Thread(target=sampler, daemon=True)
        th.start()
        t0 = time.time()
        while not samples and time.time() - t0 < 10:
            time.sleep(0.01)
        try:
            res = run_concurrent([lambda e=e: srv.sse("/v1/completions", {
                "model": MODEL, "prompt": SHARED_PREFIX + e, "max_tokens": n, "temperature": 0,
                "ignore_eos": True, "stream": True}) for e in ENDINGS])
        finally:
            done.set()
            th.join(10)
        for i, r in enumerate(res):
            if isinstance(r, Exception):
                ck.fail("shared: stream %d" % i, repr(r))
                continue
            text = ks.check_sse(ck, "shared: stream %d" % i, r, chat=False, want_finish="length")
            ck.eq("shared: stream %d equals its run alone" % i, text, alone[i])
        shared_seen = [s for s in samples if s[0] > s[1] > 0]
        ck.check("shared: kiln_kv_logical_bytes > kiln_kv_used_bytes while streaming (%d samples)" % len(samples),
                 bool(shared_seen), samples[:10])
        # the prefix's full blocks are held once: at the peak, at least half
        # the streams share them (all 8 usually do; the samples are sparse
        # and the HTTP threads may start a stream late on a busy machine)
        block_bytes = (srv.health()[1].get("models") or [{}])[0].get("kv", {}).get("block_bytes", 0)
        copies = len(ENDINGS) // 2 - 1
        want_saved = copies * (n_prefix // BLOCK) * block_bytes
        saved = max((s[0] - s[1] for s in samples), default=0)
        ck.check("shared: at some point logical - used >= %d bytes (%d copies of the prefix's %d full blocks saved)"
                 % (want_saved, copies, n_prefix // BLOCK), want_saved > 0 and saved >= want_saved,
                 (saved, block_bytes))
        ck.eq("shared: blocks used and requests running back to 0", wait_drained(srv), (0, 0))
        m = metrics(srv)
        ck.eq("shared: logical bytes back to 0", m.get("kiln_kv_logical_bytes"), 0)
        ck.eq("shared: used bytes back to 0", m.get("kiln_kv_used_bytes"), 0)
    finally:
        rc = srv.stop(30)
    ck.exited_clean("shared-prefix server on SIGTERM", srv, rc)


def test_bad_values(srv):
    for body, field in (({"speculative": "fast"}, "speculative"),
                        ({"speculative.n_max": 99}, "speculative.n_max")):
        b = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 4}
        b.update(body)
        r = srv.post("/v1/completions", b)
        ck.eq("bad %r: 400" % body, r.status, 400)
        ck.check("bad %r: the error names %s" % (body, field), field in r.text(), r.text())
        # Ollama: the field sits in "options" (with ignore_eos and the sampling settings)
        opts = {"num_predict": 4}
        opts.update(body)
        r = srv.post("/api/generate", {"model": MODEL, "prompt": "Once upon a time", "stream": False, "options": opts})
        ck.eq("bad options %r on /api/generate: 400" % body, r.status, 400)
        ck.check("bad options %r on /api/generate: the error names options.%s" % (body, field),
                 "options." + field in r.text(), r.text())
    serve_fails(["-m", MFILE, "--spec", "bogus"], "spec")
    serve_fails(["-m", MFILE, "--kv-block-size", "24"], "kv-block-size")
    serve_fails(["-m", MFILE, "--kv-block-size", "8"], "kv-block-size")


def main():
    srv = ks.Server(["-m", MFILE, "-t", "1", "-np", "2", "--kv-block-size", str(BLOCK)])
    try:
        ck.run(test_prefix_cache, srv)
        ck.run(test_spec_ngram, srv)
        ck.run(test_bad_values, srv)
    finally:
        rc = srv.stop(30)
    ck.exited_clean("server on SIGTERM", srv, rc)
    if ck.fails:
        srv.dump_log_tail()
    ck.run(test_spec_draft)
    ck.run(test_preemption)
    ck.run(test_shared_prefix)
    ck.finish()


if __name__ == "__main__":
    main()
