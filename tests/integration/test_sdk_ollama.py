#!/usr/bin/env python3
"""test_sdk_ollama.py — kiln serve's Ollama API through the official ollama
npm package: runs tests/e2e/sdk/ollama.mjs (see its header) against
 - tiny-qwen2 with Qwen 2.5's template: "format" (a JSON schema, validated
   with ajv; "json"), and tools (message.tool_calls with object arguments,
   no markup in content);
 - tiny-llama3 with Llama 3.2's template: tools;
 - tiny-qwen3 with DeepSeek-R1-Distill's template, whose prompt opens
   <think> when thinking is on: think true puts the model's text in
   message.thinking (never <think> in content), think false gives no
   thinking;
 - tiny-qwen3 with kiln's built-in "qwen3" template (the model opens <think>
   itself): think false gives no thinking and no markup.
The models are random-weight, so what they write unconstrained is noise.
KILN_SKIP_LONG=1 (the sanitizer phases) leaves out tiny-llama3 and the
built-in qwen3 case."""

import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kiln_server as ks  # noqa: E402

ks.need_env()
ck = ks.Checks()
# KILN_SKIP_LONG=1 (the sanitizer phases): the cases marked long are left out
SHORT = bool(os.environ.get("KILN_SKIP_LONG"))

# (model, template args, ollama.mjs args, long)
CASES = [
    ("tiny-qwen2-Q4_K_M", ["--chat-template-file", ks.shared("chat_templates", "Qwen-Qwen2.5-7B-Instruct.jinja")],
     ["--checks", "format,tools"], False),
    ("tiny-llama3-Q8_0", ["--chat-template-file", ks.shared("chat_templates", "meta-llama-Llama-3.2-3B-Instruct.jinja")],
     ["--checks", "tools"], True),
    ("tiny-qwen3-Q8_0",
     ["--chat-template-file", ks.shared("chat_templates", "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja")],
     ["--checks", "think", "--think-forced"], False),
    ("tiny-qwen3-Q8_0", ["--chat-template", "qwen3"], ["--checks", "think"], True),
]


def main():
    servers = []
    for model, targs, nargs, long in CASES:
        if long and SHORT:
            continue
        print("== %s %s" % (model, " ".join(os.path.basename(a) for a in targs)), flush=True)
        srv = ks.Server(["-m", ks.model_path(model), "-t", "2", "-c", "2048", "-np", "2"] + targs)
        servers.append(srv)
        try:
            p = ks.run_node("ollama.mjs", ["http://127.0.0.1:%d" % srv.port, model] + nargs, timeout=600)
            sys.stdout.write(p.stdout)
            if p.stderr:
                sys.stdout.write("stderr: " + p.stderr[-3000:] + "\n")
            last = (p.stdout.strip().splitlines() or [""])[-1]
            ck.check("ollama.mjs on %s %s (%s)" % (model, " ".join(nargs), last), p.returncode == 0,
                     "exit %d" % p.returncode)
        finally:
            rc = srv.stop()
            ck.exited_clean("kiln serve %s" % model, srv, rc)
    ck.finish(servers)


main()
