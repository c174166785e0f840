/* SPDX-License-Identifier: MIT */
/* weft/ratelimit.h - placeholder; being written (issue 6, patterns). */
#ifndef WEFT_RATELIMIT_H
#define WEFT_RATELIMIT_H

#include "common.h"

#endif
