/* SPDX-License-Identifier: MIT */
/* weft/workpool.h - placeholder; being written (issue 6, patterns). */
#ifndef WEFT_WORKPOOL_H
#define WEFT_WORKPOOL_H

#include "common.h"

#endif
