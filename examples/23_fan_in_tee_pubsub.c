/* SPDX-License-Identifier: MIT */
/* 23_fan_in_tee_pubsub.c - placeholder; being written. */
#include <weft.h>

int main(void)
{
	return 0;
}
