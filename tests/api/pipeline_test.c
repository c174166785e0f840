/* SPDX-License-Identifier: MIT */
/* pipeline_test.c - placeholder; being written. */
#include "test.h"

TEST(pipeline_placeholder)
{
	ASSERT_EQ(0, 0);
}
