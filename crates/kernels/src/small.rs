//! Small f32 products on one thread without packing: the attention's per-head products (ViT-Ti: `q·kᵀ`
//! `[65, 64]·[64, 65]`, `P·v` `[65, 65]·[65, 64]` and the four of the backward pass), thousands per step.
//!
//! [`sgemm`](crate::sgemm)'s blocked path packs B into panels of its 48- or 32-column tile and runs 65 rows as
//! 8 full tiles and a ragged one through a local buffer: at these shapes most of a product's time went to
//! packing, ragged tiles and padding (65 columns in two 48-column panels compute 96). Here:
//! - a row-major B is read in place; any other B (a transposed `kᵀ`, `vᵀ`, or general strides) is copied once into
//!   a row-major buffer of `k` rows padded to whole vectors (by 8 × 8 AVX blocks where its columns are contiguous);
//! - A is read in place at any strides (each step broadcasts one value per row: `Pᵀ` and `dSᵀ` need no copy);
//! - the columns are covered by one strip of up to five vectors (65 → 80, the last masked) or strips of four,
//!   the rows by tiles of 8, 8, 7, 6 or 4 rows for strips of 1–5 vectors, every tile's accumulators in registers,
//!   the last vector's loads and stores masked (nothing read or written outside the views).
//!
//! Every output element is `Σ_p a·b` accumulated by FMA in ascending `p` from zero, as the blocked path does
//! for a depth of at most `KC`: the same bits (unit test), so choosing this path never changes a result.

use crate::scratch::Scratch;
use crate::Mat;
use std::mem::MaybeUninit;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// The largest depth taken (the blocked path's `KC`: deeper products add blocks, other sums).
pub(crate) const MAX_K: usize = crate::sgemm::KC;
/// The largest `m · n` taken: the attention's products are 65 · 65; larger products amortise packing.
const MAX_MN: usize = 128 * 128;
/// The largest `m` or `n` taken (a long thin product would need a large buffer for a transposed B).
const MAX_SIDE: usize = 256;

/// Whether `c = a·b` (`m × n`, depth `k`, one thread, starting from zero) is taken by [`product`].
pub(crate) fn fits(m: usize, n: usize, k: usize) -> bool {
    k <= MAX_K && m * n <= MAX_MN && m <= MAX_SIDE && n <= MAX_SIDE && m > 0 && n > 0 && k > 0
}

/// `c[m × n] (row stride ldc) = a · b` on the calling thread, every value of the view written, none read.
///
/// # Safety
/// The CPU must support AVX-512F; the views must have been checked ([`crate::check_views`]) and
/// [`fits`] must hold.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn product(m: usize, n: usize, k: usize, a: Mat, b: Mat, c: &mut [MaybeUninit<f32>], ldc: usize) {
    debug_assert!(fits(m, n, k));
    let c = c.as_mut_ptr() as *mut f32;
    if b.cs == 1 {
        // SAFETY: the caller's contract: B's `k × n` view (row stride `b.rs`) is in bounds.
        unsafe { strips(m, n, k, &a, b.data.as_ptr(), b.rs, c, ldc) };
    } else {
        // `bt[p, j] = b[p, j]`, rows padded to whole vectors (the padding is never read: masked loads).
        let ld = n.next_multiple_of(16);
        let mut bt = Scratch::<f32>::take(k * ld);
        // SAFETY: AVX is part of AVX-512F (the caller's contract).
        unsafe { transpose_into(k, n, &b, &mut bt, ld) };
        // SAFETY: `bt` holds `k` rows of `ld ≥ n` values.
        unsafe { strips(m, n, k, &a, bt.as_ptr(), ld, c, ldc) };
    }
}

/// `bt[p·ld + j] = b[p, j]` for the `k × n` view `b`: 8 × 8 blocks through AVX registers where `b` is a
/// transposed matrix (`rs = 1`: each column of the view is contiguous), single values elsewhere. Moves bits only.
///
/// # Safety
/// The CPU must support AVX.
#[cfg(target_arch = "x86_64")]
unsafe fn transpose_into(k: usize, n: usize, b: &Mat, bt: &mut [f32], ld: usize) {
    let (k8, n8) = if b.rs == 1 { (k / 8 * 8, n / 8 * 8) } else { (0, 0) };
    for j0 in (0..n8).step_by(8) {
        for p0 in (0..k8).step_by(8) {
            // SAFETY: AVX (the caller's contract); the 8 columns `j0..j0 + 8` of the view hold
            // the 8 contiguous values `p0..p0 + 8` each (in bounds: checked views), and `bt`'s rows `p0..p0 + 8`
            // hold columns `j0..j0 + 8` (`ld ≥ n`).
            unsafe { block8(b.data[j0 * b.cs + p0..].as_ptr(), b.cs, bt[p0 * ld + j0..].as_mut_ptr(), ld) };
        }
        for p in k8..k {
            for j in j0..j0 + 8 {
                bt[p * ld + j] = b.data[p * b.rs + j * b.cs];
            }
        }
    }
    for j in n8..n {
        for p in 0..k {
            bt[p * ld + j] = b.data[p * b.rs + j * b.cs];
        }
    }
}

/// One 8 × 8 block: `dst[r·ld + c] = src[c·stride + r]` (eight rows of `src` of 8 values become eight columns).
///
/// # Safety
/// AVX; `src` rows `0..8` (8 values each, at `stride`) and `dst` rows `0..8` (8 values each, at `ld`) in bounds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn block8(src: *const f32, stride: usize, dst: *mut f32, ld: usize) {
    // SAFETY: the caller's contract.
    unsafe {
        let rows: [__m256; 8] = std::array::from_fn(|c| _mm256_loadu_ps(src.add(c * stride)));
        for (r, v) in crate::transpose::transpose8(rows).into_iter().enumerate() {
            _mm256_storeu_ps(dst.add(r * ld), v);
        }
    }
}

/// Column strips: one of up to five vectors when `n ≤ 80`, else four vectors (64 columns) at a time and the rest.
///
/// # Safety
/// As [`product`]; B's `k × n` values at `b + p·brs + j`.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn strips(m: usize, n: usize, k: usize, a: &Mat, b: *const f32, brs: usize, c: *mut f32, ldc: usize) {
    let width = if n <= 80 { n } else { 64 };
    let mut j0 = 0;
    while j0 < n {
        let w = width.min(n - j0);
        // SAFETY: the strip's columns `j0..j0 + w` lie inside both views.
        unsafe { strip(m, w, k, a, b.add(j0), brs, c.add(j0), ldc) };
        j0 += w;
    }
}

/// One strip of `w ≤ 80` columns: row tiles of [`rows_per_tile`] rows.
///
/// # Safety
/// As [`strips`], for the strip's columns.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn strip(m: usize, w: usize, k: usize, a: &Mat, b: *const f32, brs: usize, c: *mut f32, ldc: usize) {
    let v = w.div_ceil(16);
    let last = w - (v - 1) * 16;
    let mask: __mmask16 = if last == 16 { 0xffff } else { (1u16 << last) - 1 };
    let rt = rows_per_tile(v);
    let mut i0 = 0;
    while i0 < m {
        let r = rt.min(m - i0);
        let ap = a.data[i0 * a.rs..].as_ptr();
        let cp = c.wrapping_add(i0 * ldc);
        let t = Tile { k, a: ap, ars: a.rs, acs: a.cs, b, brs, mask, c: cp, ldc };
        // SAFETY: rows `i0..i0 + r` of A and C lie inside the views; the kernel runs on AVX-512F (caller).
        unsafe { tile_dispatch(r, v, t) };
        i0 += r;
    }
}

/// Rows of a tile of `v` vectors: at most 29 of the 32 `zmm` registers (`r·v` accumulators, `v` of B, one
/// broadcast).
fn rows_per_tile(v: usize) -> usize {
    match v {
        1 | 2 => 8,
        3 => 7,
        4 => 6,
        _ => 4,
    }
}

/// One register tile's operands: depth `k`; A element `(i, p)` at `a[i·ars + p·acs]`; B row `p` at `b + p·brs`
/// (the last vector's lanes outside `mask` neither read nor written); C at row stride `ldc`.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Tile {
    k: usize,
    a: *const f32,
    ars: usize,
    acs: usize,
    b: *const f32,
    brs: usize,
    mask: __mmask16,
    c: *mut f32,
    ldc: usize,
}

/// [`tile`] for `r` rows and `v` vectors (the const parameters of the register tile).
///
/// # Safety
/// As [`tile`].
#[cfg(target_arch = "x86_64")]
unsafe fn tile_dispatch(r: usize, v: usize, t: Tile) {
    macro_rules! rows {
        ($v:literal, $($r:literal)*) => {
            match r {
                // SAFETY: the caller's contract.
                $($r => unsafe { tile::<$r, $v>(t) },)*
                _ => unreachable!("small product: {r} rows of {} vectors", $v),
            }
        };
    }
    match v {
        1 => rows!(1, 1 2 3 4 5 6 7 8),
        2 => rows!(2, 1 2 3 4 5 6 7 8),
        3 => rows!(3, 1 2 3 4 5 6 7),
        4 => rows!(4, 1 2 3 4 5 6),
        5 => rows!(5, 1 2 3 4),
        _ => unreachable!("small product: a strip of {v} vectors"),
    }
}

/// The register tile: `c[R × (16·V)] = Σ_p A(0..R, p) · b[p, ·]` ([`Tile`]), accumulated by FMA in ascending `p`
/// from zero.
///
/// # Safety
/// The CPU must support AVX-512F; the `R` rows of A (depth `k`), the `k` rows of B and the `R` rows of C (the
/// columns of the strip, the last vector as masked) must be in bounds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile<const R: usize, const V: usize>(t: Tile) {
    let Tile { k, a, ars, acs, b, brs, mask, c, ldc } = t;
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    let (mut ap, mut bp) = (a, b);
    for _ in 0..k {
        // SAFETY (loads): B's row and A's `R` values of this step are in bounds (the caller's contract); the last
        // vector's masked-off lanes are not read.
        let bv: [__m512; V] = std::array::from_fn(|x| unsafe {
            if x + 1 == V {
                _mm512_maskz_loadu_ps(mask, bp.add(16 * x))
            } else {
                _mm512_loadu_ps(bp.add(16 * x))
            }
        });
        for (i, row) in acc.iter_mut().enumerate() {
            let s = _mm512_set1_ps(unsafe { *ap.add(i * ars) });
            for (x, o) in row.iter_mut().enumerate() {
                *o = _mm512_fmadd_ps(s, bv[x], *o);
            }
        }
        ap = ap.wrapping_add(acs);
        bp = bp.wrapping_add(brs);
    }
    for (i, row) in acc.iter().enumerate() {
        let ci = c.wrapping_add(i * ldc);
        for (x, o) in row.iter().enumerate() {
            // SAFETY: row `i` of C's strip is in bounds; the last vector is stored under `mask`.
            unsafe {
                if x + 1 == V {
                    _mm512_mask_storeu_ps(ci.add(16 * x), mask, *o)
                } else {
                    _mm512_storeu_ps(ci.add(16 * x), *o)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic matrix of awkward values (not exactly representable sums), `len` values.
    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len).map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 - 1001.0) / 97.0).collect()
    }

    /// Every element is the documented sum — FMA in ascending `p` from zero — computed here one element at a time,
    /// for row-major, transposed and generally strided operands, ragged rows and columns (one and several strips,
    /// a last vector of 1 to 16 lanes), and nothing of C outside its view is written.
    #[test]
    fn sums_are_the_documented_order_and_only_the_view_is_written() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            eprintln!("skipped: this CPU has no AVX-512F (the small-product path is not taken)");
            return;
        }
        let shapes =
            [(65, 65, 64), (65, 64, 65), (1, 1, 1), (7, 17, 3), (13, 80, 256), (9, 81, 5), (130, 100, 33), (3, 128, 2), (64, 33, 1)];
        for (si, &(m, n, k)) in shapes.iter().enumerate() {
            assert!(fits(m, n, k));
            let (sa, sb) = (m * k + 2 * (m + k), k * n + 2 * (k + n));
            let (a, b) = (values(3 * sa, si), values(3 * sb, si + 50));
            // (rows, cols, rs, cs) views: row-major with a longer stride, transposed, strided both ways.
            let views = |r: usize, c: usize| [(c + 3, 1), (1, r + 2), (2 * c + 1, 2)];
            for (ars, acs) in views(m, k) {
                for (brs, bcs) in views(k, n) {
                    let (am, bm) = (Mat { data: &a, rs: ars, cs: acs }, Mat { data: &b, rs: brs, cs: bcs });
                    let ldc = n + 5;
                    let mut c = vec![MaybeUninit::new(f32::NAN); m * ldc + 7];
                    crate::check_views(m, n, k, &am, &bm, &c, ldc);
                    // SAFETY: AVX-512F (checked above), the views checked, `fits` holds.
                    unsafe { product(m, n, k, am, bm, &mut c, ldc) };
                    for i in 0..m {
                        for j in 0..ldc {
                            // SAFETY: every value was initialised (NaN, or written by the product).
                            let got = unsafe { c[i * ldc + j].assume_init() };
                            if j >= n {
                                assert!(got.is_nan(), "{m}x{n}x{k}: wrote outside the view at [{i},{j}]");
                                continue;
                            }
                            let want = (0..k).fold(0.0f32, |s, p| a[i * ars + p * acs].mul_add(b[p * brs + j * bcs], s));
                            assert_eq!(got.to_bits(), want.to_bits(), "{m}x{n}x{k} a ({ars},{acs}) b ({brs},{bcs}) [{i},{j}]");
                        }
                    }
                    assert!(c[m * ldc..].iter().all(|v| unsafe { v.assume_init() }.is_nan()), "wrote past the last row");
                }
            }
        }
    }

    /// The path gives the bits of the blocked path (the one it replaces), at the attention's shapes and layouts:
    /// `q·kᵀ` out of the fused `q | k | v` rows, `P·v`, `Pᵀ·dO`.
    #[test]
    fn gives_the_bits_of_the_blocked_path_on_the_attention_shapes() {
        let Some(isa) = crate::sgemm::isa().filter(|_| std::arch::is_x86_feature_detected!("avx512f")) else {
            eprintln!("skipped: this CPU has no AVX-512F (the small-product path is not taken)");
            return;
        };
        let (n, hd, w) = (65, 64, 576);
        let qkv = values(n * w, 1);
        let pr = values(n * n, 2);
        let (q, kt, v) =
            (Mat { data: &qkv, rs: w, cs: 1 }, Mat { data: &qkv[192..], rs: 1, cs: w }, Mat { data: &qkv[384..], rs: w, cs: 1 });
        for (m, nn, k, a, b) in [(n, n, hd, q, kt), (n, hd, n, Mat::rows(&pr, n), v), (n, hd, n, Mat::t(&pr, n), v)] {
            let mut small = vec![MaybeUninit::new(0.0f32); m * nn];
            let mut blocked = vec![0.0f32; m * nn];
            // SAFETY: AVX-512F (above); views in bounds (checked by `products`, and here).
            unsafe {
                crate::check_views(m, nn, k, &a, &b, &small, nn);
                product(m, nn, k, a, b, &mut small, nn);
                // `parallel`: the blocked path (the small one is taken on one thread only).
                crate::sgemm::products(isa, m, nn, k, a, b, crate::as_uninit(&mut blocked), nn, crate::Init::Zero, true);
            }
            for (s, b) in small.iter().zip(&blocked) {
                assert_eq!(unsafe { s.assume_init() }.to_bits(), b.to_bits(), "{m}x{nn}x{k}");
            }
        }
    }
}
