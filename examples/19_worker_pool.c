/* SPDX-License-Identifier: MIT */
/* 19_worker_pool.c - placeholder; being written. */
#include <weft.h>

int main(void)
{
	return 0;
}
