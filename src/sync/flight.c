/* SPDX-License-Identifier: MIT */
/* flight.c - placeholder, being written. */
#include "weft.h"
