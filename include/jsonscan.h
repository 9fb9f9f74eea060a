/*
 * jsonscan: a strict JSON reader that builds no tree.
 *
 * A bars page is up to 10,000 bars of eight members each. Read through a
 * tree, that is 90,000 nodes and a string per key, and each number goes
 * through strtod's arbitrary-precision path; measured, that was half of the
 * daemon's CPU at 500 symbols. This reader checks a body once (json_check),
 * then walks it in place: members and elements are found by pointer, strings
 * are decoded only where a caller needs them, and a number with at most 19
 * significant digits and a power of ten within 10^±22 is read exactly
 * without strtod (see json_number).
 *
 * The grammar is RFC 8259's, no more: no leading zeros, no "1." or ".5", no
 * raw control characters in strings, escapes as the RFC lists them (a \u
 * surrogate must be a whole pair), nesting at most JSON_MAX_DEPTH, number
 * literals at most JSON_MAX_NUMBER bytes. "\u0000" is refused too: a NUL
 * inside a key or a symbol would cut it short in C. A byte order mark is not
 * JSON either (RFC 8259 8.1). Every text this accepts, cJSON reads the same.
 *
 * Everything but json_check takes a pointer into a text json_check accepted
 * and does not check it again.
 */
#ifndef BACKFILLD_JSONSCAN_H
#define BACKFILLD_JSONSCAN_H

#include <stdbool.h>
#include <stddef.h>

#define JSON_MAX_DEPTH 256
#define JSON_MAX_NUMBER 63

typedef enum json_type {
    JSON_NULL,
    JSON_FALSE,
    JSON_TRUE,
    JSON_NUMBER,
    JSON_STRING,
    JSON_ARRAY,
    JSON_OBJECT,
} json_type_t;

/* A string as it stands in the text: the bytes between the quotes. */
typedef struct json_str {
    const char *s;
    size_t len;
    bool escaped; /* has a backslash: decode before use */
} json_str_t;

/* A walk over the members of an object or the elements of an array. */
typedef struct json_iter {
    const char *p;   /* the last value returned, or the bracket that ends the walk */
    const char *val; /* that value, still to be skipped; NULL once skipped */
} json_iter_t;

/*
 * True when text[0..len) is exactly one JSON value with only whitespace
 * around it; *value is then where the value starts.
 */
bool json_check(const char *text, size_t len, const char **value);

json_type_t json_type(const char *v);

/* The first byte after the value at v. */
const char *json_skip(const char *v);

/* The string at v (which is one). */
json_str_t json_string(const char *v);

/* Decodes s into out (room for s->len + 1 bytes), NUL-terminated; returns the length. */
size_t json_str_decode(const json_str_t *s, char *out);

/* Whether s, decoded, is the C string lit. */
bool json_str_eq(const json_str_t *s, const char *lit);

/* s decoded into a new NUL-terminated string, or NULL when out of memory. */
char *json_str_dup(const json_str_t *s);

/*
 * The number at v, as strtod reads it (correctly rounded; ±HUGE_VAL when it
 * is out of range, so check isfinite).
 */
double json_number(const char *v);

/* json_number, and *end (when not NULL) is the byte after the literal. */
double json_number_end(const char *v, const char **end);

/* Starts a walk over the object or array at v. */
void json_iter_begin(json_iter_t *it, const char *v);

/* The next member of an object: false at its end. */
bool json_iter_member(json_iter_t *it, json_str_t *key, const char **value);

/* The next element of an array: false at its end. */
bool json_iter_elem(json_iter_t *it, const char **value);

/*
 * The value last returned ends at after (the caller read it whole, walking a
 * container to its end, say): the walk goes on from there instead of
 * skipping the value a second time.
 */
void json_iter_skip_to(json_iter_t *it, const char *after);

/* Once a walk has returned false: the byte after the container's closing bracket. */
const char *json_iter_end(const json_iter_t *it);

#endif
