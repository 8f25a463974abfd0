/* Fault injection for the reliability tests, preloaded (LD_PRELOAD): the
 * files under TS_FAULT_DIR (whose names contain TS_FAULT_NAME, if set) live
 * on a pretend file system of TS_FAULT_AFTER_BYTES bytes. A write that would
 * grow them past that fails the way a full file system or an exceeded quota
 * fails it: the write that crosses the limit is short, later ones fail with
 * errno TS_FAULT_ERRNO ("ENOSPC", the default, or "EIO"). The space in use
 * is the blocks the files occupy (st_blocks), so it is shared by all
 * processes (every rank sees the same full disk), overwriting allocated
 * bytes costs nothing and truncating or deleting a file frees its space.
 * Covers write, pwrite, writev, pwritev (and their 64-bit and v2 forms),
 * which is what HDF5's sec2 driver and Open MPI's ROMIO and OMPIO (fbtl
 * posix) call, and fallocate / posix_fallocate
 * (TS_FAULT_FALLOCATE=unsupported: fallocate fails with EOPNOTSUPP, as on
 * file systems without it). TS_FAULT_DELAY_MS makes every write to a watched
 * file take that much longer, as on a slow shared file system: it gives a
 * test a run that lasts long enough to be interrupted, whatever the CPU's
 * speed. Without TS_FAULT_AFTER_BYTES the space is unlimited. Without
 * TS_FAULT_DIR it changes nothing. */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

static int name_matches(const char *base) {
    const char *name = getenv("TS_FAULT_NAME");
    return !name || !*name || strstr(base, name) != NULL;
}

/* Bytes the watched files occupy now. */
static long long used_bytes(void) {
    const char *dir = getenv("TS_FAULT_DIR");
    DIR *d = opendir(dir);
    if (!d) return 0;
    long long used = 0;
    char path[PATH_MAX];
    struct stat info;
    for (struct dirent *e; (e = readdir(d));) {
        if (!name_matches(e->d_name)) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (stat(path, &info) == 0 && S_ISREG(info.st_mode))
            used += (long long)info.st_blocks * 512;
    }
    closedir(d);
    return used;
}

/* Whether fd is a file under TS_FAULT_DIR. */
static int watched(int fd) {
    const char *dir = getenv("TS_FAULT_DIR");
    if (!dir || !*dir) return 0;
    char link[64], target[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n <= 0) return 0;
    target[n] = '\0';
    size_t len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/') len--;
    if (strncmp(target, dir, len) || (target[len] != '/' && target[len] != '\0')) return 0;
    const char *base = strrchr(target, '/');
    return name_matches(base ? base + 1 : target);
}

static long long limit(void) {
    const char *s = getenv("TS_FAULT_AFTER_BYTES");
    return s && *s ? atoll(s) : LLONG_MAX;
}

static void slow_down(void) {
    const char *s = getenv("TS_FAULT_DELAY_MS");
    long ms = s ? atol(s) : 0;
    if (ms <= 0) return;
    struct timespec pause = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&pause, &pause) != 0 && errno == EINTR) {
    }
}

static int fault_errno(void) {
    const char *s = getenv("TS_FAULT_ERRNO");
    return s && !strcmp(s, "EIO") ? EIO : ENOSPC;
}

/* How many of count bytes at offset (-1: the file position) may be written:
 * count, fewer (a short write), or -1 with errno set. Only bytes past the
 * file's allocated blocks cost space. */
static ssize_t allowed(int fd, size_t count, off_t offset) {
    if (count == 0 || !watched(fd)) return (ssize_t)count;
    slow_down();
    struct stat info;
    if (fstat(fd, &info) != 0) return (ssize_t)count;
    if (offset < 0) offset = lseek(fd, 0, SEEK_CUR);
    if (offset < 0) offset = info.st_size;
    long long allocated = (long long)info.st_blocks * 512;
    long long end = (long long)offset + (long long)count;
    long long grows = end > allocated ? end - (offset > allocated ? offset : allocated) : 0;
    if (grows == 0) return (ssize_t)count;
    long long left = limit() - used_bytes();
    if (left <= 0) {
        errno = fault_errno();
        return -1;
    }
    return grows > left ? (ssize_t)(count - (size_t)(grows - left)) : (ssize_t)count;
}

static size_t iov_bytes(const struct iovec *iov, int n) {
    size_t total = 0;
    for (int i = 0; i < n; i++) total += iov[i].iov_len;
    return total;
}

/* The libc function this one wraps, looked up once. */
#define REAL(name, ret, ...)                                                                       \
    static ret (*real_##name)(__VA_ARGS__);                                                        \
    if (!real_##name) real_##name = (ret(*)(__VA_ARGS__))dlsym(RTLD_NEXT, #name)

ssize_t write(int fd, const void *buf, size_t count) {
    REAL(write, ssize_t, int, const void *, size_t);
    ssize_t ok = allowed(fd, count, -1);
    if (ok < 0) return -1;
    return real_write(fd, buf, (size_t)ok);
}

#define PWRITE(name, off_type)                                                                     \
    ssize_t name(int fd, const void *buf, size_t count, off_type offset) {                         \
        REAL(name, ssize_t, int, const void *, size_t, off_type);                                  \
        ssize_t ok = allowed(fd, count, (off_t)offset);                                            \
        if (ok < 0) return -1;                                                                     \
        return real_##name(fd, buf, (size_t)ok, offset);                                           \
    }
PWRITE(pwrite, off_t)
PWRITE(pwrite64, off64_t)

/* A vectored write that would cross the limit fails whole: simpler than a
 * short vector, and a file system may do the same. */
static int vector_fails(int fd, const struct iovec *iov, int n, off_t offset) {
    size_t total = iov_bytes(iov, n);
    ssize_t ok = allowed(fd, total, offset);
    if (ok >= 0 && (size_t)ok < total) errno = fault_errno();
    return ok < 0 || (size_t)ok < total;
}

ssize_t writev(int fd, const struct iovec *iov, int n) {
    REAL(writev, ssize_t, int, const struct iovec *, int);
    if (vector_fails(fd, iov, n, -1)) return -1;
    return real_writev(fd, iov, n);
}

#define PWRITEV(name, off_type)                                                                    \
    ssize_t name(int fd, const struct iovec *iov, int n, off_type offset) {                        \
        REAL(name, ssize_t, int, const struct iovec *, int, off_type);                             \
        if (vector_fails(fd, iov, n, (off_t)offset)) return -1;                                    \
        return real_##name(fd, iov, n, offset);                                                    \
    }
PWRITEV(pwritev, off_t)
PWRITEV(pwritev64, off64_t)

ssize_t pwritev2(int fd, const struct iovec *iov, int n, off_t offset, int flags) {
    REAL(pwritev2, ssize_t, int, const struct iovec *, int, off_t, int);
    if (vector_fails(fd, iov, n, offset)) return -1;
    return real_pwritev2(fd, iov, n, offset, flags);
}

/* Reserving space counts as writing it. */
static int reserve_fails(int fd, off_t offset, off_t len) {
    if (len <= 0 || !watched(fd)) return 0;
    struct stat info;
    if (fstat(fd, &info) != 0) return 0;
    long long allocated = (long long)info.st_blocks * 512, end = (long long)offset + len;
    long long grows = end > allocated ? end - (offset > allocated ? offset : allocated) : 0;
    return grows > 0 && used_bytes() + grows > limit() ? fault_errno() : 0;
}

int fallocate(int fd, int mode, off_t offset, off_t len) {
    REAL(fallocate, int, int, int, off_t, off_t);
    const char *support = getenv("TS_FAULT_FALLOCATE");
    if (support && !strcmp(support, "unsupported") && watched(fd)) {
        errno = EOPNOTSUPP; /* as on file systems that cannot reserve */
        return -1;
    }
    int e = reserve_fails(fd, offset, len);
    if (e) {
        errno = e;
        return -1;
    }
    return real_fallocate(fd, mode, offset, len);
}

int posix_fallocate(int fd, off_t offset, off_t len) {
    REAL(posix_fallocate, int, int, off_t, off_t);
    int e = reserve_fails(fd, offset, len);
    return e ? e : real_posix_fallocate(fd, offset, len);
}
