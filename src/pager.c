/*
 * pager: see pager.h.
 */
#include "pager.h"

#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* More than this many empty pages in a row, each with a token, is a server loop. */
#define PAGER_MAX_EMPTY_RUN 3

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

void pager_init(pager_t *p, uint64_t max_bars)
{
    memset(p, 0, sizeof *p);
    /* Every non-empty page holds ≥ 1 bar, plus room for empty pages. */
    p->max_pages = max_bars > 1000000 - 2 ? 1000000 : (unsigned)(max_bars + 2);
}

void pager_free(pager_t *p)
{
    free(p->token);
    free(p->seen);
    memset(p, 0, sizeof *p);
}

int pager_advance(pager_t *p, size_t page_bars, const char *next_token, char *err, size_t errlen)
{
    p->pages++;
    free(p->token);
    p->token = NULL;
    if (!next_token)
        return PAGER_DONE;
    if (*next_token == '\0') {
        snprintf(err, errlen, "server returned an empty next_page_token on page %u", p->pages);
        return PAGER_ERROR;
    }
    uint64_t h = fnv1a(next_token);
    for (size_t i = 0; i < p->nseen; i++) {
        if (p->seen[i] == h) {
            snprintf(err, errlen, "next_page_token repeated on page %u (server pagination loop)",
                     p->pages);
            return PAGER_ERROR;
        }
    }
    if (p->pages >= p->max_pages) {
        snprintf(err, errlen, "more than %u pages for a range that can hold at most %u", p->pages,
                 p->max_pages - 2);
        return PAGER_ERROR;
    }
    p->empty_run = page_bars == 0 ? p->empty_run + 1 : 0;
    if (p->empty_run > PAGER_MAX_EMPTY_RUN) {
        snprintf(err, errlen, "%u empty pages in a row still carrying a next_page_token",
                 p->empty_run);
        return PAGER_ERROR;
    }
    if (p->nseen == p->capseen) {
        p->capseen = p->capseen ? p->capseen * 2 : 16;
        p->seen = xrealloc(p->seen, p->capseen * sizeof(*p->seen));
    }
    p->seen[p->nseen++] = h;
    p->token = xstrdup(next_token);
    return PAGER_MORE;
}
