//! Matrix products on bf16 operands with f32 accumulation: `precision = "bf16"` on the CPU.
//!
//! Both operands are rounded to bf16 (round to nearest even; subnormals to signed zero, as the hardware
//! dot product treats them), products of pairs are accumulated in f32, and the result is f32 — what
//! PyTorch's CPU autocast does for `linear` and `matmul`. On CPUs with AVX512-BF16 the micro-kernel is
//! `vdpbf16ps` (a 12 × 32 tile, 24 `zmm` accumulators, two bf16 products per lane and instruction: twice the
//! multiply-adds of an f32 FMA); elsewhere an emulation computes the same sums with f32 FMAs. On CPUs with
//! AMX-BF16 (Intel Xeon from Sapphire Rapids on) the kernel is AMX's `tdpbf16ps` on 32 × 32 tiles (`crate::amx`),
//! whose sums round differently: there, products differ from the other kernels' in their last bits (still
//! deterministic and independent of the thread count; `POLYFLOW_BF16=avx512` gives the bits of other machines).
//!
//! Order of the sums (every kernel but AMX), for every output element: blocks of 256 values of `k`, each accumulated from zero
//! pair by pair in ascending order, and within a pair `(2q, 2q+1)` the odd product first, then the even one
//! (the order `vdpbf16ps` documents; both products are exact in f32, so each step is one rounding). Blocks
//! are added to the output in order. The emulation follows this order, so it gives the native kernel's bits
//! unless a partial sum is subnormal (below 1.2e-38), which the hardware flushes to zero and the emulation
//! keeps (unit test: bit-identical on random data). Results do not depend on the thread count (threads
//! split rows).

use crate::scratch::Scratch;
use crate::{Init, Mat};
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::sync::OnceLock;

// A transposed A is packed as `u32` pairs `(hi << 16) | lo` and read by the kernels as two `u16` in memory
// order (`lo` first): a little-endian layout.
#[cfg(target_endian = "big")]
compile_error!("polyflow-kernels' bf16 packing assumes a little-endian target");

/// Depth of one block (even: pairs never straddle blocks). The same as the f32 kernels'.
const KC: usize = 256;
/// Rows per parallel task (a multiple of [`MR`]). 48 rows of converted A at the full depth (24 KB) and a B
/// panel (16 KB) stay in a 48 KB L1 together; 96 rows did not (as [`crate::sgemm`]'s row block; no effect
/// on the bits).
const MC: usize = 48;
/// Bytes of packed B that one group of `k` blocks may span (see `matmul_init`): 8 MiB, a quarter of the
/// 32 MiB L3 of the Zen 5 it was chosen on (2, 4, 8 and 32 MiB measured; BENCHMARKS.md). No effect on the bits.
const B_GROUP: usize = 8 << 20;
/// Rows per parallel task for the AMX kernel (a multiple of its 32-row tile; 64 rows of A at the full depth are
/// 32 KB).
const MC_AMX: usize = 64;
/// Rows of the register tile.
const MR: usize = 12;
/// Columns of the register tile (two `zmm` of 16 lanes).
const NR: usize = 32;

/// `f32` → bf16 bits: round to nearest even, NaN stays a (quiet) NaN, subnormals become signed zero — the
/// bits `vcvtne2ps2bf16` gives. Written without branches so that conversion loops vectorise.
#[inline]
pub fn to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    let abs = b & 0x7fff_ffff;
    let rounded = b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16;
    let nan = (b >> 16) | 0x0040;
    let zero = (b >> 16) & 0x8000;
    let r = if abs > 0x7f80_0000 {
        nan
    } else if abs < 0x0080_0000 {
        zero
    } else {
        rounded
    };
    r as u16
}

/// bf16 bits → `f32` (exact).
#[inline]
pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

mod sealed {
    /// Keeps [`super::Elem`] to the two kinds of values the kernels pack.
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for u16 {}
}

/// Values an operand of a bf16 product may hold: `f32` (rounded to bf16 where it is packed) or bf16 bits
/// (`u16`, used as they are: an operand converted once and used by several products, as autocast keeps a
/// bf16 copy). A product gives the same bits for an operand and for its bf16 bits ([`to_bf16`]).
pub trait Elem: Copy + Sync + Send + sealed::Sealed + 'static {
    /// The bf16 bits of one value.
    fn bits(self) -> u16;
    /// `dst[..src.len()]` = the bits of `src`.
    fn to_bits(src: &[Self], dst: &mut [u16]);
    /// `out[j] = (bits(r1[j]) << 16) | bits(r0[j])` (high half zero without `r1`).
    fn pairs(r0: &[Self], r1: Option<&[Self]>, out: &mut [u32]);
    /// The view as `f32` values, when it holds them (f32 products take no bf16 bits).
    fn as_f32<'a>(m: Mat<'a, Self>) -> Option<Mat<'a, f32>>;
}

impl Elem for f32 {
    fn bits(self) -> u16 {
        to_bf16(self)
    }
    fn to_bits(src: &[f32], dst: &mut [u16]) {
        convert(src, dst)
    }
    fn pairs(r0: &[f32], r1: Option<&[f32]>, out: &mut [u32]) {
        interleave(r0, r1, out)
    }
    fn as_f32<'a>(m: Mat<'a, f32>) -> Option<Mat<'a, f32>> {
        Some(m)
    }
}

impl Elem for u16 {
    fn bits(self) -> u16 {
        self
    }
    fn to_bits(src: &[u16], dst: &mut [u16]) {
        dst[..src.len()].copy_from_slice(src)
    }
    fn pairs(r0: &[u16], r1: Option<&[u16]>, out: &mut [u32]) {
        pairs16(r0, r1, out)
    }
    fn as_f32<'a>(_: Mat<'a, u16>) -> Option<Mat<'a, f32>> {
        None
    }
}

/// A vector version of [`Elem::pairs`] (`unsafe`: it needs CPU features its caller checked).
type PairsFn<T> = unsafe fn(&[T], Option<&[T]>, &mut [u32]);

/// [`Elem::pairs`] by `vector` when given (the CPU has its features: the caller's check), one value at a time
/// otherwise. The rows are cut to `out.len()` values first: a shorter row panics here, so the vector code never
/// reads past one.
fn pairs_via<T: Elem>(r0: &[T], r1: Option<&[T]>, out: &mut [u32], vector: Option<PairsFn<T>>) {
    let r0 = &r0[..out.len()];
    let r1 = r1.map(|r| &r[..out.len()]);
    match vector {
        // SAFETY: the CPU has the function's features (the caller's check); both rows hold `out.len()` values.
        Some(f) => unsafe { f(r0, r1, out) },
        None => pairs_scalar(r0, r1, out),
    }
}

/// [`Elem::pairs`] of bf16 bits: AVX2 widenings 8 pairs at a time on x86-64 CPUs that have it (moves only; a
/// value at a time was 2.4 % of a ViT-Ti bf16 training step on a Zen 5: perf), one at a time elsewhere.
fn pairs16(r0: &[u16], r1: Option<&[u16]>, out: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    let vector = std::arch::is_x86_feature_detected!("avx2").then_some(pairs16_avx2 as PairsFn<u16>);
    #[cfg(not(target_arch = "x86_64"))]
    let vector = None;
    pairs_via(r0, r1, out, vector)
}

/// [`pairs16`] with AVX2, 8 pairs at a time.
///
/// # Safety
/// The CPU must have AVX2; `r0` (and `r1`) at least `out.len()` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn pairs16_avx2(r0: &[u16], r1: Option<&[u16]>, out: &mut [u32]) {
    use std::arch::x86_64::*;
    let n = out.len();
    let full = n / 8 * 8;
    let mut j = 0;
    while j < full {
        // SAFETY: 8 values from j in each slice (j + 8 ≤ full ≤ n).
        unsafe {
            let lo = _mm256_cvtepu16_epi32(_mm_loadu_si128(r0.as_ptr().add(j) as *const __m128i));
            let v = match r1 {
                Some(r1) => _mm256_or_si256(
                    lo,
                    _mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(_mm_loadu_si128(r1.as_ptr().add(j) as *const __m128i))),
                ),
                None => lo,
            };
            _mm256_storeu_si256(out.as_mut_ptr().add(j) as *mut __m256i, v);
        }
        j += 8;
    }
    pairs_scalar(&r0[full..], r1.map(|r| &r[full..]), &mut out[full..]);
}

/// [`Elem::pairs`] one value at a time.
fn pairs_scalar<T: Elem>(r0: &[T], r1: Option<&[T]>, out: &mut [u32]) {
    match r1 {
        Some(r1) => out.iter_mut().zip(r0.iter().zip(r1)).for_each(|(o, (x0, x1))| *o = ((x1.bits() as u32) << 16) | x0.bits() as u32),
        None => out.iter_mut().zip(r0).for_each(|(o, x0)| *o = x0.bits() as u32),
    }
}

/// Which kernel runs: AMX, `vdpbf16ps` (AVX512-BF16), the emulation on AVX2 + FMA, or the portable emulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// AMX `tdpbf16ps` on 32 × 32 tiles (CPUs with AMX-BF16: Intel Xeon from Sapphire Rapids on). Its sums round
    /// differently from `vdpbf16ps` (see `crate::amx`): products differ from the other kernels' in the last bits.
    Amx,
    /// AVX512-BF16 `vdpbf16ps`.
    Native,
    /// f32 FMAs in the same order, AVX2 + FMA code.
    EmulatedAvx2,
    /// f32 FMAs in the same order, portable code (`f32::mul_add`).
    EmulatedPortable,
}

impl Kernel {
    /// Name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Amx => "AMX-BF16",
            Kernel::Native => "AVX512-BF16",
            Kernel::EmulatedAvx2 => "bf16 emulated with AVX2+FMA",
            Kernel::EmulatedPortable => "bf16 emulated (portable)",
        }
    }

    /// Rows of the kernel's C tile.
    fn mr(self) -> usize {
        if self == Kernel::Amx {
            crate::amx::MR
        } else {
            MR
        }
    }

    /// Rows per parallel task.
    fn mc(self) -> usize {
        if self == Kernel::Amx {
            MC_AMX
        } else {
            MC
        }
    }

    /// What `k` is padded to with zeros: whole rows of an AMX tile (32 values), pairs for the others.
    fn k_unit(self) -> usize {
        if self == Kernel::Amx {
            2 * crate::amx::KQ
        } else {
            2
        }
    }
}

/// The environment variable that keeps the bf16 products off AMX or on the emulation (read by [`kernel`]).
pub const FORCE_VAR: &str = "POLYFLOW_BF16";

/// The values of [`FORCE_VAR`]: `vdpbf16ps` even on an AMX machine, the emulation (any other value: the CPU's
/// best kernel). The one list that [`kernel`] reads and that the CLI's check of the knobs names.
pub const FORCE_VALUES: [&str; 2] = ["avx512", "emulate"];

/// Whether [`FORCE_VAR`] asks for the emulation and whether it keeps the products off AMX.
fn forced() -> (bool, bool) {
    let choice = std::env::var(FORCE_VAR).unwrap_or_default();
    let [avx512, emulate] = FORCE_VALUES;
    (choice == emulate, choice == emulate || choice == avx512)
}

/// The kernel this CPU runs: AMX where the CPU and OS allow it, else `vdpbf16ps`, else the emulation.
/// `POLYFLOW_BF16=avx512` runs `vdpbf16ps` on an AMX machine (the bits of every non-AMX machine) and
/// `POLYFLOW_BF16=emulate` the emulation, for comparisons ([`FORCE_VALUES`]).
pub fn kernel() -> Kernel {
    *KERNEL.get_or_init(|| {
        let (emulate, no_amx) = forced();
        best(!emulate, !no_amx)
    })
}

/// The kernel of this process, chosen at its first use.
static KERNEL: OnceLock<Kernel> = OnceLock::new();

/// Keeps this process's bf16 products off AMX, as `POLYFLOW_BF16=avx512` does (the emulation stays when
/// `POLYFLOW_BF16=emulate`): for a process that must give the bits of a non-AMX machine. Takes effect only
/// before the first bf16 product or [`kernel`] call; returns the kernel in force (AMX if it was already chosen).
pub fn avoid_amx() -> Kernel {
    *KERNEL.get_or_init(|| best(!forced().0, false))
}

/// The best kernel this CPU has (`native`: whether `vdpbf16ps` may be used, `amx`: whether AMX may).
fn best(native: bool, amx: bool) -> Kernel {
    #[cfg(target_arch = "x86_64")]
    {
        if amx && crate::amx::available() {
            return Kernel::Amx;
        }
        if native && std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bf16") {
            return Kernel::Native;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return Kernel::EmulatedAvx2;
        }
    }
    let _ = (native, amx);
    Kernel::EmulatedPortable
}

/// `c = init + bf16(a) · bf16(b)` with a given kernel (see [`crate::matmul_init`]); every value of the
/// `m × n` view of `c` is written.
///
/// # Safety
/// With [`Init::Acc`], the `m × n` view of `c` must be initialised.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn matmul_init<TA: Elem, TB: Elem>(
    kern: Kernel,
    m: usize,
    n: usize,
    k: usize,
    a: Mat<TA>,
    b: Mat<TB>,
    c: &mut [MaybeUninit<f32>],
    ldc: usize,
    init: Init,
    parallel: bool,
) {
    crate::check_views(m, n, k, &a, &b, c, ldc);
    init.check(n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        init.start_rows(c, m, n, ldc, true);
        return;
    }
    let (mr_k, mc_k) = (kern.mr(), kern.mc());
    let kp = k.div_ceil(kern.k_unit()) * kern.k_unit();
    let ap = convert_a(&a, m, k, kp, kern, parallel);
    let npan = n.div_ceil(NR);
    let bp = pack_b(&b, k, kp, n, npan, parallel);
    let blocks = m.div_ceil(mc_k);
    // Only C's view is split into row blocks (see `sgemm::by_rows`).
    let c = &mut c[..(m - 1) * ldc + n];
    // Blocks of `k` (first value, pairs), taken a group at a time: each row block runs every block of its group
    // on one column panel before the next panel, so C's tiles take one trip from memory per group instead of
    // one per block, while the group's B panels (re-read by every row block) stay within `B_GROUP` bytes.
    let kblocks: Vec<(usize, usize)> = (0..kp).step_by(KC).map(|p0| (p0, KC.min(kp - p0) / 2)).collect();
    let group = (B_GROUP / (KC / 2 * npan * NR * 4)).max(1);
    for (gi, kblocks) in kblocks.chunks(group).enumerate() {
        let run = |(ri, cblk): (usize, &mut [MaybeUninit<f32>])| {
            if ri >= blocks {
                return;
            }
            let i0 = ri * mc_k;
            let mc = mc_k.min(m - i0);
            let mut tile = [0.0f32; crate::amx::MR * NR];
            // A row-major A is converted here, block by block, into this thread's buffers (read by every panel
            // below): no converted copy of the whole operand goes through memory.
            let abs: Vec<ABlock> = kblocks.iter().map(|&(p0, kq)| ap.block(i0, mc, p0, kq, kern)).collect();
            for pi in 0..npan {
                let j0 = pi * NR;
                let nr = NR.min(n - j0);
                for (bi, (&(p0, kq), ab)) in kblocks.iter().zip(&abs).enumerate() {
                    // Later blocks of `k` add to what the first wrote.
                    let init = if gi == 0 && bi == 0 { init } else { Init::Acc };
                    let panel = &bp[p0 / 2 * npan * NR + pi * kq * NR..][..kq * NR];
                    for t in (0..mc).step_by(mr_k) {
                        let mr = mr_k.min(mc - t);
                        // Rows past `m` exist (zero) in the packed A, so the kernel always reads whole tiles.
                        // SAFETY: row t of this block is within the packed A (rows padded to whole tiles).
                        let a0 = unsafe { ab.ptr.add(t * ab.ri) };
                        if mr == mr_k && nr == NR {
                            let dst = &mut cblk[t * ldc + j0..(t + mr_k - 1) * ldc + j0 + NR];
                            #[cfg(target_arch = "x86_64")]
                            if kern == Kernel::Amx {
                                // The tile starts from the bias row itself (not written into C first) or from zero.
                                let start = match init {
                                    Init::Zero => crate::amx::Start::Zero,
                                    Init::Acc => crate::amx::Start::C,
                                    Init::Bias(bias) => crate::amx::Start::Row(bias[j0..j0 + NR].as_ptr()),
                                };
                                // SAFETY: AMX is available (`best` chose it); `a0` starts 32 rows of `kq` pairs (a
                                // multiple of 16: `k_unit`) at stride `ab.ri` with `ab.rq = 2` (`convert_a` gives AMX
                                // no pair-major pack), `panel` has kq·NR pairs, `dst` the 32 × NR tile, initialised
                                // for `Acc` (an earlier block or the caller's contract), and a bias row has NR values
                                // from j0.
                                unsafe { crate::amx::kernel(kq, a0, ab.ri, panel.as_ptr(), dst.as_mut_ptr() as *mut f32, ldc, start) };
                                continue;
                            }
                            // A bias goes into the tile's rows (in L1 for the kernel's read) just before it adds
                            // to them.
                            for i in 0..mr_k {
                                init.start(&mut dst[i * ldc..i * ldc + NR], j0, false);
                            }
                            let add = !matches!(init, Init::Zero);
                            // SAFETY: the CPU runs `kern` (chosen by `best`); `a0` starts MR rows of `kq` pairs at
                            // `ab`'s strides (padded to whole tiles), `panel` has kq·NR pairs, `dst` the MR × NR
                            // tile, initialised when `add` (the bias above, an earlier block, or the caller's
                            // contract).
                            unsafe { tile_kernel(kern, kq, a0, ab.ri, ab.rq, panel.as_ptr(), dst.as_mut_ptr() as *mut f32, ldc, add) };
                        } else {
                            // SAFETY: as above, into the local MR × NR tile.
                            unsafe { tile_kernel(kern, kq, a0, ab.ri, ab.rq, panel.as_ptr(), tile.as_mut_ptr(), NR, false) };
                            for i in 0..mr {
                                let row = &mut cblk[(t + i) * ldc + j0..(t + i) * ldc + j0 + nr];
                                // SAFETY: the caller's contract for `Acc`, or what an earlier block wrote.
                                unsafe { init.add_row(row, j0, &tile[i * NR..i * NR + nr]) };
                            }
                        }
                    }
                }
            }
        };
        if parallel && blocks > 1 {
            crate::split(c.par_chunks_mut(mc_k * ldc).enumerate()).for_each(run);
        } else {
            c.chunks_mut(mc_k * ldc).enumerate().for_each(run);
        }
    }
}

/// Converts `src` to bf16 bits in `dst[..src.len()]`: `vcvtneps2bf16` on CPUs with AVX512-BF16 (the same
/// bits as [`to_bf16`]; unit test), [`to_bf16`] elsewhere.
pub fn convert(src: &[f32], dst: &mut [u16]) {
    let dst = &mut dst[..src.len()];
    #[cfg(target_arch = "x86_64")]
    if native_convert() {
        // SAFETY: the CPU has AVX512-F and AVX512-BF16 (checked by `native_convert`).
        unsafe { convert_native(src, dst) };
        return;
    }
    for (d, v) in dst.iter_mut().zip(src) {
        *d = to_bf16(*v);
    }
}

/// Whether `vcvtneps2bf16` is available.
fn native_convert() -> bool {
    static N: OnceLock<bool> = OnceLock::new();
    *N.get_or_init(|| best(true, false) == Kernel::Native)
}

/// [`convert`] with `vcvtneps2bf16`, 16 values at a time.
///
/// # Safety
/// The CPU must have AVX512-F and AVX512-BF16; `dst.len() == src.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn convert_native(src: &[f32], dst: &mut [u16]) {
    use std::arch::x86_64::*;
    let (s16, rest) = src.split_at(src.len() / 16 * 16);
    let (d16, drest) = dst.split_at_mut(s16.len());
    for (s, d) in s16.chunks_exact(16).zip(d16.chunks_exact_mut(16)) {
        // SAFETY: 16 values each side.
        unsafe {
            let h: __m256bh = _mm512_cvtneps_pbh(_mm512_loadu_ps(s.as_ptr()));
            _mm256_storeu_si256(d.as_mut_ptr() as *mut __m256i, std::mem::transmute::<__m256bh, __m256i>(h));
        }
    }
    for (d, v) in drest.iter_mut().zip(rest) {
        *d = to_bf16(*v);
    }
}

/// The bf16 bits of the `outer × inner` values `data[o·stride + i]` into `out`, as rows of `ld` values
/// (`ld ≥ inner`; the rest of each row is left as it is). Rows in parallel when `parallel` and large.
fn convert_rows<T: Elem>(data: &[T], outer: usize, inner: usize, stride: usize, out: &mut [u16], ld: usize, parallel: bool) {
    let f = |(o, row): (usize, &mut [u16])| {
        if o < outer {
            T::to_bits(&data[o * stride..o * stride + inner], &mut row[..inner]);
        }
    };
    // Only the rows that are written are split over threads (see `sgemm::by_rows`).
    let rows = outer * ld;
    let out = if out.len() > rows { &mut out[..rows] } else { out };
    if parallel && outer * inner >= 1 << 16 {
        out.par_chunks_mut(ld).enumerate().for_each(f);
    } else {
        out.chunks_mut(ld).enumerate().for_each(f);
    }
}

/// The A operand in bf16, padded with zero rows to whole tiles of the kernel's rows (values past `k` zero), as
/// [`APack::block`] hands it to the kernels.
enum APack<'a, T> {
    /// Not converted ahead: an `a` with contiguous rows (`cs = 1`, and `k`), converted one block of rows and
    /// depth at a time where it is used.
    ByBlock(Mat<'a, T>, usize),
    /// Not converted ahead: a transposed `a` (`rs = 1`, and `k`) for the AMX kernel, whose tiles need each row's
    /// values contiguous: transposed and converted one block of rows and depth at a time where it is used.
    Cols(Mat<'a, T>, usize),
    /// Rows of `kp` values: an `a` with other strides.
    Rows(Scratch<u16>, usize),
    /// A transposed `a` (`rs = 1`, as `xᵀ` in `xᵀ · dy`), whose columns are contiguous, interleaved two
    /// columns at a time (kernels other than AMX): for each block of [`MC`] rows, its `kp / 2` pair-rows of MC pairs (rows past `m`
    /// zero), so that a row block's pairs are contiguous (a pair-major layout over all `m` rows put one block's
    /// consecutive pairs `m` pairs apart, the same few L1 sets at m = 768).
    Pairs(Scratch<u32>, usize),
}

/// Rows `i0..` of A from depth `p0` for the kernels: the pair `q` of row `i0 + i` is the two `u16` at
/// `ptr + i·ri + q·rq`.
struct ABlock {
    /// The block's own buffer when it was converted here (`ptr` points into it; a move keeps its heap).
    _buf: Option<Scratch<u16>>,
    ptr: *const u16,
    /// Distance between rows, in `u16`.
    ri: usize,
    /// Distance between consecutive pairs of a row, in `u16`.
    rq: usize,
}

impl<T: Elem> APack<'_, T> {
    /// Rows `i0..i0 + mc` and pairs `p0/2..p0/2 + kq` ([`ABlock`]) for `kern`: converted here into a buffer of
    /// rows of `2·kq` values for [`APack::ByBlock`] and [`APack::Cols`], a view of the pack otherwise.
    fn block(&self, i0: usize, mc: usize, p0: usize, kq: usize, kern: Kernel) -> ABlock {
        match self {
            APack::Cols(a, k) => {
                let ld = 2 * kq;
                let cols = ld.min(k - p0);
                let rows = mc.div_ceil(kern.mr()) * kern.mr();
                let mut blk = Scratch::<u16>::take(rows * ld);
                transpose_bits(a, i0, mc, p0, cols, &mut blk, ld);
                for (i, row) in blk.chunks_exact_mut(ld).enumerate() {
                    row[if i < mc { cols } else { 0 }..].fill(0);
                }
                ABlock { ptr: blk.as_ptr(), _buf: Some(blk), ri: ld, rq: 2 }
            }
            APack::ByBlock(a, k) => {
                let ld = 2 * kq;
                let cols = ld.min(k - p0);
                let mut blk = Scratch::<u16>::take(mc.div_ceil(kern.mr()) * kern.mr() * ld);
                for (i, row) in blk.chunks_exact_mut(ld).enumerate() {
                    if i < mc {
                        let src = &a.data[(i0 + i) * a.rs + p0..(i0 + i) * a.rs + p0 + cols];
                        T::to_bits(src, &mut row[..cols]);
                        row[cols..].fill(0);
                    } else {
                        row.fill(0);
                    }
                }
                ABlock { ptr: blk.as_ptr(), _buf: Some(blk), ri: ld, rq: 2 }
            }
            APack::Rows(b, kp) => ABlock { _buf: None, ptr: b[i0 * kp + p0..].as_ptr(), ri: *kp, rq: 2 },
            APack::Pairs(b, kq_all) => {
                debug_assert!(i0.is_multiple_of(MC) && kern != Kernel::Amx);
                ABlock { _buf: None, ptr: b[i0 * kq_all + p0 / 2 * MC..].as_ptr() as *const u16, ri: 2, rq: 2 * MC }
            }
        }
    }
}

/// `out[i·ld + p] = bits(a[i0 + i, p0 + p])` for `i < mc`, `p < cols` (and a zero at `cols` when it is odd), from a
/// transposed `a` (`rs = 1`: the rows `i0..i0 + mc` of column `p` are contiguous): columns are interleaved two at a
/// time into pairs ([`Elem::pairs`], vector code), 8 pair-rows at a time, whose 8 × 8 blocks are transposed in AVX
/// registers (moves only: the bits are kept) into 8 pairs of 8 rows of `out`; edges go a value at a time.
fn transpose_bits<T: Elem>(a: &Mat<T>, i0: usize, mc: usize, p0: usize, cols: usize, out: &mut [u16], ld: usize) {
    assert!(a.rs == 1 && ld.is_multiple_of(2) && cols <= ld && out.len() >= mc * ld);
    let nq = cols.div_ceil(2);
    let mut tmp = Scratch::<u32>::take(8 * mc);
    #[cfg(target_arch = "x86_64")]
    let avx = std::arch::is_x86_feature_detected!("avx");
    #[cfg(not(target_arch = "x86_64"))]
    let avx = false;
    for q0 in (0..nq).step_by(8) {
        let qb = 8.min(nq - q0);
        for dq in 0..qb {
            let p = p0 + 2 * (q0 + dq);
            let r0 = &a.data[p * a.cs + i0..][..mc];
            let r1 = (2 * (q0 + dq) + 1 < cols).then(|| &a.data[(p + 1) * a.cs + i0..][..mc]);
            T::pairs(r0, r1, &mut tmp[dq * mc..(dq + 1) * mc]);
        }
        let i8 = if avx && qb == 8 { mc / 8 * 8 } else { 0 };
        #[cfg(target_arch = "x86_64")]
        if i8 > 0 {
            // SAFETY: the CPU has AVX; `tmp` holds 8 rows of `mc` pairs and `out` `mc` rows of `ld ≥ 2·(q0 + 8)`
            // values (the assertion; `2·nq ≤ ld` as `ld` is even), so every block read and written is in bounds.
            unsafe { transpose_pairs_avx(&tmp, mc, i8, out, ld, 2 * q0) };
        }
        for i in 0..mc {
            for dq in if i < i8 { 0..0 } else { 0..qb } {
                let v = tmp[dq * mc + i];
                // 2·(q0 + dq) + 1 < 2·nq ≤ ld: `ld` is even and `cols ≤ ld`.
                out[i * ld + 2 * (q0 + dq)] = v as u16;
                out[i * ld + 2 * (q0 + dq) + 1] = (v >> 16) as u16;
            }
        }
    }
}

/// The 8 × 8 blocks of [`transpose_bits`]: pair `i` of each of `tmp`'s 8 rows (of `mc` pairs) to 8 pairs of row `i`
/// of `out` from value `col`, for `i < i8` (a multiple of 8).
///
/// # Safety
/// The CPU must support AVX; `tmp` must hold `8·mc` values, `out` `i8` rows of `ld` values with `col + 16 ≤ ld`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn transpose_pairs_avx(tmp: &[u32], mc: usize, i8: usize, out: &mut [u16], ld: usize, col: usize) {
    use std::arch::x86_64::*;
    debug_assert!(tmp.len() >= 8 * mc && col + 16 <= ld && out.len() >= i8 * ld);
    for i in (0..i8).step_by(8) {
        // SAFETY: rows r of `tmp`, pairs i..i + 8 (i + 8 ≤ i8 ≤ mc); unaligned loads of 8 × 32 bits.
        let r: [__m256; 8] = std::array::from_fn(|r| unsafe { _mm256_loadu_ps(tmp.as_ptr().add(r * mc + i) as *const f32) });
        // SAFETY: the CPU has AVX (this function's contract).
        let rows = unsafe { crate::transpose::transpose8(r) };
        for (d, row) in rows.into_iter().enumerate() {
            // SAFETY: row i + d of `out`, values col..col + 16 (the caller's bounds); an unaligned 32-byte store.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add((i + d) * ld + col) as *mut f32, row) };
        }
    }
}

/// A buffer's start, shared by tasks that write disjoint parts of it.
#[derive(Clone, Copy)]
struct Shared(*mut u32);

// SAFETY: only used where every task writes its own part of the buffer (see its uses).
unsafe impl Sync for Shared {}

impl Shared {
    /// The pointer `i` values on (a method, so closures capture the `Sync` wrapper, not its field).
    fn at(self, i: usize) -> *mut u32 {
        self.0.wrapping_add(i)
    }
}

/// Packs `a[m, k]` ([`APack`]): a row-major `a` is left to be converted block by block where it is used; a
/// transposed `a` has its columns converted and interleaved in one pass (a transposition of converted values
/// cost 7–10 % of a bf16 training step: perf); other strides are converted value by value.
fn convert_a<'a, T: Elem>(a: &Mat<'a, T>, m: usize, k: usize, kp: usize, kern: Kernel, parallel: bool) -> APack<'a, T> {
    let mp = m.div_ceil(kern.mr()) * kern.mr();
    if a.cs == 1 {
        return APack::ByBlock(*a, k);
    }
    if a.rs == 1 && kern == Kernel::Amx {
        return APack::Cols(*a, k);
    }
    if a.rs == 1 {
        let kq_all = kp / 2;
        let nrb = m.div_ceil(MC);
        let mut pairs = Scratch::<u32>::take(nrb * MC * kq_all);
        let out = Shared(pairs.as_mut_ptr());
        // Pair-row q: columns 2q and 2q+1 of `a` (rows 2q, 2q+1 of the row-major `aᵀ`, read whole and in order),
        // into each row block's slot q.
        let fill = |q: usize| {
            let r0 = &a.data[2 * q * a.cs..2 * q * a.cs + m];
            let r1 = (2 * q + 1 < k).then(|| &a.data[(2 * q + 1) * a.cs..(2 * q + 1) * a.cs + m]);
            for rb in 0..nrb {
                let (i0, mc) = (rb * MC, MC.min(m - rb * MC));
                // SAFETY: slot (rb, q), MC values from (rb·kq_all + q)·MC, lies within `pairs` and is written by
                // this call alone (one call per q); nothing reads `pairs` until every call has returned.
                let o = unsafe { std::slice::from_raw_parts_mut(out.at((rb * kq_all + q) * MC), MC) };
                T::pairs(&r0[i0..i0 + mc], r1.map(|r| &r[i0..i0 + mc]), &mut o[..mc]);
                o[mc..].fill(0);
            }
        };
        if parallel && m * k >= 1 << 16 {
            (0..kq_all).into_par_iter().with_min_len(8).for_each(fill);
        } else {
            (0..kq_all).for_each(fill);
        }
        return APack::Pairs(pairs, kq_all);
    }
    let mut ab = Scratch::<u16>::take(mp * kp);
    // The padding the kernel reads: the odd column of each row when k is odd, the rows past m.
    if kp > k {
        ab[..m * kp].chunks_exact_mut(kp).for_each(|row| row[k..].fill(0));
    }
    ab[m * kp..].fill(0);
    for i in 0..m {
        for p in 0..k {
            ab[i * kp + p] = a.data[i * a.rs + p * a.cs].bits();
        }
    }
    APack::Rows(ab, kp)
}

/// `out[j] = (bf16(r1[j]) << 16) | bf16(r0[j])` (high half zero without `r1`): two rows of values as the
/// pairs the kernels read. `vcvtneps2bf16` on CPUs with AVX512-BF16, [`to_bf16`] elsewhere (the same bits).
fn interleave(r0: &[f32], r1: Option<&[f32]>, out: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    let vector = native_convert().then_some(interleave_native as PairsFn<f32>);
    #[cfg(not(target_arch = "x86_64"))]
    let vector = None;
    pairs_via(r0, r1, out, vector)
}

/// [`interleave`] with `vcvtneps2bf16`, 16 pairs at a time.
///
/// # Safety
/// The CPU must have AVX512-F and AVX512-BF16; `r0` (and `r1`) at least `out.len()` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn interleave_native(r0: &[f32], r1: Option<&[f32]>, out: &mut [u32]) {
    use std::arch::x86_64::*;
    let n = out.len();
    let full = n / 16 * 16;
    let zero = _mm512_setzero_ps();
    let mut j = 0;
    while j < full {
        // SAFETY: 16 values from j in each slice (j + 16 ≤ full ≤ n).
        unsafe {
            let lo =
                _mm512_cvtepu16_epi32(std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(_mm512_loadu_ps(r0.as_ptr().add(j)))));
            let x1 = match r1 {
                Some(r1) => _mm512_loadu_ps(r1.as_ptr().add(j)),
                None => zero,
            };
            let hi = _mm512_cvtepu16_epi32(std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(x1)));
            _mm512_storeu_si512(out.as_mut_ptr().add(j) as *mut _, _mm512_or_si512(lo, _mm512_slli_epi32::<16>(hi)));
        }
        j += 16;
    }
    for j in full..n {
        let h = r1.map_or(0, |r1| to_bf16(r1[j]) as u32);
        out[j] = (h << 16) | to_bf16(r0[j]) as u32;
    }
}

/// `b[k, n]` as bf16 pairs: for each block of [`KC`] rows, panels of [`NR`] columns, each `kq` pair-rows of
/// NR `u32` = `(bf16(b[2q+1, j]) << 16) | bf16(b[2q, j])` (zero past `k` and past `n`). Rows of `b` are
/// converted (f32) and interleaved straight into the panels; columns of a transposed `b` (`rs = 1`) are converted
/// first, then gathered; panels are filled in parallel when `parallel`.
fn pack_b<T: Elem>(b: &Mat<T>, k: usize, kp: usize, n: usize, npan: usize, parallel: bool) -> Scratch<u32> {
    let mut bp = Scratch::<u32>::take(kp / 2 * npan * NR);
    // The converted operand and how to read element (p, j) of B from it: rows of B (`cs = 1`), rows of Bᵀ
    // (`rs = 1`, as `wᵀ` in `dy · wᵀ`), or any strides.
    enum Conv {
        Rows,
        /// Columns of B converted: column j's pair q is value `j·kp/2 + q`.
        Cols(Scratch<u32>),
        Strided,
    }
    let conv = if b.cs == 1 {
        Conv::Rows
    } else if b.rs == 1 {
        let mut t = Scratch::<u32>::take(n * kp / 2);
        {
            // SAFETY: the same memory as `u16` (half the alignment, twice the count; any bits are valid for both);
            // this view ends before `t` is read as `u32` again.
            let t16 = unsafe { std::slice::from_raw_parts_mut(t.as_mut_ptr() as *mut u16, t.len() * 2) };
            if kp > k {
                t16.chunks_exact_mut(kp).for_each(|col| col[k..].fill(0));
            }
            // Little-endian: the u16 at 2q (value 2q of a column) is the low half of pair q.
            convert_rows(b.data, n, k, b.cs, t16, kp, parallel);
        }
        Conv::Cols(t)
    } else {
        Conv::Strided
    };
    let full = kp / KC;
    // Chunk `ci` is (block, panel): blocks of KC rows first, then the last, shorter block.
    let chunk = |(ci, panel): (usize, &mut [u32])| {
        let (p0, pi) = if ci < full * npan { (ci / npan * KC, ci % npan) } else { (full * KC, ci - full * npan) };
        let j0 = pi * NR;
        let nr = NR.min(n - j0);
        let kq = panel.len() / NR;
        if nr < NR {
            // Columns past n: zero (the buffer is reused).
            panel.chunks_exact_mut(NR).for_each(|row| row[nr..].fill(0));
        }
        match &conv {
            Conv::Rows => {
                // Rows 2q and 2q+1 of b, converted and interleaved in one pass.
                for (q, row) in panel.chunks_mut(NR).enumerate() {
                    let p = p0 + 2 * q;
                    if p >= k {
                        // Padding to the kernel's unit of `k` (AMX: 32 values).
                        row.fill(0);
                        continue;
                    }
                    let r0 = &b.data[p * b.rs + j0..p * b.rs + j0 + nr];
                    let r1 = (p + 1 < k).then(|| &b.data[(p + 1) * b.rs + j0..(p + 1) * b.rs + j0 + nr]);
                    T::pairs(r0, r1, &mut row[..nr]);
                }
            }
            Conv::Cols(t) => gather_pairs(t, kp / 2, p0 / 2, kq, j0, nr, panel),
            Conv::Strided => {
                let at = |p: usize, j: usize| if p < k { b.data[p * b.rs + j * b.cs].bits() as u32 } else { 0 };
                for (q, row) in panel.chunks_mut(NR).enumerate() {
                    let p = p0 + 2 * q;
                    for (j, v) in row[..nr].iter_mut().enumerate() {
                        *v = (at(p + 1, j0 + j) << 16) | at(p, j0 + j);
                    }
                }
            }
        }
    };
    let (head, tail) = bp.split_at_mut(full * KC / 2 * npan * NR);
    let tail_q = (kp - full * KC) / 2;
    if parallel && k * n >= 1 << 16 {
        head.par_chunks_mut(KC / 2 * NR).enumerate().for_each(chunk);
        if tail_q > 0 {
            tail.par_chunks_mut(tail_q * NR).enumerate().for_each(|(i, c)| chunk((full * npan + i, c)));
        }
    } else {
        head.chunks_mut(KC / 2 * NR).enumerate().for_each(chunk);
        if tail_q > 0 {
            tail.chunks_mut(tail_q * NR).enumerate().for_each(|(i, c)| chunk((full * npan + i, c)));
        }
    }
    bp
}

/// `panel[q·NR + j] = cols[(j0 + j)·ld + q0 + q]` for `q < kq`, `j < nr`: pairs gathered from converted columns into
/// a B panel's rows. 8 × 8 blocks go through AVX registers (a transposition: moves only, the bits are kept), the
/// edges one value at a time (a value at a time throughout cost 29 % of a [65, 64] · [64, 65] product: perf).
fn gather_pairs(cols: &[u32], ld: usize, q0: usize, kq: usize, j0: usize, nr: usize, panel: &mut [u32]) {
    assert!(nr <= NR && panel.len() >= kq * NR && (nr == 0 || cols.len() >= (j0 + nr - 1) * ld + q0 + kq));
    let (mut j8, mut q8) = (0, 0);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        (j8, q8) = (nr / 8 * 8, kq / 8 * 8);
        // SAFETY: the CPU has AVX; the assertion above bounds every block read and written.
        unsafe { gather_pairs_avx(cols, ld, q0, j0, j8, q8, panel) };
    }
    for q in 0..kq {
        // Columns the blocks did not cover: all of them for rows past q8, those past j8 otherwise.
        let from = if q < q8 { j8 } else { 0 };
        for j in from..nr {
            panel[q * NR + j] = cols[(j0 + j) * ld + q0 + q];
        }
    }
}

/// The 8 × 8 blocks of [`gather_pairs`]: columns `0..j8`, rows `0..q8` (both multiples of 8).
///
/// # Safety
/// The CPU must support AVX; `cols` must hold `(j0 + j8 - 1)·ld + q0 + q8` values (when `j8 > 0`), `panel` `q8·NR`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn gather_pairs_avx(cols: &[u32], ld: usize, q0: usize, j0: usize, j8: usize, q8: usize, panel: &mut [u32]) {
    use std::arch::x86_64::*;
    for j in (0..j8).step_by(8) {
        for q in (0..q8).step_by(8) {
            // SAFETY: column j + i, pairs q..q + 8, within `cols` (caller); unaligned loads of 8 × 32 bits.
            let r: [__m256; 8] =
                std::array::from_fn(|i| unsafe { _mm256_loadu_ps(cols.as_ptr().add((j0 + j + i) * ld + q0 + q) as *const f32) });
            // SAFETY: the CPU has AVX (this function's contract).
            let rows = unsafe { crate::transpose::transpose8(r) };
            for (d, row) in rows.into_iter().enumerate() {
                // SAFETY: row q + d, columns j..j + 8 of the panel (caller); unaligned store of 8 × 32 bits.
                unsafe { _mm256_storeu_ps(panel.as_mut_ptr().add((q + d) * NR + j) as *mut f32, row) };
            }
        }
    }
}

/// One tile of `kern.mr()` rows × NR: `c (+)= Σ_q` over `kq` pairs, the pair `q` of A's row `i` the two bf16 at
/// `a + i·ri + q·rq` ([`APack`]; AMX needs `rq = 2`: each row's pairs contiguous), B pairs `b[q·NR + j]`, C at row
/// stride `ldc`.
///
/// # Safety
/// `kern` must run on this CPU; `a` must hold the tile's rows of `kq` pairs at those strides (AMX: `kq` a multiple
/// of 16), `b` `kq·NR` values and `c` the tile at stride `ldc`.
#[allow(clippy::too_many_arguments)]
unsafe fn tile_kernel(kern: Kernel, kq: usize, a: *const u16, ri: usize, rq: usize, b: *const u32, c: *mut f32, ldc: usize, acc: bool) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match kern {
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx => {
                debug_assert_eq!(rq, 2);
                crate::amx::kernel(kq, a, ri, b, c, ldc, if acc { crate::amx::Start::C } else { crate::amx::Start::Zero })
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Native => kernel_native(kq, a, ri, rq, b, c, ldc, acc),
            #[cfg(target_arch = "x86_64")]
            Kernel::EmulatedAvx2 => kernel_emulated_avx2(kq, a, ri, rq, b, c, ldc, acc),
            _ => kernel_emulated(kq, a, ri, rq, b, c, ldc, acc),
        }
    }
}

/// The emulation: the same sums as `vdpbf16ps` with f32 FMAs (odd product first within a pair).
///
/// # Safety
/// As [`tile_kernel`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_emulated(kq: usize, a: *const u16, ri: usize, rq: usize, b: *const u32, c: *mut f32, ldc: usize, acc: bool) {
    let mut t = [[0.0f32; NR]; MR];
    for q in 0..kq {
        // SAFETY: `b` holds kq·NR values (caller).
        let brow: &[u32; NR] = unsafe { &*(b.add(q * NR) as *const [u32; NR]) };
        let lo: [f32; NR] = std::array::from_fn(|j| f32::from_bits(brow[j] << 16));
        let hi: [f32; NR] = std::array::from_fn(|j| f32::from_bits(brow[j] & 0xffff_0000));
        for (i, row) in t.iter_mut().enumerate() {
            // SAFETY: row i has kq pairs at these strides (caller).
            let (a0, a1) = unsafe { (*a.add(i * ri + q * rq), *a.add(i * ri + q * rq + 1)) };
            let (a0, a1) = (from_bf16(a0), from_bf16(a1));
            for j in 0..NR {
                row[j] = a1.mul_add(hi[j], row[j]);
                row[j] = a0.mul_add(lo[j], row[j]);
            }
        }
    }
    for (i, row) in t.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            // SAFETY: the MR × NR tile at stride ldc (caller).
            let o = unsafe { &mut *c.add(i * ldc + j) };
            *o = if acc { *o + v } else { *v };
        }
    }
}

/// [`kernel_emulated`] compiled for AVX2 + FMA (`mul_add` becomes `vfmadd`, the lanes vectorise).
///
/// # Safety
/// As [`tile_kernel`], on a CPU with AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_emulated_avx2(kq: usize, a: *const u16, ri: usize, rq: usize, b: *const u32, c: *mut f32, ldc: usize, acc: bool) {
    // SAFETY: forwarded.
    unsafe { kernel_emulated(kq, a, ri, rq, b, c, ldc, acc) }
}

/// The AVX512-BF16 micro-kernel: 12 rows × 32 columns in `zmm0`–`zmm23`, B pairs in `zmm24`/`zmm25`, a
/// broadcast pair of A alternating in `zmm26`/`zmm27`; one `vdpbf16ps` per row and half-tile and pair.
/// Rows 0–3 of A are addressed from `a0`, 4–7 from `a4 = a0 + 4·lda`, 8–11 from `a8` (`lda` = `ri` in
/// bytes), each moving on by `rq` values (`2·rq` bytes) per pair.
///
/// # Safety
/// As [`tile_kernel`], on a CPU with AVX512-F and AVX512-BF16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_native(kq: usize, a: *const u16, ri: usize, rq: usize, b: *const u32, c: *mut f32, ldc: usize, acc: bool) {
    // SAFETY: the caller guarantees the extents; the assembly reads kq pairs of each of A's 12 rows at the
    // strides `ri`, `rq`, kq·32 pairs of B, and writes the 12 × 32 tile of C.
    unsafe {
        std::arch::asm!(
            tile_12x32_start!(),
            "vmovups zmm24, [{b}]",
            "vmovups zmm25, [{b} + 64]",
            "vpbroadcastd zmm26, dword ptr [{a0}]",
            "vdpbf16ps zmm0, zmm26, zmm24",
            "vdpbf16ps zmm1, zmm26, zmm25",
            "vpbroadcastd zmm27, dword ptr [{a0} + {lda}]",
            "vdpbf16ps zmm2, zmm27, zmm24",
            "vdpbf16ps zmm3, zmm27, zmm25",
            "vpbroadcastd zmm26, dword ptr [{a0} + 2*{lda}]",
            "vdpbf16ps zmm4, zmm26, zmm24",
            "vdpbf16ps zmm5, zmm26, zmm25",
            "vpbroadcastd zmm27, dword ptr [{a0} + {lda3}]",
            "vdpbf16ps zmm6, zmm27, zmm24",
            "vdpbf16ps zmm7, zmm27, zmm25",
            "vpbroadcastd zmm26, dword ptr [{a4}]",
            "vdpbf16ps zmm8, zmm26, zmm24",
            "vdpbf16ps zmm9, zmm26, zmm25",
            "vpbroadcastd zmm27, dword ptr [{a4} + {lda}]",
            "vdpbf16ps zmm10, zmm27, zmm24",
            "vdpbf16ps zmm11, zmm27, zmm25",
            "vpbroadcastd zmm26, dword ptr [{a4} + 2*{lda}]",
            "vdpbf16ps zmm12, zmm26, zmm24",
            "vdpbf16ps zmm13, zmm26, zmm25",
            "vpbroadcastd zmm27, dword ptr [{a4} + {lda3}]",
            "vdpbf16ps zmm14, zmm27, zmm24",
            "vdpbf16ps zmm15, zmm27, zmm25",
            "vpbroadcastd zmm26, dword ptr [{a8}]",
            "vdpbf16ps zmm16, zmm26, zmm24",
            "vdpbf16ps zmm17, zmm26, zmm25",
            "vpbroadcastd zmm27, dword ptr [{a8} + {lda}]",
            "vdpbf16ps zmm18, zmm27, zmm24",
            "vdpbf16ps zmm19, zmm27, zmm25",
            "vpbroadcastd zmm26, dword ptr [{a8} + 2*{lda}]",
            "vdpbf16ps zmm20, zmm26, zmm24",
            "vdpbf16ps zmm21, zmm26, zmm25",
            "vpbroadcastd zmm27, dword ptr [{a8} + {lda3}]",
            "vdpbf16ps zmm22, zmm27, zmm24",
            "vdpbf16ps zmm23, zmm27, zmm25",
            "add {a0}, {rq}",
            "add {a4}, {rq}",
            "add {a8}, {rq}",
            "add {b}, 128",
            "dec {k}",
            "jnz 2b",
            tile_12x32_finish!(),
            k = inout(reg) kq => _,
            a0 = inout(reg) a => _,
            b = inout(reg) b => _,
            lda = in(reg) ri * 2,
            rq = in(reg) rq * 2,
            lda3 = out(reg) _,
            a4 = out(reg) _,
            a8 = out(reg) _,
            c0 = in(reg) c,
            ldc = in(reg) ldc * 4,
            acc = in(reg) acc as usize,
            out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _, out("zmm4") _, out("zmm5") _, out("zmm6") _, out("zmm7") _, out("zmm8") _, out("zmm9") _, out("zmm10") _, out("zmm11") _, out("zmm12") _, out("zmm13") _, out("zmm14") _, out("zmm15") _, out("zmm16") _, out("zmm17") _, out("zmm18") _, out("zmm19") _, out("zmm20") _, out("zmm21") _, out("zmm22") _, out("zmm23") _, out("zmm24") _, out("zmm25") _, out("zmm26") _, out("zmm27") _,
            options(nostack),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `c (+)= bf16(a) · bf16(b)` with a given kernel (the CPU must support it), as [`crate::matmul_any`] runs
    /// [`kernel`]'s.
    #[allow(clippy::too_many_arguments)]
    fn matmul_with<TA: Elem, TB: Elem>(
        kern: Kernel,
        m: usize,
        n: usize,
        k: usize,
        a: Mat<TA>,
        b: Mat<TB>,
        c: &mut [f32],
        ldc: usize,
        acc: bool,
        parallel: bool,
    ) {
        // SAFETY: `c` is initialised (a `&mut [f32]`).
        unsafe { matmul_init(kern, m, n, k, a, b, crate::as_uninit(c), ldc, Init::acc(acc), parallel) }
    }

    /// Every kernel this CPU runs: the portable emulation, the AVX2 one, `vdpbf16ps` and AMX where present (a
    /// missing one is reported, not passed silently).
    fn kernels_here() -> Vec<Kernel> {
        let mut kernels = vec![Kernel::EmulatedPortable, best(false, false)];
        for (kern, what) in [(best(true, false), "AVX512-BF16"), (best(true, true), "AMX-BF16")] {
            if kernels.contains(&kern) {
                eprintln!("SKIPPED for the {what} kernel: this CPU lacks it");
            } else {
                kernels.push(kern);
            }
        }
        kernels
    }

    fn data(len: usize, seed: usize) -> Vec<f32> {
        (0..len).map(|i| (((i + seed) * 7919) % 1013) as f32 / 487.0 - 1.0).collect()
    }

    /// The f64 sum of the bf16-rounded operands.
    fn reference(m: usize, n: usize, k: usize, a: &Mat, b: &Mat) -> Vec<f64> {
        let r = |v: f32| from_bf16(to_bf16(v)) as f64;
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| r(a.data[i * a.rs + p * a.cs]) * r(b.data[p * b.rs + j * b.cs])).sum();
            }
        }
        out
    }

    #[test]
    fn rounding_is_nearest_even_with_nan_and_subnormals_handled() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 is a tie between 1 and 1 + 2^-7: to even (1.0); 1 + 3·2^-8 rounds up to 1 + 2^-6.
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        assert_eq!(to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(to_bf16(-2.5), 0xc020);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        assert_eq!(to_bf16(f32::INFINITY), 0x7f80);
        assert_eq!(to_bf16(f32::MAX), 0x7f80, "overflow rounds to infinity");
        assert_eq!(to_bf16(1e-40), 0x0000);
        assert_eq!(to_bf16(-1e-40), 0x8000);
    }

    #[test]
    fn products_match_the_bf16_reference_on_ragged_shapes_strides_and_accumulation() {
        for kern in kernels_here() {
            for &(m, n, k, ta, tb, acc, par) in &[
                (1, 1, 1, false, false, false, false),
                (13, 33, 7, false, false, true, false),
                (200, 70, 301, true, false, false, true),
                (97, 65, 513, false, true, true, true),
                (12, 32, 256, true, true, false, true),
            ] {
                let (a, b) = (data(m * k, 1), data(k * n, 2));
                let am = if ta { Mat::t(&a, m) } else { Mat::rows(&a, k) };
                let bm = if tb { Mat::t(&b, k) } else { Mat::rows(&b, n) };
                let ldc = n + 3;
                let mut c: Vec<f32> = (0..m * ldc).map(|i| (i % 5) as f32).collect();
                let c0 = c.clone();
                matmul_with(kern, m, n, k, am, bm, &mut c, ldc, acc, par);
                let want = reference(m, n, k, &am, &bm);
                for i in 0..m {
                    for j in 0..n {
                        let w = want[i * n + j] + if acc { c0[i * ldc + j] as f64 } else { 0.0 };
                        let got = c[i * ldc + j] as f64;
                        assert!((got - w).abs() <= 1e-4 * (1.0 + w.abs()), "{kern:?} ({m},{n},{k}) [{i},{j}] {got} vs {w}");
                    }
                    assert_eq!(&c[i * ldc + n..i * ldc + ldc], &c0[i * ldc + n..i * ldc + ldc]);
                }
            }
        }
    }

    #[test]
    fn operand_layouts_give_the_same_bits() {
        // A transposed A is packed pair-major, a row-major one as rows; B rows are interleaved from f32, B
        // columns converted first: the same values in the same order, so the same bits, odd k included.
        for kern in kernels_here() {
            for &(m, n, k) in &[(37, 45, 301), (12, 32, 256), (5, 3, 1)] {
                let (a, b) = (data(m * k, 8), data(k * n, 9));
                let at: Vec<f32> = (0..k * m).map(|x| a[(x % m) * k + x / m]).collect();
                let bt: Vec<f32> = (0..n * k).map(|x| b[(x % k) * n + x / k]).collect();
                let run = |am: Mat, bm: Mat| {
                    let mut c = vec![0f32; m * n];
                    matmul_with(kern, m, n, k, am, bm, &mut c, n, false, true);
                    c.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                };
                let want = run(Mat::rows(&a, k), Mat::rows(&b, n));
                assert!(run(Mat::t(&at, m), Mat::rows(&b, n)) == want, "{kern:?} ({m},{n},{k}) transposed A");
                assert!(run(Mat::rows(&a, k), Mat::t(&bt, k)) == want, "{kern:?} ({m},{n},{k}) transposed B");
                assert!(run(Mat::t(&at, m), Mat::t(&bt, k)) == want, "{kern:?} ({m},{n},{k}) both");
            }
        }
    }

    #[test]
    fn interleaved_pairs_give_the_scalar_bits() {
        let mut v: Vec<f32> = data(997, 7).iter().map(|x| x * 3.7).collect();
        v.extend([0.0, -0.0, 1e-40, -1e-40, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::MAX, f32::MIN_POSITIVE]);
        let w: Vec<f32> = v.iter().rev().map(|x| x * -1.3).collect();
        for r1 in [Some(&w[..]), None] {
            let mut got = vec![0u32; v.len()];
            interleave(&v, r1, &mut got);
            let want: Vec<u32> = (0..v.len()).map(|j| ((r1.map_or(0, |r| to_bf16(r[j])) as u32) << 16) | to_bf16(v[j]) as u32).collect();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn vector_conversion_gives_the_scalar_bits() {
        let mut v: Vec<f32> = data(997, 7).iter().map(|x| x * 3.7).collect();
        v.extend([0.0, -0.0, 1e-40, -1e-40, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::MAX, f32::MIN_POSITIVE]);
        v.extend((0..64).map(|i| f32::from_bits(0x3f80_8000 + (i << 16)))); // ties
        let mut got = vec![0u16; v.len()];
        convert(&v, &mut got);
        let want: Vec<u16> = v.iter().map(|x| to_bf16(*x)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn reused_buffers_give_the_bits_of_fresh_ones() {
        // Fill this thread's spare buffers with NaN (bf16 0x7fc0): a padding value left over would turn the
        // product of a value with the zero pad into NaN.
        fn poison() {
            let held: Vec<Scratch<u16>> = (0..4).map(|_| Scratch::<u16>::take(1 << 16)).collect();
            let held32: Vec<Scratch<u32>> = (0..4).map(|_| Scratch::<u32>::take(1 << 16)).collect();
            for mut b in held {
                b.fill(0x7fc0);
            }
            for mut b in held32 {
                b.fill(0x7fc0_7fc0);
            }
        }
        // Odd k, columns past a panel, rows past a tile, transposed operands: fresh buffers on a new thread,
        // then each product on spares full of NaN.
        let shapes = [(13, 33, 7, false, false), (25, 65, 301, true, false), (7, 40, 9, false, true), (30, 31, 5, true, true)];
        let run = move |poisoned: bool| {
            shapes
                .iter()
                .map(|&(m, n, k, ta, tb)| {
                    if poisoned {
                        poison();
                    }
                    let (a, b) = (data(m * k, 3), data(k * n, 4));
                    let am = if ta { Mat::t(&a, m) } else { Mat::rows(&a, k) };
                    let bm = if tb { Mat::t(&b, k) } else { Mat::rows(&b, n) };
                    let mut c = vec![0f32; m * n];
                    matmul_with(kernel(), m, n, k, am, bm, &mut c, n, false, false);
                    c.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        };
        let fresh = std::thread::spawn(move || run(false)).join().unwrap();
        assert_eq!(run(true), fresh);
    }

    /// As the f32 product: a bias or zero start gives the bits of filling the output first (every kernel this
    /// CPU runs; ragged tiles, several blocks of `k`, odd `k`, `k = 0`).
    #[test]
    fn bias_and_zero_starts_give_the_bits_of_filling_first() {
        let kernels = kernels_here();
        for kern in kernels {
            for (m, n, k, par) in [(101, 77, 601, true), (12, 32, 256, false), (200, 45, 13, true), (7, 5, 0, false)] {
                let (a, b) = (data(m * k, 5), data(k * n, 6));
                let bias = data(n, 7);
                let (am, bm) = (Mat::rows(&a, k), Mat::rows(&b, n));
                let mut want: Vec<f32> = (0..m * n).map(|i| bias[i % n]).collect();
                matmul_with(kern, m, n, k, am, bm, &mut want, n, true, par);
                let mut want0 = vec![7.0f32; m * n];
                matmul_with(kern, m, n, k, am, bm, &mut want0, n, false, par);
                for (init, want) in [(Init::Bias(&bias), &want), (Init::Zero, &want0)] {
                    let mut got: Vec<f32> = Vec::with_capacity(m * n);
                    // SAFETY: not `Acc`; all m·n values are written (then read below).
                    unsafe {
                        matmul_init(kern, m, n, k, am, bm, &mut got.spare_capacity_mut()[..m * n], n, init, par);
                        got.set_len(m * n);
                    }
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert!(bits(&got) == bits(want), "{} {init:?} ({m}, {n}, {k})", kern.name());
                }
            }
        }
    }

    /// The bits are those of the documented order, computed here one element at a time: blocks of [`KC`]
    /// values of `k` summed from zero pair by pair (odd product first), added to the output in order. The
    /// shapes span several groups of `k` blocks (n = 16400: 513 column panels, one block per group), a
    /// ragged last group and tile, odd `k`, and accumulation onto existing values.
    #[test]
    fn sums_follow_the_documented_order_across_groups_of_k_blocks() {
        // Not AMX: its sums round otherwise (`amx.rs`).
        let mut kernels = vec![Kernel::EmulatedPortable];
        if best(true, false) == Kernel::Native {
            kernels.push(Kernel::Native);
        }
        let (m, n, k): (usize, usize, usize) = (13, 16400, 601);
        assert!(B_GROUP / (KC / 2 * n.div_ceil(NR) * NR * 4) < k.div_ceil(KC), "the shape must span several groups");
        let (a, b) = (data(m * k, 3), data(k * n, 4));
        let r = |v: f32| from_bf16(to_bf16(v));
        for kern in kernels {
            for acc in [false, true] {
                let start: Vec<f32> = (0..m * n).map(|i| (i % 9) as f32 - 4.0).collect();
                let mut got = start.clone();
                matmul_with(kern, m, n, k, Mat::rows(&a, k), Mat::rows(&b, n), &mut got, n, acc, true);
                for i in 0..m {
                    for j in (0..n).step_by(37).chain([n - 1]) {
                        let mut c: Option<f32> = acc.then_some(start[i * n + j]);
                        for p0 in (0..k).step_by(KC) {
                            let mut s = 0.0f32;
                            for p in (p0..(p0 + KC).min(k)).step_by(2) {
                                if p + 1 < k {
                                    s = r(a[i * k + p + 1]).mul_add(r(b[(p + 1) * n + j]), s);
                                }
                                s = r(a[i * k + p]).mul_add(r(b[p * n + j]), s);
                            }
                            c = Some(c.map_or(s, |c| c + s));
                        }
                        let want = c.unwrap();
                        assert_eq!(got[i * n + j].to_bits(), want.to_bits(), "{} acc {acc} [{i},{j}]", kern.name());
                    }
                }
            }
        }
    }

    /// The 8 × 8 register transposition moves the same bits to the same places as one value at a time, NaN
    /// patterns included, on edges of every size.
    /// The AMX kernel's transposed A: every value's bits in its place (f32 and bf16-bit columns, NaN and
    /// rounding ties among them), odd depths (a zero after the last value), rows and depths not multiples of 8.
    #[test]
    fn transposed_blocks_hold_each_values_bits() {
        let (m, k) = (45usize, 70usize);
        let mut v = data(m * k, 5);
        v[3] = f32::NAN;
        v[100] = f32::from_bits(0x3f80_8000);
        let v16: Vec<u16> = v.iter().map(|x| to_bf16(*x)).collect();
        for (i0, mc, p0, cols, ld) in [(0, 45, 0, 70, 70), (8, 37, 3, 33, 40), (40, 5, 64, 6, 32), (1, 16, 0, 17, 18)] {
            let want = |i: usize, p: usize| if p < cols { to_bf16(v[(p0 + p) * m + i0 + i]) } else { 0 };
            let mut got = vec![u16::MAX; mc * ld];
            transpose_bits(&Mat::t(&v, m), i0, mc, p0, cols, &mut got, ld);
            let mut got16 = vec![u16::MAX; mc * ld];
            transpose_bits(&Mat::t(&v16, m), i0, mc, p0, cols, &mut got16, ld);
            for i in 0..mc {
                for p in 0..cols.div_ceil(2) * 2 {
                    assert_eq!(got[i * ld + p], want(i, p), "f32 ({i0}, {mc}, {p0}, {cols}) [{i}, {p}]");
                    assert_eq!(got16[i * ld + p], want(i, p), "bits ({i0}, {mc}, {p0}, {cols}) [{i}, {p}]");
                }
            }
        }
    }

    #[test]
    fn gathered_pairs_equal_the_value_at_a_time_gather() {
        let (ld, cols) = (77usize, 41usize);
        let t: Vec<u32> = (0..ld * cols).map(|i| (i as u32).wrapping_mul(2_654_435_761) ^ 0x7f80_0001).collect();
        for (q0, kq, j0, nr) in [(0, 64, 0, 32), (3, 70, 5, 32), (1, 9, 9, 13), (0, 7, 0, 7), (2, 16, 40, 1), (0, 0, 0, 5)] {
            let mut got = vec![u32::MAX; kq * NR];
            gather_pairs(&t, ld, q0, kq, j0, nr, &mut got);
            for q in 0..kq {
                for j in 0..NR {
                    let want = if j < nr { t[(j0 + j) * ld + q0 + q] } else { u32::MAX };
                    assert_eq!(got[q * NR + j], want, "({q0}, {kq}, {j0}, {nr}) [{q}, {j}]");
                }
            }
        }
    }

    #[test]
    fn the_emulation_gives_the_native_kernels_bits() {
        if best(true, false) != Kernel::Native {
            eprintln!("SKIPPED: this CPU lacks AVX512-BF16 (nothing to compare the emulation with)");
            return;
        }
        let (m, n, k) = (101, 77, 601);
        let (a, b) = (data(m * k, 3), data(k * n, 4));
        let run = |kern: Kernel, acc: bool, ta: bool, tb: bool| {
            let am = if ta { Mat::t(&a, m) } else { Mat::rows(&a, k) };
            let bm = if tb { Mat::t(&b, k) } else { Mat::rows(&b, n) };
            let mut c: Vec<f32> = (0..m * n).map(|i| (i % 3) as f32).collect();
            matmul_with(kern, m, n, k, am, bm, &mut c, n, acc, true);
            c.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        for (acc, ta, tb) in [(false, false, false), (true, false, false), (false, true, false), (true, true, true)] {
            let native = run(Kernel::Native, acc, ta, tb);
            assert!(native == run(Kernel::EmulatedAvx2, acc, ta, tb), "AVX2 emulation differs ({acc} {ta} {tb})");
            assert!(native == run(Kernel::EmulatedPortable, acc, ta, tb), "portable emulation differs ({acc} {ta} {tb})");
        }
    }

    /// An operand given as bf16 bits (converted once by its owner) gives the bits of the same operand in f32
    /// (converted where it is packed): A and B, row-major, transposed and strided, on every kernel this CPU
    /// runs, odd `k` and ragged tiles, with NaN, infinities, subnormals and ties among the values.
    #[test]
    fn bf16_bits_operands_give_the_bits_of_f32_ones() {
        let kernels = kernels_here();
        let specials = [f32::NAN, f32::INFINITY, -0.0, 1e-40, f32::from_bits(0x3f80_8000), f32::from_bits(0x3f81_8000)];
        let spiked = |len: usize, seed: usize| -> Vec<f32> {
            let mut v = data(len, seed);
            for (i, s) in specials.iter().enumerate() {
                v[(i * 97 + seed) % len] = *s;
            }
            v
        };
        // (rows, cols) stored with strides: row-major, transposed, every other value of twice as many rows.
        let view = |rows: usize, cols: usize, layout: u8| -> (usize, usize) {
            match layout {
                0 => (cols, 1),
                1 => (1, rows),
                _ => (2 * cols, 2),
            }
        };
        for kern in kernels {
            for &(m, n, k) in &[(13, 33, 7), (37, 70, 301), (5, 3, 1)] {
                let (a, b) = (spiked(2 * m * k, 11), spiked(2 * k * n, 12));
                let (a16, b16): (Vec<u16>, Vec<u16>) = (a.iter().map(|v| to_bf16(*v)).collect(), b.iter().map(|v| to_bf16(*v)).collect());
                for la in 0..3 {
                    for lb in 0..3 {
                        let ((ars, acs), (brs, bcs)) = (view(m, k, la), view(k, n, lb));
                        let bits = |c: &[f32]| c.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                        let mut want = vec![1f32; m * n];
                        let (am, bm) = (Mat { data: &a[..], rs: ars, cs: acs }, Mat { data: &b[..], rs: brs, cs: bcs });
                        let (am16, bm16) = (Mat { data: &a16[..], rs: ars, cs: acs }, Mat { data: &b16[..], rs: brs, cs: bcs });
                        matmul_with(kern, m, n, k, am, bm, &mut want, n, true, true);
                        let mut got = vec![1f32; m * n];
                        matmul_with(kern, m, n, k, am16, bm, &mut got, n, true, true);
                        assert!(bits(&got) == bits(&want), "{kern:?} ({m},{n},{k}) A bits, layouts {la} {lb}");
                        let mut got = vec![1f32; m * n];
                        matmul_with(kern, m, n, k, am, bm16, &mut got, n, true, true);
                        assert!(bits(&got) == bits(&want), "{kern:?} ({m},{n},{k}) B bits, layouts {la} {lb}");
                        let mut got = vec![1f32; m * n];
                        matmul_with(kern, m, n, k, am16, bm16, &mut got, n, true, false);
                        assert!(bits(&got) == bits(&want), "{kern:?} ({m},{n},{k}) both bits, layouts {la} {lb}");
                    }
                }
            }
        }
    }

    #[test]
    fn pairs_of_bits_equal_the_value_at_a_time_pairs() {
        let r0: Vec<u16> = (0..103u32).map(|i| (i.wrapping_mul(40_503) ^ 0x7fc1) as u16).collect();
        let r1: Vec<u16> = (0..103u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u16).collect();
        for len in [0, 1, 7, 8, 9, 64, 103] {
            for second in [Some(&r1[..len]), None] {
                let mut got = vec![u32::MAX; len];
                pairs16(&r0[..len], second, &mut got);
                let mut want = vec![0u32; len];
                pairs_scalar(&r0[..len], second, &mut want);
                assert_eq!(got, want, "len {len}, second row {}", second.is_some());
            }
        }
    }

    #[test]
    fn bf16_is_close_to_f32_and_differs_from_it() {
        let (m, n, k) = (64, 48, 192);
        let (a, b) = (data(m * k, 5), data(k * n, 6));
        let mut c16 = vec![0.0f32; m * n];
        let mut c32 = vec![0.0f32; m * n];
        matmul_with(kernel(), m, n, k, Mat::rows(&a, k), Mat::rows(&b, n), &mut c16, n, false, true);
        crate::matmul(m, n, k, Mat::rows(&a, k), Mat::rows(&b, n), &mut c32, n, false, true);
        let scale = c32.iter().fold(0.0f32, |s, v| s.max(v.abs()));
        let err = c16.iter().zip(&c32).fold(0.0f32, |s, (x, y)| s.max((x - y).abs()));
        assert!(err > 0.0, "bf16 rounding must show");
        assert!(err < 0.02 * scale, "bf16 error {err} vs scale {scale}");
    }
}
