//go:build !purego

#include "textflag.h"

// SPECIALBYTES broadcasts the bytes a JSON string's scan looks for: '"' to
// Y13, '\\' to Y14 and 0x1f, the last control character, to Y15. It uses
// tmp and X0.
#define SPECIALBYTES(tmp) \
	MOVL $0x22, tmp; \
	VMOVQ tmp, X0; \
	VPBROADCASTB X0, Y13; \
	MOVL $0x5c, tmp; \
	VMOVQ tmp, X0; \
	VPBROADCASTB X0, Y14; \
	MOVL $0x1f, tmp; \
	VMOVQ tmp, X0; \
	VPBROADCASTB X0, Y15

// func classifyAVX2(p *byte, n int, out *blockMasks)
// For each of n 64-byte blocks from p (n at least 1), writes three words to
// out: the bit masks of its '"' bytes, its '\\' bytes and its bytes below
// 0x20. Every vector instruction is VEX-encoded: one legacy SSE instruction
// among them cost every call ~700 cycles on some CPUs (TestClassifyIsVEXOnly).
TEXT ·classifyAVX2(SB), NOSPLIT, $0-24
	MOVQ p+0(FP), SI
	MOVQ n+8(FP), CX
	MOVQ out+16(FP), DI
	SPECIALBYTES(AX)

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

// SPECIALS64 sets out to a nonzero vector when any of the 64 bytes at
// off(SI) is '"', '\\' or below 0x20 (Y13, Y14, Y15 hold the three bytes
// broadcast). It uses Y0-Y7.
#define SPECIALS64(off, out) \
	VMOVDQU off(SI), Y0; \
	VMOVDQU off+32(SI), Y1; \
	VPCMPEQB Y0, Y13, Y2; \
	VPCMPEQB Y1, Y13, Y3; \
	VPCMPEQB Y0, Y14, Y4; \
	VPCMPEQB Y1, Y14, Y5; \
	VPMAXUB Y0, Y15, Y6; \
	VPMAXUB Y1, Y15, Y7; \
	VPCMPEQB Y6, Y15, Y6; \
	VPCMPEQB Y7, Y15, Y7; \
	VPOR Y2, Y3, Y2; \
	VPOR Y4, Y5, Y4; \
	VPOR Y6, Y7, Y6; \
	VPOR Y2, Y4, Y2; \
	VPOR Y2, Y6, out

// func plainBlocksAVX2(p *byte, n int) int
// Returns how many of the n 64-byte blocks from p (n at least 1) hold no
// '"', no '\\' and no byte below 0x20, counting from the first until one
// does: the bytes of a long string that need no closer look. Two blocks a
// step while two remain.
TEXT ·plainBlocksAVX2(SB), NOSPLIT, $0-24
	MOVQ p+0(FP), SI
	MOVQ n+8(FP), CX
	XORQ AX, AX
	SPECIALBYTES(DX)

plainloop:
	SPECIALS64(0, Y10)
	CMPQ CX, $2
	JLT plainlast
	SPECIALS64(64, Y11)
	VPOR Y10, Y11, Y12
	VPTEST Y12, Y12
	JNZ plainlast // the first block of the two may be plain
	ADDQ $128, SI
	ADDQ $2, AX
	SUBQ $2, CX
	JNZ plainloop
	JMP plaindone

plainlast:
	VPTEST Y10, Y10
	JNZ plaindone
	INCQ AX

plaindone:
	VZEROUPPER
	MOVQ AX, ret+16(FP)
	RET

// func pairIndexAVX2(p *byte, n int, first, last byte, gap int) int
// Returns the least i < n&^31 with p[i] == first and p[i+gap] == last, or
// -1: the candidates for a delimiter of gap+1 bytes, 64 positions a step
// while 64 remain, then 32.
// p[0 : n+gap] must be readable.
TEXT ·pairIndexAVX2(SB), NOSPLIT, $0-40
	MOVQ p+0(FP), SI
	MOVQ n+8(FP), CX
	MOVBLZX first+16(FP), AX
	VMOVQ AX, X0
	VPBROADCASTB X0, Y13
	MOVBLZX last+17(FP), AX
	VMOVQ AX, X0
	VPBROADCASTB X0, Y14
	MOVQ gap+24(FP), DX
	ADDQ SI, DX // p+gap
	XORQ BX, BX // i
	SHRQ $5, CX
	JZ pairnone

pairloop2: // 64 positions a step while two steps remain
	CMPQ CX, $2
	JLT pairloop
	VMOVDQU (SI)(BX*1), Y0
	VMOVDQU (DX)(BX*1), Y1
	VMOVDQU 32(SI)(BX*1), Y2
	VMOVDQU 32(DX)(BX*1), Y3
	VPCMPEQB Y0, Y13, Y0
	VPCMPEQB Y1, Y14, Y1
	VPCMPEQB Y2, Y13, Y2
	VPCMPEQB Y3, Y14, Y3
	VPAND Y0, Y1, Y0
	VPAND Y2, Y3, Y2
	VPOR Y0, Y2, Y4
	VPTEST Y4, Y4
	JNZ pairfound2
	ADDQ $64, BX
	SUBQ $2, CX
	JNZ pairloop2
	JMP pairnone

pairfound2: // in the first 32 positions, or else the next
	VPMOVMSKB Y0, AX
	TESTL AX, AX
	JNZ pairfound
	VPMOVMSKB Y2, AX
	ADDQ $32, BX
	JMP pairfound

pairloop:
	VMOVDQU (SI)(BX*1), Y0
	VMOVDQU (DX)(BX*1), Y1
	VPCMPEQB Y0, Y13, Y0
	VPCMPEQB Y1, Y14, Y1
	VPAND Y0, Y1, Y0
	VPMOVMSKB Y0, AX
	TESTL AX, AX
	JNZ pairfound
	ADDQ $32, BX
	DECQ CX
	JNZ pairloop

pairnone:
	VZEROUPPER
	MOVQ $-1, ret+32(FP)
	RET

pairfound:
	VZEROUPPER
	BSFL AX, AX
	ADDQ BX, AX
	MOVQ AX, ret+32(FP)
	RET

// func specialIndexAVX2(p *byte, n int) int
// Returns the index of the first '"', '\\' or byte below 0x20 among the
// first n&^31 bytes from p, 32 bytes a step, or n&^31 if there is none.
TEXT ·specialIndexAVX2(SB), NOSPLIT, $0-24
	MOVQ p+0(FP), SI
	MOVQ n+8(FP), CX
	ANDQ $~31, CX
	XORQ BX, BX
	SPECIALBYTES(AX)
	TESTQ CX, CX
	JZ specialnone

specialloop:
	VMOVDQU (SI)(BX*1), Y0
	VPCMPEQB Y0, Y13, Y1
	VPCMPEQB Y0, Y14, Y2
	VPMAXUB Y0, Y15, Y3
	VPCMPEQB Y3, Y15, Y3
	VPOR Y1, Y2, Y1
	VPOR Y1, Y3, Y1
	VPMOVMSKB Y1, AX
	TESTL AX, AX
	JNZ specialfound
	ADDQ $32, BX
	CMPQ BX, CX
	JLT specialloop

specialnone:
	VZEROUPPER
	MOVQ CX, ret+16(FP)
	RET

specialfound:
	VZEROUPPER
	BSFL AX, AX
	ADDQ BX, AX
	MOVQ AX, ret+16(FP)
	RET
