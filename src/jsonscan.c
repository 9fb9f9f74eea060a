/*
 * jsonscan: checks a JSON text once, then reads it in place (jsonscan.h).
 *
 * json_check is the only function that looks at bytes it has not seen
 * before; it is a loop over three states (a value is due, a value has just
 * ended, a member's key is due) with a stack of the brackets still open. The
 * readers after it rely on what it proved: every string is closed, every
 * escape is whole, every container is closed, so they need no bounds of
 * their own as long as they stay inside the outermost container.
 */
#include "jsonscan.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum check_state { WANT_VALUE, AFTER_VALUE, WANT_KEY };

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && is_ws(*p))
        p++;
    return p;
}

/* The value of one hex digit, or -1. */
static int hex_val(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Four hex digits at p (bounds checked by the caller), or -1. */
static long hex4(const char *p)
{
    long v = 0;
    for (int i = 0; i < 4; i++) {
        int d = hex_val(p[i]);
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/*
 * A "\u" escape at p (p[0] == '\\', p[1] == 'u'), with the low half of a
 * surrogate pair when the first is a high half. Returns the code point and
 * sets *len to the bytes of text it took, or returns -1: a bad hex digit, a
 * lone or reversed surrogate, U+0000, or text that ends first.
 */
static long read_u_escape(const char *p, const char *end, size_t *len)
{
    long hi, lo;

    if (end - p < 6 || (hi = hex4(p + 2)) < 0 || hi == 0 || (hi >= 0xDC00 && hi <= 0xDFFF))
        return -1;
    *len = 6;
    if (hi < 0xD800 || hi > 0xDBFF)
        return hi;
    if (end - p < 12 || p[6] != '\\' || p[7] != 'u' || (lo = hex4(p + 8)) < 0xDC00 || lo > 0xDFFF)
        return -1;
    *len = 12;
    return 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
}

/* A string at p (p[0] == '"'): the byte after its closing quote, or NULL. */
static const char *check_string(const char *p, const char *end)
{
    for (p++; p < end; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"')
            return p + 1;
        if (c < 0x20)
            return NULL;
        if (c != '\\')
            continue;
        if (end - p < 2)
            return NULL;
        switch (p[1]) {
        case '"':
        case '\\':
        case '/':
        case 'b':
        case 'f':
        case 'n':
        case 'r':
        case 't':
            p++;
            break;
        case 'u': {
            size_t len;
            if (read_u_escape(p, end, &len) < 0)
                return NULL;
            p += len - 1;
            break;
        }
        default:
            return NULL;
        }
    }
    return NULL;
}

/* A number at p, RFC 8259's grammar and at most JSON_MAX_NUMBER bytes: the byte after it, or NULL.
 */
static const char *check_number(const char *p, const char *end)
{
    const char *start = p;

    if (p < end && *p == '-')
        p++;
    if (p == end || !is_digit(*p))
        return NULL;
    if (*p == '0')
        p++;
    else
        while (p < end && is_digit(*p))
            p++;
    if (p < end && *p == '.') {
        p++;
        if (p == end || !is_digit(*p))
            return NULL;
        while (p < end && is_digit(*p))
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p == end || !is_digit(*p))
            return NULL;
        while (p < end && is_digit(*p))
            p++;
    }
    return p - start <= JSON_MAX_NUMBER ? p : NULL;
}

static const char *check_literal(const char *p, const char *end, const char *lit)
{
    size_t n = strlen(lit);
    return (size_t)(end - p) >= n && memcmp(p, lit, n) == 0 ? p + n : NULL;
}

/* One scalar at p, or an opened container pushed onto stack: the byte after what it read, or NULL.
 */
static const char *check_value(const char *p, const char *end, char *stack, int *depth)
{
    switch (*p) {
    case '{':
    case '[':
        if (*depth == JSON_MAX_DEPTH)
            return NULL;
        stack[(*depth)++] = *p == '{' ? '}' : ']';
        return p + 1;
    case '"':
        return check_string(p, end);
    case 't':
        return check_literal(p, end, "true");
    case 'f':
        return check_literal(p, end, "false");
    case 'n':
        return check_literal(p, end, "null");
    default:
        return check_number(p, end);
    }
}

bool json_check(const char *text, size_t len, const char **value)
{
    char stack[JSON_MAX_DEPTH];
    int depth = 0;
    enum check_state st = WANT_VALUE;
    const char *p, *end;

    if (text == NULL)
        return false;
    p = text;
    end = text + len;
    p = skip_ws(p, end);
    if (value != NULL)
        *value = p;
    for (;;) {
        if (p == end)
            return st == AFTER_VALUE && depth == 0;
        switch (st) {
        case WANT_VALUE: {
            int before = depth;
            p = check_value(p, end, stack, &depth);
            if (p == NULL)
                return false;
            p = skip_ws(p, end);
            st = AFTER_VALUE;
            if (depth > before) {
                /* Just opened: it may close at once, an object wants a key first. */
                if (p < end && *p == stack[depth - 1]) {
                    depth--;
                    p = skip_ws(p + 1, end);
                } else {
                    st = stack[depth - 1] == '}' ? WANT_KEY : WANT_VALUE;
                }
            }
            break;
        }
        case AFTER_VALUE:
            if (depth == 0)
                return false; /* something after the whole value */
            if (*p == ',') {
                p = skip_ws(p + 1, end);
                st = stack[depth - 1] == '}' ? WANT_KEY : WANT_VALUE;
            } else if (*p == stack[depth - 1]) {
                depth--;
                p = skip_ws(p + 1, end);
            } else {
                return false;
            }
            break;
        case WANT_KEY:
            if (*p != '"' || (p = check_string(p, end)) == NULL)
                return false;
            p = skip_ws(p, end);
            if (p == end || *p != ':')
                return false;
            p = skip_ws(p + 1, end);
            st = WANT_VALUE;
            break;
        }
    }
}

json_type_t json_type(const char *v)
{
    switch (*v) {
    case 'n':
        return JSON_NULL;
    case 'f':
        return JSON_FALSE;
    case 't':
        return JSON_TRUE;
    case '"':
        return JSON_STRING;
    case '[':
        return JSON_ARRAY;
    case '{':
        return JSON_OBJECT;
    default:
        return JSON_NUMBER;
    }
}

/* The byte after the closing quote of the string at p. */
static const char *skip_string(const char *p)
{
    for (p++; *p != '"'; p++)
        if (*p == '\\')
            p++; /* the escaped byte; the rest of a \u escape is hex, never a quote */
    return p + 1;
}

static bool is_number_byte(char c)
{
    return is_digit(c) || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E';
}

/* What a byte is to json_skip inside a container: most bytes are nothing to it. */
enum skip_class { SK_NONE, SK_OPEN, SK_CLOSE, SK_QUOTE };

static const unsigned char skip_classes[256] = {
    ['{'] = SK_OPEN, ['['] = SK_OPEN, ['}'] = SK_CLOSE, [']'] = SK_CLOSE, ['"'] = SK_QUOTE,
};

const char *json_skip(const char *v)
{
    int depth = 0;

    switch (*v) {
    case '"':
        return skip_string(v);
    case 'n':
    case 't':
        return v + 4;
    case 'f':
        return v + 5;
    case '{':
    case '[':
        break;
    default:
        while (is_number_byte(*v))
            v++;
        return v;
    }
    /* A bars page is mostly digits and punctuation: one table look-up a byte. */
    do {
        switch (skip_classes[(unsigned char)*v]) {
        case SK_QUOTE:
            v = skip_string(v);
            continue;
        case SK_OPEN:
            depth++;
            break;
        case SK_CLOSE:
            depth--;
            break;
        default:
            break;
        }
        v++;
    } while (depth > 0);
    return v;
}

json_str_t json_string(const char *v)
{
    json_str_t s = {.s = v + 1, .escaped = false};
    const char *p = v + 1;

    for (; *p != '"'; p++) {
        if (*p == '\\') {
            s.escaped = true;
            p++;
        }
    }
    s.len = (size_t)(p - s.s);
    return s;
}

/* Writes code point cp as UTF-8 into out; returns its length. */
static size_t put_utf8(long cp, char *out)
{
    unsigned char *b = (unsigned char *)out;

    if (cp < 0x80) {
        b[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        b[0] = (unsigned char)(0xC0 | (cp >> 6));
        b[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        b[0] = (unsigned char)(0xE0 | (cp >> 12));
        b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        b[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    b[0] = (unsigned char)(0xF0 | (cp >> 18));
    b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    b[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decodes s into out (room for s->len bytes); the decoded length. */
static size_t decode(const json_str_t *s, char *out)
{
    const char *p = s->s, *end = s->s + s->len;
    size_t n = 0;

    if (!s->escaped) {
        memcpy(out, p, s->len);
        return s->len;
    }
    while (p < end) {
        char c = *p;
        if (c != '\\') {
            out[n++] = c;
            p++;
            continue;
        }
        switch (p[1]) {
        case 'b':
            c = '\b';
            break;
        case 'f':
            c = '\f';
            break;
        case 'n':
            c = '\n';
            break;
        case 'r':
            c = '\r';
            break;
        case 't':
            c = '\t';
            break;
        case 'u': {
            size_t used;
            long cp = read_u_escape(p, end, &used);
            n += put_utf8(cp, out + n);
            p += used;
            continue;
        }
        default: /* '"', '\\', '/' stand for themselves */
            c = p[1];
            break;
        }
        out[n++] = c;
        p += 2;
    }
    return n;
}

size_t json_str_decode(const json_str_t *s, char *out)
{
    size_t n = decode(s, out);
    out[n] = '\0';
    return n;
}

bool json_str_eq(const json_str_t *s, const char *lit)
{
    size_t n = strlen(lit);
    char buf[256];
    bool eq;

    if (!s->escaped)
        return s->len == n && memcmp(s->s, lit, n) == 0;
    /* Decoding never lengthens a string: it cannot be lit when it is shorter already. */
    if (s->len < n)
        return false;
    if (s->len < sizeof buf)
        return json_str_decode(s, buf) == n && memcmp(buf, lit, n) == 0;
    char *d = json_str_dup(s);
    eq = d != NULL && strcmp(d, lit) == 0;
    free(d);
    return eq;
}

char *json_str_dup(const json_str_t *s)
{
    char *out = malloc(s->len + 1);
    if (out != NULL)
        json_str_decode(s, out);
    return out;
}

/* 10^0 .. 10^22: every one exact in a double. */
static const double exact_pow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                     1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                     1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

#define TWO_POW_53 (UINT64_C(1) << 53)

/* One more digit of the mantissa: leading zeros add nothing, a 20th significant digit ends the fast
 * path. */
static void add_digit(char c, uint64_t *m, int *sig, bool *fast)
{
    if (*m == 0 && c == '0')
        return;
    if (*sig == 19) {
        *fast = false;
        return;
    }
    *m = *m * 10 + (uint64_t)(c - '0');
    (*sig)++;
}

/*
 * Clinger's fast path: when the significant digits form an integer m < 2^53
 * and the power of ten k is within ±22, both m and 10^|k| are exact doubles,
 * so one IEEE multiplication or division rounds the exact value m·10^k
 * correctly, which is what strtod returns. Prices like 187.4312 and counts
 * always take it; anything else goes to strtod.
 */
double json_number(const char *v)
{
    return json_number_end(v, NULL);
}

double json_number_end(const char *v, const char **end)
{
    const char *p = v;
    bool neg = false, fast = true;
    uint64_t m = 0;
    int sig = 0, k = 0;

    if (*p == '-') {
        neg = true;
        p++;
    }
    for (; is_digit(*p); p++)
        add_digit(*p, &m, &sig, &fast);
    if (*p == '.')
        for (p++; is_digit(*p); p++, k--)
            add_digit(*p, &m, &sig, &fast);
    if (*p == 'e' || *p == 'E') {
        bool eneg = false;
        int e = 0;
        p++;
        if (*p == '+' || *p == '-')
            eneg = *p++ == '-';
        for (; is_digit(*p); p++)
            if (e < 100000)
                e = e * 10 + (*p - '0');
        k += eneg ? -e : e;
    }
    if (end != NULL)
        *end = p;
    if (fast && m == 0)
        return neg ? -0.0 : 0.0;
    if (fast && m <= TWO_POW_53 && k >= -22 && k <= 22) {
        double d = (double)m;
        d = k < 0 ? d / exact_pow10[-k] : d * exact_pow10[k];
        return neg ? -d : d;
    }
    /* json_check bounds a literal to JSON_MAX_NUMBER bytes. */
    char buf[JSON_MAX_NUMBER + 1];
    size_t n = (size_t)(p - v);
    memcpy(buf, v, n);
    buf[n] = '\0';
    return strtod(buf, NULL);
}

void json_iter_begin(json_iter_t *it, const char *v)
{
    it->p = v + 1;
    it->val = NULL;
}

/* Whitespace inside a checked container, which a closing bracket always ends. */
static const char *skip_ws_inside(const char *p)
{
    while (is_ws(*p))
        p++;
    return p;
}

/* At the next member or element: false at the closing bracket. */
static bool iter_next(json_iter_t *it)
{
    const char *p = skip_ws_inside(it->val != NULL ? json_skip(it->val) : it->p);

    it->val = NULL;
    if (*p == ',')
        p = skip_ws_inside(p + 1);
    it->p = p;
    return *p != '}' && *p != ']';
}

bool json_iter_member(json_iter_t *it, json_str_t *key, const char **value)
{
    const char *p;

    if (!iter_next(it))
        return false;
    *key = json_string(it->p);
    p = skip_ws_inside(key->s + key->len + 1);
    *value = it->val = skip_ws_inside(p + 1); /* after the ':' */
    return true;
}

bool json_iter_elem(json_iter_t *it, const char **value)
{
    if (!iter_next(it))
        return false;
    *value = it->val = it->p;
    return true;
}

void json_iter_skip_to(json_iter_t *it, const char *after)
{
    it->p = after;
    it->val = NULL;
}

const char *json_iter_end(const json_iter_t *it)
{
    return it->p + 1;
}
