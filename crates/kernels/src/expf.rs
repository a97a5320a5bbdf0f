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
