/* SPDX-License-Identifier: MIT */
/* weft/breaker.h - placeholder; being written (issue 6, patterns). */
#ifndef WEFT_BREAKER_H
#define WEFT_BREAKER_H

#include "common.h"

#endif
