/* SPDX-License-Identifier: MIT */
/* pubsub.c - placeholder; being written (issue 6, patterns). */
#include "weft.h"
