/* SPDX-License-Identifier: MIT */
/* 21_log_pipeline.c - placeholder; being written. */
#include <weft.h>

int main(void)
{
	return 0;
}
