/* SPDX-License-Identifier: MIT */
/* signal_test.c - placeholder; being written. */
#include "test.h"

TEST(signal_placeholder)
{
	ASSERT_EQ(0, 0);
}
