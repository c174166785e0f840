/* SPDX-License-Identifier: MIT */
/* ratelimit.c - placeholder; being written (issue 6, patterns). */
#include "weft.h"
