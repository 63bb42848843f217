/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <check.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>

#include "test-certs.h"

static char cert_dir[PATH_MAX];

const char *cert_path_into(char *buf, const char *name) {
        int k = snprintf(buf, PATH_MAX, "%s/%s", cert_dir, name);

        ck_assert(cert_dir[0]);
        ck_assert(k > 0 && k < PATH_MAX);
        return buf;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        (void) remove(path);
        return 0;
}

void certs_teardown(void) {
        if (cert_dir[0])
                (void) nftw(cert_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        cert_dir[0] = 0;
}

void certs_setup(void) {
        const char *tests = getenv("TESTS_SRCDIR");
        const char *top = getenv("top_srcdir") ?: getenv("srcdir") ?: ".";
        const char *tmp = getenv("TMPDIR") ?: "/tmp";
        char cmd[3 * PATH_MAX];
        int k;

        k = snprintf(cert_dir, sizeof(cert_dir), "%s/konn-test-certs.XXXXXX", tmp);
        ck_assert(k > 0 && (size_t) k < sizeof(cert_dir));
        ck_assert_ptr_nonnull(mkdtemp(cert_dir));

        k = snprintf(cmd, sizeof(cmd), "sh '%s%s/gen-certs.sh' '%s' >/dev/null", tests ?: top, tests ? "" : "/tests",
                     cert_dir);
        ck_assert(k > 0 && (size_t) k < sizeof(cmd));
        k = system(cmd);
        if (k != 0)
                certs_teardown();
        ck_assert_int_eq(k, 0);
}
