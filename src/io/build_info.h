/* Facts fixed when the program was built. */
#ifndef TS_BUILD_INFO_H
#define TS_BUILD_INFO_H

/* `git describe --always --dirty` of the source tree, or "unknown". */
extern const char ts_git_commit[];

#endif
