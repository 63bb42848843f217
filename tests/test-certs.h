/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test-certs — the test PKI for the Check suites that need TLS: tests/gen-certs.sh (found as
 * $TESTS_SRCDIR/gen-certs.sh, else ${top_srcdir:-${srcdir:-.}}/tests/gen-certs.sh) run once into a mkdtemp dir,
 * and that dir removed again. One PKI per process; CERT(name) is a path into it (valid for the full expression).
 */
#pragma once

#include <limits.h>

void certs_setup(void);    /* generates the PKI; a failed generation fails the test */
void certs_teardown(void); /* removes it; idempotent */
const char *cert_path_into(char *buf, const char *name);
#define CERT(name) cert_path_into((char[PATH_MAX]) {}, name)
