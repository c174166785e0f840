/* SPDX-License-Identifier: MIT */
/* workpool.c - placeholder; being written (issue 6, patterns). */
#include "weft.h"
