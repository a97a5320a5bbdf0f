//! Single-precision matrix product with an AVX-512 micro-kernel (x86-64 CPUs that have AVX-512F).
//!
//! Why not only the `gemm` crate: its AVX2 kernel (`fma::f32::x2x6`) spills accumulators to the stack,
//! and measured in the `polyflow` binary it ran at 72–78 GFLOP/s on 2 threads against 136–141 GFLOP/s
//! for the same call in a small example program (the spill stores stall on the stack's placement); its
//! AVX-512 kernels were slower still (59 vs 80 GFLOP/s on one thread). Here: BLIS-style packing into
//! `MR × KC` and `KC × NR` panels and a 12 × 32 register tile (24 `zmm` accumulators, no spills).
//!
//! The k-loop of every output element runs in the same order whatever the thread count (threads split
//! rows), so results are deterministic on a given machine.

use super::kernels::Mat;
use rayon::prelude::*;

/// Rows of the register tile.
const MR: usize = 12;
/// Columns of the register tile (two 16-lane vectors).
const NR: usize = 32;
/// Depth of one packed block.
const KC: usize = 256;
/// Rows per packed A block (one parallel task).
const MC: usize = 96;

/// Whether this CPU runs the AVX-512 kernel.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `c[m, n] (row stride ldc) (+)= a · b`, as [`super::kernels::matmul`]; requires [`available`].
#[allow(clippy::too_many_arguments)]
pub fn matmul(m: usize, n: usize, k: usize, a: Mat, b: Mat, c: &mut [f32], ldc: usize, acc: bool, parallel: bool) {
    assert!(available(), "sgemm::matmul needs AVX-512F");
    if k == 0 {
        if !acc {
            for i in 0..m {
                c[i * ldc..i * ldc + n].fill(0.0);
            }
        }
        return;
    }
    let npad = n.div_ceil(NR) * NR;
    let mut bp = vec![0.0f32; KC.min(k) * npad];
    let blocks = m.div_ceil(MC);
    for (pi, p0) in (0..k).step_by(KC).enumerate() {
        let kc = KC.min(k - p0);
        pack_b(&b, p0, kc, n, &mut bp);
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
                let full = mc / MR * MR;
                let ablk = Mat { data: &a.data[i0 * a.rs + p0..], rs: a.rs, cs: 1 };
                let mut ap = vec![0.0f32; (mc - full).div_ceil(MR) * MR * kc];
                pack_a(&a, i0 + full, mc - full, p0, kc, &mut ap);
                block(mc, n, kc, Panels { direct: Some((ablk, full)), packed: &ap }, &bp, cblk, ldc, first);
            } else {
                let mut ap = vec![0.0f32; mc.div_ceil(MR) * MR * kc];
                pack_a(&a, i0, mc, p0, kc, &mut ap);
                block(mc, n, kc, Panels { direct: None, packed: &ap }, &bp, cblk, ldc, first);
            }
        };
        if parallel && blocks > 1 {
            c.par_chunks_mut(MC * ldc).enumerate().for_each(run);
        } else {
            c.chunks_mut(MC * ldc).enumerate().for_each(run);
        }
    }
}

/// Packs `b[p0..p0+kc, 0..n]` as `n/NR` panels of `kc × NR` (zero-padded columns).
fn pack_b(b: &Mat, p0: usize, kc: usize, n: usize, out: &mut [f32]) {
    for (jp, panel) in out.chunks_mut(kc * NR).enumerate().take(n.div_ceil(NR)) {
        let j0 = jp * NR;
        let nr = NR.min(n - j0);
        for p in 0..kc {
            let row = &mut panel[p * NR..p * NR + NR];
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
fn pack_a(a: &Mat, i0: usize, mc: usize, p0: usize, kc: usize, out: &mut [f32]) {
    for (ip, panel) in out.chunks_mut(kc * MR).enumerate() {
        let r0 = i0 + ip * MR;
        let mr = MR.min(i0 + mc - r0);
        if a.rs == 1 {
            for (p, dst) in panel.chunks_mut(MR).enumerate() {
                let base = r0 + (p0 + p) * a.cs;
                dst[..mr].copy_from_slice(&a.data[base..base + mr]);
                dst[mr..].fill(0.0);
            }
        } else {
            for i in 0..mr {
                let base = (r0 + i) * a.rs + p0 * a.cs;
                let src = &a.data[base..base + (kc - 1) * a.cs + 1];
                for (dst, v) in panel[i..].iter_mut().step_by(MR).zip(src.iter().step_by(a.cs)) {
                    *dst = *v;
                }
            }
            for i in mr..MR {
                panel[i..].iter_mut().step_by(MR).for_each(|v| *v = 0.0);
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
fn block(mc: usize, n: usize, kc: usize, a: Panels, bp: &[f32], c: &mut [f32], ldc: usize, first: bool) {
    let mut tile = [0.0f32; MR * NR];
    let full_rows = a.direct.map(|d| d.1).unwrap_or(0);
    for (jp, bpanel) in bp.chunks(kc * NR).enumerate().take(n.div_ceil(NR)) {
        let j0 = jp * NR;
        let nr = NR.min(n - j0);
        for i0 in (0..mc).step_by(MR) {
            let mr = MR.min(mc - i0);
            // (pointer to A(i0, 0), row stride, k stride, read in place)
            let (ap, ars, acs, direct_a) = match a.direct {
                Some((d, full)) if i0 < full => (d.data[i0 * d.rs..].as_ptr(), d.rs, 1, true),
                _ => (a.packed[(i0 - full_rows) / MR * kc * MR..].as_ptr(), 1, MR, false),
            };
            if mr == MR && nr == NR {
                let dst = &mut c[i0 * ldc + j0..(i0 + MR - 1) * ldc + j0 + NR];
                // SAFETY: `available()` was asserted by `matmul`; A holds MR rows of kc values at the
                // given strides (bounds: the views were sliced from checked operands), the B panel kc·NR
                // values, and `dst` the MR × NR tile at row stride `ldc`.
                unsafe { kernel(kc, ap, ars, acs, direct_a, bpanel.as_ptr(), dst.as_mut_ptr(), ldc, !first) };
            } else {
                // SAFETY: as above, into the local MR × NR tile.
                unsafe { kernel(kc, ap, ars, acs, direct_a, bpanel.as_ptr(), tile.as_mut_ptr(), NR, false) };
                for i in 0..mr {
                    let row = &mut c[(i0 + i) * ldc + j0..(i0 + i) * ldc + j0 + nr];
                    let t = &tile[i * NR..i * NR + nr];
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

/// `c[MR × NR] (+)= Σ_p A(0..MR, p) · b[p, 0..NR]`: A element `(i, p)` at `a[i·ars + p·acs]` (packed panels:
/// `ars = 1, acs = MR`; row-major in place: `ars = rs, acs = 1`), B a packed `kc × NR` panel, C at row
/// stride `ldc`, added to when `acc`. Written out row by row (a macro) so the 24 accumulators stay in
/// registers at every optimisation level.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel(kc: usize, a: *const f32, ars: usize, acs: usize, direct: bool, b: *const f32, c: *mut f32, ldc: usize, acc: bool) {
    use std::arch::x86_64::*;
    macro_rules! tile {
        ($(($r0:ident, $r1:ident, $i:expr)),*) => {{
            $(let mut $r0 = _mm512_setzero_ps(); let mut $r1 = _mm512_setzero_ps();)*
            let mut bp = b;
            if direct {
                // Row pointers of the MR rows, advanced one value per k step.
                let rows: [*const f32; MR] = std::array::from_fn(|i| a.add(i * ars));
                for p in 0..kc {
                    let b0 = _mm512_loadu_ps(bp);
                    let b1 = _mm512_loadu_ps(bp.add(16));
                    $(
                        let av = _mm512_set1_ps(*rows[$i].add(p));
                        $r0 = _mm512_fmadd_ps(av, b0, $r0);
                        $r1 = _mm512_fmadd_ps(av, b1, $r1);
                    )*
                    bp = bp.add(NR);
                }
            } else {
                let mut ap = a;
                for _ in 0..kc {
                    let b0 = _mm512_loadu_ps(bp);
                    let b1 = _mm512_loadu_ps(bp.add(16));
                    $(
                        let av = _mm512_set1_ps(*ap.add($i));
                        $r0 = _mm512_fmadd_ps(av, b0, $r0);
                        $r1 = _mm512_fmadd_ps(av, b1, $r1);
                    )*
                    ap = ap.add(acs);
                    bp = bp.add(NR);
                }
            }
            $(
                let (p0, p1) = (c.add($i * ldc), c.add($i * ldc + 16));
                if acc {
                    _mm512_storeu_ps(p0, _mm512_add_ps(_mm512_loadu_ps(p0), $r0));
                    _mm512_storeu_ps(p1, _mm512_add_ps(_mm512_loadu_ps(p1), $r1));
                } else {
                    _mm512_storeu_ps(p0, $r0);
                    _mm512_storeu_ps(p1, $r1);
                }
            )*
        }};
    }
    tile!(
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
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel(_: usize, _: *const f32, _: usize, _: usize, _: bool, _: *const f32, _: *mut f32, _: usize, _: bool) {
    unreachable!("sgemm kernel needs x86-64 AVX-512")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_naive_on_ragged_shapes_strides_and_accumulation() {
        if !available() {
            eprintln!("SKIPPED: no AVX-512F on this CPU");
            return;
        }
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
            matmul(m, n, k, am, bm, &mut c, ldc, acc, par);
            for i in 0..m {
                for j in 0..n {
                    let want: f32 = (0..k).map(|p| am.data[i * am.rs + p * am.cs] * bm.data[p * bm.rs + j * bm.cs]).sum::<f32>()
                        + if acc { c0[i * ldc + j] } else { 0.0 };
                    let got = c[i * ldc + j];
                    assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()), "({m},{n},{k}) [{i},{j}] {got} vs {want}");
                }
                // Padding columns of each row are left alone.
                assert_eq!(&c[i * ldc + n..i * ldc + ldc], &c0[i * ldc + n..i * ldc + ldc]);
            }
        }
    }
}
