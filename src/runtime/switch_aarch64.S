/* SPDX-License-Identifier: MIT */
/*
 * switch_aarch64.S - the goroutine context switch for AArch64 (AAPCS64).
 *
 * A switch saves only what the procedure call standard says a callee must
 * preserve: x19-x28, the frame pointer x29, the link register x30, the low
 * halves of v8-v15 (d8-d15), the stack pointer, and FPCR (rounding mode,
 * flush-to-zero and trap enables are preserved across calls, as MXCSR's
 * control bits are on x86-64). Everything else is already saved by the
 * compiler around the call. No signal mask is touched.
 *
 * Saved frame, 176 bytes from the saved sp upwards (sp stays 16-byte
 * aligned throughout, as AArch64 requires):
 *   sp+0    x19, x20, x21, x22, x23, x24, x25, x26, x27, x28
 *   sp+80   x29 (frame pointer), x30 (return address)
 *   sp+96   d8 .. d15
 *   sp+160  FPCR, pad
 * weft_dump reads x29 at sp+80 and x30 at sp+88 to walk a parked
 * goroutine's frames, and weft__ctx_init builds a first frame of this shape;
 * keep debug.c and sched.c in step with this layout.
 */
	.text

/* void weft__switch(void **save_sp, void *new_sp) */
	.globl	weft__switch
	.hidden	weft__switch
	.type	weft__switch, %function
	.p2align 4
weft__switch:
	.cfi_startproc
	sub	sp, sp, #176
	.cfi_adjust_cfa_offset 176
	stp	x19, x20, [sp, #0]
	stp	x21, x22, [sp, #16]
	stp	x23, x24, [sp, #32]
	stp	x25, x26, [sp, #48]
	stp	x27, x28, [sp, #64]
	stp	x29, x30, [sp, #80]
	stp	d8, d9, [sp, #96]
	stp	d10, d11, [sp, #112]
	stp	d12, d13, [sp, #128]
	stp	d14, d15, [sp, #144]
	/* The floating-point control register, kept in x9 (caller-saved) to
	 * compare with the new context's. */
	mrs	x9, fpcr
	str	x9, [sp, #160]
	/* Publish the old stack pointer, take the new one. */
	mov	x10, sp
	str	x10, [x0]
	mov	sp, x1
	/* Restore FPCR only where it differs: writing it may synchronise the
	 * pipeline, and it is nearly always the same. */
	ldr	x10, [sp, #160]
	cmp	x9, x10
	b.eq	1f
	msr	fpcr, x10
1:	ldp	d14, d15, [sp, #144]
	ldp	d12, d13, [sp, #128]
	ldp	d10, d11, [sp, #112]
	ldp	d8, d9, [sp, #96]
	ldp	x29, x30, [sp, #80]
	ldp	x27, x28, [sp, #64]
	ldp	x25, x26, [sp, #48]
	ldp	x23, x24, [sp, #32]
	ldp	x21, x22, [sp, #16]
	ldp	x19, x20, [sp, #0]
	add	sp, sp, #176
	ret
	.cfi_endproc
	.size	weft__switch, .-weft__switch

/*
 * weft__gostart - where a new goroutine's first switch "returns" to (the x30
 * of the first frame). The frame leaves sp 16-byte aligned here and x29
 * zero, so backtraces stop at this frame. weft__goentry never returns.
 */
	.globl	weft__gostart
	.hidden	weft__gostart
	.type	weft__gostart, %function
	.p2align 4
weft__gostart:
	.cfi_startproc
	.cfi_undefined x30
	mov	x29, #0
	bl	weft__goentry
	brk	#0x3e8
	.cfi_endproc
	.size	weft__gostart, .-weft__gostart

	.section .note.GNU-stack,"",%progbits
