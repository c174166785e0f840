/* SPDX-License-Identifier: MIT */
/* weft/pubsub.h - placeholder; being written (issue 6, patterns). */
#ifndef WEFT_PUBSUB_H
#define WEFT_PUBSUB_H

#include "common.h"

#endif
