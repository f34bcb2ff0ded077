/*
 * chat_template_methods.c — methods of template values, as Python has them:
 * str (strip lstrip rstrip split rsplit startswith endswith upper lower
 * title capitalize replace find count join splitlines isdigit isalpha
 * isalnum isspace islower isupper), dict (items keys values get) and the
 * loop's cycle(). Each type has a table of name -> function; get_attr binds
 * a table row to its value (V_METHOD) and a call runs it. Also the string
 * helpers the filters share (strip, case mapping, replace, join,
 * splitlines). Case mapping is ASCII-only; positions count code points.
 */
#include "chat_template_internal.h"

#include <stdio.h>
#include <stdlib.h>

/* ---- string helpers ---- */

static bool cp_in_set(uint32_t cp, const jv *chars) {
    const char *p = chars->u.s.p;
    size_t n = chars->u.s.n;
    for (size_t i = 0; i < n;) {
        size_t l;
        if (cp_at(p, n, i, &l) == cp) return true;
        i += l;
    }
    return false;
}

jv *tmpl_str_strip(rctx *R, jv *s, jv *chars, bool left, bool right) {
    if (chars && chars->t == V_NONE) chars = NULL;
    if (chars && chars->t != V_STR) RFAIL(R, "strip arg must be None or str");
    const char *p = s->u.s.p;
    size_t a = 0, b = s->u.s.n;
    work(R, b);
    if (left)
        while (a < b) {
            size_t l;
            uint32_t cp = cp_at(p, b, a, &l);
            if (chars ? !cp_in_set(cp, chars) : !py_space(cp)) break;
            a += l;
        }
    if (right)
        while (b > a) {
            size_t st = b - 1;
            while (st > a && is_cont((unsigned char)p[st])) st--;
            size_t l;
            uint32_t cp = cp_at(p, b, st, &l);
            if (chars ? !cp_in_set(cp, chars) : !py_space(cp)) break;
            b = st;
        }
    return mk_strn(R, p + a, b - a);
}

static jv *str_split(rctx *R, jv *s, jv *sep, int64_t maxsplit) {
    jv *l = mk_list(R, V_LIST, 0);
    const char *p = s->u.s.p;
    size_t n = s->u.s.n;
    if (sep && sep->t == V_NONE) sep = NULL;
    if (sep && sep->t != V_STR) RFAIL(R, "split separator must be a string or None");
    if (!sep) {
        size_t i = 0;
        for (;;) {
            while (i < n) {
                size_t len;
                if (!py_space(cp_at(p, n, i, &len))) break;
                i += len;
            }
            if (i >= n) break;
            if (maxsplit >= 0 && (int64_t)l->u.l->n >= maxsplit) {
                list_push(R, l, mk_strn(R, p + i, n - i));
                break;
            }
            size_t j = i;
            while (j < n) {
                size_t len;
                if (py_space(cp_at(p, n, j, &len))) break;
                j += len;
            }
            step(R);
            list_push(R, l, mk_strn(R, p + i, j - i));
            i = j;
        }
        return l;
    }
    if (!sep->u.s.n) RFAIL(R, "empty separator");
    size_t i = 0;
    for (;;) {
        step(R);
        const char *hit = (maxsplit < 0 || (int64_t)l->u.l->n < maxsplit)
                              ? memmem(p + i, n - i, sep->u.s.p, sep->u.s.n) : NULL;
        if (!hit) {
            list_push(R, l, mk_strn(R, p + i, n - i));
            break;
        }
        size_t h = (size_t)(hit - p);
        list_push(R, l, mk_strn(R, p + i, h - i));
        i = h + sep->u.s.n;
    }
    return l;
}

static char lc(char c) { return c >= 'A' && c <= 'Z' ? (char)(c + 32) : c; }
static char uc(char c) { return c >= 'a' && c <= 'z' ? (char)(c - 32) : c; }

jv *tmpl_str_case(rctx *R, jv *s, char mode) {
    char *o = ralloc(R, s->u.s.n + 1);
    const char *p = s->u.s.p;
    bool prev_letter = false;
    for (size_t i = 0; i < s->u.s.n; i++) {
        char c = p[i];
        switch (mode) {
        case 'u': o[i] = uc(c); break;
        case 'l': o[i] = lc(c); break;
        case 'c': o[i] = i == 0 ? uc(c) : lc(c); break;
        case 't':
            o[i] = prev_letter ? lc(c) : uc(c);
            prev_letter = ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) || (unsigned char)c >= 0x80;
            break;
        default: { /* word start after start, whitespace or - ( { [ < */
            bool start = i == 0 || is_ws(p[i - 1]) || strchr("-({[<", p[i - 1]);
            o[i] = start ? uc(c) : lc(c);
        }
        }
    }
    return mk_strn(R, o, s->u.s.n);
}

jv *tmpl_str_replace(rctx *R, jv *s, jv *old, jv *nw, int64_t count) {
    sbuf sb = {0};
    const char *p = s->u.s.p;
    size_t n = s->u.s.n, i = 0;
    int64_t done = 0;
    if (!old->u.s.n) {
        size_t cnt, *o = tmpl_cp_offsets(R, p, n, &cnt);
        for (size_t k = 0; k <= cnt; k++) {
            step(R);
            if (count < 0 || done < count) { sb_put(R, &sb, nw->u.s.p, nw->u.s.n); done++; }
            if (k < cnt) sb_put(R, &sb, p + o[k], o[k + 1] - o[k]);
        }
        return mk_sb(R, &sb);
    }
    while (i <= n) {
        const char *hit = (count < 0 || done < count) ? memmem(p + i, n - i, old->u.s.p, old->u.s.n) : NULL;
        if (!hit) break;
        step(R);
        size_t h = (size_t)(hit - p);
        sb_put(R, &sb, p + i, h - i);
        sb_put(R, &sb, nw->u.s.p, nw->u.s.n);
        i = h + old->u.s.n;
        done++;
    }
    if (!done) return s;
    sb_put(R, &sb, p + i, n - i);
    return mk_sb(R, &sb);
}

jv *tmpl_join(rctx *R, jv *seq, jv *sep, const char *attribute) {
    jlist *l = tmpl_iter_list(R, seq);
    sbuf sb = {0};
    sb_reserve(R, &sb, 0);
    for (size_t i = 0; i < l->n; i++) {
        step(R);
        if (i && sep) tmpl_to_str(R, sep, &sb);
        jv *it = attribute ? tmpl_get_attr_path(R, l->v[i], attribute) : l->v[i];
        tmpl_to_str(R, it, &sb);
    }
    return mk_sb(R, &sb);
}

static bool affix_match(rctx *R, jv *s, jv *aff, bool start) {
    if (aff->t == V_TUPLE || aff->t == V_LIST) {
        for (size_t i = 0; i < aff->u.l->n; i++)
            if (affix_match(R, s, aff->u.l->v[i], start)) return true;
        return false;
    }
    if (aff->t != V_STR) RFAIL(R, "%s arg must be str or a tuple of str", start ? "startswith" : "endswith");
    if (aff->u.s.n > s->u.s.n) return false;
    const char *p = start ? s->u.s.p : s->u.s.p + s->u.s.n - aff->u.s.n;
    return !memcmp(p, aff->u.s.p, aff->u.s.n);
}

jv *tmpl_splitlines(rctx *R, jv *s) {
    jv *l = mk_list(R, V_LIST, 0);
    const char *p = s->u.s.p;
    size_t n = s->u.s.n, i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && p[j] != '\n' && p[j] != '\r') j++;
        step(R);
        list_push(R, l, mk_strn(R, p + i, j - i));
        if (j < n && p[j] == '\r' && j + 1 < n && p[j + 1] == '\n') j++;
        i = j + 1;
    }
    return l;
}

/* ---- str methods ---- */

static jv *m_strip(rctx *R, jv *s, const args *A) {
    return tmpl_str_strip(R, s, arg(A, 0, "chars"), true, true);
}
static jv *m_lstrip(rctx *R, jv *s, const args *A) {
    return tmpl_str_strip(R, s, arg(A, 0, "chars"), true, false);
}
static jv *m_rstrip(rctx *R, jv *s, const args *A) {
    return tmpl_str_strip(R, s, arg(A, 0, "chars"), false, true);
}

static jv *split_method(rctx *R, jv *s, const args *A, bool right) {
    jv *ms = arg(A, 1, "maxsplit");
    int64_t maxsplit = ms && is_intlike(ms) ? num_i(ms) : -1;
    if (right && maxsplit >= 0) RFAIL(R, "rsplit with maxsplit is not supported");
    return str_split(R, s, arg(A, 0, "sep"), maxsplit);
}
static jv *m_split(rctx *R, jv *s, const args *A) { return split_method(R, s, A, false); }
static jv *m_rsplit(rctx *R, jv *s, const args *A) { return split_method(R, s, A, true); }

static jv *affix_method(rctx *R, jv *s, const args *A, bool start) {
    jv *a = arg(A, 0, NULL);
    if (!a) RFAIL(R, "%s() takes at least 1 argument", start ? "startswith" : "endswith");
    return mk_bool(R, affix_match(R, s, a, start));
}
static jv *m_startswith(rctx *R, jv *s, const args *A) { return affix_method(R, s, A, true); }
static jv *m_endswith(rctx *R, jv *s, const args *A) { return affix_method(R, s, A, false); }

static jv *m_upper(rctx *R, jv *s, const args *A) { (void)A; return tmpl_str_case(R, s, 'u'); }
static jv *m_lower(rctx *R, jv *s, const args *A) { (void)A; return tmpl_str_case(R, s, 'l'); }
static jv *m_capitalize(rctx *R, jv *s, const args *A) { (void)A; return tmpl_str_case(R, s, 'c'); }
static jv *m_title(rctx *R, jv *s, const args *A) { (void)A; return tmpl_str_case(R, s, 't'); }

static jv *m_replace(rctx *R, jv *s, const args *A) {
    jv *o = arg_str(R, A, 0, NULL, "replace"), *nw = arg_str(R, A, 1, NULL, "replace"),
       *c = arg(A, 2, "count");
    if (!o || !nw) RFAIL(R, "replace() takes at least 2 arguments");
    return tmpl_str_replace(R, s, o, nw, c && is_intlike(c) ? num_i(c) : -1);
}

/* find and count: their substring argument, charged for the scan */
static jv *sub_arg(rctx *R, jv *s, const args *A, const char *m) {
    jv *sub = arg_str(R, A, 0, NULL, m);
    if (!sub) RFAIL(R, "%s() takes at least 1 argument", m);
    work(R, s->u.s.n);
    return sub;
}

static jv *m_find(rctx *R, jv *s, const args *A) {
    jv *sub = sub_arg(R, s, A, "find");
    const char *hit = memmem(s->u.s.p, s->u.s.n, sub->u.s.p, sub->u.s.n);
    return mk_int(R, hit ? (int64_t)cp_count(s->u.s.p, (size_t)(hit - s->u.s.p)) : -1);
}

static jv *m_count(rctx *R, jv *s, const args *A) {
    jv *sub = sub_arg(R, s, A, "count");
    if (!sub->u.s.n) return mk_int(R, (int64_t)cp_count(s->u.s.p, s->u.s.n) + 1);
    int64_t c = 0;
    size_t i = 0;
    const char *hit;
    while ((hit = memmem(s->u.s.p + i, s->u.s.n - i, sub->u.s.p, sub->u.s.n))) {
        c++;
        i = (size_t)(hit - s->u.s.p) + sub->u.s.n;
    }
    return mk_int(R, c);
}

static jv *m_join(rctx *R, jv *s, const args *A) {
    jv *a = arg(A, 0, NULL);
    if (!a) RFAIL(R, "join() takes exactly one argument");
    jlist *l = tmpl_iter_list(R, a);
    for (size_t i = 0; i < l->n; i++)
        if (l->v[i]->t != V_STR)
            RFAIL(R, "sequence item %zu: expected str instance, %s found", i, tmpl_type_name(l->v[i]));
    return tmpl_join(R, a, s, NULL);
}

static jv *m_splitlines(rctx *R, jv *s, const args *A) { (void)A; return tmpl_splitlines(R, s); }

/* str.isX(): every byte passes `ok` (and the string is not empty); with
 * `cased`, some byte must also pass it (islower/isupper need a cased
 * letter). ASCII only. */
static jv *str_all(rctx *R, jv *s, bool (*ok)(char c), bool (*cased)(char c)) {
    const char *p = s->u.s.p;
    size_t n = s->u.s.n;
    bool all = n > 0, any_cased = false;
    for (size_t i = 0; i < n; i++) {
        all = all && ok(p[i]);
        if (cased) any_cased |= cased(p[i]);
    }
    return mk_bool(R, cased ? all && any_cased : all);
}

static bool c_alpha(char c) { return is_alpha_(c) && c != '_'; }
static bool c_lower(char c) { return c >= 'a' && c <= 'z'; }
static bool c_upper(char c) { return c >= 'A' && c <= 'Z'; }
static bool c_not_lower(char c) { return !c_lower(c); }
static bool c_not_upper(char c) { return !c_upper(c); }

static jv *m_isdigit(rctx *R, jv *s, const args *A) { (void)A; return str_all(R, s, is_digit, NULL); }
static jv *m_isalpha(rctx *R, jv *s, const args *A) { (void)A; return str_all(R, s, c_alpha, NULL); }
static jv *m_isalnum(rctx *R, jv *s, const args *A) { (void)A; return str_all(R, s, is_alnum_ascii, NULL); }
static jv *m_isspace(rctx *R, jv *s, const args *A) { (void)A; return str_all(R, s, is_ws, NULL); }
static jv *m_islower(rctx *R, jv *s, const args *A) { (void)A; return str_all(R, s, c_not_upper, c_lower); }
static jv *m_isupper(rctx *R, jv *s, const args *A) { (void)A; return str_all(R, s, c_not_lower, c_upper); }

static const tmpl_method STR_METHODS[] = {
    {"strip", m_strip},           {"lstrip", m_lstrip},         {"rstrip", m_rstrip},
    {"split", m_split},           {"rsplit", m_rsplit},         {"startswith", m_startswith},
    {"endswith", m_endswith},     {"upper", m_upper},           {"lower", m_lower},
    {"title", m_title},           {"capitalize", m_capitalize}, {"replace", m_replace},
    {"find", m_find},             {"count", m_count},           {"join", m_join},
    {"splitlines", m_splitlines}, {"isdigit", m_isdigit},       {"isalpha", m_isalpha},
    {"isalnum", m_isalnum},       {"isspace", m_isspace},       {"islower", m_islower},
    {"isupper", m_isupper},       {NULL, NULL},
};

/* ---- dict methods ---- */

jv *tmpl_items(rctx *R, jv *d) {
    jv *l = mk_list(R, V_LIST, d->u.d->n);
    for (size_t i = 0; i < d->u.d->n; i++) {
        jv *t = mk_list(R, V_TUPLE, 2);
        list_push(R, t, d->u.d->k[i]);
        list_push(R, t, d->u.d->v[i]);
        list_push(R, l, t);
    }
    return l;
}

static jv *m_items(rctx *R, jv *d, const args *A) { (void)A; return tmpl_items(R, d); }

static jv *keys_or_values(rctx *R, jv *d, bool keys) {
    jv *l = mk_list(R, V_LIST, d->u.d->n);
    for (size_t i = 0; i < d->u.d->n; i++) list_push(R, l, keys ? d->u.d->k[i] : d->u.d->v[i]);
    return l;
}
static jv *m_keys(rctx *R, jv *d, const args *A) { (void)A; return keys_or_values(R, d, true); }
static jv *m_values(rctx *R, jv *d, const args *A) { (void)A; return keys_or_values(R, d, false); }

static jv *m_get(rctx *R, jv *d, const args *A) {
    jv *k = arg(A, 0, NULL), *def = arg(A, 1, "default");
    if (!k) RFAIL(R, "get expected at least 1 argument");
    jv **s = tmpl_dict_slot(R, d->u.d, k);
    return s ? *s : def ? def : R->none;
}

static const tmpl_method DICT_METHODS[] = {
    {"items", m_items}, {"keys", m_keys}, {"values", m_values}, {"get", m_get}, {NULL, NULL},
};

/* ---- loop methods ---- */

static jv *m_cycle(rctx *R, jv *loop, const args *A) {
    if (!A->np) RFAIL(R, "no items for cycling given");
    return A->pos[loop->u.loop->i % A->np];
}

static const tmpl_method LOOP_METHODS[] = {{"cycle", m_cycle}, {NULL, NULL}};

const tmpl_method *tmpl_method_find(int t, const char *name, size_t n) {
    const tmpl_method *M = t == V_STR    ? STR_METHODS
                           : t == V_DICT ? DICT_METHODS
                           : t == V_LOOP ? LOOP_METHODS
                                         : NULL;
    for (size_t i = 0; M && M[i].name; i++)
        if (nm_eq(name, n, M[i].name)) return &M[i];
    return NULL;
}
