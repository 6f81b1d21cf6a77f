//go:build !purego

#include "textflag.h"

// specialbytes holds the bytes a JSON string's scan looks for: '"', '\\'
// and 0x1f, the last control character; then 0x20, the first byte that is
// not one.
DATA specialbytes<>+0(SB)/1, $0x22
DATA specialbytes<>+1(SB)/1, $0x5c
DATA specialbytes<>+2(SB)/1, $0x1f
DATA specialbytes<>+3(SB)/1, $0x20
GLOBL specialbytes<>(SB), RODATA|NOPTR, $4

// SPECIALBYTES broadcasts the bytes a JSON string's scan looks for: '"' to
// Y13, '\\' to Y14 and 0x1f to Y15.
#define SPECIALBYTES \
	VPBROADCASTB specialbytes<>+0(SB), Y13; \
	VPBROADCASTB specialbytes<>+1(SB), Y14; \
	VPBROADCASTB specialbytes<>+2(SB), Y15

// COMPARE64 compares the 64 bytes at off(SI), loaded to Y0 and Y1, with
// the three bytes SPECIALBYTES broadcasts: Y2 and Y3 are 0xff at '"', Y4 and
// Y5 at '\\', Y6 and Y7 below 0x20 (a byte x is below 0x20 exactly when
// max(x, 0x1f) == 0x1f, unsigned).
#define COMPARE64(off) \
	VMOVDQU off(SI), Y0; \
	VMOVDQU off+32(SI), Y1; \
	VPCMPEQB Y0, Y13, Y2; \
	VPCMPEQB Y1, Y13, Y3; \
	VPCMPEQB Y0, Y14, Y4; \
	VPCMPEQB Y1, Y14, Y5; \
	VPMAXUB Y0, Y15, Y6; \
	VPMAXUB Y1, Y15, Y7; \
	VPCMPEQB Y6, Y15, Y6; \
	VPCMPEQB Y7, Y15, Y7

// BLOCKMASKS sets AX, BX and DX to the bit masks of the '"' bytes, the '\\'
// bytes and the bytes below 0x20 of the 64 bytes at SI. It uses Y0-Y7 and
// tmp.
#define BLOCKMASKS(tmp) \
	COMPARE64(0); \
	VPMOVMSKB Y2, AX; \
	VPMOVMSKB Y3, tmp; \
	SHLQ $32, tmp; \
	ORQ tmp, AX; \
	VPMOVMSKB Y4, BX; \
	VPMOVMSKB Y5, tmp; \
	SHLQ $32, tmp; \
	ORQ tmp, BX; \
	VPMOVMSKB Y6, DX; \
	VPMOVMSKB Y7, tmp; \
	SHLQ $32, tmp; \
	ORQ tmp, DX

// func classifyAVX2(p *byte, n int, out *blockMasks)
// For each of n 64-byte blocks from p (n at least 1), writes three words to
// out: the bit masks of its '"' bytes, its '\\' bytes and its bytes below
// 0x20. Every vector instruction is VEX-encoded: one legacy SSE instruction
// among them cost every call ~700 cycles on some CPUs (TestClassifyIsVEXOnly).
TEXT ·classifyAVX2(SB), NOSPLIT, $0-24
	MOVQ p+0(FP), SI
	MOVQ n+8(FP), CX
	MOVQ out+16(FP), R8
	SPECIALBYTES

loop:
	BLOCKMASKS(DI)
	MOVQ AX, 0(R8)
	MOVQ BX, 8(R8)
	MOVQ DX, 16(R8)
	ADDQ $64, SI
	ADDQ $24, R8
	DECQ CX
	JNZ loop

	VZEROUPPER
	RET

// HEXDIGIT jumps to crossstop unless the byte at off(SI)(BX*1) is a hex
// digit (R12 holds their bits from '0'). It uses DX.
#define HEXDIGIT(off) \
	MOVBLZX off(SI)(BX*1), DX; \
	SUBL $0x30, DX; \
	CMPL DX, $64; \
	JAE crossstop; \
	BTQ DX, R12; \
	JCC crossstop

// func crossBlocksAVX2(p *byte, n int, carry bool) (end, blocks int, next, escaped bool)
// crossBlocksGeneric over the n 64-byte blocks from p (n at least 1): each
// block's three masks as classifyAVX2 makes them, then escapes, the closing
// quote and blockEnd's checks, in registers.
//   AX quotes, BX backslashes, DX control characters; DI, R12, R13 work
//   SI the block, CX blocks left, R8 blocks crossed, R9 carry (0 or 1),
//   R10 escaped (0 or 1), R11 the odd bits
TEXT ·crossBlocksAVX2(SB), NOSPLIT, $0-42
	MOVQ p+0(FP), SI
	MOVQ n+8(FP), CX
	MOVBQZX carry+16(FP), R9
	XORQ R8, R8
	XORQ R10, R10
	MOVQ $0xAAAAAAAAAAAAAAAA, R11
	SPECIALBYTES

cross:
	BLOCKMASKS(DI)
	// A plain block not escaped into: nothing to decide.
	MOVQ AX, DI
	ORQ BX, DI
	ORQ DX, DI
	ORQ R9, DI
	JZ crossnext

	// escapes: bs, the backslashes the carry does not escape; the runs'
	// parity by the carry out of the subtraction.
	MOVQ R9, DI
	NOTQ DI
	ANDQ BX, DI
	LEAQ (DI)(DI*1), R12
	ORQ R11, R12
	SUBQ DI, R12
	XORQ R11, R12 // escapers and escaped
	MOVQ R12, R13
	ANDQ DI, R13
	SHRQ $63, R13 // the next block's carry
	ORQ R9, DI
	XORQ DI, R12 // escaped bytes
	MOVQ R12, DI
	NOTQ DI
	ANDQ AX, DI // unescaped quotes
	ORQ BX, AX
	NOTQ AX
	ANDQ R12, AX // escaped bytes other than quotes and backslashes
	MOVQ $64, R12
	BSFQ DI, DI
	CMOVQEQ R12, DI // DI: the closing quote's index, or 64

	// A control character before the end: the scalar loop reports it.
	BSFQ DX, DX
	JZ crossnocontrol
	CMPQ DX, DI
	JLT crossstop

crossnocontrol:
	ORQ R9, R10
	BSFQ BX, BX
	JZ crossrest
	CMPQ BX, DI
	JGE crossrest
	MOVQ $1, R10

crossrest:
	// Each other escaped byte before the end must make an escape: '/',
	// b f n r t (bits 2, 6, 14, 18, 20 of 0x60 on), or u and four hex
	// digits, which may run into the next block but not past the last.
	TESTQ AX, AX
	JZ crossended

crossrestloop:
	BSFQ AX, BX
	CMPQ BX, DI
	JGE crossended
	MOVBLZX (SI)(BX*1), DX
	CMPL DX, $0x75
	JEQ crossunicode
	CMPL DX, $0x2f
	JEQ crossescaped
	SUBL $0x60, DX
	CMPL DX, $32
	JAE crossstop
	MOVL $0x144044, R12
	BTL DX, R12
	JCC crossstop
	JMP crossescaped

crossunicode:
	// A u from byte 60 on has digits in the next block; in the last
	// block they are past what may be read, and blockEnd looks.
	CMPQ BX, $60
	JLT crosshex
	CMPQ CX, $1
	JEQ crossstop

crosshex:
	// Hex digits are '0' + 0-9, 17-22 and 49-54.
	MOVQ $0x7e0000007e03ff, R12
	HEXDIGIT(1)
	HEXDIGIT(2)
	HEXDIGIT(3)
	HEXDIGIT(4)

crossescaped:
	LEAQ -1(AX), BX
	ANDQ BX, AX
	JNZ crossrestloop

crossended:
	CMPQ DI, $64
	JLT crossfound
	MOVQ R13, R9

crossnext:
	ADDQ $64, SI
	INCQ R8
	DECQ CX
	JNZ cross

crossstop:
	MOVQ $-1, end+24(FP)
	MOVQ R8, blocks+32(FP)
	MOVB R9, next+40(FP)
	MOVB R10, escaped+41(FP)
	VZEROUPPER
	RET

crossfound:
	MOVQ R8, AX
	SHLQ $6, AX
	ADDQ DI, AX
	MOVQ AX, end+24(FP)
	MOVQ R8, blocks+32(FP)
	MOVB R13, next+40(FP)
	MOVB R10, escaped+41(FP)
	VZEROUPPER
	RET

// SPECIALS64 sets out to a nonzero vector when any of the 64 bytes at
// off(SI)(BX*1) is '"', '\\' or below 0x20: Y13 and Y14 hold '"' and '\\'
// (as SPECIALBYTES broadcasts them) and Y12 0x20, and 0x20 minus a byte,
// saturated at zero, is nonzero exactly below 0x20. Each 32 bytes are
// loaded once: with three compares reading memory (one instruction fewer
// each) the scan was ~25 % slower here. It uses Y0-Y7.
#define SPECIALS64(off, out) \
	VMOVDQU off(SI)(BX*1), Y0; \
	VMOVDQU off+32(SI)(BX*1), Y1; \
	VPCMPEQB Y0, Y13, Y2; \
	VPCMPEQB Y1, Y13, Y3; \
	VPCMPEQB Y0, Y14, Y4; \
	VPCMPEQB Y1, Y14, Y5; \
	VPSUBUSB Y0, Y12, Y6; \
	VPSUBUSB Y1, Y12, Y7; \
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
	XORQ BX, BX
	SPECIALBYTES
	VPBROADCASTB specialbytes<>+3(SB), Y12

plainloop:
	SPECIALS64(0, Y10)
	CMPQ CX, $2
	JLT plainlast
	SPECIALS64(64, Y11)
	VPOR Y10, Y11, Y9
	VPTEST Y9, Y9
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
// -1: the candidates for a delimiter of gap+1 bytes, 128 positions a step
// while 128 remain, then 32. The comparisons read memory themselves (one
// instruction where a load and a compare were two): a binary attachment's
// bytes are crossed at ~10 instructions per 64.
// p[0 : n+gap] must be readable.
TEXT ·pairIndexAVX2(SB), NOSPLIT, $0-40
	MOVQ p+0(FP), SI
	MOVQ n+8(FP), CX
	VPBROADCASTB first+16(FP), Y13
	VPBROADCASTB last+17(FP), Y14
	MOVQ gap+24(FP), DX
	ADDQ SI, DX // p+gap
	XORQ BX, BX // i
	SHRQ $5, CX // 32-position steps
	SUBQ $4, CX // the steps left after this 128-position one
	JLT pairtail

pairloop4: // 128 positions a step
	VPCMPEQB (SI)(BX*1), Y13, Y0
	VPCMPEQB (DX)(BX*1), Y14, Y1
	VPCMPEQB 32(SI)(BX*1), Y13, Y2
	VPCMPEQB 32(DX)(BX*1), Y14, Y3
	VPCMPEQB 64(SI)(BX*1), Y13, Y4
	VPCMPEQB 64(DX)(BX*1), Y14, Y5
	VPCMPEQB 96(SI)(BX*1), Y13, Y6
	VPCMPEQB 96(DX)(BX*1), Y14, Y7
	VPAND Y0, Y1, Y0
	VPAND Y2, Y3, Y2
	VPAND Y4, Y5, Y4
	VPAND Y6, Y7, Y6
	VPOR Y0, Y2, Y8
	VPOR Y4, Y6, Y9
	VPOR Y8, Y9, Y8
	VPTEST Y8, Y8
	JNZ pairfound4
	ADDQ $128, BX
	SUBQ $4, CX
	JGE pairloop4

pairtail:
	ADDQ $4, CX // 0-3 steps of 32 left
	JZ pairnone

pairloop:
	VPCMPEQB (SI)(BX*1), Y13, Y0
	VPCMPEQB (DX)(BX*1), Y14, Y1
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

pairfound4: // in the first 32 positions of the step, or a later 32
	VPMOVMSKB Y0, AX
	TESTL AX, AX
	JNZ pairfound
	ADDQ $32, BX
	VPMOVMSKB Y2, AX
	TESTL AX, AX
	JNZ pairfound
	ADDQ $32, BX
	VPMOVMSKB Y4, AX
	TESTL AX, AX
	JNZ pairfound
	ADDQ $32, BX
	VPMOVMSKB Y6, AX

pairfound:
	VZEROUPPER
	BSFL AX, AX
	ADDQ BX, AX
	MOVQ AX, ret+32(FP)
	RET

// SPECIAL32 sets AX to the bit mask of the '"', '\\' and below-0x20 bytes
// of the 32 at (SI)(BX*1) (SPECIALBYTES's Y13-Y15). It uses Y0-Y3.
#define SPECIAL32 \
	VMOVDQU (SI)(BX*1), Y0; \
	VPCMPEQB Y0, Y13, Y1; \
	VPCMPEQB Y0, Y14, Y2; \
	VPMAXUB Y0, Y15, Y3; \
	VPCMPEQB Y3, Y15, Y3; \
	VPOR Y1, Y2, Y1; \
	VPOR Y1, Y3, Y1; \
	VPMOVMSKB Y1, AX

// func specialIndexAVX2(p *byte, n int) int
// Returns the index of the first '"', '\\' or byte below 0x20 among the
// first n&^31 bytes from p, or n&^31 if there is none. The first 128 bytes
// are looked at 32 a step (most strings end there, and a string ending in
// a 128-byte step would pay for that step and its 32-byte steps); then 128
// a step while 128 remain, only tested (SPECIALS64), and 32 a step from
// the step that holds one and over the last bytes. A base64 attachment's
// string is crossed at ~8.5 instructions per 32 bytes, where 32-byte steps
// took 13.
TEXT ·specialIndexAVX2(SB), NOSPLIT, $0-24
	MOVQ p+0(FP), SI
	MOVQ n+8(FP), CX
	ANDQ $~31, CX
	XORQ BX, BX
	TESTQ CX, CX
	JZ specialnone
	SPECIALBYTES

specialfirst:
	SPECIAL32
	TESTL AX, AX
	JNZ specialfound
	ADDQ $32, BX
	CMPQ BX, CX
	JAE specialnone
	CMPQ BX, $128
	JB specialfirst
	VPBROADCASTB specialbytes<>+3(SB), Y12

special128:
	LEAQ 128(BX), DX
	CMPQ DX, CX
	JHI special32
	SPECIALS64(0, Y10)
	SPECIALS64(64, Y11)
	VPOR Y10, Y11, Y9
	VPTEST Y9, Y9
	JNZ special32 // in these 128 bytes: found 32 a step
	MOVQ DX, BX
	JMP special128

special32:
	CMPQ BX, CX
	JAE specialnone
	SPECIAL32
	TESTL AX, AX
	JNZ specialfound
	ADDQ $32, BX
	JMP special32

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
