/* SPDX-License-Identifier: MIT */
/* pubsub_test.c - placeholder; being written. */
#include "test.h"

TEST(pubsub_placeholder)
{
	ASSERT_EQ(0, 0);
}
