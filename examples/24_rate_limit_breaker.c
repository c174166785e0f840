/* SPDX-License-Identifier: MIT */
/* 24_rate_limit_breaker.c - placeholder; being written. */
#include <weft.h>

int main(void)
{
	return 0;
}
