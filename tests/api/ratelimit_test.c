/* SPDX-License-Identifier: MIT */
/* ratelimit_test.c - placeholder; being written. */
#include "test.h"

TEST(ratelimit_placeholder)
{
	ASSERT_EQ(0, 0);
}
