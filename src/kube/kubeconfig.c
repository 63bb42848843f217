/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <assert.h>
#include <ctype.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <strings.h>
#include <sys/stat.h>

#include <openssl/evp.h>
#include <yaml.h>

#include "kubeconfig.h"

int kube_read_file(const char *path, size_t max, char **ret, size_t *ret_size) {
        _cleanup_free_ char *buf = NULL;
        size_t n = 0, cap = 4096;
        int fd;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return negative_errno();
        buf = malloc(cap + 1);
        if (!buf) {
                safe_close(fd);
                return -ENOMEM;
        }
        for (;;) {
                ssize_t k;

                if (n == cap) {
                        char *nb;

                        if (cap > max) {
                                safe_close(fd);
                                return -EFBIG;
                        }
                        cap *= 2;
                        nb = realloc(buf, cap + 1);
                        if (!nb) {
                                safe_close(fd);
                                return -ENOMEM;
                        }
                        buf = nb;
                }
                k = read(fd, buf + n, cap - n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        k = negative_errno();
                        safe_close(fd);
                        return (int) k;
                }
                if (k == 0)
                        break;
                n += (size_t) k;
                if (n > max) {
                        safe_close(fd);
                        return -EFBIG;
                }
        }
        safe_close(fd);
        buf[n] = 0;
        *ret = TAKE_PTR(buf);
        if (ret_size)
                *ret_size = n;
        return 0;
}

KubeConfig *kube_config_free(KubeConfig *c) {
        if (!c)
                return NULL;
        free(c->origin);
        free(c->context);
        free(c->cluster);
        free(c->user);
        free(c->namespace);
        free(c->server);
        free(c->ca_pem);
        free(c->cert_pem);
        if (c->key_pem) {
                OPENSSL_cleanse(c->key_pem, c->key_len);
                free(c->key_pem);
        }
        if (c->token) {
                OPENSSL_cleanse(c->token, strlen(c->token));
                free(c->token);
        }
        free(c->token_file);
        free(c);
        return NULL;
}

_printf_(3, 4) static int fail(char **ret_error, int r, const char *fmt, ...) {
        va_list ap;

        if (ret_error) {
                va_start(ap, fmt);
                if (vasprintf(ret_error, fmt, ap) < 0)
                        *ret_error = NULL;
                va_end(ap);
        }
        return r;
}

/* ------------------------------------------------------------------------------------------------------------ */
/* kubeconfig (YAML) */

typedef struct Parse {
        yaml_document_t doc;
        const char *path;
        char *dir; /* base of relative file names */
        char **error;
} Parse;

static int perr(Parse *p, int r, const char *fmt, ...) _printf_(3, 4);
static int perr(Parse *p, int r, const char *fmt, ...) {
        _cleanup_free_ char *m = NULL;
        va_list ap;

        va_start(ap, fmt);
        if (vasprintf(&m, fmt, ap) < 0)
                m = NULL;
        va_end(ap);
        if (!m)
                return -ENOMEM;
        return fail(p->error, r, "kubeconfig %s: %s", p->path, m);
}

static yaml_node_t *node(Parse *p, int id) {
        return yaml_document_get_node(&p->doc, id);
}

static bool scalar_is(yaml_node_t *n, const char *s) {
        return n && n->type == YAML_SCALAR_NODE && n->data.scalar.length == strlen(s) &&
               memcmp(n->data.scalar.value, s, n->data.scalar.length) == 0;
}

/* The value of key in a mapping node, or NULL. The last occurrence wins, as in Go's YAML decoders. */
static yaml_node_t *map_get(Parse *p, yaml_node_t *map, const char *key) {
        yaml_node_t *found = NULL;

        if (!map || map->type != YAML_MAPPING_NODE)
                return NULL;
        for (yaml_node_pair_t *i = map->data.mapping.pairs.start; i < map->data.mapping.pairs.top; i++)
                if (scalar_is(node(p, i->key), key))
                        found = node(p, i->value);
        return found;
}

static bool is_null(yaml_node_t *n) {
        return !n || (n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
                      (n->data.scalar.length == 0 || scalar_is(n, "null") || scalar_is(n, "~")));
}

/* A string field: *ret NULL when absent, null or empty. */
static int get_string(Parse *p, yaml_node_t *map, const char *key, char **ret) {
        yaml_node_t *n = map_get(p, map, key);

        *ret = NULL;
        if (is_null(n))
                return 0;
        if (n->type != YAML_SCALAR_NODE)
                return perr(p, -EINVAL, "line %zu: '%s' must be a string", n->start_mark.line + 1, key);
        if (memchr(n->data.scalar.value, 0, n->data.scalar.length))
                return perr(p, -EINVAL, "line %zu: '%s' contains a NUL byte", n->start_mark.line + 1, key);
        if (n->data.scalar.length == 0)
                return 0;
        *ret = strndup((const char *) n->data.scalar.value, n->data.scalar.length);
        return *ret ? 0 : -ENOMEM;
}

static int get_bool(Parse *p, yaml_node_t *map, const char *key, bool *ret) {
        static const char *const yes[] = { "true", "yes", "on", "y" }, *const no[] = { "false", "no", "off", "n" };
        yaml_node_t *n = map_get(p, map, key);

        *ret = false;
        if (is_null(n))
                return 0;
        if (n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
                for (size_t i = 0; i < ELEMENTSOF(yes); i++) {
                        if (n->data.scalar.length == strlen(yes[i]) &&
                            strncasecmp((const char *) n->data.scalar.value, yes[i], n->data.scalar.length) == 0) {
                                *ret = true;
                                return 0;
                        }
                        if (n->data.scalar.length == strlen(no[i]) &&
                            strncasecmp((const char *) n->data.scalar.value, no[i], n->data.scalar.length) == 0)
                                return 0;
                }
        }
        return perr(p, -EINVAL, "line %zu: '%s' must be true or false", n->start_mark.line + 1, key);
}

/* Find the entry named name in the list under top-level key list_key ("clusters", ...), and return its
 * item_key ("cluster", ...) mapping. -ENOENT when there is no such entry (no message: the caller words it). */
static int find_named(Parse *p, yaml_node_t *root, const char *list_key, const char *item_key, const char *name,
                      yaml_node_t **ret) {
        yaml_node_t *list = map_get(p, root, list_key), *found = NULL;

        if (is_null(list))
                return -ENOENT;
        if (list->type != YAML_SEQUENCE_NODE)
                return perr(p, -EINVAL, "line %zu: '%s' must be a list", list->start_mark.line + 1, list_key);
        for (yaml_node_item_t *i = list->data.sequence.items.start; i < list->data.sequence.items.top; i++) {
                yaml_node_t *e = node(p, *i), *n;

                if (!e || e->type != YAML_MAPPING_NODE)
                        return perr(p, -EINVAL, "line %zu: entries of '%s' must be mappings",
                                    e ? e->start_mark.line + 1 : 0, list_key);
                n = map_get(p, e, "name");
                if (n && n->type == YAML_SCALAR_NODE && n->data.scalar.length == strlen(name) &&
                    memcmp(n->data.scalar.value, name, n->data.scalar.length) == 0) {
                        found = map_get(p, e, item_key);
                        if (is_null(found)) {
                                *ret = NULL;
                                return 0;
                        }
                        if (found->type != YAML_MAPPING_NODE)
                                return perr(p, -EINVAL, "line %zu: '%s' must be a mapping",
                                            found->start_mark.line + 1, item_key);
                        *ret = found;
                        return 0;
                }
        }
        return -ENOENT;
}

static int decode_base64(const char *in, char **ret, size_t *ret_len) {
        _cleanup_free_ char *out = NULL;
        EVP_ENCODE_CTX *ctx;
        size_t inlen = strlen(in);
        int n1 = 0, n2 = 0, r;

        if (inlen > INT32_MAX / 2)
                return -EFBIG;
        out = malloc(inlen / 4 * 3 + 4);
        ctx = EVP_ENCODE_CTX_new();
        if (!out || !ctx) {
                EVP_ENCODE_CTX_free(ctx);
                return -ENOMEM;
        }
        EVP_DecodeInit(ctx);
        r = EVP_DecodeUpdate(ctx, (unsigned char *) out, &n1, (const unsigned char *) in, (int) inlen);
        if (r >= 0)
                r = EVP_DecodeFinal(ctx, (unsigned char *) out + n1, &n2);
        EVP_ENCODE_CTX_free(ctx);
        if (r < 0 || n1 + n2 == 0)
                return -EBADMSG;
        out[n1 + n2] = 0;
        *ret_len = (size_t) (n1 + n2);
        *ret = TAKE_PTR(out);
        return 0;
}

/* A credential given as FIELD-data (base64) or FIELD (file name, relative to the kubeconfig). */
static int get_blob(Parse *p, yaml_node_t *map, const char *what, const char *name, const char *field,
                    char **ret, size_t *ret_len) {
        _cleanup_free_ char *data = NULL, *file = NULL, *key = NULL, *full = NULL;
        int r;

        *ret = NULL;
        *ret_len = 0;
        if (asprintf(&key, "%s-data", field) < 0)
                return -ENOMEM;
        r = get_string(p, map, key, &data);
        if (r < 0)
                return r;
        if (data) {
                r = decode_base64(data, ret, ret_len);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        return perr(p, -EINVAL, "%s '%s': %s is not valid base64", what, name, key);
                return 1;
        }
        r = get_string(p, map, field, &file);
        if (r < 0 || !file)
                return r;
        if (file[0] != '/' && p->dir && asprintf(&full, "%s/%s", p->dir, file) < 0)
                return -ENOMEM;
        r = kube_read_file(full ?: file, KUBE_FILE_MAX, ret, ret_len);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return perr(p, r, "%s '%s': cannot read %s '%s': %s", what, name, field, full ?: file,
                            strerror(-r));
        return 1;
}

static bool server_url_ok(const char *s) {
        if (strncmp(s, "https://", 8) != 0 || !s[8] || s[8] == '/')
                return false;
        for (const char *c = s; *c; c++)
                if ((unsigned char) *c <= ' ' || *c == 0x7f)
                        return false;
        return true;
}

static int parse_cluster(Parse *p, yaml_node_t *root, bool allow_insecure, KubeConfig *c) {
        yaml_node_t *cl = NULL;
        int r;

        r = find_named(p, root, "clusters", "cluster", c->cluster, &cl);
        if (r == -ENOENT)
                return perr(p, -ENOENT, "cluster '%s' not found", c->cluster);
        if (r < 0)
                return r;
        r = get_string(p, cl, "server", &c->server);
        if (r < 0)
                return r;
        if (!c->server)
                return perr(p, -EINVAL, "cluster '%s' has no server", c->cluster);
        if (!server_url_ok(c->server))
                return perr(p, -EINVAL, "cluster '%s': server '%s' is not an https:// URL", c->cluster, c->server);
        while (strlen(c->server) > 8 && c->server[strlen(c->server) - 1] == '/')
                c->server[strlen(c->server) - 1] = 0;
        r = get_bool(p, cl, "insecure-skip-tls-verify", &c->insecure);
        if (r < 0)
                return r;
        if (c->insecure && !allow_insecure)
                return perr(p, -EPERM,
                            "cluster '%s': insecure-skip-tls-verify is set (refused; konn always verifies the API "
                            "server's certificate)",
                            c->cluster);
        r = get_blob(p, cl, "cluster", c->cluster, "certificate-authority", &c->ca_pem, &c->ca_len);
        return r < 0 ? r : 0;
}

static int parse_user(Parse *p, yaml_node_t *root, KubeConfig *c) {
        yaml_node_t *u = NULL;
        _cleanup_free_ char *username = NULL;
        int r;

        r = find_named(p, root, "users", "user", c->user, &u);
        if (r == -ENOENT)
                return perr(p, -ENOENT, "user '%s' not found", c->user);
        if (r < 0)
                return r;
        if (!is_null(map_get(p, u, "exec")))
                return perr(p, -EOPNOTSUPP,
                            "user '%s': exec credential plugins are not supported (use token, tokenFile or a "
                            "client certificate)",
                            c->user);
        if (!is_null(map_get(p, u, "auth-provider")))
                return perr(p, -EOPNOTSUPP,
                            "user '%s': auth-provider plugins are not supported (use token, tokenFile or a "
                            "client certificate)",
                            c->user);
        r = get_string(p, u, "username", &username);
        if (r < 0)
                return r;
        if (username || !is_null(map_get(p, u, "password")))
                return perr(p, -EOPNOTSUPP, "user '%s': username/password authentication is not supported",
                            c->user);
        r = get_string(p, u, "token", &c->token);
        if (r < 0)
                return r;
        r = get_string(p, u, "tokenFile", &c->token_file);
        if (r < 0)
                return r;
        if (c->token_file && c->token_file[0] != '/' && p->dir) {
                char *full;
                if (asprintf(&full, "%s/%s", p->dir, c->token_file) < 0)
                        return -ENOMEM;
                free(c->token_file);
                c->token_file = full;
        }
        r = get_blob(p, u, "user", c->user, "client-certificate", &c->cert_pem, &c->cert_len);
        if (r < 0)
                return r;
        r = get_blob(p, u, "user", c->user, "client-key", &c->key_pem, &c->key_len);
        if (r < 0)
                return r;
        if (!c->cert_pem != !c->key_pem)
                return perr(p, -EINVAL, "user '%s': client-certificate and client-key must be given together",
                            c->user);
        return 0;
}

static int parse_doc(Parse *p, const char *context, bool allow_insecure, KubeConfig *c) {
        yaml_node_t *root = yaml_document_get_root_node(&p->doc), *ctx = NULL;
        int r;

        if (!root)
                return perr(p, -ENODATA, "the document is empty");
        if (root->type != YAML_MAPPING_NODE)
                return perr(p, -EINVAL, "the top level is not a mapping");
        if (context)
                c->context = strdup(context);
        else {
                r = get_string(p, root, "current-context", &c->context);
                if (r < 0)
                        return r;
                if (!c->context)
                        return perr(p, -ENOENT, "no current-context is set");
        }
        if (!c->context)
                return -ENOMEM;
        r = find_named(p, root, "contexts", "context", c->context, &ctx);
        if (r == -ENOENT)
                return perr(p, -ENOENT, "context '%s' not found", c->context);
        if (r < 0)
                return r;
        r = get_string(p, ctx, "cluster", &c->cluster);
        if (r < 0)
                return r;
        if (!c->cluster)
                return perr(p, -EINVAL, "context '%s' names no cluster", c->context);
        r = get_string(p, ctx, "user", &c->user);
        if (r < 0)
                return r;
        r = get_string(p, ctx, "namespace", &c->namespace);
        if (r < 0)
                return r;
        r = parse_cluster(p, root, allow_insecure, c);
        if (r < 0)
                return r;
        if (c->user)
                return parse_user(p, root, c);
        return 0;
}

int kube_config_parse(const char *data, size_t size, const char *path, const char *context, bool allow_insecure,
                      KubeConfig **ret, char **ret_error) {
        _cleanup_(kube_config_freep) KubeConfig *c = NULL;
        Parse p = { .path = path, .error = ret_error };
        yaml_parser_t parser;
        const char *slash;
        int r;

        assert(data || size == 0);
        assert(path);
        assert(ret);

        if (size > KUBE_FILE_MAX)
                return fail(ret_error, -EFBIG, "kubeconfig %s: file is larger than %zu bytes", path, KUBE_FILE_MAX);
        c = calloc(1, sizeof(*c));
        if (!c || asprintf(&c->origin, "kubeconfig %s", path) < 0)
                return -ENOMEM;
        slash = strrchr(path, '/');
        if (slash) {
                p.dir = strndup(path, slash == path ? 1 : (size_t) (slash - path));
                if (!p.dir)
                        return -ENOMEM;
        }
        if (!yaml_parser_initialize(&parser)) {
                free(p.dir);
                return -ENOMEM;
        }
        yaml_parser_set_input_string(&parser, (const unsigned char *) data, size);
        if (!yaml_parser_load(&parser, &p.doc)) {
                if (parser.error == YAML_MEMORY_ERROR)
                        r = -ENOMEM;
                else
                        r = fail(ret_error, -EINVAL, "kubeconfig %s: line %zu column %zu: %s", path,
                                 parser.problem_mark.line + 1, parser.problem_mark.column + 1,
                                 parser.problem ?: "invalid YAML");
                yaml_parser_delete(&parser);
                free(p.dir);
                return r;
        }
        yaml_parser_delete(&parser);
        r = parse_doc(&p, context, allow_insecure, c);
        yaml_document_delete(&p.doc);
        free(p.dir);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(c);
        return 0;
}

int kube_config_load_file(const char *path, const char *context, bool allow_insecure, KubeConfig **ret,
                          char **ret_error) {
        _cleanup_free_ char *data = NULL;
        size_t size;
        int r;

        r = kube_read_file(path, KUBE_FILE_MAX, &data, &size);
        if (r == -EFBIG)
                return fail(ret_error, r, "kubeconfig %s: file is larger than %zu bytes", path, KUBE_FILE_MAX);
        if (r < 0)
                return fail(ret_error, r, "kubeconfig %s: cannot read: %s", path, strerror(-r));
        return kube_config_parse(data, size, path, context, allow_insecure, ret, ret_error);
}

/* ------------------------------------------------------------------------------------------------------------ */
/* In-cluster */

int kube_config_in_cluster(const char *sa_dir, KubeConfig **ret, char **ret_error) {
        _cleanup_(kube_config_freep) KubeConfig *c = NULL;
        _cleanup_free_ char *ca = NULL, *ns = NULL;
        const char *host = getenv("KUBERNETES_SERVICE_HOST"), *port = getenv("KUBERNETES_SERVICE_PORT");
        int r;

        if (!sa_dir)
                sa_dir = KUBE_SERVICEACCOUNT_DIR;
        if (!host || !*host || !port || !*port)
                return fail(ret_error, -ENXIO,
                            "in-cluster configuration: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must "
                            "be set (or use --kubeconfig)");
        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->origin = strdup("in-cluster configuration");
        if (!c->origin || asprintf(&c->token_file, "%s/token", sa_dir) < 0 || asprintf(&ca, "%s/ca.crt", sa_dir) < 0 ||
            asprintf(&ns, "%s/namespace", sa_dir) < 0)
                return -ENOMEM;
        /* Like client-go's rest.InClusterConfig(): the token must be readable at start. */
        {
                _cleanup_free_ char *tok = NULL;
                r = kube_read_file(c->token_file, KUBE_FILE_MAX, &tok, NULL);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        return fail(ret_error, r, "in-cluster configuration: cannot read token '%s': %s",
                                    c->token_file, strerror(-r));
        }
        r = kube_read_file(ca, KUBE_FILE_MAX, &c->ca_pem, &c->ca_len);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return fail(ret_error, r, "in-cluster configuration: cannot read CA '%s': %s", ca, strerror(-r));
        if (kube_read_file(ns, 4096, &c->namespace, NULL) >= 0) {
                c->namespace[strcspn(c->namespace, " \t\r\n")] = 0;
                if (!*c->namespace)
                        c->namespace = mfree(c->namespace);
        }
        if (strchr(host, ':'))
                r = asprintf(&c->server, "https://[%s]:%s", host, port);
        else
                r = asprintf(&c->server, "https://%s:%s", host, port);
        if (r < 0)
                return -ENOMEM;
        if (!server_url_ok(c->server))
                return fail(ret_error, -EINVAL, "in-cluster configuration: '%s' is not a valid server address",
                            c->server);
        *ret = TAKE_PTR(c);
        return 0;
}

int kube_config_load(const char *path, bool allow_insecure, KubeConfig **ret, char **ret_error) {
        if (path && *path)
                return kube_config_load_file(path, NULL, allow_insecure, ret, ret_error);
        return kube_config_in_cluster(NULL, ret, ret_error);
}

int kube_config_token(const KubeConfig *c, char **ret, char **ret_error) {
        _cleanup_free_ char *t = NULL;
        size_t n, start = 0;
        int r;

        *ret = NULL;
        if (!c->token_file) {
                if (c->token && !(*ret = strdup(c->token)))
                        return -ENOMEM;
                return 0;
        }
        r = kube_read_file(c->token_file, KUBE_FILE_MAX, &t, &n);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return fail(ret_error, r, "%s: cannot read token file '%s': %s", c->origin, c->token_file,
                            strerror(-r));
        while (n > 0 && isspace((unsigned char) t[n - 1]))
                t[--n] = 0;
        while (start < n && isspace((unsigned char) t[start]))
                start++;
        if (start == n)
                return fail(ret_error, -ENODATA, "%s: token file '%s' is empty", c->origin, c->token_file);
        if (start > 0)
                memmove(t, t + start, n - start + 1);
        *ret = TAKE_PTR(t);
        return 0;
}
