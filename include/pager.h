/*
 * pager: the next_page_token loop, as pure logic.
 *
 * Alpaca returns multi-symbol results sorted by symbol and caps each page
 * across all symbols, so stopping before the token is null loses every
 * symbol after the first (the "only the first symbol comes back" bug this
 * product exists to end). A page may be short or even empty while a token
 * is still given; neither means the end. Only a null or absent token does.
 * Two server faults are caught instead of looping for ever: a token that
 * comes back again, and more pages than the requested range could fill.
 */
#ifndef BACKFILLD_PAGER_H
#define BACKFILLD_PAGER_H

#include <stddef.h>
#include <stdint.h>

enum { PAGER_MORE = 1, PAGER_DONE = 0, PAGER_ERROR = -1 };

typedef struct pager {
    char *token;        /* owned; the page_token for the next request, NULL on the first */
    unsigned pages;     /* pages accepted so far */
    unsigned max_pages; /* hard bound derived from the range */
    unsigned empty_run; /* consecutive empty pages that still carried a token */
    uint64_t *seen;     /* hashes of tokens seen, to catch a repeat */
    size_t nseen, capseen;
} pager_t;

/*
 * max_bars: the most bars the request can return (range / bar length ×
 * symbols, rounded up); the bound on pages is derived from it, since every
 * page but a trailing empty one carries at least one bar.
 */
void pager_init(pager_t *p, uint64_t max_bars);

/*
 * Feeds one page's outcome: its bar count and next_page_token (borrowed;
 * NULL when null or absent). Returns PAGER_MORE (pager_token() is the next
 * token), PAGER_DONE, or PAGER_ERROR with a message in err.
 */
int pager_advance(pager_t *p, size_t page_bars, const char *next_token, char *err, size_t errlen);

static inline const char *pager_token(const pager_t *p)
{
    return p->token;
}

void pager_free(pager_t *p);

#endif
