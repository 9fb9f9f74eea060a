/*
 * assets: turns the trading API's asset list (GET /v2/assets,
 * alpaca-more-api.md §2) into plain C arrays.
 *
 * The list is a plain JSON array of objects; what backfilld needs of each is
 * its symbol, exchange, class and status. A list is accepted or rejected as
 * a whole: an element that is not an object, or has no string symbol, means
 * the answer is not an asset list, and enqueue --all-active must not write a
 * universe from half of one. The second module (after bars) that includes
 * cJSON, for the same reason: the JSON's shape stays here. Pure, unit-tested.
 */
#ifndef BACKFILLD_ASSETS_H
#define BACKFILLD_ASSETS_H

#include <stdbool.h>
#include <stddef.h>

typedef struct asset {
    char *symbol;   /* owned */
    char *exchange; /* owned; "" when the element has none */
    bool active;    /* "status": "active" */
    bool us_equity; /* "class": "us_equity" */
} asset_t;

typedef struct assets_list {
    asset_t *v; /* owned, n entries, in the order served */
    size_t n;
} assets_list_t;

/*
 * Parses an asset list body. Returns 0 and fills *out (caller frees with
 * assets_clear), or -1 with a one-line message in err (always
 * NUL-terminated) and *out left empty. An empty array is a valid (empty)
 * list: whether that is acceptable is the caller's call.
 */
int assets_parse(const char *body, size_t len, assets_list_t *out, char *err, size_t errlen);

/* Frees what *l owns and zeroes it. Safe on a zeroed or already-cleared list. */
void assets_clear(assets_list_t *l);

#endif
