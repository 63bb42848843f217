/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <ctype.h>
#include <stdio.h>
#include <time.h>

#include <json-c/json.h>
#include <openssl/evp.h>

#include "kubeobj.h"
#include "macro.h"

static void json_putp(json_object **o) {
        if (*o)
                json_object_put(*o);
}
#define _cleanup_json_ _cleanup_(json_putp)

static json_object *parse(const char *body, size_t size) {
        json_tokener *tok;
        json_object *o;

        if (!body || size == 0 || size > INT32_MAX)
                return NULL;
        tok = json_tokener_new_ex(KUBE_JSON_DEPTH_MAX);
        if (!tok)
                return NULL;
        o = json_tokener_parse_ex(tok, body, (int) size);
        if (o && (json_tokener_get_error(tok) != json_tokener_success ||
                  (size_t) json_tokener_get_parse_end(tok) < size)) {
                /* Trailing bytes other than whitespace are malformed. */
                for (size_t i = json_tokener_get_parse_end(tok); i < size; i++)
                        if (!isspace((unsigned char) body[i])) {
                                json_object_put(o);
                                o = NULL;
                                break;
                        }
        }
        json_tokener_free(tok);
        return o;
}

static json_object *get(json_object *o, const char *key, json_type type) {
        json_object *v;

        if (!o || !json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &v))
                return NULL;
        return json_object_is_type(v, type) ? v : NULL;
}

static int dup_string(json_object *o, const char *key, char **ret) {
        json_object *v = get(o, key, json_type_string);

        *ret = NULL;
        if (!v)
                return 0;
        *ret = strndup(json_object_get_string(v), (size_t) json_object_get_string_len(v));
        return *ret ? 0 : -ENOMEM;
}

static int to_string(json_object *o, char **ret) {
        const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);

        if (!s)
                return -ENOMEM;
        *ret = strdup(s);
        return *ret ? 0 : -ENOMEM;
}

static int add(json_object *o, const char *key, json_object *v) {
        if (!v)
                return -ENOMEM;
        if (json_object_object_add(o, key, v) < 0) {
                json_object_put(v);
                return -ENOMEM;
        }
        return 0;
}

/* ------------------------------------------------------------------------------------------------------------ */

int kube_tokenreview_request(const char *token, const char *audience, char **ret_json) {
        _cleanup_json_ json_object *o = json_object_new_object();
        json_object *spec = json_object_new_object();
        int r;

        if (!o || !spec) {
                json_object_put(spec);
                return -ENOMEM;
        }
        r = add(o, "apiVersion", json_object_new_string("authentication.k8s.io/v1"));
        if (r >= 0)
                r = add(o, "kind", json_object_new_string("TokenReview"));
        if (r >= 0)
                r = add(o, "spec", spec);
        else
                json_object_put(spec);
        if (r >= 0)
                r = add(spec, "token", json_object_new_string(token));
        if (r >= 0 && audience) {
                json_object *a = json_object_new_array();
                r = add(spec, "audiences", a);
                if (r >= 0 && json_object_array_add(a, json_object_new_string(audience)) < 0)
                        r = -ENOMEM;
        }
        if (r < 0)
                return r;
        return to_string(o, ret_json);
}

int kube_tokenreview_parse(const char *body, size_t size, KubeTokenReview *ret) {
        _cleanup_json_ json_object *o = parse(body, size);
        json_object *status, *kind, *a;
        KubeTokenReview t = {};
        int r;

        kind = get(o, "kind", json_type_string);
        if (!kind || !streq(json_object_get_string(kind), "TokenReview"))
                return -EBADMSG;
        status = get(o, "status", json_type_object);
        if (status) {
                a = get(status, "authenticated", json_type_boolean);
                t.authenticated = a && json_object_get_boolean(a);
                r = dup_string(get(status, "user", json_type_object), "username", &t.username);
                if (r >= 0)
                        r = dup_string(status, "error", &t.error);
                if (r < 0) {
                        kube_tokenreview_done(&t);
                        return r;
                }
        }
        *ret = t;
        return 0;
}

void kube_tokenreview_done(KubeTokenReview *r) {
        free(r->username);
        free(r->error);
        *r = (KubeTokenReview){};
}

int kube_jwt_exp(const char *token, int64_t *ret) {
        const char *a = strchr(token, '.'), *b;
        _cleanup_free_ char *b64 = NULL;
        _cleanup_free_ unsigned char *raw = NULL;
        _cleanup_json_ json_object *o = NULL;
        json_object *exp;
        size_t n, k;
        int len;

        if (!a || !(b = strchr(a + 1, '.')))
                return -ENODATA;
        n = (size_t) (b - a - 1);
        if (n == 0 || n > 16384)
                return -ENODATA;
        /* base64url → base64 with padding */
        b64 = calloc(1, n + 4);
        raw = calloc(1, n + 4);
        if (!b64 || !raw)
                return -ENOMEM;
        for (k = 0; k < n; k++) {
                char c = a[1 + k];
                b64[k] = c == '-' ? '+' : c == '_' ? '/' : c;
        }
        while (k % 4)
                b64[k++] = '=';
        len = EVP_DecodeBlock(raw, (unsigned char *) b64, (int) k);
        if (len < 0)
                return -ENODATA;
        /* EVP_DecodeBlock counts padding as zero bytes: drop them. */
        for (size_t p = n; p % 4; p++)
                len--;
        if (len <= 0)
                return -ENODATA;
        o = parse((const char *) raw, (size_t) len);
        exp = get(o, "exp", json_type_int);
        if (!exp) {
                exp = get(o, "exp", json_type_double);
                if (!exp)
                        return -ENODATA;
        }
        *ret = json_object_get_int64(exp);
        return 0;
}

/* ------------------------------------------------------------------------------------------------------------ */
/* Time */

const char *kube_time_format(int64_t usec, char buf[static KUBE_TIME_MAX]) {
        time_t t = (time_t) (usec / (int64_t) USEC_PER_SEC);
        struct tm tm;

        if (usec < 0 || !gmtime_r(&t, &tm)) {
                buf[0] = 0;
                return buf;
        }
        (void) snprintf(buf, KUBE_TIME_MAX, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                        tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int) (usec % (int64_t) USEC_PER_SEC));
        return buf;
}

int kube_time_parse(const char *s, int64_t *ret_usec) {
        struct tm tm = {};
        const char *p;
        int64_t frac = 0, scale = (int64_t) USEC_PER_SEC, off = 0;
        time_t t;

        if (!s)
                return -EINVAL;
        p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
        if (!p)
                return -EINVAL;
        if (*p == '.') {
                p++;
                if (!isdigit((unsigned char) *p))
                        return -EINVAL;
                while (isdigit((unsigned char) *p)) {
                        if (scale > 1) {
                                scale /= 10;
                                frac += (*p - '0') * scale;
                        }
                        p++;
                }
        }
        if (*p == 'Z' || *p == 'z')
                p++;
        else if ((*p == '+' || *p == '-') && isdigit((unsigned char) p[1]) && isdigit((unsigned char) p[2]) &&
                 p[3] == ':' && isdigit((unsigned char) p[4]) && isdigit((unsigned char) p[5])) {
                off = ((p[1] - '0') * 10 + (p[2] - '0')) * 3600 + ((p[4] - '0') * 10 + (p[5] - '0')) * 60;
                if (*p == '-')
                        off = -off;
                p += 6;
        } else
                return -EINVAL;
        if (*p)
                return -EINVAL;
        t = timegm(&tm);
        if (t == (time_t) -1)
                return -EINVAL;
        *ret_usec = ((int64_t) t - off) * (int64_t) USEC_PER_SEC + frac;
        return 0;
}

/* ------------------------------------------------------------------------------------------------------------ */
/* Labels */

static bool label_char(char c) {
        return isalnum((unsigned char) c) || c == '-' || c == '_' || c == '.';
}

int kube_labels_validate(const char *s) {
        const char *p = s;

        if (!s || !*s)
                return 0;
        for (;;) {
                size_t klen = 0, vlen = 0;
                bool slash = false;

                while (*p && *p != '=' && *p != ',') {
                        if (*p == '/') {
                                if (slash || klen == 0)
                                        return -EINVAL;
                                slash = true;
                        } else if (!label_char(*p))
                                return -EINVAL;
                        p++;
                        klen++;
                }
                if (klen == 0 || klen > 316 || *p != '=' || p[-1] == '/')
                        return -EINVAL;
                p++;
                while (*p && *p != ',') {
                        if (!label_char(*p))
                                return -EINVAL;
                        p++;
                        vlen++;
                }
                if (vlen > 63)
                        return -EINVAL;
                if (!*p)
                        return 0;
                p++;
        }
}

/* ------------------------------------------------------------------------------------------------------------ */
/* Leases */

int kube_lease_build(const char *ns, const char *name, const char *holder, int64_t duration_sec, const char *labels,
                     int64_t acquire_usec, int64_t renew_usec, const char *resource_version, char **ret_json) {
        _cleanup_json_ json_object *o = json_object_new_object();
        json_object *meta = json_object_new_object(), *spec = json_object_new_object(), *lab = NULL;
        char tb[KUBE_TIME_MAX];
        int r;

        if (!o || !meta || !spec) {
                json_object_put(meta);
                json_object_put(spec);
                return -ENOMEM;
        }
        r = add(o, "metadata", meta);
        if (r < 0) {
                json_object_put(spec);
                return r;
        }
        r = add(o, "spec", spec);
        if (r >= 0)
                r = add(o, "apiVersion", json_object_new_string("coordination.k8s.io/v1"));
        if (r >= 0)
                r = add(o, "kind", json_object_new_string("Lease"));
        if (r >= 0)
                r = add(meta, "name", json_object_new_string(name));
        if (r >= 0)
                r = add(meta, "namespace", json_object_new_string(ns));
        if (r >= 0 && resource_version)
                r = add(meta, "resourceVersion", json_object_new_string(resource_version));
        if (r >= 0 && labels && *labels) {
                lab = json_object_new_object();
                r = add(meta, "labels", lab);
                for (const char *p = labels; r >= 0 && *p;) {
                        const char *comma = strchr(p, ','), *end = comma ?: p + strlen(p), *eq;
                        _cleanup_free_ char *k = NULL;

                        eq = memchr(p, '=', (size_t) (end - p));
                        if (!eq)
                                return -EINVAL;
                        k = strndup(p, (size_t) (eq - p));
                        if (!k)
                                return -ENOMEM;
                        r = add(lab, k, json_object_new_string_len(eq + 1, (int) (end - eq - 1)));
                        p = comma ? comma + 1 : end;
                }
        }
        if (r >= 0 && holder)
                r = add(spec, "holderIdentity", json_object_new_string(holder));
        if (r >= 0)
                r = add(spec, "leaseDurationSeconds", json_object_new_int64(duration_sec));
        if (r >= 0 && acquire_usec > 0)
                r = add(spec, "acquireTime", json_object_new_string(kube_time_format(acquire_usec, tb)));
        if (r >= 0 && renew_usec > 0)
                r = add(spec, "renewTime", json_object_new_string(kube_time_format(renew_usec, tb)));
        if (r < 0)
                return r;
        return to_string(o, ret_json);
}

static int lease_from_json(json_object *o, KubeLease *ret) {
        json_object *meta = get(o, "metadata", json_type_object), *spec = get(o, "spec", json_type_object), *v;
        KubeLease l = {};
        int r;

        if (!meta)
                return -EBADMSG;
        r = dup_string(meta, "name", &l.name);
        if (r >= 0)
                r = dup_string(meta, "resourceVersion", &l.resource_version);
        if (r >= 0)
                r = dup_string(spec, "holderIdentity", &l.holder);
        if (r < 0) {
                kube_lease_done(&l);
                return r;
        }
        if (!l.name) {
                kube_lease_done(&l);
                return -EBADMSG;
        }
        v = get(spec, "leaseDurationSeconds", json_type_int);
        if (v)
                l.duration_sec = json_object_get_int64(v);
        v = get(spec, "acquireTime", json_type_string);
        if (v && kube_time_parse(json_object_get_string(v), &l.acquire_usec) < 0)
                l.acquire_usec = 0;
        v = get(spec, "renewTime", json_type_string);
        if (v && kube_time_parse(json_object_get_string(v), &l.renew_usec) < 0)
                l.renew_usec = 0;
        *ret = l;
        return 0;
}

int kube_lease_parse(const char *body, size_t size, KubeLease *ret) {
        _cleanup_json_ json_object *o = parse(body, size);
        json_object *kind = get(o, "kind", json_type_string);

        if (!kind || !streq(json_object_get_string(kind), "Lease"))
                return -EBADMSG;
        return lease_from_json(o, ret);
}

int kube_lease_list_parse(const char *body, size_t size, KubeLease **ret, size_t *ret_n) {
        _cleanup_json_ json_object *o = parse(body, size);
        json_object *kind = get(o, "kind", json_type_string), *items;
        KubeLease *l;
        size_t n, k = 0;

        if (!kind || !streq(json_object_get_string(kind), "LeaseList"))
                return -EBADMSG;
        items = get(o, "items", json_type_array);
        n = items ? json_object_array_length(items) : 0;
        l = calloc(n ?: 1, sizeof(KubeLease));
        if (!l)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                int r = lease_from_json(json_object_array_get_idx(items, i), &l[k]);
                if (r == -ENOMEM) {
                        kube_lease_list_free(l, k);
                        return r;
                }
                if (r >= 0)
                        k++;
        }
        *ret = l;
        *ret_n = k;
        return 0;
}

void kube_lease_done(KubeLease *l) {
        free(l->name);
        free(l->resource_version);
        free(l->holder);
        *l = (KubeLease){};
}

void kube_lease_list_free(KubeLease *l, size_t n) {
        for (size_t i = 0; l && i < n; i++)
                kube_lease_done(&l[i]);
        free(l);
}

bool kube_lease_valid(const KubeLease *l, int64_t now_usec) {
        int64_t t = l->renew_usec ? l->renew_usec : l->acquire_usec;

        if (t == 0 || l->duration_sec <= 0)
                return false;
        return t + l->duration_sec * (int64_t) USEC_PER_SEC > now_usec;
}

char *kube_status_message(const char *body, size_t size) {
        _cleanup_json_ json_object *o = parse(body, size);
        json_object *m = get(o, "message", json_type_string);

        return m ? strndup(json_object_get_string(m), (size_t) json_object_get_string_len(m)) : NULL;
}
