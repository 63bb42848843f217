/* SPDX-License-Identifier: Apache-2.0 */
/*
 * jsonw — writing JSON text for the admin interface: string escaping into a FILE (open_memstream bodies) or into a
 * bounded buffer (trace events, written without allocating). Pure functions, no state.
 */
#pragma once

#include <stddef.h>
#include <stdio.h>

/* s as a JSON string literal with its quotes; NULL is written as "". */
void jsonw_string(FILE *f, const char *s);
/* Same into buf[0..size): returns the length written (without the NUL, which is always written when size > 0).
 * A string that does not fit is cut at a character boundary and still closed with its quote. */
size_t jsonw_escape(char *buf, size_t size, const char *s);
/* UTC wall-clock time usec (CLOCK_REALTIME) as RFC 3339 with milliseconds, "2026-12-07T16:41:02.123Z". */
void jsonw_time(char buf[static 32], unsigned long long usec);
