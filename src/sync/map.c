/* SPDX-License-Identifier: MIT */
/* map.c - placeholder, being written. */
#include "weft.h"
