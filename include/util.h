/*
 * util: the small things every module needs — checked allocation, a growable
 * byte buffer with a size cap, a seeded PRNG for jitter, and clocks.
 *
 * Small allocations abort on failure (as h2o does): a daemon that cannot get
 * a few hundred bytes has nothing useful left to do, and unchecked NULLs are
 * worse. Large, input-sized buffers use dynbuf, whose cap turns a hostile or
 * broken peer into an error instead of an out-of-memory kill.
 */
#ifndef BACKFILLD_UTIL_H
#define BACKFILLD_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MUSTCHECK __attribute__((warn_unused_result))
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* Intrusive doubly linked lists: any struct with prev and next pointers to its own type. */
#define DLIST_PUSH(head, n)                                                                        \
    do {                                                                                           \
        (n)->prev = NULL;                                                                          \
        (n)->next = (head);                                                                        \
        if (head)                                                                                  \
            (head)->prev = (n);                                                                    \
        (head) = (n);                                                                              \
    } while (0)
#define DLIST_REMOVE(head, n)                                                                      \
    do {                                                                                           \
        if ((n)->prev)                                                                             \
            (n)->prev->next = (n)->next;                                                           \
        else                                                                                       \
            (head) = (n)->next;                                                                    \
        if ((n)->next)                                                                             \
            (n)->next->prev = (n)->prev;                                                           \
    } while (0)

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

/* snprintf that truncates silently and always NUL-terminates; returns dst. */
char *strlcpy_trunc(char *dst, size_t dstlen, const char *src);

/* A growable buffer. `cap` bounds len; appends past it fail with -1. */
typedef struct dynbuf {
    char *data; /* owned; NUL-terminated when non-NULL */
    size_t len;
    size_t alloc;
    size_t cap;
} dynbuf_t;

void dynbuf_init(dynbuf_t *b, size_t cap);
int dynbuf_append(dynbuf_t *b, const void *p, size_t n) MUSTCHECK;
int dynbuf_printf(dynbuf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3))) MUSTCHECK;
void dynbuf_reset(dynbuf_t *b);
void dynbuf_free(dynbuf_t *b);
/* Gives the caller the data (caller frees) and leaves the buffer empty. */
char *dynbuf_take(dynbuf_t *b, size_t *len);

/*
 * Reads a whole file into a NUL-terminated buffer (caller frees). NULL when
 * it cannot be opened or is larger than cap; errno says which (ENOMEM for
 * the cap).
 */
char *read_file_capped(const char *path, size_t cap, size_t *len);

/* splitmix64: deterministic, seeded, good enough for jitter. */
uint64_t rng_next(uint64_t *state);
/* Uniform in [0, 1). */
double rng_unit(uint64_t *state);

/* Milliseconds on CLOCK_MONOTONIC, for durations and deadlines. */
int64_t mono_ms(void);
/* Microseconds since the Unix epoch (wall clock), for data and log timestamps. */
int64_t wall_us(void);

/* Parses a whole decimal integer in [min, max]; false on anything else. */
bool parse_i64(const char *s, int64_t min, int64_t max, int64_t *out);
/* Parses a whole finite double in [min, max]. */
bool parse_double(const char *s, double min, double max, double *out);
/* Case-insensitive boolean: 1/0, true/false, yes/no, on/off. */
bool parse_bool(const char *s, bool *out);

/* qsort/bsearch order of int64_t values, ascending. */
int cmp_int64(const void *a, const void *b);

#endif
