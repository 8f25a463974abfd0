/* LD_PRELOAD shim for test_checkpoint_kill.sh: SIGKILLs the process at the
 * moment it is about to rename a file onto a name ending in $TS_KILL_RENAME_TO,
 * i.e. at the exact step of the atomic checkpoint protocol under test. Built
 * by the test script itself into its scratch directory (not part of the
 * library or the test binaries). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int rename(const char *from, const char *to) {
    const char *target = getenv("TS_KILL_RENAME_TO");
    size_t n = target ? strlen(target) : 0, m = strlen(to);
    if (n && m >= n && !strcmp(to + m - n, target)) {
        fprintf(stderr, "kill_on_rename: killing pid before renaming %s -> %s\n", from, to);
        fflush(stderr);
        raise(SIGKILL);
    }
    int (*real_rename)(const char *, const char *) =
        (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");
    return real_rename(from, to);
}
