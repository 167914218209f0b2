#include "textflag.h"

// func cloneOnStack(flags, stack uintptr, c *stageC) (pid, errno uintptr)
//
// clone(2) whose child starts on stack, a region of its own, and runs
// runStageC(c) there: it never returns into the caller's frames, which
// with CLONE_VM belong to the suspended parent (stagec.go).
TEXT ·cloneOnStack(SB),NOSPLIT|NOFRAME,$0-40
	MOVD	flags+0(FP), R0
	MOVD	stack+8(FP), R1
	MOVD	c+16(FP), R19	// kept across the system call, in both processes
	MOVD	$0, R2		// parent_tid
	MOVD	$0, R3		// tls
	MOVD	$0, R4		// child_tid
	MOVD	$220, R8	// SYS_clone
	SVC
	CMP	$0, R0
	BEQ	child
	CMN	$4095, R0
	BCC	ok
	MOVD	$-1, R4
	MOVD	R4, pid+24(FP)
	NEG	R0, R0
	MOVD	R0, errno+32(FP)
	RET
ok:
	MOVD	R0, pid+24(FP)
	MOVD	ZR, errno+32(FP)
	RET
child:
	// The new stack holds nothing: room for runStageC's argument (ABI0).
	// Called through a register: the linker's nosplit check must not
	// count stage C's frames against the caller's stack, which it never uses.
	SUB	$16, RSP
	MOVD	R19, 8(RSP)
	MOVD	$·runStageC(SB), R1
	BL	(R1)
	// Not reached: stage C ends in execve or exit_group.
	MOVD	$127, R0
	MOVD	$94, R8		// SYS_exit_group
	SVC
	B	child
