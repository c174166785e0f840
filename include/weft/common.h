/* SPDX-License-Identifier: MIT */
/*
 * weft/common.h - export macro, version and the C/C++ linkage helpers shared
 * by every public weft header.
 */
#ifndef WEFT_COMMON_H
#define WEFT_COMMON_H

#include <stddef.h>
#include <stdint.h>

#if defined(WEFT_BUILDING) && defined(__GNUC__)
#define WEFT_API __attribute__((visibility("default")))
#else
#define WEFT_API
#endif

#ifdef __cplusplus
#define WEFT_BEGIN_DECLS extern "C" {
#define WEFT_END_DECLS }
#else
#define WEFT_BEGIN_DECLS
#define WEFT_END_DECLS
#endif

#define WEFT_VERSION_MAJOR 0
#define WEFT_VERSION_MINOR 1
#define WEFT_VERSION_PATCH 0
#define WEFT_VERSION_STRING "0.1.0"

WEFT_BEGIN_DECLS

/*
 * weft_version - the library's version string, "MAJOR.MINOR.PATCH".
 * Errors: none. Blocks: no. Thread-safety: any thread. The string is static.
 */
WEFT_API const char *weft_version(void);

WEFT_END_DECLS

#endif /* WEFT_COMMON_H */
