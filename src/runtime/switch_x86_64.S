/* SPDX-License-Identifier: MIT */
/*
 * switch_x86_64.S - the goroutine context switch for x86-64 (System V ABI).
 *
 * A switch saves only what the ABI says a callee must preserve: rbx, rbp,
 * r12-r15, the stack pointer, and the control bits of MXCSR and the x87
 * control word (rounding modes and exception masks are callee-saved too).
 * Everything else is already saved by the compiler around the call. No signal
 * mask is touched: that is the system call ucontext would make per switch.
 *
 * Saved frame, from the saved sp upwards:
 *   sp+0  MXCSR (4 bytes), x87 CW (2 bytes), pad
 *   sp+8  r15, r14, r13, r12, rbx, rbp
 *   sp+56 return address
 * weft_dump reads rbp at sp+48 and the return address at sp+56 to walk a
 * parked goroutine's frames; keep debug.c in step with this layout.
 */
	.text

/*
 * SWITCH_SAVE_LOAD: save the current context as a frame on its stack,
 * publish its sp at (%rdi), take %rsi as the new stack, and restore the new
 * context's control state. The x87 control word is loaded only where it
 * differs from the old one's (fldcw is slow, and the words nearly always
 * match). MXCSR is loaded always: loading the value it already holds is
 * cheap (0.25 ns on this AMD EPYC; a few cycles on Intel by the vendors'
 * tables), whereas a compare must wait for stmxcsr's result, which this
 * CPU is slow to deliver (Yield at 1 P: 9.4 ns comparing, 8.3 loading).
 * Leaves rsp at the new frame's r15 slot.
 */
	.macro SWITCH_SAVE_LOAD
	/* Save the floating-point control state first, into the red zone
	 * where the frame's control-word slot will be once the six registers
	 * are pushed: stmxcsr is slow to complete (several ns on AMD Zen),
	 * and nothing reads its result until the very end. */
	stmxcsr	-56(%rsp)
	fnstcw	-52(%rsp)
	/* Push the callee-saved registers on the current stack. */
	pushq	%rbp
	.cfi_adjust_cfa_offset 8
	pushq	%rbx
	.cfi_adjust_cfa_offset 8
	pushq	%r12
	.cfi_adjust_cfa_offset 8
	pushq	%r13
	.cfi_adjust_cfa_offset 8
	pushq	%r14
	.cfi_adjust_cfa_offset 8
	pushq	%r15
	.cfi_adjust_cfa_offset 8
	subq	$8, %rsp
	.cfi_adjust_cfa_offset 8
	/* Publish the old stack pointer, take the new one; rcx keeps the old
	 * one to compare the x87 control words. */
	movq	%rsp, (%rdi)
	movq	%rsp, %rcx
	movq	%rsi, %rsp
	ldmxcsr	(%rsp)
	movzwl	4(%rsp), %edx
	cmpw	4(%rcx), %dx
	je	2f
	fldcw	4(%rsp)
2:	addq	$8, %rsp
	.endm

/* void weft__switch(void **save_sp, void *new_sp) */
	.globl	weft__switch
	.hidden	weft__switch
	.type	weft__switch, @function
	.p2align 4
weft__switch:
	.cfi_startproc
	SWITCH_SAVE_LOAD
	popq	%r15
	popq	%r14
	popq	%r13
	popq	%r12
	popq	%rbx
	popq	%rbp
	ret
	.cfi_endproc
	.size	weft__switch, .-weft__switch

/*
 * void weft__switch_new(void **save_sp, void *new_sp) - weft__switch to a
 * goroutine that has never run: new_sp is the initial frame that
 * init_context (sched.c) built (default control state, zero registers,
 * weft__gostart as the return address). Saves and restores as weft__switch
 * does, then skips the registers and the return address and jumps to
 * weft__gostart. The ret that weft__switch would make there goes to an
 * address the return-stack predictor never expects (it predicts a return
 * into the scheduler), and mispredicted on every goroutine's start; a
 * direct jump does not.
 */
	.globl	weft__switch_new
	.hidden	weft__switch_new
	.type	weft__switch_new, @function
	.p2align 4
weft__switch_new:
	.cfi_startproc
	SWITCH_SAVE_LOAD
	/* Past the six zero registers and the return address: rsp is where
	 * weft__switch's ret would leave it. The new goroutine needs none of
	 * the registers (weft__gostart zeroes rbp). */
	addq	$56, %rsp
	jmp	weft__gostart
	.cfi_endproc
	.size	weft__switch_new, .-weft__switch_new

/*
 * weft__gostart - where a new goroutine's first switch "returns" (or, with
 * weft__switch_new, jumps) to. The initial frame built by init_context
 * (sched.c) leaves rsp 16-byte aligned here, and rbp is zeroed, so
 * backtraces stop at this frame. weft__goentry never returns.
 */
	.globl	weft__gostart
	.hidden	weft__gostart
	.type	weft__gostart, @function
	.p2align 4
weft__gostart:
	.cfi_startproc
	.cfi_undefined rip
	xorl	%ebp, %ebp
	call	weft__goentry
	ud2
	.cfi_endproc
	.size	weft__gostart, .-weft__gostart

	.section .note.GNU-stack,"",@progbits
