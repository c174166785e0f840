/* SPDX-License-Identifier: MIT */
/* weft/pipeline.h - placeholder; being written (issue 6, patterns). */
#ifndef WEFT_PIPELINE_H
#define WEFT_PIPELINE_H

#include "common.h"

#endif
