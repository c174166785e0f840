/* SPDX-License-Identifier: MIT */
/* 22_file_hasher.c - placeholder; being written. */
#include <weft.h>

int main(void)
{
	return 0;
}
