/* SPDX-License-Identifier: MIT */
/* pool.c - placeholder, being written. */
#include "weft.h"
