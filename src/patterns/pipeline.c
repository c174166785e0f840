/* SPDX-License-Identifier: MIT */
/* pipeline.c - placeholder; being written (issue 6, patterns). */
#include "weft.h"
