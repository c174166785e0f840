/* SPDX-License-Identifier: MIT */
/* net_test.c - placeholder; being written. */
#include "test.h"

TEST(net_placeholder)
{
	ASSERT_EQ(0, 0);
}
