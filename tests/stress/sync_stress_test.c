/* SPDX-License-Identifier: MIT */
/* sync_stress_test.c - placeholder, being written. */
#include "test.h"

TEST(placeholder)
{
	ASSERT_EQ(weft_procs() > 0, 1);
}
