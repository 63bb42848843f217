/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kubeconfig — where the Kubernetes API server is and how to authenticate to it: a kubeconfig file (clusters,
 * users, contexts, current-context; parsed with libyaml's document loader) or, when no kubeconfig is given, the
 * in-cluster configuration (KUBERNETES_SERVICE_HOST/_PORT and the ServiceAccount token and CA under
 * /var/run/secrets/kubernetes.io/serviceaccount/).
 *
 * A KubeConfig is a flat value owned by whoever loaded it (kube_config_free()). Every file it names
 * (certificate-authority, client-certificate, client-key) is read at load time, so loading again (reload) picks up
 * rotated files; the token file (tokenFile, or the in-cluster token) is re-read by kube_config_token() on every
 * request, because projected ServiceAccount tokens rotate while the daemon runs.
 * No event loop, no global state: callable from anywhere, also from the fuzzer.
 *
 * Every failure returns a negative errno and sets *ret_error to a malloc'd message (NULL only on -ENOMEM). The
 * messages start with "kubeconfig PATH: " or "in-cluster configuration: ":
 *   "cannot read: <strerror>", "file is larger than 1048576 bytes",
 *   "line L column C: <libyaml problem>", "the document is empty", "the top level is not a mapping",
 *   "line L: 'KEY' must be a string" (also "a list", "a mapping", "true or false"),
 *   "no current-context is set", "context 'X' not found", "context 'X' names no cluster",
 *   "cluster 'X' not found", "user 'X' not found", "cluster 'X' has no server",
 *   "cluster 'X': server 'S' is not an https:// URL",
 *   "cluster 'X': insecure-skip-tls-verify is set (refused; konn always verifies the API server's certificate)",
 *   "cluster 'X': certificate-authority-data is not valid base64" (same for client-certificate-data and
 *   client-key-data), "cluster 'X': cannot read certificate-authority 'F': <strerror>" (same for
 *   client-certificate and client-key),
 *   "user 'X': exec credential plugins are not supported (use token, tokenFile or a client certificate)",
 *   "user 'X': auth-provider plugins are not supported (use token, tokenFile or a client certificate)",
 *   "user 'X': username/password authentication is not supported",
 *   "user 'X': client-certificate and client-key must be given together";
 *   in-cluster: "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be set (or use --kubeconfig)",
 *   "cannot read token 'F': <strerror>", "cannot read CA 'F': <strerror>".
 * Relative file names in a kubeconfig are relative to the kubeconfig's directory (as in client-go).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "macro.h"

#define KUBE_SERVICEACCOUNT_DIR "/var/run/secrets/kubernetes.io/serviceaccount"
#define KUBE_FILE_MAX ((size_t) 1024 * 1024)  /* kubeconfig, PEM and token files */

typedef struct KubeConfig {
        char *origin;             /* "kubeconfig PATH" or "in-cluster configuration" (for messages) */
        char *context, *cluster, *user; /* names from the kubeconfig; NULL in-cluster */
        char *namespace;          /* context namespace, or the in-cluster namespace file; may be NULL */
        char *server;             /* "https://host:port[/prefix]", no trailing '/' */
        char *ca_pem;             /* CA bundle (PEM); NULL = the system's trust store */
        size_t ca_len;
        char *cert_pem, *key_pem; /* client certificate and key (PEM), both or neither */
        size_t cert_len, key_len;
        char *token;              /* static bearer token, or NULL */
        char *token_file;         /* read per request by kube_config_token(); wins over token */
        bool insecure;            /* insecure-skip-tls-verify (only with allow_insecure) */
} KubeConfig;

/* Parse kubeconfig text. path: the file name used in messages and as the base of relative file names.
 * context: the context to use, NULL = current-context. allow_insecure: accept insecure-skip-tls-verify. */
int kube_config_parse(const char *data, size_t size, const char *path, const char *context, bool allow_insecure,
                      KubeConfig **ret, char **ret_error);
/* Read and parse a kubeconfig file. */
int kube_config_load_file(const char *path, const char *context, bool allow_insecure, KubeConfig **ret,
                          char **ret_error);
/* In-cluster configuration: $KUBERNETES_SERVICE_HOST/$KUBERNETES_SERVICE_PORT, sa_dir/token (the token file,
 * re-read per request) and sa_dir/ca.crt. sa_dir NULL = KUBE_SERVICEACCOUNT_DIR. */
int kube_config_in_cluster(const char *sa_dir, KubeConfig **ret, char **ret_error);
/* --kubeconfig semantics: path non-empty → kube_config_load_file(path), else kube_config_in_cluster(NULL). */
int kube_config_load(const char *path, bool allow_insecure, KubeConfig **ret, char **ret_error);

KubeConfig *kube_config_free(KubeConfig *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(KubeConfig *, kube_config_free)

/* The bearer token to send now: the token file's content (read fresh, surrounding whitespace trimmed), else the
 * static token, else *ret = NULL (no token authentication). Errors: -errno of the read, -EFBIG, -ENODATA for an
 * empty token file; *ret_error says which file. */
int kube_config_token(const KubeConfig *c, char **ret, char **ret_error);

/* Read a whole regular file of at most max bytes into a NUL-terminated malloc'd buffer. -EFBIG when larger. */
int kube_read_file(const char *path, size_t max, char **ret, size_t *ret_size);
