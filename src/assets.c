/*
 * assets: the trading API's asset list. See assets.h.
 */
#include "assets.h"

#include "util.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void assets_clear(assets_list_t *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].symbol);
        free(l->v[i].exchange);
    }
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

/* The string member `name` of o, or NULL when absent or not a string. */
static const char *str_member(const cJSON *o, const char *name)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(m) ? m->valuestring : NULL;
}

int assets_parse(const char *body, size_t len, assets_list_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    err[0] = '\0';
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, len, &end, false);
    int ret = -1;
    if (!root) {
        snprintf(err, errlen, "not JSON (it starts \"%.40s\")", len ? body : "");
        goto out;
    }
    /* Only whitespace may follow the one value. */
    for (const char *p = end; p && p < body + len; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') {
            snprintf(err, errlen, "not one JSON value (bytes follow it at offset %zu)",
                     (size_t)(p - body));
            goto out;
        }
    }
    if (!cJSON_IsArray(root)) {
        const char *msg = cJSON_IsObject(root) ? str_member(root, "message") : NULL;
        snprintf(err, errlen, "not a JSON array of assets%s%s%s", msg ? " (message: \"" : "",
                 msg ? msg : "", msg ? "\")" : "");
        goto out;
    }
    int n = cJSON_GetArraySize(root);
    out->v = xcalloc((size_t)n + 1, sizeof *out->v);
    size_t i = 0;
    for (const cJSON *e = root->child; e; e = e->next, i++) {
        const char *sym = cJSON_IsObject(e) ? str_member(e, "symbol") : NULL;
        if (!sym) {
            snprintf(err, errlen, "asset %zu: %s", i,
                     cJSON_IsObject(e) ? "no string \"symbol\"" : "not an object");
            goto out;
        }
        const char *exch = str_member(e, "exchange"), *st = str_member(e, "status"),
                   *cls = str_member(e, "class");
        asset_t *a = &out->v[out->n++];
        a->symbol = xstrdup(sym);
        a->exchange = xstrdup(exch ? exch : "");
        a->active = st && strcmp(st, "active") == 0;
        a->us_equity = cls && strcmp(cls, "us_equity") == 0;
    }
    ret = 0;
out:
    cJSON_Delete(root);
    if (ret < 0)
        assets_clear(out);
    return ret;
}
