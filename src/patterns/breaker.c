/* SPDX-License-Identifier: MIT */
/* breaker.c - placeholder; being written (issue 6, patterns). */
#include "weft.h"
