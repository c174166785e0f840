/* SPDX-License-Identifier: MIT */
/*
 * sysdefs.h - Linux constants newer than some C libraries' headers: the
 * memory advice and system call numbers that goroutine stacks need
 * (src/runtime/stack.c, and bench/mempark.c, which makes the same calls).
 * The values are the kernel's, the same on x86-64 and AArch64.
 */
#ifndef WEFT_SYSDEFS_H
#define WEFT_SYSDEFS_H

#include <sys/mman.h>
#include <sys/syscall.h>

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102 /* Linux 6.13 */
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif
#ifndef SYS_process_madvise
#define SYS_process_madvise 440 /* Linux 5.10 */
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434 /* Linux 5.3 */
#endif

#endif
