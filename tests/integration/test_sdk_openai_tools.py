#!/usr/bin/env python3
"""test_sdk_openai_tools.py — structured outputs and tool calls through the
real `kiln serve` with the official openai npm package: runs
tests/e2e/sdk/openai_tools.mjs (zodResponseFormat with parse() and stream(),
tools with tool_choice required / named / none / auto, streamed tool calls,
zodFunction, a tool round trip; see its header) against
 - tiny-qwen2 served with Qwen 2.5's chat template (hermes tool calls:
   <tool_call>{"name", "arguments"}</tool_call>),
 - tiny-llama3 served with Llama 3.2's chat template (llama3 tool calls: a
   JSON object {"name", "parameters"} as the whole answer),
both random-weight models, so every valid call comes from the grammar; and
reasoning_content (chat_template_kwargs.enable_thinking, as llama-server
takes it) with tiny-qwen3 under DeepSeek-R1-Distill's template, whose prompt
opens <think> when thinking is on.
The templates come from KILN_SHARED/chat_templates via --chat-template-file.
KILN_SKIP_LONG=1 (the sanitizer phases) leaves tiny-llama3 out."""

import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kiln_server as ks  # noqa: E402

ks.need_env()
ck = ks.Checks()
# KILN_SKIP_LONG=1 (the sanitizer phases): the cases marked long are left out
SHORT = bool(os.environ.get("KILN_SKIP_LONG"))

# (model, template, openai_tools.mjs checks, long)
CASES = [("tiny-qwen2-Q4_K_M", "Qwen-Qwen2.5-7B-Instruct.jinja", "format,tools", False),
         ("tiny-llama3-Q8_0", "meta-llama-Llama-3.2-3B-Instruct.jinja", "format,tools", True),
         # a template whose prompt opens <think> when enable_thinking is true
         ("tiny-qwen3-Q8_0", "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", "reasoning", False)]


def main():
    servers = []
    for model, tmpl, checks, long in CASES:
        if long and SHORT:
            continue
        print("== %s with %s" % (model, tmpl), flush=True)
        srv = ks.Server(["-m", ks.model_path(model), "--chat-template-file", ks.shared("chat_templates", tmpl),
                         "-t", "2", "-c", "2048", "-np", "2"])
        servers.append(srv)
        try:
            p = ks.run_node("openai_tools.mjs", ["http://127.0.0.1:%d/v1" % srv.port, model, "--checks", checks], timeout=600)
            sys.stdout.write(p.stdout)
            if p.stderr:
                sys.stdout.write("stderr: " + p.stderr[-3000:] + "\n")
            last = (p.stdout.strip().splitlines() or [""])[-1]
            ck.check("openai_tools.mjs on %s (%s)" % (model, last), p.returncode == 0, "exit %d" % p.returncode)
        finally:
            rc = srv.stop()
            ck.exited_clean("kiln serve %s" % model, srv, rc)
    ck.finish(servers)


main()
