/* Fault injection for the watchdog and signal tests, preloaded
 * (LD_PRELOAD): the first write of this process to a file whose name
 * contains TS_STALL_NAME sleeps TS_STALL_SECONDS (default: a day, i.e. a
 * write that hangs, as on a stuck file system) before it goes ahead. With
 * TS_STALL_RANK only the MPI rank of that number (OMPI_COMM_WORLD_RANK or
 * PMI_RANK) stalls. When it stalls it says so on stderr, which a test can
 * wait for. Covers write, pwrite, writev, pwritev (and their 64-bit forms):
 * what HDF5's sec2 driver and Open MPI's MPI-IO call. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static int stalled_once;

static int this_rank(void) {
    const char *r = getenv("OMPI_COMM_WORLD_RANK");
    if (!r) r = getenv("PMI_RANK");
    return r ? atoi(r) : -1;
}

static void maybe_stall(int fd) {
    const char *name = getenv("TS_STALL_NAME");
    if (stalled_once || !name || !*name) return;
    const char *rank = getenv("TS_STALL_RANK");
    if (rank && *rank && atoi(rank) != this_rank()) return;
    char link[64], target[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n <= 0) return;
    target[n] = '\0';
    const char *base = strrchr(target, '/');
    if (!strstr(base ? base + 1 : target, name)) return;
    stalled_once = 1;
    const char *s = getenv("TS_STALL_SECONDS");
    double seconds = s ? atof(s) : 86400;
    fprintf(stderr, "stall_write: rank %d stalls for %.0f s writing %s\n", this_rank(), seconds,
            target);
    struct timespec t = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&t, &t) != 0) {
    }
}

#define REAL(name, ret, ...)                                                                       \
    static ret (*real_##name)(__VA_ARGS__);                                                        \
    if (!real_##name) real_##name = (ret(*)(__VA_ARGS__))dlsym(RTLD_NEXT, #name)

ssize_t write(int fd, const void *buf, size_t count) {
    REAL(write, ssize_t, int, const void *, size_t);
    maybe_stall(fd);
    return real_write(fd, buf, count);
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset) {
    REAL(pwrite, ssize_t, int, const void *, size_t, off_t);
    maybe_stall(fd);
    return real_pwrite(fd, buf, count, offset);
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off64_t offset) {
    REAL(pwrite64, ssize_t, int, const void *, size_t, off64_t);
    maybe_stall(fd);
    return real_pwrite64(fd, buf, count, offset);
}

ssize_t writev(int fd, const struct iovec *iov, int n) {
    REAL(writev, ssize_t, int, const struct iovec *, int);
    maybe_stall(fd);
    return real_writev(fd, iov, n);
}

ssize_t pwritev(int fd, const struct iovec *iov, int n, off_t offset) {
    REAL(pwritev, ssize_t, int, const struct iovec *, int, off_t);
    maybe_stall(fd);
    return real_pwritev(fd, iov, n, offset);
}

ssize_t pwritev64(int fd, const struct iovec *iov, int n, off64_t offset) {
    REAL(pwritev64, ssize_t, int, const struct iovec *, int, off64_t);
    maybe_stall(fd);
    return real_pwritev64(fd, iov, n, offset);
}
