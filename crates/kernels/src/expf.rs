//! `expf` in a form the loop vectoriser can widen, with the bits of glibc's `expf` on x86-64 CPUs with FMA
//! (`__expf_fma`, which `f32::exp` calls there).
//!
//! The fused block's GELU and softmax call `exp` for every activation; as a libm call per element it was
//! 6–7 % of a ViT-Ti training step on a Zen 4 (perf), and it kept those loops scalar. This is the same
//! method as glibc's (Tang's table method, by Szabolcs Nagy for ARM's optimized-routines): `x·32/ln 2 = k + r`
//! in double precision, `2^(k/32)` from a 32-entry table, a cubic in `r`, one rounding to `f32` at the end.
//! The table holds `2^(i/32)` correctly rounded (computed here at 60 digits, minus `i << 47`); which
//! operations are fused multiply-adds was settled by comparing with glibc on all 2³² inputs (test
//! `matches_libm_on_every_input`, run on purpose; the suite checks a 1-in-4099 sample). Same bits means the
//! committed results do not change.
//!
//! Only for code compiled with FMA: without it, `mul_add` would be a library call; [`exp`] callers in
//! baseline code keep `f32::exp`.

/// `2^(i/32)` (rounded to nearest) as bits, minus `i << 47`: adding `k << 47` for `k ≡ i (mod 32)` gives
/// `2^(k/32)`.
const TAB: [u64; 32] = [
    0x3ff0000000000000,
    0x3fefd9b0d3158574,
    0x3fefb5586cf9890f,
    0x3fef9301d0125b51,
    0x3fef72b83c7d517b,
    0x3fef54873168b9aa,
    0x3fef387a6e756238,
    0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715,
    0x3feef1a7373aa9cb,
    0x3feedea64c123422,
    0x3feece086061892d,
    0x3feebfdad5362a27,
    0x3feeb42b569d4f82,
    0x3feeab07dd485429,
    0x3feea47eb03a5585,
    0x3feea09e667f3bcd,
    0x3fee9f75e8ec5f74,
    0x3feea11473eb0187,
    0x3feea589994cce13,
    0x3feeace5422aa0db,
    0x3feeb737b0cdc5e5,
    0x3feec49182a3f090,
    0x3feed503b23e255d,
    0x3feee89f995ad3ad,
    0x3feeff76f2fb5e47,
    0x3fef199bdd85529c,
    0x3fef3720dcef9069,
    0x3fef5818dcfba487,
    0x3fef7c97337b9b5f,
    0x3fefa4afa2a490da,
    0x3fefd0765b6e4540,
];
/// `32 / ln 2`.
const INV_LN2_N: f64 = f64::from_bits(0x4047_1547_652b_82fe);
/// `1.5 · 2^52`: adding it rounds a double of magnitude < 2^51 to an integer (ties to even) in the low bits.
const SHIFT: f64 = f64::from_bits(0x4338_0000_0000_0000);
/// The cubic's coefficients, scaled for `r` in units of 1/32: `C0·r³ + C1·r² + C2·r + 1 ≈ 2^(r/32)`.
const C0: f64 = f64::from_bits(0x3ebc_6af8_4b91_2394);
const C1: f64 = f64::from_bits(0x3f2e_bfce_50fa_c4f3);
const C2: f64 = f64::from_bits(0x3f96_2e42_ff0c_52d6);

/// `e^x` with glibc's bits (see the module docs); branch-free, so loops over it vectorise.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let xd = x as f64;
    // x·32/ln 2 = k + r, |r| ≤ 1/2, k rounded to nearest even.
    let kd = INV_LN2_N.mul_add(xd, SHIFT);
    let ki = kd.to_bits();
    let kd = kd - SHIFT;
    let r = INV_LN2_N.mul_add(xd, -kd);
    let s = f64::from_bits(TAB[(ki % 32) as usize].wrapping_add(ki << 47));
    let z = C0.mul_add(r, C1);
    let r2 = r * r;
    let y = C2.mul_add(r, 1.0);
    let y = z.mul_add(r2, y) * s;
    let normal = y as f32;
    // |x| ≥ 88 or NaN: infinity and NaN give x + x, overflow +inf, underflow +0, −inf 0; otherwise the
    // computation above holds (down to −103.97, where it rounds into the subnormals).
    let bits = x.to_bits();
    let special = (bits >> 20) & 0x7ff >= 0x42b;
    let big = if bits == 0xff80_0000 {
        0.0
    } else if (bits >> 20) & 0x7ff >= 0x7f8 {
        x + x
    } else if x > f32::from_bits(0x42b1_7217) {
        f32::INFINITY
    } else if x < f32::from_bits(0xc2cf_f1b4) {
        0.0
    } else {
        normal
    };
    if special {
        big
    } else {
        normal
    }
}

/// `e^x` of 16 values in place, each with [`exp`]'s bits: on AVX-512F CPUs eight doubles at a time with the
/// table held in registers (`vpermt2pd`, where the loop vectoriser's version of [`exp`] gathered from
/// memory: perf put a quarter of the GELU's time on the gather); elsewhere, or when a value needs
/// [`exp`]'s special cases (|x| ≥ 88, NaN, infinities), [`exp`] per value.
#[inline(always)]
pub fn exp16(t: &mut [f32; 16]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked above).
            if unsafe { avx512::exp16(t) } {
                return;
            }
        }
    }
    for v in t.iter_mut() {
        *v = exp(*v);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{C0, C1, C2, INV_LN2_N, SHIFT, TAB};
    use std::arch::x86_64::*;

    /// [`super::exp`] on eight doubles (`x` converted from f32), with the 32-entry table in four registers.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn exp8(xd: __m512d, tab: &[__m512d; 4]) -> __m512d {
        let kd = _mm512_fmadd_pd(_mm512_set1_pd(INV_LN2_N), xd, _mm512_set1_pd(SHIFT));
        let ki = _mm512_castpd_si512(kd);
        let kd = _mm512_sub_pd(kd, _mm512_set1_pd(SHIFT));
        let r = _mm512_fmsub_pd(_mm512_set1_pd(INV_LN2_N), xd, kd); // fma(INV, x, −kd)
        let idx = _mm512_and_si512(ki, _mm512_set1_epi64(31));
        // TAB[idx]: entries 0–15 from tab[0..2], 16–31 from tab[2..4] (index bit 3 picks the register of a
        // pair, bit 4 the pair).
        let low = _mm512_permutex2var_pd(tab[0], idx, tab[1]);
        let high = _mm512_permutex2var_pd(tab[2], idx, tab[3]);
        let upper = _mm512_test_epi64_mask(idx, _mm512_set1_epi64(16));
        let t = _mm512_mask_blend_pd(upper, low, high);
        let s = _mm512_castsi512_pd(_mm512_add_epi64(_mm512_castpd_si512(t), _mm512_slli_epi64::<47>(ki)));
        let z = _mm512_fmadd_pd(_mm512_set1_pd(C0), r, _mm512_set1_pd(C1));
        let r2 = _mm512_mul_pd(r, r);
        let y = _mm512_fmadd_pd(_mm512_set1_pd(C2), r, _mm512_set1_pd(1.0));
        _mm512_mul_pd(_mm512_fmadd_pd(z, r2, y), s)
    }

    /// `t ← e^t` unless a value needs the special cases: then `false`, `t` untouched.
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn exp16(t: &mut [f32; 16]) -> bool {
        // SAFETY: `t` holds 16 f32 (unaligned loads and stores); `TAB` 32 u64.
        unsafe {
            let x = _mm512_loadu_ps(t.as_ptr());
            let e = _mm512_and_si512(_mm512_srli_epi32::<20>(_mm512_castps_si512(x)), _mm512_set1_epi32(0x7ff));
            if _mm512_cmpge_epi32_mask(e, _mm512_set1_epi32(0x42b)) != 0 {
                return false;
            }
            let tp = TAB.as_ptr() as *const f64;
            let tab = [_mm512_loadu_pd(tp), _mm512_loadu_pd(tp.add(8)), _mm512_loadu_pd(tp.add(16)), _mm512_loadu_pd(tp.add(24))];
            let lo = _mm512_cvtps_pd(_mm512_castps512_ps256(x));
            let hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(x))));
            let (lo, hi) = (_mm512_cvtpd_ps(exp8(lo, &tab)), _mm512_cvtpd_ps(exp8(hi, &tab)));
            _mm256_storeu_ps(t.as_mut_ptr(), lo);
            _mm256_storeu_ps(t.as_mut_ptr().add(8), hi);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compares with libm's `expf` on the bit patterns `start, start + step, …` (FMA CPUs only).
    fn compare(step: u64) -> usize {
        let mut bad = 0;
        let mut b = 0u64;
        while b < 1 << 32 {
            let x = f32::from_bits(b as u32);
            let (got, want) = (exp(x), x.exp());
            if got.to_bits() != want.to_bits() && !(got.is_nan() && want.is_nan()) {
                if bad < 10 {
                    eprintln!("exp({x:e}) [{b:#010x}]: {got:e} vs libm {want:e}");
                }
                bad += 1;
            }
            b += step;
        }
        bad
    }

    fn fma_cpu() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("fma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    #[test]
    fn matches_libm_on_a_sample_and_at_the_edges() {
        if !fma_cpu() || !cfg!(all(target_os = "linux", target_env = "gnu")) {
            eprintln!("SKIPPED: libm's expf is glibc's FMA variant only on x86-64 Linux CPUs with FMA");
            return;
        }
        assert_eq!(compare(4099), 0);
        for x in [0.0f32, -0.0, 1.0, -1.0, 88.0, 88.72283, 88.72284, -87.0, -103.97, -103.98, -104.0, f32::INFINITY, f32::NEG_INFINITY] {
            assert_eq!(exp(x).to_bits(), x.exp().to_bits(), "exp({x})");
        }
        assert!(exp(f32::NAN).is_nan());
    }

    /// [`exp16`] equals [`exp`] bit for bit on every input (16 at a time; special values mixed in fall back).
    fn compare16(step: u64) -> usize {
        let mut bad = 0;
        let mut b = 0u64;
        let mut x = [0f32; 16];
        while b < 1 << 32 {
            for (i, v) in x.iter_mut().enumerate() {
                *v = f32::from_bits(((b + i as u64 * step) % (1 << 32)) as u32);
            }
            let mut t = x;
            exp16(&mut t);
            for (got, xi) in t.iter().zip(&x) {
                let want = exp(*xi);
                if got.to_bits() != want.to_bits() && !(got.is_nan() && want.is_nan()) {
                    bad += 1;
                }
            }
            b += 16 * step;
        }
        bad
    }

    #[test]
    fn exp16_has_the_bits_of_exp() {
        assert_eq!(compare16(4099), 0);
        // A block of ordinary values (the vector path) and one with a special value (the fallback).
        let mut t: [f32; 16] = std::array::from_fn(|i| i as f32 * 0.7 - 5.0);
        let want = t.map(exp);
        exp16(&mut t);
        assert_eq!(t.map(f32::to_bits), want.map(f32::to_bits));
        t[3] = 100.0;
        let want = t.map(exp);
        exp16(&mut t);
        assert_eq!(t.map(f32::to_bits), want.map(f32::to_bits));
    }

    /// [`exp16`] on all 2³² inputs; `cargo test -p polyflow-kernels --release -- --ignored`.
    #[test]
    #[ignore = "exhaustive: run on purpose"]
    fn exp16_has_the_bits_of_exp_on_every_input() {
        assert_eq!(compare16(1), 0);
    }

    /// All 2³² inputs (about a minute on one core); `cargo test -p polyflow-kernels --release -- --ignored`.
    #[test]
    #[ignore = "exhaustive: run on purpose"]
    fn matches_libm_on_every_input() {
        if !fma_cpu() {
            eprintln!("SKIPPED: no FMA");
            return;
        }
        assert_eq!(compare(1), 0);
    }
}
