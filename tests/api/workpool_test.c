/* SPDX-License-Identifier: MIT */
/* workpool_test.c - placeholder; being written. */
#include "test.h"

TEST(workpool_placeholder)
{
	ASSERT_EQ(0, 0);
}
