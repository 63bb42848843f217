/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "macro.h"

/*
 * Standalone replay driver for the fuzz targets (systemd's fuzz-main.c idea): built with gcc and
 * linked with one tests/fuzz/fuzz-<name>.c, it calls LLVMFuzzerTestOneInput() once per file named on
 * the command line, or once per regular file inside a named directory (sorted, not recursive). A
 * crash or abort in the target fails the run; otherwise it exits 0 unless an input cannot be read.
 */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int read_full(int fd, uint8_t **ret, size_t *ret_size) {
        _cleanup_free_ uint8_t *buf = NULL;
        struct stat st;
        size_t n = 0;

        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EBADFD;
        if ((uint64_t) st.st_size > SIZE_MAX - 1)
                return -EFBIG;

        /* Exactly sized, so that sanitizer builds catch overreads by the target. */
        buf = malloc((size_t) st.st_size ?: 1);
        if (!buf)
                return -ENOMEM;
        while (n < (size_t) st.st_size) {
                ssize_t k = read(fd, buf + n, (size_t) st.st_size - n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        return -EIO; /* truncated while reading */
                n += (size_t) k;
        }

        *ret = TAKE_PTR(buf);
        *ret_size = n;
        return 0;
}

static int run_one(int dirfd, const char *path, unsigned *count) {
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ uint8_t *buf = NULL;
        size_t size = 0;
        int r;

        fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        r = read_full(fd, &buf, &size);
        if (r < 0)
                return r;

        (void) LLVMFuzzerTestOneInput(buf, size);
        (*count)++;
        return 0;
}

static int cmp_names(const struct dirent **a, const struct dirent **b) {
        return strcmp((*a)->d_name, (*b)->d_name);
}

static int run_dir(const char *path, unsigned *count) {
        _cleanup_close_ int dfd = -EBADF;
        struct dirent **names = NULL;
        int n, r = 0;

        dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
                return -errno;
        n = scandir(path, &names, NULL, cmp_names);
        if (n < 0)
                return -errno;

        for (int i = 0; i < n; i++) {
                struct stat st;

                if (r >= 0 && fstatat(dfd, names[i]->d_name, &st, 0) >= 0 && S_ISREG(st.st_mode)) {
                        int k = run_one(dfd, names[i]->d_name, count);
                        if (k < 0) {
                                fprintf(stderr, "Failed to read %s/%s: %s\n",
                                        path, names[i]->d_name, strerror(-k));
                                r = k;
                        }
                }
                free(names[i]);
        }
        free(names);
        return r;
}

int main(int argc, char *argv[]) {
        unsigned count = 0;

        for (int i = 1; i < argc; i++) {
                struct stat st;
                int r;

                if (stat(argv[i], &st) < 0) {
                        fprintf(stderr, "Failed to stat %s: %m\n", argv[i]);
                        return EXIT_FAILURE;
                }
                if (S_ISDIR(st.st_mode))
                        r = run_dir(argv[i], &count);
                else {
                        r = run_one(AT_FDCWD, argv[i], &count);
                        if (r < 0)
                                fprintf(stderr, "Failed to read %s: %s\n", argv[i], strerror(-r));
                }
                if (r < 0)
                        return EXIT_FAILURE;
        }

        printf("%u inputs replayed\n", count);
        return EXIT_SUCCESS;
}
