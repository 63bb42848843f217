/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz-check — the one assertion the fuzz targets use: on failure, print where and what, then abort() so that
 * libFuzzer (or the replay driver) records the input as a crash. Active in every build, unlike assert().
 */
#pragma once

#include <stdio.h>
#include <stdlib.h>

#define CHECK(x)                                                                                        \
        do {                                                                                            \
                if (!(x)) {                                                                             \
                        fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #x);           \
                        abort();                                                                        \
                }                                                                                       \
        } while (0)
