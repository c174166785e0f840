/* SPDX-License-Identifier: MIT */
/* 20_pipeline.c - placeholder; being written. */
#include <weft.h>

int main(void)
{
	return 0;
}
