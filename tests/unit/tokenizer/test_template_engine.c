/* test_template_engine.c — semantics of the Jinja engine (loop variables,
 * slicing, filters, tests, whitespace control, undefined, namespace, macros,
 * tojson formatting) against outputs of real Jinja2 configured like Hugging
 * Face; error reporting; limits (deep nesting, recursion, huge output, long
 * templates, expensive loops) as clean errors; built-in templates. */
#include "testutil.h"
#include "kiln/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Generated once with Python's jinja2 3.1 configured like Hugging Face */
static const char *const VARS_JSON = "{\"messages\": [{\"role\": \"system\", \"content\": \" Sys  msg \"}, {\"role\": \"user\", \"content\": \"H\303\251llo w\303\266rld \342\234\223\"}, {\"role\": \"assistant\", \"content\": \"Hi\", \"tool_calls\": [{\"id\": \"abc\", \"function\": {\"name\": \"f\", \"arguments\": {\"a\": 1, \"b\": [1.5, null, true, \"x\\\"y\"]}}}]}], \"n\": 7, \"f\": 2.5, \"s\": \"a,b,,c\", \"e\": [], \"d\": {\"k\": \"v\", \"z\": 1}}";
static const struct { const char *group, *src, *expected; } CASES[] = {
    {"loop", "{% for m in messages %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.revindex }}/{{ loop.revindex0 }}/{{ loop.first }}/{{ loop.last }}/{{ loop.length }}|{% endfor %}",
     "1/0/3/2/True/False/3|2/1/2/1/False/False/3|3/2/1/0/False/True/3|"},
    {"loop", "{% for m in messages %}{{ loop.previtem.role if loop.previtem is defined else 'none' }}-{{ loop.nextitem.role if loop.nextitem is defined else 'end' }};{% endfor %}",
     "none-user;system-assistant;user-end;"},
    {"loop", "{% for i in range(10) if i is odd %}{{ i }}{% if loop.last %}!{% endif %}{% else %}empty{% endfor %}{% for i in [] %}x{% else %}empty{% endfor %}",
     "13579!empty"},
    {"loop", "{% for i in range(10) %}{% if i == 5 %}{% break %}{% endif %}{% if i is even %}{% continue %}{% endif %}{{ i }}{% endfor %}",
     "13"},
    {"loop", "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}{% for k in d %}{{ k }}{% endfor %}{{ d.keys() | list }}{{ d.values() | list }}{{ d.get('k') }}{{ d.get('q', 'dflt') }}{{ d.get('q') }}",
     "k=v;z=1;kz['k', 'z']['v', 1]vdfltNone"},
    {"loop", "{% for a in [[1,2],[3,4]] %}{% for b in a %}{{ loop.index }}{{ b }}{% endfor %}{{ loop.index }};{% endfor %}",
     "11221;13242;"},
    {"loop", "{% for x in 'ab' %}{{ x }}{{ loop.cycle('o', 'e') }}{% endfor %}",
     "aobe"},
    {"loop", "{% set x = 1 %}{% for i in range(3) %}{% set x = x + i %}{% endfor %}{{ x }}",
     "1"},
    {"slice", "{{ s[1:] }}|{{ s[::-1] }}|{{ s[-2:] }}|{{ s[:-1] }}|{{ s[::2] }}|{{ s[5:1:-1] }}|{{ messages[1].content[::-1] }}|{{ messages[1].content[1:4] }}",
     ",b,,c|c,,b,a|,c|a,b,,|ab,|c,,b|\342\234\223 dlr\303\266w oll\303\251H|\303\251ll"},
    {"slice", "{{ [1,2,3,4,5][1:4] }}{{ [1,2,3,4,5][::-2] }}{{ (1,2,3)[1:] }}{{ [1,2][5:] }}{{ messages[1:] | map(attribute='role') | join(',') }}",
     "[2, 3, 4][5, 3, 1](2, 3)[]user,assistant"},
    {"slice", "{%- set content = messages[1].content -%}{{ content.split('w\303\266')[-1] }}|{{ content[:5] }}|{{ content[-1] }}|{{ content | length }}",
     "rld \342\234\223|H\303\251llo|\342\234\223|13"},
    {"string", "{{ s.split(',') }}{{ ' a  b c '.split() }}{{ s.split(',', 1) }}{{ '  x y  '.split(None, 1) }}",
     "['a', 'b', '', 'c']['a', 'b', 'c']['a', 'b,,c']['x', 'y  ']"},
    {"string", "{{ '  hi  ' | trim }}|{{ 'xxhixx'.strip('x') }}|{{ ' a '.lstrip() }}|{{ ' a '.rstrip() }}|",
     "hi|hi|a | a|"},
    {"string", "{{ 'a-b-c'.replace('-', '+') }}{{ 'aaa'.replace('a', 'b', 2) }}{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith(('x', 'c')) }}{{ 'abcabc'.find('c') }}{{ 'abcabc'.count('bc') }}{{ ','.join(['a','b']) }}",
     "a+b+cbbaTrueTrue22a,b"},
    {"string", "{{ 'abc' | upper }}{{ 'ABC' | lower }}{{ 'hello world' | title }}{{ 'hELLO' | capitalize }}{{ 'abc'.upper() }}{{ 'hello wORLD-x'.title() }}",
     "ABCabcHello WorldHelloABCHello World-X"},
    {"string", "{{ \"tab\\there\\nnl \\\"q\\\" \\\\ \\x41\\u00e9\" }}|{{ 'it''s' }}|{{ 'a' 'b' \"c\" }}|{{ \"it's\" }}{{ [\"it's\", 'say \"hi\"'] }}",
     "tab\there\nnl \"q\" \\ A\303\251|its|abc|it's[\"it's\", 'say \"hi\"']"},
    {"arith", "{{ n // 2 }} {{ n % 3 }} {{ -n // 2 }} {{ -n % 3 }} {{ n / 2 }} {{ 2 ** 10 }} {{ f * 2 }} {{ 7.0 // 2 }} {{ 1e20 }} {{ 1.5e-7 }} {{ 0.1 + 0.2 }} {{ 100000.0 }} {{ 1e16 }}",
     "3 1 -4 2 3.5 1024 5.0 3.0 1e+20 1.5e-07 0.30000000000000004 100000.0 1e+16"},
    {"arith", "{{ 10 / 4 }} {{ 10 / 5 }} {{ 2 ** -1 }} {{ -2 ** 2 }} {{ 3 - -1 }} {{ 'ab' * 3 }} {{ [1] * 3 }} {{ 1 + 2 * 3 - 4 / 2 }} {{ 7 // -2 }} {{ 7 % -2 }} {{ -7.5 // 2 }} {{ -7.5 % 2 }}",
     "2.5 2.0 0.5 4 4 ababab [1, 1, 1] 5.0 -4 -1 -4.0 0.5"},
    {"arith", "{{ 'a' ~ 1 ~ none ~ true ~ undefinedvar ~ 2.0 }}{{ 0.0001 }} {{ 0.00001 }} {{ 123.456 }} {{ 1/3 }} {{ true }}{{ None }}",
     "a1NoneTrue2.00.0001 1e-05 123.456 0.3333333333333333 TrueNone"},
    {"logic", "{{ 1 if true else 2 }}{{ 1 if false else 2 }}{{ 'x' if false }}|{{ 1 < 2 < 3 }}{{ 3 > 2 > 5 }}{{ 1 == 1.0 }}{{ 'a' in 'cat' }}{{ 'k' in d }}{{ 5 not in [1,2] }}{{ not true }}{{ true and 'x' }}{{ false or 'y' }}",
     "12|TrueFalseTrueTrueTrueTrueFalsexy"},
    {"tests", "{{ n is divisibleby 7 }}{{ n is divisibleby(3) }}{{ s is string }}{{ n is number }}{{ f is integer }}{{ n is integer }}{{ d is mapping }}{{ e is iterable }}{{ s is iterable }}{{ none is none }}{{ true is boolean }}{{ n is not none }}{{ 'abc' is lower }}{{ n is eq 7 }}{{ n is gt 3 }}",
     "TrueFalseTrueTrueFalseTrueTrueTrueTrueTrueTrueTrueTrueTrueTrue"},
    {"tojson", "{{ messages | tojson }}",
     "[{\"role\": \"system\", \"content\": \" Sys  msg \"}, {\"role\": \"user\", \"content\": \"H\303\251llo w\303\266rld \342\234\223\"}, {\"role\": \"assistant\", \"content\": \"Hi\", \"tool_calls\": [{\"id\": \"abc\", \"function\": {\"name\": \"f\", \"arguments\": {\"a\": 1, \"b\": [1.5, null, true, \"x\\\"y\"]}}}]}]"},
    {"tojson", "{{ messages | tojson(indent=2) }}",
     "[\n  {\n    \"role\": \"system\",\n    \"content\": \" Sys  msg \"\n  },\n  {\n    \"role\": \"user\",\n    \"content\": \"H\303\251llo w\303\266rld \342\234\223\"\n  },\n  {\n    \"role\": \"assistant\",\n    \"content\": \"Hi\",\n    \"tool_calls\": [\n      {\n        \"id\": \"abc\",\n        \"function\": {\n          \"name\": \"f\",\n          \"arguments\": {\n            \"a\": 1,\n            \"b\": [\n              1.5,\n              null,\n              true,\n              \"x\\\"y\"\n            ]\n          }\n        }\n      }\n    ]\n  }\n]"},
    {"tojson", "{{ d | tojson(indent=4) }}{{ e | tojson(indent=4) }}{{ {} | tojson }}{{ 'x' | tojson }}{{ \"\303\251\\u0001\\t\" | tojson }}{{ 3.0 | tojson }}{{ 1e100 | tojson }}{{ [none, true] | tojson }}",
     "{\n    \"k\": \"v\",\n    \"z\": 1\n}[]{}\"x\"\"\303\251\\u0001\\t\"3.01e+100[null, true]"},
    {"filters", "{{ messages | selectattr('role', 'equalto', 'user') | list | length }}{{ messages | map(attribute='role') | join(', ') }}{{ messages | rejectattr('tool_calls') | map(attribute='role') | list }}",
     "1system, user, assistant['system', 'user']"},
    {"filters", "{{ messages | selectattr('tool_calls', 'defined') | list | length }}{{ messages | map(attribute='role') | unique | list }}{{ messages | map(attribute='content') | map('trim') | join('|') }}",
     "1['system', 'user', 'assistant']Sys  msg|H\303\251llo w\303\266rld \342\234\223|Hi"},
    {"filters", "{{ [3,1,2] | sort }}{{ ['b','A','c'] | sort }}{{ [3,1,2] | sort(reverse=true) }}{{ [1,2,3] | sum }}{{ [1,2,3] | max }}{{ [1,2,3] | min }}{{ [1,2] | reverse | list }}{{ 'abc' | reverse }}",
     "[1, 2, 3]['A', 'b', 'c'][3, 2, 1]631[2, 1]cba"},
    {"filters", "{{ 3.7 | int }}{{ '42' | int }}{{ 'x' | int }}{{ '3.5' | float }}{{ -3 | abs }}{{ 2.567 | round(2) }}{{ 2.5 | round }}{{ 3 | round }}{{ 2.4 | round(method='ceil') }}",
     "34203.532.572.033.0"},
    {"filters", "{{ [1,2,3] | first }}{{ [1,2,3] | last }}{{ 'abc' | first }}{{ [] | first }}{{ d | items | list }}{{ d | length }}{{ 'h\303\251llo' | length }}{{ d | dictsort }}",
     "13a[('k', 'v'), ('z', 1)]25[('k', 'v'), ('z', 1)]"},
    {"filters", "{{ 'a\\nb\\n\\nc' | indent(2) }}|{{ 'a\\nb' | indent(4, true) }}|{{ 'a\\n\\nb' | indent(2, blank=true) }}|{{ 'hello there world' | wordcount }}{{ '<a href=\"x\">&' | e }}{{ 'ab' | center(6) }}|",
     "a\n  b\n\n  c|    a\n    b|a\n  \n  b|3&lt;a href=&#34;x&#34;&gt;&amp;  ab  |"},
    {"filters", "{{ s.split(',')|select|list }}{{ [0, 1, '', 'a', none] | reject | list }}{{ [1,2,3,4] | select('odd') | list }}{{ ['a', 'b'] | join }}{{ [1, 2] | join('-') }}{{ messages | join(',', attribute='role') }}",
     "['a', 'b', 'c'][0, '', None][1, 3]ab1-2system,user,assistant"},
    {"ns", "{% set ns = namespace(a=1, b='x') %}{% for i in range(3) %}{% set ns.a = ns.a + i %}{% endfor %}{{ ns.a }}{{ ns.b }}{% set ns2 = namespace() %}{% set ns2.z = 'q' %}{{ ns2.z }}",
     "4xq"},
    {"macro", "{% macro greet(name, greeting='Hello') %}{{ greeting }}, {{ name }}!{% endmacro %}{{ greet('Bob') }} {{ greet('Al', greeting='Yo') }} {{ greet(name='Z') }}",
     "Hello, Bob! Yo, Al! Hello, Z!"},
    {"macro", "{% macro rec(n) %}{% if n > 0 %}{{ n }}{{ rec(n - 1) }}{% endif %}{% endmacro %}{{ rec(5) }}{% macro outer() %}<{{ caller() }}>{% endmacro %}{% call outer() %}inside {{ n }}{% endcall %}",
     "54321<inside 7>"},
    {"set", "{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set t = (1, 'x') %}{{ t }}{{ t[1] }}{{ [1, 'a', none, true, 1.5, {'k': [2]}] }}{{ {'a': 1} }}{{ (1,) }}",
     "12(1, 'x')x[1, 'a', None, True, 1.5, {'k': [2]}]{'a': 1}(1,)"},
    {"set", "{% set x %}block {{ n }}{% endset %}[{{ x }}]{% filter upper %}shout {{ s }}{% endfilter %}{% raw %}{{ not rendered }}{% endraw %}",
     "[block 7]SHOUT A,B,,C{{ not rendered }}"},
    {"undefined", "{{ undefinedvar }}|{{ undefinedvar is defined }}|{{ messages[9] is defined }}|{{ d.nokey }}|{{ undefinedvar | default('dd') }}|{{ '' | default('e', true) }}|{% if undefinedvar %}yes{% else %}no{% endif %}{% for x in undefinedvar %}x{% endfor %}{{ undefinedvar | length }}",
     "|False|False||dd|e|no0"},
    {"ws", "a\n  {% if true %}\n  b\n  {% endif %}\nc\n  {{ 'x' }}\n  {%- if true -%}  y  {%- endif -%}\n  z\n{# comment #}\nw   {#- c2 -#}   v",
     "a\n  b\nc\n  xyz\nwv"},
    {"ws", "{%- for m in messages -%}\n  <{{ m.role }}>\n{%- endfor %}\nend",
     "<system><user><assistant>end"},
    {"ws", "{%+ if true %}  keep{% endif +%}\nx",
     "  keep\nx"},
    {"ws", "  {% if true %}x{% endif %}  \n  y  {% if true %}z{% endif %}\n",
     "x  \n  y  z"},
    {"ws", "line1\n    {# comment on own line #}\nline2\n    {#- stripped -#}\nline3",
     "line1\nline2line3"},
    {"ws", "{% for i in range(3) %}\n    {{ i }}\n{% endfor %}\n",
     "    0\n    1\n    2\n"},
    {"ws", "{%- macro m(x) -%}\n  [{{ x }}]\n{%- endmacro -%}\n{{ m(1) }}\n{{ m(2) }}\n",
     "[1]\n[2]"},
    {"ws", "{{ 'x' }}\n{{ 'y' }}\n\n",
     "x\ny\n"},
    {"globals", "{{ strftime_now('%Y-%m-%d %H:%M %B %b %d %A') }}{{ range(5) | list }}{{ range(2, 8, 2) | list }}{{ range(5, 0, -2) | list }}{{ dict(a=1, b=2) }}",
     "2024-07-26 12:00 July Jul 26 Friday[0, 1, 2, 3, 4][2, 4, 6][5, 3, 1]{'a': 1, 'b': 2}"},
    {"attr", "{{ messages[0]['role'] }}{{ messages.0.role }}{{ messages[-1].tool_calls[0].function.arguments | tojson }}{{ messages[-1]['tool_calls'][0]['function']['arguments']['b'][0] }}{{ (messages | last).role }}",
     "systemsystem{\"a\": 1, \"b\": [1.5, null, true, \"x\\\"y\"]}1.5assistant"},
    {"scope", "{% for i in range(3) %}{% if i == 1 %}{% set x = 5 %}{% endif %}[{{ x }}]{% endfor %}{% set y = 1 %}{% for i in range(3) %}[{{ y }}]{% set y = 2 %}{% endfor %}{{ y }}",
     "[][5][][1][1][1]1"},
    {"scope", "{% for m in messages %}{% set m = m.role %}{{ m }}{% endfor %}{% macro f() %}{% set q = 3 %}{{ q }}{% endmacro %}{{ f() }}{{ q }}{% if true %}{% set z = 9 %}{% endif %}{{ z }}",
     "systemuserassistant39"},
    {"complex", "{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}\n{%- for message in messages[::-1] %}\n    {%- set index = (messages|length - 1) - loop.index0 %}\n    {%- if ns.multi_step_tool and message.role == \"user\" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}\n        {%- set ns.multi_step_tool = false %}\n        {%- set ns.last_query_index = index %}\n    {%- endif %}\n{%- endfor %}\n{{- ns.last_query_index }}\n{%- for message in messages %}\n    {%- set content = message.content if message.content is string else '' %}\n    {%- if message.role == \"assistant\" and '</think>' in content %}\n        {%- set content = content.split('</think>')[-1].lstrip('\\n') %}\n    {%- endif %}\n    {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>\\n' }}\n{%- endfor %}\n",
     "1<|im_start|>system\n Sys  msg <|im_end|>\n<|im_start|>user\nH\303\251llo w\303\266rld \342\234\223<|im_end|>\n<|im_start|>assistant\nHi<|im_end|>\n"},
    {"complex", "{%- macro render_args(args) -%}\n{%- for k, v in args.items() -%}\n{{ k }}={{ v | tojson if v is not string else v }}{{ ', ' if not loop.last }}\n{%- endfor -%}\n{%- endmacro -%}\n{{ render_args(messages[2].tool_calls[0].function.arguments) }}\n",
     "a=1, b=[1.5, null, true, \"x\\\"y\"]"},
    {"complex", "{{ -1 ** 2 }}{{ (-1) ** 2 }}{{ 2 ** 3 ** 2 }}{{ 10 - 2 - 3 }}{{ 100 / 10 / 5 }}{{ 2 * 3 % 4 }}{{ 7 // 2 * 2 }}{{ 'a' ~ 'b' + 'c' }}{{ 'x' if 1 > 2 else 'y' if 2 > 1 else 'z' }}{{ not 1 == 2 }}{{ not 'a' in 'abc' }}{{ not none is none }}",
     "116452.026abcyTrueFalseFalse"},
    {"complex", "{% for i in range(3) %}{% for j in range(3) %}{% if j > i %}{% break %}{% endif %}{{ i }}{{ j }} {% endfor %}{% endfor %}{{ messages | sort(attribute='role') | map(attribute='role') | join(',') }}{{ [1,2,3] | sum(start=10) }}",
     "00 10 11 20 21 22 assistant,system,user16"},
    {"complex", "{%- for message in messages -%}\n{%- if loop.first and message.role == 'system' -%}\n{{ message.content.strip() + '\\n' }}\n{%- elif message.role == 'user' -%}\n{{ '[U] ' ~ message.content }}\n{%- else -%}\n{{ '[A] ' ~ message.content ~ eos_token }}\n{%- endif %}\n\n{% endfor -%}\nEND",
     "Sys  msg\n\n[U] H\303\251llo w\303\266rld \342\234\223\n[A] Hi</s>\nEND"},
    {"tojson", "{{ d | tojson(sort_keys=true) }}{{ {'b': 1, 'a': {'d': 2, 'c': 3}} | tojson(sort_keys=true, indent=2) }}{{ [1, {'a': 2}] | tojson(separators=(',', ':')) }}{{ {'a': [1, 2]} | tojson(indent=2, separators=(', ', ' = ')) }}",
     "{\"k\": \"v\", \"z\": 1}{\n  \"a\": {\n    \"c\": 3,\n    \"d\": 2\n  },\n  \"b\": 1\n}[1,{\"a\":2}]{\n  \"a\" = [\n    1, \n    2\n  ]\n}"},
    {"tojson", "{{ messages | tojson(ensure_ascii=true) }}{{ \"\360\237\230\200\303\251\" | tojson(true) }}{{ messages[1] | tojson(indent=0) }}|{{ [] | tojson(indent=0) }}|{{ [[]] | tojson(indent=1) }}",
     "[{\"role\": \"system\", \"content\": \" Sys  msg \"}, {\"role\": \"user\", \"content\": \"H\\u00e9llo w\\u00f6rld \\u2713\"}, {\"role\": \"assistant\", \"content\": \"Hi\", \"tool_calls\": [{\"id\": \"abc\", \"function\": {\"name\": \"f\", \"arguments\": {\"a\": 1, \"b\": [1.5, null, true, \"x\\\"y\"]}}}]}]\"\\ud83d\\ude00\\u00e9\"{\n\"role\": \"user\",\n\"content\": \"H\303\251llo w\303\266rld \342\234\223\"\n}|[]|[\n []\n]"},
    {"arith", "{{ 1.5e300 * 1e10 }}{{ -1.5e300 * 1e10 }}{{ (1.5e300 * 1e10) | tojson }}{{ 1e-320 }}{{ 5e-324 }}{{ 0.1 | tojson }}{{ 1e22 }}{{ 2.5e-5 }}{{ 123456789.125 }}{{ 0.5 | round }}{{ 1.5 | round }}{{ -0.0 }}{{ 9223372036854775807 % -2 }} {{ 9223372036854775807 // -2 }} {{ 'abcdef'[2::9223372036854775807] }} {{ [1,2,3][::-9223372036854775807] }}",
     "inf-infInfinity1e-3205e-3240.11e+222.5e-05123456789.1250.02.0-0.0-1 -4611686018427387904 c [3]"},
};

static const struct tm NOW = {.tm_year = 2024 - 1900, .tm_mon = 6, .tm_mday = 26, .tm_hour = 12, .tm_wday = 5, .tm_yday = 207};

/* Renders src with VARS_JSON (plus lim) as extra variables. Returns the
 * output (caller frees) or NULL with err/raised filled. */
static char *render_lim(const char *src, size_t srclen, const tok_tmpl_limits *lim, kn_err *err, bool *raised) {
    json_error_t je;
    json_t *vars = json_loads(VARS_JSON, 0, &je);
    assert_non_null(vars);
    *raised = false;
    tok_tmpl *t = tok_tmpl_create(src, srclen, err);
    char *out = NULL;
    if (t) {
        tok_tmpl_inputs in = {.extra = vars, .now = &NOW, .bos_token = "<s>", .eos_token = "</s>"};
        if (lim) in.limits = *lim;
        size_t len;
        if (tok_tmpl_render(t, &in, &out, &len, raised, err) == KN_OK) assert_int_equal(strlen(out), len);
    }
    tok_tmpl_destroy(t);
    json_decref(vars);
    return out;
}

static char *render(const char *src, kn_err *err, bool *raised) { return render_lim(src, strlen(src), NULL, err, raised); }

static void test_against_jinja(void **state) {
    (void)state;
    int bad = 0;
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        kn_err err;
        bool raised;
        char *out = render(CASES[i].src, &err, &raised);
        if (!out) {
            fprintf(stderr, "[%s #%zu] error: %s\n  template: %s\n", CASES[i].group, i, err.msg, CASES[i].src);
            bad++;
        } else if (strcmp(out, CASES[i].expected)) {
            fprintf(stderr, "[%s #%zu] mismatch\n  template: %s\n  expected: %s\n  got:      %s\n", CASES[i].group, i,
                    CASES[i].src, CASES[i].expected, out);
            bad++;
        }
        free(out);
    }
    fprintf(stderr, "engine semantics: %zu cases, %d failed\n", sizeof CASES / sizeof CASES[0], bad);
    assert_int_equal(bad, 0);
}

static void expect_error(const char *src, const char *needle) {
    kn_err err;
    bool raised;
    char *out = render(src, &err, &raised);
    if (out) fprintf(stderr, "expected an error containing \"%s\", got output \"%s\"\n", needle, out);
    assert_null(out);
    if (!strstr(err.msg, needle)) fprintf(stderr, "error \"%s\" lacks \"%s\"\n", err.msg, needle);
    assert_non_null(strstr(err.msg, needle));
    assert_false(raised);
}

static void test_errors(void **state) {
    (void)state;
    kn_err err;
    bool raised;
    /* raise_exception: exactly the template's message */
    char *out = render("a\n{{ raise_exception('Roles must alternate: ' ~ n) }}", &err, &raised);
    assert_null(out);
    assert_true(raised);
    assert_string_equal(err.msg, "Roles must alternate: 7");
    /* syntax errors carry the line */
    expect_error("line1\nline2\n{% if x %}\nno end", "expected '{% endif %}'");
    expect_error("a\nb\n{{ 1 + }}", "template line 3:");
    expect_error("{{ x | nosuchfilter }}", "no filter named 'nosuchfilter'");
    expect_error("{{ x is nosuchtest }}", "no test named 'nosuchtest'");
    expect_error("{% frobnicate %}", "unknown or misplaced tag");
    expect_error("{{ 'unterminated }}", "unterminated string");
    expect_error("{{ x ", "unexpected end of template");
    expect_error("{# never closed", "unclosed comment");
    expect_error("{% endfor %}", "unknown or misplaced tag");
    /* runtime errors */
    expect_error("\n\n{{ nosuchfn() }}", "template line 3: 'nosuchfn' is undefined");
    expect_error("{{ undefinedvar + 1 }}", "'undefinedvar' is undefined");
    expect_error("{{ 1 / 0 }}", "division by zero");
    expect_error("{{ 'a' - 1 }}", "unsupported operand");
    expect_error("{{ 5 | tojson(indent='x') }}", "indent");
    expect_error("{{ range(1000000) }}", "Range too big");
    expect_error("{% set x = 1 %}{% set x.y = 2 %}", "non-namespace");
    expect_error("{% for a, b in [1, 2] %}{% endfor %}", "cannot unpack");
    expect_error("{{ 'x'.nosuchmethod() }}", "not callable");
}

static void test_limits(void **state) {
    (void)state;
    kn_err err;
    bool raised;
    /* deeply nested expressions: a parse error, not a stack overflow */
    size_t depth = 20000;
    char *src = malloc(depth * 2 + 16);
    size_t n = 0;
    n += (size_t)sprintf(src + n, "{{ ");
    for (size_t i = 0; i < depth; i++) src[n++] = '(';
    src[n++] = '1';
    for (size_t i = 0; i < depth; i++) src[n++] = ')';
    n += (size_t)sprintf(src + n, " }}");
    assert_null(render_lim(src, n, NULL, &err, &raised));
    assert_non_null(strstr(err.msg, "nested too deeply"));
    /* deeply nested blocks */
    n = 0;
    for (size_t i = 0; i < 2000; i++) n += (size_t)sprintf(src + n, "{%% if 1 %%}");
    assert_null(render_lim(src, n, NULL, &err, &raised));
    assert_non_null(strstr(err.msg, "nested too deeply"));
    free(src);
    /* a long left-deep chain parses but is refused at render time */
    size_t links = 100000;
    src = malloc(links * 3 + 16);
    n = (size_t)sprintf(src, "{{ 1");
    for (size_t i = 0; i < links; i++) n += (size_t)sprintf(src + n, "+1");
    n += (size_t)sprintf(src + n, " }}");
    assert_null(render_lim(src, n, NULL, &err, &raised));
    assert_non_null(strstr(err.msg, "recursion too deep"));
    free(src);
    /* unbounded macro recursion */
    assert_null(render("{% macro r(n) %}{{ r(n + 1) }}{% endmacro %}{{ r(0) }}", &err, &raised));
    assert_non_null(strstr(err.msg, "recursion too deep"));
    /* huge output from nested loops */
    tok_tmpl_limits lim = {.max_output = 1 << 20};
    const char *big = "{% for a in range(100000) %}{% for b in range(100000) %}xxxxxxxxxx{% endfor %}{% endfor %}";
    assert_null(render_lim(big, strlen(big), &lim, &err, &raised));
    assert_non_null(strstr(err.msg, "output too large"));
    /* exponential string growth */
    const char *dbl = "{% set ns = namespace(x='ab') %}{% for i in range(100) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}{{ ns.x }}";
    assert_null(render_lim(dbl, strlen(dbl), &lim, &err, &raised));
    assert_non_null(strstr(err.msg, "too large"));
    /* many iterations without output */
    tok_tmpl_limits steps = {.max_steps = 100000};
    const char *spin = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}";
    assert_null(render_lim(spin, strlen(spin), &steps, &err, &raised));
    assert_non_null(strstr(err.msg, "too expensive"));
    /* repeated scans of a big string that allocate nothing are charged too */
    const char *scan = "{% set big = 'a' * 100000 %}{% for i in range(100000) %}{% if 'zz' in big %}{% endif %}{% endfor %}";
    assert_null(render(scan, &err, &raised));
    assert_non_null(strstr(err.msg, "too expensive"));
    /* memory cap */
    tok_tmpl_limits mem = {.max_memory = 4 << 20};
    const char *hog = "{{ [1, 2, 3, 4] * 10000000 }}";
    assert_null(render_lim(hog, strlen(hog), &mem, &err, &raised));
    assert_non_null(strstr(err.msg, "memory"));
    /* template source too long */
    size_t huge = (size_t)TOK_TMPL_MAX_SOURCE + 1;
    char *longsrc = malloc(huge);
    memset(longsrc, 'a', huge);
    assert_null(tok_tmpl_create(longsrc, huge, &err));
    assert_non_null(strstr(err.msg, "too long"));
    /* ... while a long but legal one renders */
    tok_tmpl *t = tok_tmpl_create(longsrc, huge - 1, &err);
    assert_non_null(t);
    tok_tmpl_destroy(t);
    free(longsrc);
}

static void test_inputs(void **state) {
    (void)state;
    kn_err err;
    const char *src = "{{ bos_token }}{% for m in messages %}[{{ m.role }}:{{ m.content }}]{% endfor %}"
                      "{% if tools is defined %}T{{ tools | length }}{% endif %}{% if add_generation_prompt %}>{% endif %}{{ eos_token }}{{ extra_var }}";
    tok_tmpl *t = tok_tmpl_create(src, strlen(src), &err);
    assert_non_null(t);
    json_error_t je;
    json_t *msgs = json_loads("[{\"role\":\"user\",\"content\":\"hi\"}]", 0, &je);
    json_t *tools = json_loads("[{\"type\":\"function\"}]", 0, &je);
    json_t *extra = json_loads("{\"extra_var\":\"X\"}", 0, &je);
    tok_tmpl_inputs in = {.messages = msgs, .bos_token = "<s>", .eos_token = "</s>", .add_generation_prompt = true};
    char *out;
    size_t len;
    bool raised;
    assert_int_equal(tok_tmpl_render(t, &in, &out, &len, &raised, &err), KN_OK);
    assert_string_equal(out, "<s>[user:hi]></s>");
    free(out);
    in.tools = tools;
    in.extra = extra;
    in.add_generation_prompt = false;
    assert_int_equal(tok_tmpl_render(t, &in, &out, &len, &raised, &err), KN_OK);
    assert_string_equal(out, "<s>[user:hi]T1</s>X");
    free(out);
    /* messages must be an array */
    in.messages = extra;
    assert_int_not_equal(tok_tmpl_render(t, &in, &out, &len, &raised, &err), KN_OK);
    assert_null(out);
    tok_tmpl_destroy(t);
    tok_tmpl_destroy(NULL);
    json_decref(msgs);
    json_decref(tools);
    json_decref(extra);
}

static const struct { const char *name, *expected; } BUILTIN_EXPECTED[] = {
    {"chatml", "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"},
    {"llama2", "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi there [/INST] Hello! </s><s>[INST] 2+2? [/INST]"},
    {"llama3", "<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
    {"mistral", "<s>[INST] Be brief.\n\nHi there [/INST] Hello!</s>[INST] 2+2? [/INST]"},
    {"zephyr", "<|system|>\nBe brief.</s>\n<|user|>\nHi there</s>\n<|assistant|>\nHello!</s>\n<|user|>\n2+2?</s>\n<|assistant|>\n"},
    {"phi3", "<|system|>\nBe brief.<|end|>\n<|user|>\nHi there<|end|>\n<|assistant|>\nHello!<|end|>\n<|user|>\n2+2?<|end|>\n<|assistant|>\n"},
    {"gemma", "<s><start_of_turn>user\nBe brief.\n\nHi there<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n<start_of_turn>user\n2+2?<end_of_turn>\n<start_of_turn>model\n"},
    {"qwen3", "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"},
    {"gemma4", "<s><|turn>system\nBe brief.<turn|>\n<|turn>user\nHi there<turn|>\n<|turn>model\nHello!<turn|>\n<|turn>user\n2+2?<turn|>\n<|turn>model\n<|channel>thought\n<channel|>"},
    {"harmony", "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\nKnowledge cutoff: 2024-06\nCurrent date: 2024-07-26\n\nReasoning: medium\n\n# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|><|start|>developer<|message|># Instructions\n\nBe brief.\n\n<|end|><|start|>user<|message|>Hi there<|end|><|start|>assistant<|channel|>final<|message|>Hello!<|end|><|start|>user<|message|>2+2?<|end|><|start|>assistant"},
};

/* The family built-ins on what tells them apart (reasoning, tool calls and
 * results, template variables, their errors), against what real Jinja2
 * renders with the family's own template (Qwen3's, Gemma 4's, gpt-oss's,
 * Phi-3.5's) on the same input, bos "<s>", eos "</s>", 2024-07-26. */
static const struct { const char *name, *messages, *vars; bool gen; const char *expected, *error; } BUILTIN_FAMILY_CASES[] = {
    {"qwen3",
     "[{\"role\": \"user\", \"content\": \"One\"}, {\"role\": \"assistant\", \"content\": \"<think>\\nhmm\\n</think>\\n\\nTwo\"}, {\"role\": \"user\", \"content\": \"Three\"}, {\"role\": \"assistant\", \"content\": \"Four\", \"reasoning_content\": \"r\"}]",
     NULL, false,
     "<|im_start|>user\nOne<|im_end|>\n<|im_start|>assistant\nTwo<|im_end|>\n<|im_start|>user\nThree<|im_end|>\n<|im_start|>assistant\n<think>\nr\n</think>\n\nFour<|im_end|>\n", NULL},
    {"qwen3",
     "[{\"role\": \"user\", \"content\": \"Hi\"}]",
     "{\"enable_thinking\": false}", true,
     "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n", NULL},
    {"qwen3",
     "[{\"role\": \"user\", \"content\": \"Weather?\"}, {\"role\": \"assistant\", \"content\": \"\", \"tool_calls\": [{\"id\": \"c1\", \"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 2}}}]}, {\"role\": \"tool\", \"tool_call_id\": \"c1\", \"content\": \"sunny\"}]",
     NULL, true,
     "<|im_start|>user\nWeather?<|im_end|>\n<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 2}}\n</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\nsunny\n</tool_response><|im_end|>\n<|im_start|>assistant\n", NULL},
    {"gemma4",
     "[{\"role\": \"user\", \"content\": \"Weather?\"}, {\"role\": \"assistant\", \"content\": \"\", \"tool_calls\": [{\"id\": \"c1\", \"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 2}}}]}, {\"role\": \"tool\", \"tool_call_id\": \"c1\", \"content\": \"sunny\"}, {\"role\": \"assistant\", \"content\": \"a<|channel>thought\\nplan<channel|>It is sunny.\"}, {\"role\": \"user\", \"content\": \"Thanks\"}]",
     "{\"enable_thinking\": true}", true,
     "<s><|turn>system\n<|think|>\n<turn|>\n<|turn>user\nWeather?<turn|>\n<|turn>model\n<|tool_call>call:get_weather{city:<|\"|>Paris<|\"|>,days:2}<tool_call|><|tool_response>response:get_weather{value:<|\"|>sunny<|\"|>}<tool_response|>aIt is sunny.<turn|>\n<|turn>user\nThanks<turn|>\n<|turn>model\n", NULL},
    {"harmony",
     "[{\"role\": \"user\", \"content\": \"Weather?\"}, {\"role\": \"assistant\", \"content\": \"\", \"tool_calls\": [{\"id\": \"c1\", \"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 2}}}]}, {\"role\": \"tool\", \"tool_call_id\": \"c1\", \"content\": \"sunny\"}, {\"role\": \"assistant\", \"content\": \"It is sunny.\"}]",
     "{\"reasoning_effort\": \"high\"}", false,
     "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\nKnowledge cutoff: 2024-06\nCurrent date: 2024-07-26\n\nReasoning: high\n\n# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|><|start|>user<|message|>Weather?<|end|><|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>{\"city\": \"Paris\", \"days\": 2}<|call|><|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>\"sunny\"<|end|><|start|>assistant<|channel|>final<|message|>It is sunny.<|return|>", NULL},
    {"harmony",
     "[{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"tool\", \"content\": \"x\"}]",
     NULL, true,
     NULL, "Message has tool role, but there was no previous assistant message with a tool call!"},
    {"phi3",
     "[{\"role\": \"system\", \"content\": \"\"}, {\"role\": \"user\", \"content\": \"Hi\"}]",
     NULL, false,
     "<|user|>\nHi<|end|>\n</s>", NULL},
};


static bool vocab_has(void *ctx, const char *text) {
    for (const char *const *v = ctx; *v; v++)
        if (!strcmp(*v, text)) return true;
    return false;
}

static void test_builtins(void **state) {
    (void)state;
    json_error_t je;
    json_t *msgs = json_loads("[{\"role\":\"system\",\"content\":\"Be brief.\"},{\"role\":\"user\",\"content\":\"Hi there\"},"
                              "{\"role\":\"assistant\",\"content\":\"Hello!\"},{\"role\":\"user\",\"content\":\"2+2?\"}]", 0, &je);
    struct tm now = {.tm_year = 2024 - 1900, .tm_mon = 6, .tm_mday = 26, .tm_hour = 12, .tm_wday = 5, .tm_yday = 207, .tm_isdst = -1};
    size_t count = 0;
    for (size_t i = 0; tok_tmpl_builtin_name(i); i++) count++;
    assert_int_equal(count, sizeof BUILTIN_EXPECTED / sizeof BUILTIN_EXPECTED[0]);
    for (size_t i = 0; i < count; i++) {
        const char *src = tok_tmpl_builtin(BUILTIN_EXPECTED[i].name);
        assert_non_null(src);
        kn_err err;
        tok_tmpl *t = tok_tmpl_create(src, strlen(src), &err);
        assert_non_null(t);
        tok_tmpl_inputs in = {.messages = msgs, .bos_token = "<s>", .eos_token = "</s>", .add_generation_prompt = true, .now = &now};
        char *out;
        size_t len;
        bool raised;
        assert_int_equal(tok_tmpl_render(t, &in, &out, &len, &raised, &err), KN_OK);
        if (strcmp(out, BUILTIN_EXPECTED[i].expected)) fprintf(stderr, "%s:\n%s\n", BUILTIN_EXPECTED[i].name, out);
        assert_string_equal(out, BUILTIN_EXPECTED[i].expected);
        free(out);
        tok_tmpl_destroy(t);
    }
    assert_null(tok_tmpl_builtin("nope"));
    for (size_t i = 0; i < sizeof BUILTIN_FAMILY_CASES / sizeof BUILTIN_FAMILY_CASES[0]; i++) {
        const char *src = tok_tmpl_builtin(BUILTIN_FAMILY_CASES[i].name);
        kn_err err;
        tok_tmpl *t = tok_tmpl_create(src, strlen(src), &err);
        assert_non_null(t);
        json_t *m = json_loads(BUILTIN_FAMILY_CASES[i].messages, 0, &je);
        json_t *vars = BUILTIN_FAMILY_CASES[i].vars ? json_loads(BUILTIN_FAMILY_CASES[i].vars, 0, &je) : NULL;
        assert_non_null(m);
        tok_tmpl_inputs in = {.messages = m, .extra = vars, .bos_token = "<s>", .eos_token = "</s>",
                              .add_generation_prompt = BUILTIN_FAMILY_CASES[i].gen, .now = &now};
        char *out = NULL;
        size_t len;
        bool raised = false;
        kn_status st = tok_tmpl_render(t, &in, &out, &len, &raised, &err);
        if (BUILTIN_FAMILY_CASES[i].expected) {
            if (st != KN_OK) fprintf(stderr, "%s case %zu: %s\n", BUILTIN_FAMILY_CASES[i].name, i, err.msg);
            assert_int_equal(st, KN_OK);
            if (strcmp(out, BUILTIN_FAMILY_CASES[i].expected)) fprintf(stderr, "%s case %zu:\n%s\n", BUILTIN_FAMILY_CASES[i].name, i, out);
            assert_string_equal(out, BUILTIN_FAMILY_CASES[i].expected);
        } else {
            assert_int_not_equal(st, KN_OK);
            assert_true(raised);
            assert_string_equal(err.msg, BUILTIN_FAMILY_CASES[i].error);
        }
        free(out);
        json_decref(m);
        json_decref(vars);
        tok_tmpl_destroy(t);
    }
    /* heuristics */
    const char *const qwen[] = {"<|im_start|>", "<|im_end|>", NULL}, *const l3[] = {"<|start_header_id|>", NULL},
                      *const gem[] = {"<start_of_turn>", NULL}, *const phi[] = {"<|user|>", "<|end|>", NULL},
                      *const zep[] = {"<|user|>", NULL}, *const mis[] = {"[INST]", NULL}, *const spm[] = {"<0x0A>", NULL},
                      *const none[] = {NULL};
    assert_string_equal(tok_tmpl_builtin_guess(vocab_has, (void *)qwen, "qwen2"), "chatml");
    assert_string_equal(tok_tmpl_builtin_guess(vocab_has, (void *)l3, "llama"), "llama3");
    assert_string_equal(tok_tmpl_builtin_guess(vocab_has, (void *)gem, "gemma2"), "gemma");
    assert_string_equal(tok_tmpl_builtin_guess(vocab_has, (void *)phi, "phi3"), "phi3");
    assert_string_equal(tok_tmpl_builtin_guess(vocab_has, (void *)zep, "llama"), "zephyr");
    assert_string_equal(tok_tmpl_builtin_guess(vocab_has, (void *)mis, "llama"), "mistral");
    assert_string_equal(tok_tmpl_builtin_guess(vocab_has, (void *)spm, "llama"), "llama2");
    assert_string_equal(tok_tmpl_builtin_guess(vocab_has, (void *)none, NULL), "chatml");
    /* the newer families: markers first, then the architecture */
    const char *const qwen3[] = {"<|im_start|>", "<|im_end|>", "<think>", "</think>", NULL},
                      *const harmony[] = {"<|start|>", "<|message|>", "<|channel|>", "<|end|>", "<|return|>", "<|call|>", NULL},
                      *const gem4[] = {"<|turn>", "<turn|>", "<|channel>", NULL}, *const l3b[] = {"<|start_header_id|>", "<0x0A>", NULL};
    assert_string_equal(tok_tmpl_builtin_guess(vocab_has, (void *)qwen3, "qwen2"), "qwen3");
    assert_string_equal(tok_tmpl_builtin_guess(vocab_has, (void *)qwen, "qwen3"), "qwen3");
    assert_string_equal(tok_tmpl_builtin_guess(vocab_has, (void *)qwen, "qwen3moe"), "qwen3");
    assert_string_equal(tok_tmpl_builtin_guess(vocab_has, (void *)none, "qwen3moe"), "qwen3");
    assert_string_equal(tok_tmpl_builtin_guess(vocab_has, (void *)none, "qwen2"), "chatml");
    assert_string_equal(tok_tmpl_builtin_guess(vocab_has, (void *)harmony, "gpt-oss"), "harmony");
    assert_string_equal(tok_tmpl_builtin_guess(vocab_has, (void *)harmony, NULL), "harmony");
    assert_string_equal(tok_tmpl_builtin_guess(vocab_has, (void *)none, "gpt-oss"), "harmony");
    /* a gpt-oss file whose vocabulary is Llama 3's: its markers exist, harmony's do not */
    assert_string_equal(tok_tmpl_builtin_guess(vocab_has, (void *)l3, "gpt-oss"), "llama3");
    assert_string_equal(tok_tmpl_builtin_guess(vocab_has, (void *)gem4, "gemma3"), "gemma4");
    assert_string_equal(tok_tmpl_builtin_guess(vocab_has, (void *)gem, "gemma3"), "gemma");
    assert_string_equal(tok_tmpl_builtin_guess(vocab_has, (void *)none, "gemma3"), "gemma");
    assert_string_equal(tok_tmpl_builtin_guess(vocab_has, (void *)none, "gemma4"), "gemma4");
    assert_string_equal(tok_tmpl_builtin_guess(vocab_has, (void *)none, "phi3"), "phi3");
    assert_string_equal(tok_tmpl_builtin_guess(vocab_has, (void *)l3b, "llama"), "llama3");
    /* model template preferred; a broken one falls back */
    kn_err err;
    const char *used;
    tok_tmpl *t = tok_tmpl_for_model("{{ 'ok' }}", 10, vocab_has, (void *)l3, "llama", &used, &err);
    assert_non_null(t);
    assert_string_equal(used, "model");
    tok_tmpl_destroy(t);
    t = tok_tmpl_for_model("{% if %}", 8, vocab_has, (void *)l3, "llama", &used, &err);
    assert_non_null(t);
    assert_string_equal(used, "llama3");
    tok_tmpl_destroy(t);
    t = tok_tmpl_for_model("{{ messages | nosuchfilter }}", 29, vocab_has, (void *)l3, "llama", &used, &err);
    assert_non_null(t);
    assert_string_equal(used, "llama3");
    tok_tmpl_destroy(t);
    t = tok_tmpl_for_model("{{ raise_exception('x') }}", 26, vocab_has, (void *)l3, "llama", &used, &err);
    assert_non_null(t);
    assert_string_equal(used, "model");
    tok_tmpl_destroy(t);
    t = tok_tmpl_for_model(NULL, 0, vocab_has, (void *)gem, "gemma", &used, &err);
    assert_non_null(t);
    assert_string_equal(used, "gemma");
    tok_tmpl_destroy(t);
    json_decref(msgs);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_jinja), cmocka_unit_test(test_errors), cmocka_unit_test(test_limits),
        cmocka_unit_test(test_inputs),        cmocka_unit_test(test_builtins),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
