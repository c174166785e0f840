/* SPDX-License-Identifier: MIT */
/* breaker_test.c - placeholder; being written. */
#include "test.h"

TEST(breaker_placeholder)
{
	ASSERT_EQ(0, 0);
}
