/* SPDX-License-Identifier: Apache-2.0 */
/*
 * addrlist — the two list-valued address settings of the node → control-plane and direct routes:
 *   named addresses "NAME=ADDRESS[,NAME=ADDRESS...]" (agent --reverse-listen, server --reverse-destinations) and
 *   CIDR lists "CIDR[,CIDR...]" (server --direct-cidrs, IPv4 and IPv6), with the membership test.
 * Parsing only: no names are resolved, nothing is bound. The arrays returned are malloc'd and owned by the caller
 * (named_addr_list_free()). Pure functions, any thread.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sock.h"

#define NAMED_ADDR_MAX 16       /* entries per list */
#define NAMED_ADDR_NAME_MAX 64  /* bytes of a NAME: [A-Za-z0-9_.-] */
#define CIDR_LIST_MAX 64

typedef struct NamedAddr {
        char name[NAMED_ADDR_NAME_MAX + 1];
        char *address;          /* as written: "host:port", "[v6]:port", or a socket path ("/...", "@abstract") */
        bool is_path;           /* a Unix socket path (allowed only where the caller says so) */
} NamedAddr;

/* Parse s (NULL or "" = empty list). allow_paths: ADDRESS may be a Unix socket path (it starts with '/' or '@').
 * Otherwise ADDRESS must be host:port with a port 1..65535 (host may be a name). Names must be unique.
 * Returns the number of entries (*ret NULL for 0), -ENOMEM, or -EINVAL with *ret_error saying why
 * (malloc'd; the caller frees it). */
int named_addr_list_parse(const char *s, bool allow_paths, NamedAddr **ret, char **ret_error);
void named_addr_list_free(NamedAddr *l, size_t n);
const NamedAddr *named_addr_list_find(const NamedAddr *l, size_t n, const char *name);

typedef struct Cidr {
        int family;             /* AF_INET or AF_INET6 */
        uint8_t addr[16];       /* network address, host bits cleared */
        unsigned prefix;        /* 0..32 or 0..128 */
} Cidr;

/* "10.0.0.0/8,fd00::/8,192.0.2.1" (a bare address is a /32 or /128). Host bits set below the prefix are an
 * error (as Go's net.ParseCIDR would silently mask them, which hides typos). Returns the count, -ENOMEM or
 * -EINVAL with *ret_error. */
int cidr_list_parse(const char *s, Cidr **ret, char **ret_error);
/* Whether the numeric address a (AF_INET or AF_INET6; IPv4-mapped IPv6 counts as IPv4) lies in any entry. */
bool cidr_list_contains(const Cidr *l, size_t n, const SockAddr *a);
