/* SPDX-License-Identifier: MIT */
/* 17_chat_server.c - placeholder; being written. */
#include <weft.h>

int main(void)
{
	return 0;
}
