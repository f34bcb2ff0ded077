/*
 * schema_pending.c — placeholder until the JSON Schema converter (schema.c)
 * lands on main later in this work: every schema is refused with a clear
 * error, so JSON formats and forced tool calls answer 400, never a guess.
 */
#include "kiln/grammar.h"

kn_status gram_schema_rules(const json_t *schema, const char *prefix, kn_buf *out, kn_err *err) {
    (void)schema, (void)prefix, (void)out;
    return kn_fail(err, KN_EINVAL, "JSON Schema constraints are not available in this build");
}

kn_status gram_schema_to_gbnf(const json_t *schema, char **out, size_t *len, kn_err *err) {
    (void)schema;
    *out = NULL;
    *len = 0;
    return kn_fail(err, KN_EINVAL, "JSON Schema constraints are not available in this build");
}
