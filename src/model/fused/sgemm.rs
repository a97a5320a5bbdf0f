//! Single-precision matrix product with register-blocked micro-kernels for x86-64: a 12 × 32 tile on
//! AVX-512F (24 `zmm` accumulators) and a 6 × 16 tile on AVX2 + FMA (12 `ymm` accumulators).
//!
//! Why not only the `gemm` crate: its AVX2 kernel (`fma::f32::x2x6`) spills accumulators to the stack,
//! and measured in the `polyflow` binary it ran at 72–78 GFLOP/s on 2 threads against 136–141 GFLOP/s
//! for the same call in a small example program (the spill stores stall on the stack's placement); its
//! AVX-512 kernels were slower still (59 vs 80 GFLOP/s on one thread). Here: BLIS-style packing of B into
//! `KC × NR` panels, A read in place when row-major (packed into `MR × KC` panels otherwise), and
//! micro-kernels whose accumulators never leave registers.
//!
//! Every output element is `Σ_p a·b` accumulated by FMA in ascending `p` from zero within blocks of `KC`,
//! blocks added in order — the same in both kernels and for every thread count (threads split rows), so
//! AVX-512 and AVX2 machines give bit-identical products (unit test).

use super::kernels::Mat;
use rayon::prelude::*;
use std::sync::OnceLock;

/// Depth of one packed block.
const KC: usize = 256;
/// Rows per A block (one parallel task; a multiple of both kernels' `MR`).
const MC: usize = 96;
/// The largest register tile (`MR · NR`), for the ragged-tile buffer.
const TILE_MAX: usize = 12 * 32;

/// `c[MR × NR] (+)= Σ_p A(0..MR, p) · b[p, 0..NR]`; see [`kernel_avx512`] for the arguments.
type Kernel = unsafe fn(usize, *const f32, usize, usize, bool, *const f32, *mut f32, usize, bool);

/// A micro-kernel and its register tile.
#[derive(Clone, Copy)]
pub struct Isa {
    /// Rows of the register tile.
    mr: usize,
    /// Columns of the register tile.
    nr: usize,
    kernel: Kernel,
    /// Name for reports.
    pub name: &'static str,
}

/// The AVX-512F kernel (12 × 32).
#[cfg(target_arch = "x86_64")]
const AVX512: Isa = Isa { mr: 12, nr: 32, kernel: kernel_avx512, name: "AVX-512" };
/// The AVX2 + FMA kernel (6 × 16).
#[cfg(target_arch = "x86_64")]
const AVX2: Isa = Isa { mr: 6, nr: 16, kernel: kernel_avx2, name: "AVX2+FMA" };

/// The kernel this CPU runs, if any: AVX-512F, else AVX2 + FMA (`POLYFLOW_SGEMM=avx2` forces the
/// latter, for comparisons).
pub fn isa() -> Option<Isa> {
    static ISA: OnceLock<Option<Isa>> = OnceLock::new();
    *ISA.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            let force_avx2 = std::env::var("POLYFLOW_SGEMM").is_ok_and(|v| v == "avx2");
            if std::arch::is_x86_feature_detected!("avx512f") && !force_avx2 {
                return Some(AVX512);
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                return Some(AVX2);
            }
        }
        None
    })
}

/// Whether this CPU runs one of the kernels.
pub fn available() -> bool {
    isa().is_some()
}

/// `c[m, n] (row stride ldc) (+)= a · b`, as [`super::kernels::matmul`]; requires [`available`].
#[allow(clippy::too_many_arguments)]
pub fn matmul(m: usize, n: usize, k: usize, a: Mat, b: Mat, c: &mut [f32], ldc: usize, acc: bool, parallel: bool) {
    let isa = isa().expect("sgemm::matmul needs AVX2+FMA or AVX-512F");
    matmul_with(isa, m, n, k, a, b, c, ldc, acc, parallel)
}

/// [`matmul`] with a given kernel (the CPU must support it).
#[allow(clippy::too_many_arguments)]
fn matmul_with(isa: Isa, m: usize, n: usize, k: usize, a: Mat, b: Mat, c: &mut [f32], ldc: usize, acc: bool, parallel: bool) {
    super::kernels::check_views(m, n, k, &a, &b, c, ldc);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !acc {
            for i in 0..m {
                c[i * ldc..i * ldc + n].fill(0.0);
            }
        }
        return;
    }
    let (mr, nr) = (isa.mr, isa.nr);
    let npad = n.div_ceil(nr) * nr;
    let mut bp = vec![0.0f32; KC.min(k) * npad];
    let blocks = m.div_ceil(MC);
    for (pi, p0) in (0..k).step_by(KC).enumerate() {
        let kc = KC.min(k - p0);
        pack_b(&b, p0, kc, n, nr, &mut bp);
        let first = pi == 0 && !acc;
        let run = |(bi, cblk): (usize, &mut [f32])| {
            if bi >= blocks {
                return;
            }
            let i0 = bi * MC;
            let mc = MC.min(m - i0);
            if a.cs == 1 {
                // Row-major A is read in place (each k step broadcasts one value of MR rows); only a
                // ragged last panel is packed (zero rows must not be read past the matrix).
                let full = mc / mr * mr;
                let ablk = Mat { data: &a.data[i0 * a.rs + p0..], rs: a.rs, cs: 1 };
                let mut ap = vec![0.0f32; (mc - full).div_ceil(mr) * mr * kc];
                pack_a(&a, i0 + full, mc - full, p0, kc, mr, &mut ap);
                block(isa, mc, n, kc, Panels { direct: Some((ablk, full)), packed: &ap }, &bp, cblk, ldc, first);
            } else {
                let mut ap = vec![0.0f32; mc.div_ceil(mr) * mr * kc];
                pack_a(&a, i0, mc, p0, kc, mr, &mut ap);
                block(isa, mc, n, kc, Panels { direct: None, packed: &ap }, &bp, cblk, ldc, first);
            }
        };
        if parallel && blocks > 1 {
            c.par_chunks_mut(MC * ldc).enumerate().for_each(run);
        } else {
            c.chunks_mut(MC * ldc).enumerate().for_each(run);
        }
    }
}

/// Packs `b[p0..p0+kc, 0..n]` as panels of `kc × NR` (zero-padded columns).
fn pack_b(b: &Mat, p0: usize, kc: usize, n: usize, big_nr: usize, out: &mut [f32]) {
    for (jp, panel) in out.chunks_mut(kc * big_nr).enumerate().take(n.div_ceil(big_nr)) {
        let j0 = jp * big_nr;
        let nr = big_nr.min(n - j0);
        for p in 0..kc {
            let row = &mut panel[p * big_nr..p * big_nr + big_nr];
            let base = (p0 + p) * b.rs + j0 * b.cs;
            if b.cs == 1 {
                row[..nr].copy_from_slice(&b.data[base..base + nr]);
            } else {
                for (j, v) in row[..nr].iter_mut().enumerate() {
                    *v = b.data[base + j * b.cs];
                }
            }
            row[nr..].fill(0.0);
        }
    }
}

/// Packs `a[i0..i0+mc, p0..p0+kc]` as panels of `kc × MR` (k-major, zero-padded rows). Reads along
/// whichever of `a`'s dimensions is contiguous (a transposed operand, `rs = 1`, is copied `MR` at a time).
fn pack_a(a: &Mat, i0: usize, mc: usize, p0: usize, kc: usize, big_mr: usize, out: &mut [f32]) {
    for (ip, panel) in out.chunks_mut(kc * big_mr).enumerate() {
        let r0 = i0 + ip * big_mr;
        let mr = big_mr.min(i0 + mc - r0);
        if a.rs == 1 {
            for (p, dst) in panel.chunks_mut(big_mr).enumerate() {
                let base = r0 + (p0 + p) * a.cs;
                dst[..mr].copy_from_slice(&a.data[base..base + mr]);
                dst[mr..].fill(0.0);
            }
        } else {
            for i in 0..mr {
                let base = (r0 + i) * a.rs + p0 * a.cs;
                let src = &a.data[base..base + (kc - 1) * a.cs + 1];
                for (dst, v) in panel[i..].iter_mut().step_by(big_mr).zip(src.iter().step_by(a.cs)) {
                    *dst = *v;
                }
            }
            for i in mr..big_mr {
                panel[i..].iter_mut().step_by(big_mr).for_each(|v| *v = 0.0);
            }
        }
    }
}

/// The A operand of one block: its first `full` rows read in place (row-major, `cs = 1`), the rest packed.
struct Panels<'a> {
    direct: Option<(Mat<'a>, usize)>,
    packed: &'a [f32],
}

/// One A block times all packed B panels into `c` (rows of this block, row stride `ldc`). Full tiles are
/// written by the kernel straight into `c`; ragged ones go through a tile buffer.
#[allow(clippy::too_many_arguments)]
fn block(isa: Isa, mc: usize, n: usize, kc: usize, a: Panels, bp: &[f32], c: &mut [f32], ldc: usize, first: bool) {
    let (big_mr, big_nr) = (isa.mr, isa.nr);
    let mut tile = [0.0f32; TILE_MAX];
    let full_rows = a.direct.map(|d| d.1).unwrap_or(0);
    for (jp, bpanel) in bp.chunks(kc * big_nr).enumerate().take(n.div_ceil(big_nr)) {
        let j0 = jp * big_nr;
        let nr = big_nr.min(n - j0);
        for i0 in (0..mc).step_by(big_mr) {
            let mr = big_mr.min(mc - i0);
            // (pointer to A(i0, 0), row stride, k stride, read in place)
            let (ap, ars, acs, direct_a) = match a.direct {
                Some((d, full)) if i0 < full => (d.data[i0 * d.rs..].as_ptr(), d.rs, 1, true),
                _ => (a.packed[(i0 - full_rows) / big_mr * kc * big_mr..].as_ptr(), 1, big_mr, false),
            };
            if mr == big_mr && nr == big_nr {
                let dst = &mut c[i0 * ldc + j0..(i0 + big_mr - 1) * ldc + j0 + big_nr];
                // SAFETY: the CPU supports `isa` (checked by `isa()`); A holds MR rows of kc values at the
                // given strides (the views were sliced from bounds-checked operands), the B panel kc·NR
                // values, and `dst` the MR × NR tile at row stride `ldc`.
                unsafe { (isa.kernel)(kc, ap, ars, acs, direct_a, bpanel.as_ptr(), dst.as_mut_ptr(), ldc, !first) };
            } else {
                // SAFETY: as above, into the local MR × NR tile.
                unsafe { (isa.kernel)(kc, ap, ars, acs, direct_a, bpanel.as_ptr(), tile.as_mut_ptr(), big_nr, false) };
                for i in 0..mr {
                    let row = &mut c[(i0 + i) * ldc + j0..(i0 + i) * ldc + j0 + nr];
                    let t = &tile[i * big_nr..i * big_nr + nr];
                    if first {
                        row.copy_from_slice(t);
                    } else {
                        for (o, v) in row.iter_mut().zip(t) {
                            *o += v;
                        }
                    }
                }
            }
        }
    }
}

/// Defines a micro-kernel `c[MR × NR] (+)= Σ_p A(0..MR, p) · b[p, 0..NR]` (two vectors per row, `NR = 2 ·
/// lanes`): A element `(i, p)` at `a[i·ars + p·acs]` (packed panels: `ars = 1, acs = MR`; row-major in
/// place, `direct`: `ars = rs, acs = 1`), B a packed `kc × NR` panel, C at row stride `ldc`, added to when
/// `acc`. Written out row by row so the accumulators stay in registers at every optimisation level.
macro_rules! micro_kernel {
    ($name:ident, $feature:literal, $lanes:literal, $zero:ident, $load:ident, $splat:ident, $fma:ident, $add:ident,
     $store:ident, $mr:literal, $(($r0:ident, $r1:ident, $i:literal)),*) => {
        #[doc = concat!("The ", $feature, " micro-kernel (", stringify!($mr), " rows × ", stringify!($lanes), "·2 columns); see `micro_kernel!`.")]
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feature)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $name(kc: usize, a: *const f32, ars: usize, acs: usize, direct: bool, b: *const f32, c: *mut f32, ldc: usize, acc: bool) {
            use std::arch::x86_64::*;
            const NR: usize = 2 * $lanes;
            $(let mut $r0 = $zero(); let mut $r1 = $zero();)*
            let mut bp = b;
            // Two loops on purpose: one with row pointers (A in place) and one with constant offsets into a
            // packed panel. A single loop with MR advancing row pointers measured 7 % slower training and
            // 7 % lower matmul peak (three alternating bench-model pairs).
            if direct {
                // Row pointers of the MR rows, advanced one value per k step.
                let rows: [*const f32; $mr] = std::array::from_fn(|i| a.add(i * ars));
                for p in 0..kc {
                    let b0 = $load(bp);
                    let b1 = $load(bp.add($lanes));
                    $(
                        let av = $splat(*rows[$i].add(p));
                        $r0 = $fma(av, b0, $r0);
                        $r1 = $fma(av, b1, $r1);
                    )*
                    bp = bp.add(NR);
                }
            } else {
                let mut ap = a;
                for _ in 0..kc {
                    let b0 = $load(bp);
                    let b1 = $load(bp.add($lanes));
                    $(
                        let av = $splat(*ap.add($i));
                        $r0 = $fma(av, b0, $r0);
                        $r1 = $fma(av, b1, $r1);
                    )*
                    ap = ap.add(acs);
                    bp = bp.add(NR);
                }
            }
            $(
                let (p0, p1) = (c.add($i * ldc), c.add($i * ldc + $lanes));
                if acc {
                    $store(p0, $add($load(p0), $r0));
                    $store(p1, $add($load(p1), $r1));
                } else {
                    $store(p0, $r0);
                    $store(p1, $r1);
                }
            )*
        }
    };
}

micro_kernel!(
    kernel_avx512,
    "avx512f",
    16,
    _mm512_setzero_ps,
    _mm512_loadu_ps,
    _mm512_set1_ps,
    _mm512_fmadd_ps,
    _mm512_add_ps,
    _mm512_storeu_ps,
    12,
    (c00, c01, 0),
    (c10, c11, 1),
    (c20, c21, 2),
    (c30, c31, 3),
    (c40, c41, 4),
    (c50, c51, 5),
    (c60, c61, 6),
    (c70, c71, 7),
    (c80, c81, 8),
    (c90, c91, 9),
    (ca0, ca1, 10),
    (cb0, cb1, 11)
);

micro_kernel!(
    kernel_avx2,
    "avx2,fma",
    8,
    _mm256_setzero_ps,
    _mm256_loadu_ps,
    _mm256_set1_ps,
    _mm256_fmadd_ps,
    _mm256_add_ps,
    _mm256_storeu_ps,
    6,
    (c00, c01, 0),
    (c10, c11, 1),
    (c20, c21, 2),
    (c30, c31, 3),
    (c40, c41, 4),
    (c50, c51, 5)
);

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernels this CPU can run.
    fn kernels() -> Vec<Isa> {
        let mut v = vec![];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                v.push(AVX512);
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                v.push(AVX2);
            }
        }
        v
    }

    #[test]
    fn both_kernels_give_bit_identical_products() {
        let ks = kernels();
        if ks.len() < 2 {
            eprintln!("SKIPPED: this CPU lacks AVX-512F (only one kernel to compare)");
            return;
        }
        let (m, n, k) = (101, 77, 600);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 1013) as f32 / 487.0 - 1.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 104729) % 1009) as f32 / 511.0 - 1.0).collect();
        for (ta, acc) in [(false, false), (true, true)] {
            let am = if ta { Mat::t(&a, m) } else { Mat::rows(&a, k) };
            let run = |isa: Isa| {
                let mut c: Vec<f32> = (0..m * n).map(|i| (i % 3) as f32).collect();
                matmul_with(isa, m, n, k, am, Mat::rows(&b, n), &mut c, n, acc, true);
                c.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            };
            assert!(run(ks[0]) == run(ks[1]), "{} and {} differ (transposed A: {ta})", ks[0].name, ks[1].name);
        }
    }

    #[test]
    fn matches_naive_on_ragged_shapes_strides_and_accumulation() {
        let ks = kernels();
        if ks.is_empty() {
            eprintln!("SKIPPED: no AVX2+FMA on this CPU");
            return;
        }
        for isa in ks {
            for &(m, n, k, ta, tb, acc, par) in &[
                (1, 1, 1, false, false, false, false),
                (13, 33, 7, false, false, true, false),
                (200, 70, 300, true, false, false, true),
                (97, 65, 513, false, true, true, true),
                (12, 32, 256, true, true, false, true),
                (24, 64, 40, false, false, true, true),
            ] {
                let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 113) as f32 / 56.0 - 1.0).collect();
                let b: Vec<f32> = (0..k * n).map(|i| ((i * 104729) % 127) as f32 / 63.0 - 1.0).collect();
                let am = if ta { Mat::t(&a, m) } else { Mat::rows(&a, k) };
                let bm = if tb { Mat::t(&b, k) } else { Mat::rows(&b, n) };
                let ldc = n + 3;
                let mut c: Vec<f32> = (0..m * ldc).map(|i| (i % 5) as f32).collect();
                let c0 = c.clone();
                matmul_with(isa, m, n, k, am, bm, &mut c, ldc, acc, par);
                for i in 0..m {
                    for j in 0..n {
                        let want: f32 = (0..k).map(|p| am.data[i * am.rs + p * am.cs] * bm.data[p * bm.rs + j * bm.cs]).sum::<f32>()
                            + if acc { c0[i * ldc + j] } else { 0.0 };
                        let got = c[i * ldc + j];
                        assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()), "{}: ({m},{n},{k}) [{i},{j}] {got} vs {want}", isa.name);
                    }
                    // Padding columns of each row are left alone.
                    assert_eq!(&c[i * ldc + n..i * ldc + ldc], &c0[i * ldc + n..i * ldc + ldc]);
                }
            }
        }
    }
}
