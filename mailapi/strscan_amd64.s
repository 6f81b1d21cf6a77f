//go:build !purego

#include "textflag.h"

// func classifyAVX2(p *byte, n int, out *blockMasks)
// For each of n 64-byte blocks from p (n at least 1), writes three words to
// out: the bit masks of its '"' bytes, its '\\' bytes and its bytes below
// 0x20. Every vector instruction is VEX-encoded: one legacy SSE instruction
// among them cost every call ~700 cycles on some CPUs (TestClassifyIsVEXOnly).
TEXT ·classifyAVX2(SB), NOSPLIT, $0-24
	MOVQ p+0(FP), SI
	MOVQ n+8(FP), CX
	MOVQ out+16(FP), DI
	MOVL $0x22, AX
	VMOVQ AX, X0
	VPBROADCASTB X0, Y13 // '"'
	MOVL $0x5c, AX
	VMOVQ AX, X0
	VPBROADCASTB X0, Y14 // '\\'
	MOVL $0x1f, AX
	VMOVQ AX, X0
	VPBROADCASTB X0, Y15 // 0x1f, the last control character

loop:
	VMOVDQU (SI), Y0
	VMOVDQU 32(SI), Y1

	VPCMPEQB Y0, Y13, Y2
	VPCMPEQB Y1, Y13, Y3
	VPMOVMSKB Y2, AX
	VPMOVMSKB Y3, BX
	SHLQ $32, BX
	ORQ BX, AX
	MOVQ AX, 0(DI)

	VPCMPEQB Y0, Y14, Y4
	VPCMPEQB Y1, Y14, Y5
	VPMOVMSKB Y4, AX
	VPMOVMSKB Y5, BX
	SHLQ $32, BX
	ORQ BX, AX
	MOVQ AX, 8(DI)

	// x <= 0x1f exactly when max(x, 0x1f) == 0x1f (unsigned).
	VPMAXUB Y0, Y15, Y6
	VPMAXUB Y1, Y15, Y7
	VPCMPEQB Y6, Y15, Y6
	VPCMPEQB Y7, Y15, Y7
	VPMOVMSKB Y6, AX
	VPMOVMSKB Y7, BX
	SHLQ $32, BX
	ORQ BX, AX
	MOVQ AX, 16(DI)

	ADDQ $64, SI
	ADDQ $24, DI
	DECQ CX
	JNZ loop

	VZEROUPPER
	RET
