#include "textflag.h"

// func cloneOnStack(flags, stack uintptr, c *stageC) (pid, errno uintptr)
//
// clone(2) whose child starts on stack, a region of its own, and runs
// runStageC(c) there: it never returns into the caller's frames, which
// with CLONE_VM belong to the suspended parent (stagec.go).
TEXT ·cloneOnStack(SB),NOSPLIT|NOFRAME,$0-40
	MOVQ	flags+0(FP), DI
	MOVQ	stack+8(FP), SI
	MOVQ	c+16(FP), R12	// kept across the system call, in both processes
	MOVQ	$0, DX		// parent_tid
	MOVQ	$0, R10		// child_tid
	MOVQ	$0, R8		// tls
	MOVQ	$56, AX		// SYS_clone
	SYSCALL
	CMPQ	AX, $0
	JEQ	child
	CMPQ	AX, $0xfffffffffffff001
	JLS	ok
	MOVQ	$-1, pid+24(FP)
	NEGQ	AX
	MOVQ	AX, errno+32(FP)
	RET
ok:
	MOVQ	AX, pid+24(FP)
	MOVQ	$0, errno+32(FP)
	RET
child:
	// The new stack holds nothing: room for runStageC's argument (ABI0).
	// Called through a register: the linker's nosplit check must not
	// count stage C's frames against the caller's stack, which it never uses.
	SUBQ	$16, SP
	MOVQ	R12, 0(SP)
	MOVQ	$·runStageC(SB), AX
	CALL	AX
	// Not reached: stage C ends in execve or exit_group.
	MOVQ	$127, DI
	MOVQ	$231, AX	// SYS_exit_group
	SYSCALL
	JMP	child
