#!/usr/bin/env python3
"""test_reliability_fuzz_http.py — the black-box HTTP fuzzer (fuzz_http.py)
against a live `kiln serve`: a temporary models directory (symlinks to the
shared stories260K and tiny-bert-mean-Q8_0, so the generation and the
embedding routes are both reached), the response and embedding caches on,
a short --conn-timeout, a small default generation limit, an --api-key
(most fuzzed requests carry it, some do not or carry a wrong one) and a
--cors-origin (some requests send Origin headers and CORS preflights).

fuzz_http.py runs for KILN_FUZZ_HTTP_SECONDS (default 20) with seed
KILN_FUZZ_HTTP_SEED (default: random, printed; replay a failure with
`fuzz_http.py --port P --seed S --replay W:I --show`). It fails on any answer
that is not a well-formed 200/4xx/503 (see its docstring). Afterwards: the
server still answers /health 200 and a normal completion, goes idle (no
request running or waiting, every slot free), exits 0 on SIGTERM and its log
holds no sanitizer report."""

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import kiln_server as ks  # noqa: E402

ks.need_env()
ck = ks.Checks()
SECONDS = float(os.environ.get("KILN_FUZZ_HTTP_SECONDS", "20"))
SEED = int(os.environ.get("KILN_FUZZ_HTTP_SEED", str(random.SystemRandom().randrange(1 << 31))))
GEN, EMB = "stories260K", "tiny-bert-mean-Q8_0"
KEY, ORIGIN = "fuzz-key-0123456789", "http://app.example"
try:
    HELP = ks.run_kiln(["serve", "--help"]).decode("utf-8", "replace")
except RuntimeError as e:
    HELP = str(e)


def main():
    mdir = tempfile.mkdtemp(prefix="kiln-fuzz-models-")
    srv = None
    try:
        for name in (GEN, EMB):
            os.symlink(ks.model_path(name), os.path.join(mdir, name + ".gguf"))
        args = ["--models", mdir, "--preload", GEN + "," + EMB, "--conn-timeout", "5", "-n", "32",
                "--unload-timeout", "-1", "--api-key", KEY]
        if "--cors-origin" in HELP:
            args += ["--cors-origin", ORIGIN]
        srv = ks.Server(args, cache=True)
        t0 = time.time()
        p = subprocess.run([sys.executable, os.path.join(HERE, "fuzz_http.py"), "--port", str(srv.port),
                            "--seconds", str(SECONDS), "--seed", str(SEED), "--model", GEN, "--embed-model", EMB,
                            "--api-key", KEY, "--origin", ORIGIN],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=SECONDS + 300)
        out = p.stdout.decode("utf-8", "replace")
        print(out.rstrip())
        print("fuzz_http ran %.1f s" % (time.time() - t0))
        summary = [ln for ln in out.splitlines() if ln.startswith("fuzz_http: ") and " requests, statuses " in ln]
        ck.check("fuzz_http printed its summary line", summary, out[-2000:])
        ck.eq("fuzz_http exit status (0: no failure)", p.returncode, 0)
        if summary:
            n = int(summary[-1].split()[1])
            ck.check("fuzz_http sent requests (%d)" % n, n >= 20, summary[-1])
        ck.check("the server is still running", srv.proc.poll() is None, srv.proc.returncode)
        st, h = srv.health()
        ck.eq("GET /health after fuzzing", st, 200)
        r = srv.post("/v1/completions", {"model": GEN, "prompt": "Once upon a time", "max_tokens": 8,
                                         "temperature": 0}, headers={"Authorization": "Bearer " + KEY})
        ck.eq("a normal completion after fuzzing", r.status, 200)
        ok, last, waited = srv.wait_idle(timeout=30)
        ck.check("the server goes idle (nothing running, every slot free) within 30 s", ok, last)
        if ok:
            ck.eq("nothing waiting", last.get("requests_waiting"), 0)
        rc = srv.stop(timeout=60)
        ck.exited_clean("SIGTERM after fuzzing", srv, rc)
    finally:
        if srv is not None:
            srv.kill()
        shutil.rmtree(mdir, ignore_errors=True)
    ck.finish([srv])


if __name__ == "__main__":
    ck.run(main)
    ck.finish()
