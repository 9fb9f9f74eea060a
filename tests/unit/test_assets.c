/*
 * Unit tests for assets: the trading API's asset list, accepted whole or
 * refused with a message that names the cause.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "assets.h"

static int parse(const char *body, assets_list_t *l, char *err, size_t errlen)
{
    return assets_parse(body, strlen(body), l, err, errlen);
}

static void test_list(void **state)
{
    assets_list_t l;
    char err[200];
    assert_int_equal(
        parse(" [{\"id\":\"x\",\"class\":\"us_equity\",\"exchange\":\"NYSE\",\"symbol\":\"BRK.B\","
              "\"status\":\"active\",\"tradable\":true},"
              "{\"symbol\":\"FB\",\"status\":\"inactive\",\"class\":\"us_equity\"},"
              "{\"symbol\":\"BTC/USD\",\"class\":\"crypto\",\"status\":\"active\"}]\n",
              &l, err, sizeof err),
        0);
    assert_int_equal(l.n, 3);
    assert_string_equal(l.v[0].symbol, "BRK.B");
    assert_string_equal(l.v[0].exchange, "NYSE");
    assert_true(l.v[0].active && l.v[0].us_equity);
    assert_string_equal(l.v[1].exchange, "");
    assert_false(l.v[1].active);
    assert_true(l.v[2].active);
    assert_false(l.v[2].us_equity);
    assets_clear(&l);
    assets_clear(&l); /* twice is fine */
}

static void test_empty_is_a_list(void **state)
{
    assets_list_t l;
    char err[200];
    assert_int_equal(parse("[]", &l, err, sizeof err), 0);
    assert_int_equal(l.n, 0);
    assets_clear(&l);
}

/* Each refusal names its cause; nothing is returned. */
static void test_refused(void **state)
{
    static const struct {
        const char *body, *msg;
    } cases[] = {
        {"<html>401 Authorization Required</html>", "not JSON (it starts \"<html>401"},
        {"{\"code\":40010001,\"message\":\"invalid status\"}",
         "not a JSON array of assets (message: \"invalid status\")"},
        {"[{\"symbol\":\"AAPL\"}] []", "not one JSON value"},
        {"[{\"symbol\":\"AAPL\"},{\"symbol\":7}]", "asset 1: no string \"symbol\""},
        {"[{\"symbol\":\"AAPL\"},\"MSFT\"]", "asset 1: not an object"},
        {"", "not JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assets_list_t l;
        char err[200];
        assert_int_equal(parse(cases[i].body, &l, err, sizeof err), -1);
        assert_null(l.v);
        assert_int_equal(l.n, 0);
        assert_non_null(strstr(err, cases[i].msg));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_list),
        cmocka_unit_test(test_empty_is_a_list),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
