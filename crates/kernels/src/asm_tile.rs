//! Assembly shared by the 12 × 32 AVX-512 micro-kernels (`sgemm::kernel_avx512` and
//! `bf16::kernel_native`): both keep the tile in `zmm0`–`zmm23` (row `i` in `zmm(2i)`, `zmm(2i+1)`) and
//! name their operands alike (`a0`, `lda`, `k`, `c0`, `ldc`, `acc`, and the scratch `a4`, `a8`, `lda3`).
//! Only the loop over `k` between the two differs. The 8 × 48 kernel (`sgemm::kernel_avx512_8x48`) shares the
//! zeroing of the accumulators.

/// Zeroes `zmm0`–`zmm23`, the accumulators of every AVX-512 tile (12 × 32 and 8 × 48).
macro_rules! zero_zmm0_23 {
    () => {
        concat!(
            "vpxord zmm0, zmm0, zmm0\n",
            "vpxord zmm1, zmm1, zmm1\n",
            "vpxord zmm2, zmm2, zmm2\n",
            "vpxord zmm3, zmm3, zmm3\n",
            "vpxord zmm4, zmm4, zmm4\n",
            "vpxord zmm5, zmm5, zmm5\n",
            "vpxord zmm6, zmm6, zmm6\n",
            "vpxord zmm7, zmm7, zmm7\n",
            "vpxord zmm8, zmm8, zmm8\n",
            "vpxord zmm9, zmm9, zmm9\n",
            "vpxord zmm10, zmm10, zmm10\n",
            "vpxord zmm11, zmm11, zmm11\n",
            "vpxord zmm12, zmm12, zmm12\n",
            "vpxord zmm13, zmm13, zmm13\n",
            "vpxord zmm14, zmm14, zmm14\n",
            "vpxord zmm15, zmm15, zmm15\n",
            "vpxord zmm16, zmm16, zmm16\n",
            "vpxord zmm17, zmm17, zmm17\n",
            "vpxord zmm18, zmm18, zmm18\n",
            "vpxord zmm19, zmm19, zmm19\n",
            "vpxord zmm20, zmm20, zmm20\n",
            "vpxord zmm21, zmm21, zmm21\n",
            "vpxord zmm22, zmm22, zmm22\n",
            "vpxord zmm23, zmm23, zmm23\n",
        )
    };
}

/// Zeroes the 24 accumulators, sets the row pointers `a4 = a0 + 4·lda`, `a8 = a0 + 8·lda` and
/// `lda3 = 3·lda`, skips to `3:` when `k = 0`, and opens the loop at `2:`.
macro_rules! tile_12x32_start {
    () => {
        concat!(
            zero_zmm0_23!(),
            "lea {a4}, [{a0} + 4*{lda}]\n",
            "lea {a8}, [{a0} + 8*{lda}]\n",
            "lea {lda3}, [{lda} + 2*{lda}]\n",
            "test {k}, {k}\n",
            "jz 3f\n",
            "2:\n"
        )
    };
}

/// At `3:`: adds the tile to C when `acc` (`4:` otherwise), stores it at rows `c0 + i·ldc`, and clears the
/// upper register halves (`vzeroupper`: without it the scalar SSE code after the kernel, glibc's expf in
/// GELU and softmax, ran 3–4 times slower; perf: `__expf_fma` 6 % → 23 % of a train step on a Zen 4).
macro_rules! tile_12x32_finish {
    () => {
        concat!(
            "3:\n",
            "lea {a4}, [{c0} + 4*{ldc}]\n",
            "lea {a8}, [{c0} + 8*{ldc}]\n",
            "lea {lda3}, [{ldc} + 2*{ldc}]\n",
            "test {acc}, {acc}\n",
            "jz 4f\n",
            "vaddps zmm0, zmm0, [{c0}]\n",
            "vaddps zmm1, zmm1, [{c0} + 64]\n",
            "vaddps zmm2, zmm2, [{c0} + {ldc}]\n",
            "vaddps zmm3, zmm3, [{c0} + {ldc} + 64]\n",
            "vaddps zmm4, zmm4, [{c0} + 2*{ldc}]\n",
            "vaddps zmm5, zmm5, [{c0} + 2*{ldc} + 64]\n",
            "vaddps zmm6, zmm6, [{c0} + {lda3}]\n",
            "vaddps zmm7, zmm7, [{c0} + {lda3} + 64]\n",
            "vaddps zmm8, zmm8, [{a4}]\n",
            "vaddps zmm9, zmm9, [{a4} + 64]\n",
            "vaddps zmm10, zmm10, [{a4} + {ldc}]\n",
            "vaddps zmm11, zmm11, [{a4} + {ldc} + 64]\n",
            "vaddps zmm12, zmm12, [{a4} + 2*{ldc}]\n",
            "vaddps zmm13, zmm13, [{a4} + 2*{ldc} + 64]\n",
            "vaddps zmm14, zmm14, [{a4} + {lda3}]\n",
            "vaddps zmm15, zmm15, [{a4} + {lda3} + 64]\n",
            "vaddps zmm16, zmm16, [{a8}]\n",
            "vaddps zmm17, zmm17, [{a8} + 64]\n",
            "vaddps zmm18, zmm18, [{a8} + {ldc}]\n",
            "vaddps zmm19, zmm19, [{a8} + {ldc} + 64]\n",
            "vaddps zmm20, zmm20, [{a8} + 2*{ldc}]\n",
            "vaddps zmm21, zmm21, [{a8} + 2*{ldc} + 64]\n",
            "vaddps zmm22, zmm22, [{a8} + {lda3}]\n",
            "vaddps zmm23, zmm23, [{a8} + {lda3} + 64]\n",
            "4:\n",
            "vmovups [{c0}], zmm0\n",
            "vmovups [{c0} + 64], zmm1\n",
            "vmovups [{c0} + {ldc}], zmm2\n",
            "vmovups [{c0} + {ldc} + 64], zmm3\n",
            "vmovups [{c0} + 2*{ldc}], zmm4\n",
            "vmovups [{c0} + 2*{ldc} + 64], zmm5\n",
            "vmovups [{c0} + {lda3}], zmm6\n",
            "vmovups [{c0} + {lda3} + 64], zmm7\n",
            "vmovups [{a4}], zmm8\n",
            "vmovups [{a4} + 64], zmm9\n",
            "vmovups [{a4} + {ldc}], zmm10\n",
            "vmovups [{a4} + {ldc} + 64], zmm11\n",
            "vmovups [{a4} + 2*{ldc}], zmm12\n",
            "vmovups [{a4} + 2*{ldc} + 64], zmm13\n",
            "vmovups [{a4} + {lda3}], zmm14\n",
            "vmovups [{a4} + {lda3} + 64], zmm15\n",
            "vmovups [{a8}], zmm16\n",
            "vmovups [{a8} + 64], zmm17\n",
            "vmovups [{a8} + {ldc}], zmm18\n",
            "vmovups [{a8} + {ldc} + 64], zmm19\n",
            "vmovups [{a8} + 2*{ldc}], zmm20\n",
            "vmovups [{a8} + 2*{ldc} + 64], zmm21\n",
            "vmovups [{a8} + {lda3}], zmm22\n",
            "vmovups [{a8} + {lda3} + 64], zmm23\n",
            "vzeroupper\n"
        )
    };
}
