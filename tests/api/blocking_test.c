/* SPDX-License-Identifier: MIT */
/* blocking_test.c - placeholder; being written. */
#include "test.h"

TEST(blocking_placeholder)
{
	ASSERT_EQ(0, 0);
}
