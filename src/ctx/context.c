/* SPDX-License-Identifier: MIT */
#include "weft.h"
