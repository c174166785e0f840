/* SPDX-License-Identifier: MIT */
/* 18_http_fetch.c - placeholder; being written. */
#include <weft.h>

int main(void)
{
	return 0;
}
