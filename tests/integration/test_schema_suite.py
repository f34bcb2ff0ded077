#!/usr/bin/env python3
"""test_schema_suite.py — structured outputs (response_format json_schema,
json_object, Ollama's format) through the real `kiln serve`, checked by a
real JSON Schema validator: runs tests/e2e/sdk/schema_suite.mjs (ajv 8 +
ajv-formats over the realistic schemas in tests/e2e/sdk/schemas) against one
server that serves three models from a directory of links:
 - stories260K (SPM, 512 tokens, a trained toy model: its strings end, so
   almost every answer completes),
 - tiny-llama3 and tiny-qwen2 (byte-level BPE with 128k/152k tokens, random
   weights: they write noise unconstrained, so a valid answer can only come
   from the grammar).
Every finished answer must validate, every answer cut by max_tokens must be
a JSON prefix, at most a quarter may be cut, and the same requests without
response_format must mostly not validate (the suite's control).
KILN_SKIP_LONG=1 (the sanitizer phases) runs a share of the schemas with one
seed; the release phase runs them all."""

import os
import sys
import tempfile

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kiln_server as ks  # noqa: E402

ks.need_env()
ck = ks.Checks()
SCHEMAS = os.path.join(ks.SRC_DIR, "tests", "e2e", "sdk", "schemas")
SHORT = bool(os.environ.get("KILN_SKIP_LONG"))

# name -> (suite options, KILN_SKIP_LONG options). In the release phase
# every model runs every schema: the toy SPM model (about one token per
# character) with three seeds, the random BPE models with two. The sanitizer
# phases run a share with one seed, so every schema still meets a byte-level
# BPE tokenizer there.
MODELS = {
    "stories260K": (["--seeds", "3", "--max-tokens", "700"],
                    ["--seeds", "1", "--max-tokens", "700", "--part", "0/3", "--extra", "2"]),
    # the sanitizer share is small (a quarter of the schemas, one seed), so
    # its cut threshold is looser: a few maps with free key strings are cut
    "tiny-llama3-Q8_0": (["--seeds", "2", "--max-tokens", "250", "--extra", "2"],
                         ["--seeds", "1", "--max-tokens", "250", "--part", "0/4", "--extra", "1",
                          "--max-cut", "0.5"]),
    "tiny-qwen2-Q4_K_M": (["--seeds", "2", "--max-tokens", "250", "--extra", "2"],
                          ["--seeds", "1", "--max-tokens", "250", "--part", "1/4", "--extra", "1",
                           "--max-cut", "0.5"]),
}


def main():
    d = tempfile.mkdtemp(prefix="kiln-schema-suite-")
    for m in MODELS:
        os.symlink(ks.model_path(m), os.path.join(d, m + ".gguf"))
    srv = ks.Server(["--models", d, "-t", "2", "-c", "1024", "-np", "4"])
    try:
        for m, args in MODELS.items():
            print("== %s" % m, flush=True)
            p = ks.run_node("schema_suite.mjs", ["http://127.0.0.1:%d" % srv.port, m, "--schemas", SCHEMAS]
                            + args[1 if SHORT else 0], timeout=900)
            sys.stdout.write(p.stdout)
            if p.stderr:
                sys.stdout.write("stderr: " + p.stderr[-3000:] + "\n")
            last = (p.stdout.strip().splitlines() or [""])[-1]
            ck.check("schema suite on %s (%s)" % (m, last), p.returncode == 0, "exit %d" % p.returncode)
    finally:
        rc = srv.stop()
        ck.exited_clean("kiln serve", srv, rc)
        for f in os.listdir(d):
            os.unlink(os.path.join(d, f))
        os.rmdir(d)
    ck.finish([srv])


main()
