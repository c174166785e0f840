/* SPDX-License-Identifier: MIT */
/* 16_tcp_echo.c - placeholder; being written. */
#include <weft.h>

int main(void)
{
	return 0;
}
