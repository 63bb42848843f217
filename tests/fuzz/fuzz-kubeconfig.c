/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <stdio.h>

#include "kubeconfig.h"
#include "kubeobj.h"
#include "macro.h"
#include "fuzz-check.h"

/* The input is a kubeconfig: kube_config_parse() with the current context and with a named one, insecure
 * allowed and not. Every failure must come with a message; a success must have a server URL; nothing may crash
 * or leak. The same bytes also go through the JSON parsers of kubeobj (API server responses are input too). */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void parse(const uint8_t *data, size_t size, const char *context, bool insecure) {
        _cleanup_(kube_config_freep) KubeConfig *c = NULL;
        _cleanup_free_ char *err = NULL;
        int r;

        r = kube_config_parse((const char *) data, size, "/nonexistent/kubeconfig", context, insecure, &c, &err);
        if (r < 0) {
                CHECK(r == -ENOMEM || err);
                CHECK(!c);
        } else {
                CHECK(c && c->server && strncmp(c->server, "https://", 8) == 0);
                CHECK(!c->cert_pem == !c->key_pem);
                CHECK(insecure || !c->insecure);
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        KubeTokenReview t;
        KubeLease *l = NULL;
        size_t n;

        parse(data, size, NULL, false);
        parse(data, size, "ctx", true);

        if (kube_tokenreview_parse((const char *) data, size, &t) >= 0)
                kube_tokenreview_done(&t);
        if (kube_lease_list_parse((const char *) data, size, &l, &n) >= 0) {
                for (size_t i = 0; i < n; i++)
                        (void) kube_lease_valid(&l[i], 0);
                kube_lease_list_free(l, n);
        }
        free(kube_status_message((const char *) data, size));
        return 0;
}
