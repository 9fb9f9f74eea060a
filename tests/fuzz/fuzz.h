/*
 * fuzz: what the libFuzzer targets in tests/fuzz share.
 *
 * Each target feeds one parser the bytes libFuzzer gives it and then checks
 * invariants of the result, so that a wrong answer fails like a crash does:
 * FUZZ_CHECK prints the condition and aborts, and libFuzzer saves the input.
 *
 * libcjson is the system's shared library, built without ASan, so an
 * over-read inside it would go unseen. fuzz_guarded_copy puts the input at
 * the very end of a mapping that an inaccessible page follows: reading even
 * one byte past it faults, whoever reads. The daemon's bodies do carry a NUL
 * after their last byte, but the parsers' contracts take (pointer, length)
 * and promise not to look further, which is what this holds them to.
 *
 * Everything here is static inline, so each target includes it without
 * unused-function warnings and without a library of its own.
 */
#ifndef BACKFILLD_FUZZ_H
#define BACKFILLD_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* The entry points libFuzzer calls; declared here because -Wmissing-prototypes wants them. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            fuzz_fail(__FILE__, __LINE__, #cond);                                                  \
    } while (0)

static inline void fuzz_fail(const char *file, int line, const char *what)
{
    fprintf(stderr, "%s:%d: invariant violated: %s\n", file, line, what);
    abort();
}

/*
 * Returns a copy of data[0..size) that ends right before a PROT_NONE page.
 * The copy is valid until the next call (one mapping is reused and grown).
 * Aborts if the mapping cannot be made: the target cannot run without it.
 */
static inline const char *fuzz_guarded_copy(const uint8_t *data, size_t size)
{
    static char *map;
    static size_t map_len, usable;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);

    if (map == NULL || size > usable) {
        if (map != NULL)
            munmap(map, map_len);
        usable = (size + page - 1) / page * page;
        if (usable == 0)
            usable = page;
        map_len = usable + page;
        map = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (map == MAP_FAILED || mprotect(map + usable, page, PROT_NONE) != 0) {
            perror("fuzz_guarded_copy");
            abort();
        }
    }
    char *dst = map + usable - size;
    if (size > 0)
        memcpy(dst, data, size);
    return dst;
}

/* Returns a malloc'ed NUL-terminated copy of data (caller frees); aborts on out of memory. */
static inline char *fuzz_strndup(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);

    if (s == NULL)
        abort();
    if (size > 0)
        memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

/* True when s[0..n) holds a NUL, i.e. the string was terminated within its buffer. */
static inline int fuzz_terminated(const char *s, size_t n)
{
    return memchr(s, '\0', n) != NULL;
}

#endif
