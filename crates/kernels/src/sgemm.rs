//! Single-precision matrix product with register-blocked micro-kernels for x86-64: a 12 × 32 tile on
//! AVX-512F (24 `zmm` accumulators; on Intel cores an 8 × 48 tile where it fits, see `AVX512_INTEL`) and a
//! 6 × 16 tile on AVX2 + FMA (12 `ymm` accumulators).
//!
//! Why not only the `gemm` crate: its AVX2 kernel (`fma::f32::x2x6`) spills accumulators to the stack,
//! and measured in the `polyflow` binary it ran at 72–78 GFLOP/s on 2 threads against 136–141 GFLOP/s
//! for the same call in a small example program (the spill stores stall on the stack's placement); its
//! AVX-512 kernels were slower still (59 vs 80 GFLOP/s on one thread). Here: BLIS-style packing of B into
//! `KC × NR` panels, A read in place when row-major (packed into `MR × KC` panels otherwise), and
//! micro-kernels whose accumulators never leave registers.
//!
//! Small products on one thread (the attention's per-head products) skip the packing and take
//! `crate::small`'s register tiles on AVX-512F, with the same sums.
//!
//! Every output element is `Σ_p a·b` accumulated by FMA in ascending `p` from zero within blocks of `KC`,
//! blocks added in order — the same in both kernels and for every thread count (threads split rows), so
//! AVX-512 and AVX2 machines give bit-identical products (unit test).

use crate::scratch::Scratch;
use crate::{Init, Mat};
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// Depth of one packed block.
pub(crate) const KC: usize = 256;
/// Rows per A block (one parallel task; a multiple of both kernels' `MR`). 48 rows of a row-major A at the
/// full depth are 48 KB, one Zen 5 L1: against 96 rows, 11 of 12 of the blocks' products ran faster there,
/// by up to 9 % (`examples/products.rs`, BENCHMARKS.md). Rows never change an element's sums, so neither do
/// the bits.
const MC: usize = 48;
/// Bytes of packed B that one group of `k` blocks may span (see `products`): 8 MiB, as the bf16 product's
/// (chosen on a Zen 5 with a 32 MiB L3; BENCHMARKS.md). No effect on the bits.
const B_GROUP: usize = 8 << 20;
/// A transposed A (`rs = 1`, as `xᵀ` in the weight gradients) is read in place, not packed, when its `k` stride
/// is at most this many values (1 KiB): each k step then broadcasts `MR` neighbouring values, and the next step's
/// are a short stride on, which the prefetchers follow (ViT-Ti's `xᵀ·dy`, stride 192: 1.5× faster than packed
/// on an Intel Xeon). A longer stride (`hᵀ`, 768) read in place ran slower than packed.
const A_IN_PLACE_STRIDE: usize = 256;
/// The deep products whose packed B of one `k` block fits in this many bytes (a narrow B: `n` up to 512) and
/// whose A is packed run [`Plan::Rows`] with row blocks of up to [`MC_NARROW`] rows and groups that keep A's
/// and B's packed blocks within [`L2_GROUP`]: the B panel is re-used by many more rows than 48 (ViT-Ti's
/// `hᵀ·dy`, `[768, 4160]·[4160, 192]`: 86 → 121 GFLOP/s on an Intel Xeon, 8 alternations).
const NARROW_B: usize = 512 << 10;
/// Row blocks of the narrow-B plan: at most 384 rows (384 · 256 values of packed A, 384 KiB).
const MC_NARROW: usize = 384;
/// Row blocks of a deep product whose row-major A is read in place and whose B is narrow (see [`NARROW_B`]): the
/// input gradients `dy·wᵀ`, k = the layer's output width. 192 rows against 48: ViT-Ti's `dy·wᵀ`
/// (`[4160, 768]·[768, 192]`) 1.034× and 1.047× in two runs of interleaved pairs (25 and 40) on an Intel Xeon,
/// 96 rows 1.03×; a wide B (ViT-B/16's `x·w`, n = 3072) was 0.94–0.99× with larger blocks, so it keeps 48.
/// Only with the 8 × 48 tile (Intel; its B panel fills a 48 KiB L1, now re-used by 24 row tiles instead of 6):
/// on a Zen 5, 48-row blocks had beaten larger ones with the 12 × 32 tile.
const MC_DEEP_ROWS: usize = 192;
/// Bytes of packed blocks that a thread keeps for one group of `k` blocks in the plans tuned for L2 (the
/// narrow-B rows, the column split): half of the Xeon's 2 MiB L2, all of a Zen 5's 1 MiB.
const L2_GROUP: usize = 1 << 20;
/// The column split ([`Plan::Columns`]) is taken when each thread's share of C fits in this many bytes (it
/// stays in L2 while the thread's groups of `k` blocks add to it).
const SPLIT_C: usize = 512 << 10;
/// Bytes of one thread's packed B per group of `k` blocks in the column split.
const SPLIT_B_GROUP: usize = 512 << 10;
/// The largest register tile (`MR · NR`: 384 for both AVX-512 tiles), for the ragged-tile buffer.
const TILE_MAX: usize = 12 * 32;

/// `c[MR × NR] (+)= Σ_p A(0..MR, p) · b[p, 0..NR]`: `(kc, a, ars, acs, b, c, ldc, acc)`, A element `(i, p)` at
/// `a[i·ars + p·acs]`, B a packed `kc × NR` panel, C at row stride `ldc`, added to when `acc`.
type Kernel = unsafe fn(usize, *const f32, usize, usize, *const f32, *mut f32, usize, bool);

/// A micro-kernel and its register tile.
#[derive(Clone, Copy)]
pub struct Isa {
    /// Rows of the register tile.
    mr: usize,
    /// Columns of the register tile.
    nr: usize,
    kernel: Kernel,
    /// A second kernel of the same instruction set that this CPU runs faster where it fits (see [`Isa::tile`]).
    alt: Option<&'static Isa>,
    /// Whether the kernel is AVX-512F's (small products then take [`crate::small`]).
    avx512: bool,
    /// Name for reports.
    pub name: &'static str,
}

impl Isa {
    /// The kernel for one product of `n` columns: [`Isa::alt`] when A is read in place and the alternative's
    /// columns pad `n` no more than this kernel's, else this one. Tiles never change an element's sums, so the
    /// choice never changes the bits.
    fn tile(self, n: usize, a: &Mat) -> Isa {
        match self.alt {
            Some(alt) if a_in_place(a) && n.div_ceil(alt.nr) * alt.nr <= n.div_ceil(self.nr) * self.nr => *alt,
            _ => self,
        }
    }
}

/// The AVX-512F kernel (12 × 32).
#[cfg(target_arch = "x86_64")]
const AVX512: Isa = Isa { mr: 12, nr: 32, kernel: kernel_avx512, alt: None, avx512: true, name: "AVX-512" };
/// The AVX-512F kernel with an 8 × 48 tile (fewer loads per FMA: 11 per 24 against 14).
#[cfg(target_arch = "x86_64")]
const AVX512_8X48: Isa = Isa { mr: 8, nr: NR_8X48, kernel: kernel_avx512_8x48, alt: None, avx512: true, name: "AVX-512 8x48" };
/// Columns of the 8 × 48 tile (a plan is tuned for it: [`MC_DEEP_ROWS`]).
const NR_8X48: usize = 48;
/// AVX-512F on Intel cores: the 8 × 48 tile for products whose A is read in place (row-major, or a short
/// transposed stride) and whose columns it fits (every linear layer of ViT-Ti and ViT-B/16), 12 × 32 otherwise.
/// On an Intel Xeon (Sapphire Rapids cache sizes) the 8 × 48 loop ran 3–7 % faster in L1, the block's products
/// up to 14 % faster and ViT-Ti training 1.09× (median of five alternations); 12 × 32 stays where a packed A meets
/// the 48 KiB B panel (BENCHMARKS.md). AMD CPUs keep 12 × 32 (tuned there; 8 × 48 not measured on them).
#[cfg(target_arch = "x86_64")]
const AVX512_INTEL: Isa = Isa { alt: Some(&AVX512_8X48), name: "AVX-512 (8x48 and 12x32 tiles)", ..AVX512 };
/// The AVX2 + FMA kernel (6 × 16).
#[cfg(target_arch = "x86_64")]
const AVX2: Isa = Isa { mr: 6, nr: 16, kernel: kernel_avx2, alt: None, avx512: false, name: "AVX2+FMA" };

/// Whether the CPU's vendor string is `GenuineIntel`.
#[cfg(target_arch = "x86_64")]
fn intel() -> bool {
    let r = std::arch::x86_64::__cpuid_count(0, 0);
    (r.ebx, r.edx, r.ecx) == (u32::from_le_bytes(*b"Genu"), u32::from_le_bytes(*b"ineI"), u32::from_le_bytes(*b"ntel"))
}

/// Whether small products on one thread take [`crate::small`] (the default; see [`small_products`]).
static SMALL: AtomicBool = AtomicBool::new(true);

/// Turns [`crate::small`]'s path for small single-thread products on or off, for measurements that compare it with
/// the blocked path in one process (`examples/attention.rs`). The bits are the same either way.
#[doc(hidden)]
pub fn small_products(on: bool) {
    SMALL.store(on, Ordering::Relaxed);
}

/// The environment variable that forces an f32 kernel for comparisons (read by [`isa`]). An AVX-512 value forces the
/// blocked path's tile; small single-thread products keep `crate::small`'s tiles (`avx2` turns those off too).
pub const FORCE_VAR: &str = "POLYFLOW_SGEMM";

/// The values of [`FORCE_VAR`]: AVX2 + FMA, the 12 × 32 tile everywhere, the 8 × 48 tile everywhere (any other
/// value: the CPU's default). The one list that [`isa`] reads and that the CLI's check of the knobs names.
pub const FORCE_VALUES: [&str; 3] = ["avx2", "avx512-12x32", "avx512-8x48"];

/// The kernel this CPU runs, if any: AVX-512F (on Intel with the 8 × 48 tile where it fits, see
/// `AVX512_INTEL`), else AVX2 + FMA. [`FORCE_VAR`] forces one for comparisons ([`FORCE_VALUES`]); the bits
/// are the same.
pub fn isa() -> Option<Isa> {
    static ISA: OnceLock<Option<Isa>> = OnceLock::new();
    *ISA.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            let force = std::env::var(FORCE_VAR).unwrap_or_default();
            let [avx2, tile_12x32, tile_8x48] = FORCE_VALUES;
            if std::arch::is_x86_feature_detected!("avx512f") && force != avx2 {
                return Some(match force.as_str() {
                    f if f == tile_12x32 => AVX512,
                    f if f == tile_8x48 => AVX512_8X48,
                    _ if intel() => AVX512_INTEL,
                    _ => AVX512,
                });
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

/// `c[m, n] (row stride ldc) (+)= a · b`, as [`crate::matmul`]; requires [`available`].
#[allow(clippy::too_many_arguments)]
pub fn matmul(m: usize, n: usize, k: usize, a: Mat, b: Mat, c: &mut [f32], ldc: usize, acc: bool, parallel: bool) {
    let isa = isa().expect("sgemm::matmul needs AVX2+FMA or AVX-512F");
    matmul_with(isa, m, n, k, a, b, c, ldc, acc, parallel)
}

/// [`matmul`] with a given kernel (the CPU must support it).
#[allow(clippy::too_many_arguments)]
fn matmul_with(isa: Isa, m: usize, n: usize, k: usize, a: Mat, b: Mat, c: &mut [f32], ldc: usize, acc: bool, parallel: bool) {
    // SAFETY: `c` is initialised (a `&mut [f32]`).
    unsafe { products(isa, m, n, k, a, b, crate::as_uninit(c), ldc, Init::acc(acc), parallel) }
}

/// The product with a given kernel (see [`crate::matmul_init`]): `c = init + a · b`, every value of the `m × n`
/// view written.
///
/// # Safety
/// The CPU must run `isa` (one [`isa`] returned); with [`Init::Acc`], the `m × n` view of `c` must be initialised.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn products(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    a: Mat,
    b: Mat,
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
    #[cfg(target_arch = "x86_64")]
    if isa.avx512 && !parallel && matches!(init, Init::Zero) && crate::small::fits(m, n, k) && SMALL.load(Ordering::Relaxed) {
        // SAFETY: the CPU runs AVX-512F (`isa`); the views were checked above; `Init::Zero` reads nothing.
        return unsafe { crate::small::product(m, n, k, a, b, c, ldc) };
    }
    if swapped(isa, m, n, k, &a, &b, init, parallel) {
        // SAFETY: the caller's contract (`Init::Zero` reads nothing of `c`).
        return unsafe { by_swapped(isa, m, n, k, a, b, c, ldc, parallel) };
    }
    let isa = isa.tile(n, &a);
    match plan(isa, m, n, k, &a, parallel) {
        // SAFETY: the caller's contract.
        Plan::Columns { parts } => unsafe { by_columns(isa, m, n, k, a, b, c, ldc, init, parts) },
        // SAFETY: the caller's contract.
        Plan::Rows { mc, group } => unsafe { by_rows(isa, m, n, k, a, b, c, ldc, init, parallel, mc, group) },
    }
}

/// `bᵀ` as a view (row-major `b` becomes a transposed operand, and the reverse).
fn transposed<'a>(b: &Mat<'a>) -> Mat<'a> {
    Mat { data: b.data, rs: b.cs, cs: b.rs }
}

/// Whether the product is computed as `(Bᵀ·Aᵀ)ᵀ` ([`by_swapped`]): a product starting from zero whose A is
/// transposed at a stride too long to be read in place while Bᵀ can be (B row-major and narrow), and whose
/// swapped form splits by columns ([`Plan::Columns`]: deep, two threads or more). That is the second MLP layer's
/// weight gradient `hᵀ·dz` (`[768, 4160]·[4160, 192]` in ViT-Ti): as `dzᵀ·h` its A is read in place and it splits
/// as `xᵀ·dy` does. On an Intel Xeon, 30 interleaved pairs: 1.13× with two threads; with one thread (no column
/// split) 0.86×, so one thread keeps the packed plan.
#[allow(clippy::too_many_arguments)]
fn swapped(isa: Isa, m: usize, n: usize, k: usize, a: &Mat, b: &Mat, init: Init, parallel: bool) -> bool {
    if !matches!(init, Init::Zero) || a.rs != 1 || a_in_place(a) || b.cs != 1 {
        return false;
    }
    let bt = transposed(b);
    a_in_place(&bt) && matches!(plan(isa.tile(m, &bt), n, m, k, &bt, parallel), Plan::Columns { .. })
}

/// `c = a · b` computed as `t = bᵀ · aᵀ` (`n × m`, its own plan and tile) and written into `c` transposed. The same
/// bits: each element is the same FMAs in the same order, `fma(b, a, s)` being `fma(a, b, s)` (one rounding of the
/// exact product plus `s`).
///
/// # Safety
/// As [`products`] (nothing of `c` is read).
#[allow(clippy::too_many_arguments)]
unsafe fn by_swapped(isa: Isa, m: usize, n: usize, k: usize, a: Mat, b: Mat, c: &mut [MaybeUninit<f32>], ldc: usize, parallel: bool) {
    let mut t = Scratch::<f32>::take(n * m);
    let (bt, at) = (transposed(&b), transposed(&a));
    // SAFETY: the CPU runs `isa` (the caller's contract); `t` holds the `n × m` product; `Init::Zero` reads nothing.
    unsafe { products(isa, n, m, k, bt, at, crate::as_uninit(&mut t), m, Init::Zero, parallel) };
    // `c` by blocks of 16 rows: each column of `t`'s block is 16 contiguous values, written down one column of `c`.
    let write = |(bi, rows): (usize, &mut [MaybeUninit<f32>])| {
        let i0 = bi * 16;
        let h = 16.min(m - i0);
        for j in 0..n {
            let col = &t[j * m + i0..j * m + i0 + h];
            for (i, v) in col.iter().enumerate() {
                rows[i * ldc + j].write(*v);
            }
        }
    };
    let c = &mut c[..(m - 1) * ldc + n];
    if parallel {
        c.par_chunks_mut(16 * ldc).enumerate().for_each(write);
    } else {
        c.chunks_mut(16 * ldc).enumerate().for_each(write);
    }
}

/// How a product is split over threads and blocked. None of it changes an element's sums (those depend only on
/// `KC`), so every plan gives the same bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    /// Row blocks of `mc` rows, one parallel task each; B packed `group` blocks of `k` at a time.
    Rows { mc: usize, group: usize },
    /// `parts` ranges of whole column panels, one per thread, each a [`Plan::Rows`] product of its own on that
    /// thread (its own packed B, in its L2) into a buffer of its own, copied into C at the end.
    Columns { parts: usize },
}

/// Whether A is read in place (row-major, or transposed at a short stride) rather than packed.
fn a_in_place(a: &Mat) -> bool {
    a.cs == 1 || (a.rs == 1 && a.cs <= A_IN_PLACE_STRIDE)
}

/// The plan for an `m × n` product of depth `k` (`parallel`: on the rayon pool's threads).
///
/// The weight gradients are deep (`k` = the batch's tokens, thousands) with few rows (`m` = the layer's
/// width): split by rows, each B panel served only 48 rows per trip from L3 and packing B read the whole of
/// `dy` once per product on all threads' shared blocks. So:
/// - a deep product with an A read in place and no more rows than columns, whose C shares fit in L2, is split
///   by columns ([`Plan::Columns`]; ViT-Ti's `xᵀ·dy`: 102 → 176–182 GFLOP/s on an Intel Xeon, MKL 155–167);
/// - a deep product with a row-major A and a narrow B (the input gradients) on the 8 × 48 tile takes 192-row blocks
///   ([`MC_DEEP_ROWS`]);
/// - a deep product with a packed A and a narrow B takes large row blocks and L2-sized groups (see [`NARROW_B`]);
/// - a deep product with a packed A and a wider B takes the same large row blocks (each B panel, fetched from L3,
///   then serves up to 384 rows instead of 48) with groups of the usual 8 MiB (ViT-B/16's `hᵀ·dz`,
///   `[3072, 3152]·[3152, 768]`: 1.14× in 60 interleaved pairs on an Intel Xeon; L2-sized groups there: 0.95×);
/// - everything else: 48-row blocks and 8 MiB groups, as tuned on a Zen 5.
fn plan(isa: Isa, m: usize, n: usize, k: usize, a: &Mat, parallel: bool) -> Plan {
    let threads = if parallel { rayon::current_num_threads() } else { 1 };
    let (mr, nr) = (isa.mr, isa.nr);
    let panels = n.div_ceil(nr);
    let deep = k > KC;
    if deep && threads > 1 && a.cs != 1 && a_in_place(a) && m <= n && panels >= threads {
        let share = panels.div_ceil(threads) * nr;
        if m * share * 4 <= SPLIT_C {
            return Plan::Columns { parts: threads };
        }
    }
    let bytes = |cols: usize| KC * cols * 4;
    let narrow = bytes(panels * nr) <= NARROW_B;
    if deep && a.cs == 1 && nr == NR_8X48 && narrow {
        return Plan::Rows { mc: MC_DEEP_ROWS, group: (B_GROUP / bytes(panels * nr)).max(1) };
    }
    if deep && !a_in_place(a) {
        // A packed: large row blocks; the groups L2-sized for a narrow B, else the usual 8 MiB.
        let mc = m.div_ceil(threads).next_multiple_of(mr).min(MC_NARROW);
        let group_bytes = if narrow { L2_GROUP } else { B_GROUP };
        return Plan::Rows { mc, group: (group_bytes / bytes(panels * nr + mc)).max(1) };
    }
    Plan::Rows { mc: MC, group: (B_GROUP / bytes(panels * nr)).max(1) }
}

/// [`Plan::Columns`]: `parts` ranges of whole column panels, each a row-split product on one thread into a buffer
/// of its own (holding C's values first for [`Init::Acc`]; the bias offset for [`Init::Bias`]), copied into C
/// by rows at the end (tasks writing C's columns directly would each need a mutable view of every row).
///
/// # Safety
/// As [`products`].
#[allow(clippy::too_many_arguments)]
unsafe fn by_columns(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    a: Mat,
    b: Mat,
    c: &mut [MaybeUninit<f32>],
    ldc: usize,
    init: Init,
    parts: usize,
) {
    let nr = isa.nr;
    let panels = n.div_ceil(nr);
    let ranges: Vec<(usize, usize)> =
        (0..parts).map(|t| (panels * t / parts * nr, (panels * (t + 1) / parts * nr).min(n))).filter(|(j0, j1)| j0 < j1).collect();
    let shared: &[MaybeUninit<f32>] = c;
    let outs: Vec<Scratch<f32>> = ranges
        .par_iter()
        .map(|&(j0, j1)| {
            let nt = j1 - j0;
            let mut out = Scratch::<f32>::take(m * nt);
            let init = match init {
                Init::Bias(bias) => Init::Bias(&bias[j0..]),
                Init::Acc => {
                    for (i, row) in out.chunks_exact_mut(nt).enumerate() {
                        for (o, v) in row.iter_mut().zip(&shared[i * ldc + j0..i * ldc + j1]) {
                            // SAFETY: `Acc`: the caller's contract (C's view is initialised).
                            *o = unsafe { v.assume_init() };
                        }
                    }
                    Init::Acc
                }
                Init::Zero => Init::Zero,
            };
            let b = Mat { data: &b.data[j0 * b.cs..], rs: b.rs, cs: b.cs };
            let group = (SPLIT_B_GROUP / (KC * nt.div_ceil(nr) * nr * 4)).max(1);
            // SAFETY: the CPU runs `isa` (the caller's contract); `out` is initialised for `Acc`.
            unsafe { by_rows(isa, m, nt, k, a, b, crate::as_uninit(&mut out), nt, init, false, MC, group) };
            out
        })
        .collect();
    c.par_chunks_mut(ldc).take(m).enumerate().for_each(|(i, row)| {
        for (&(j0, j1), out) in ranges.iter().zip(&outs) {
            let nt = j1 - j0;
            for (o, v) in row[j0..j1].iter_mut().zip(&out[i * nt..(i + 1) * nt]) {
                o.write(*v);
            }
        }
    });
}

/// [`Plan::Rows`]: row blocks of `mc` rows (in parallel when `parallel`), B packed `group` blocks of `k` at a
/// time.
///
/// # Safety
/// As [`products`].
#[allow(clippy::too_many_arguments)]
unsafe fn by_rows(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    a: Mat,
    b: Mat,
    c: &mut [MaybeUninit<f32>],
    ldc: usize,
    init: Init,
    parallel: bool,
    mc_block: usize,
    group: usize,
) {
    let (mr, nr) = (isa.mr, isa.nr);
    let npad = n.div_ceil(nr) * nr;
    // Blocks of `k` (first value, depth), taken a group at a time: B is packed for the whole group, and each row
    // block runs every block of the group on one column panel before the next panel, so C's tiles take one
    // trip from memory per group instead of one per block; the group's packed B (re-read by every row block)
    // stays within the plan's bytes.
    let kblocks: Vec<(usize, usize)> = (0..k).step_by(KC).map(|p0| (p0, KC.min(k - p0))).collect();
    let mut bp = Scratch::<f32>::take(group.min(kblocks.len()) * KC.min(k) * npad);
    let blocks = m.div_ceil(mc_block);
    // Only C's view is split into row blocks: chunks of a longer slice past the view would be empty tasks, and
    // rayon's halving split gave them to one thread and all the work to the other (a product into the first
    // rows of a larger buffer ran on one thread: 1.00× the one-thread speed on an Intel Xeon).
    let c = &mut c[..(m - 1) * ldc + n];
    for (gi, kblocks) in kblocks.chunks(group).enumerate() {
        for (gb, &(p0, kc)) in kblocks.iter().enumerate() {
            pack_b(&b, p0, kc, n, nr, &mut bp[gb * KC * npad..], parallel);
        }
        let run = |(bi, cblk): (usize, &mut [MaybeUninit<f32>])| {
            if bi >= blocks {
                return;
            }
            let i0 = bi * mc_block;
            let mc = mc_block.min(m - i0);
            // Row-major A is read in place (each k step broadcasts one value of MR rows), as is a transposed A at a
            // short stride (see `A_IN_PLACE_STRIDE`); only a ragged last panel is packed (zero rows must not be
            // read past the matrix). Other strides are packed.
            let inplace = a_in_place(&a);
            let full = if inplace { mc / mr * mr } else { 0 };
            let packed: Vec<Scratch<f32>> = kblocks
                .iter()
                .map(|&(p0, kc)| {
                    let mut ap = Scratch::<f32>::take((mc - full).div_ceil(mr) * mr * kc);
                    pack_a(&a, i0 + full, mc - full, p0, kc, mr, &mut ap);
                    ap
                })
                .collect();
            let ks: Vec<KBlock> = kblocks
                .iter()
                .zip(&packed)
                .enumerate()
                .map(|(gb, (&(p0, kc), ap))| KBlock {
                    kc,
                    a: Panels {
                        direct: inplace.then(|| (Mat { data: &a.data[i0 * a.rs + p0 * a.cs..], rs: a.rs, cs: a.cs }, full)),
                        packed: ap,
                    },
                    bp: &bp[gb * KC * npad..gb * KC * npad + kc * npad],
                })
                .collect();
            // SAFETY: the caller's contract (`Acc` only on initialised values, or on what an earlier block wrote).
            unsafe { block(isa, mc, n, &ks, cblk, ldc, init, gi == 0) };
        };
        if parallel && blocks > 1 {
            crate::split(c.par_chunks_mut(mc_block * ldc).enumerate()).for_each(run);
        } else {
            c.chunks_mut(mc_block * ldc).enumerate().for_each(run);
        }
    }
}

/// Packs `b[p0..p0+kc, 0..n]` as panels of `kc × NR` (zero-padded columns).
/// Large blocks are packed by all threads, a run of panels each: packed on the calling thread alone, the
/// weight gradients' `dy` (k = the batch's rows, thousands) kept the other threads idle between row blocks.
fn pack_b(b: &Mat, p0: usize, kc: usize, n: usize, big_nr: usize, out: &mut [f32], parallel: bool) {
    let np = n.div_ceil(big_nr);
    let panels = &mut out[..np * kc * big_nr];
    let per = if parallel && panels.len() >= PARALLEL_PACK { np.div_ceil(rayon::current_num_threads()) } else { np };
    if per < np {
        panels.par_chunks_mut(per * kc * big_nr).enumerate().for_each(|(t, run)| pack_b_panels(b, p0, kc, n, big_nr, t * per, run));
    } else {
        pack_b_panels(b, p0, kc, n, big_nr, 0, panels);
    }
}

/// Panels `jp0..` of [`pack_b`] into `out` (whole panels).
fn pack_b_panels(b: &Mat, p0: usize, kc: usize, n: usize, big_nr: usize, jp0: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if b.cs == 1 && std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX (checked).
        unsafe { pack_b_rows_avx(b, p0, kc, n, big_nr, jp0, out) };
        return;
    }
    for (i, panel) in out.chunks_mut(kc * big_nr).enumerate() {
        pack_b_panel(b, p0, kc, n, big_nr, jp0 + i, panel);
    }
}

/// [`pack_b_panels`] for a row-major B (`cs = 1`), one row of B at a time across all the panels: B is read
/// in order (a panel at a time read 128 bytes from each of `kc` rows thousands of bytes apart, which the
/// hardware prefetchers do not follow; with the 12.8 MB `dy` of the ViT-Ti weight gradient, packing was a
/// quarter of that product's time on an Intel Xeon), and the runs are copied in AVX registers, not by a
/// `memcpy` call each (the same values land in the same places).
///
/// # Safety
/// The CPU must support AVX.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
#[allow(clippy::too_many_arguments)]
unsafe fn pack_b_rows_avx(b: &Mat, p0: usize, kc: usize, n: usize, big_nr: usize, jp0: usize, out: &mut [f32]) {
    for p in 0..kc {
        let base = (p0 + p) * b.rs;
        for (i, panel) in out.chunks_mut(kc * big_nr).enumerate() {
            let j0 = (jp0 + i) * big_nr;
            let nr = big_nr.min(n - j0);
            let dst = &mut panel[p * big_nr..(p + 1) * big_nr];
            let src = &b.data[base + j0..base + j0 + nr];
            if nr == big_nr {
                // SAFETY: AVX (this function's contract); `dst` and `src` hold `big_nr` values.
                unsafe { copy_avx(dst, src) };
            } else {
                dst[..nr].copy_from_slice(src);
                dst[nr..].fill(0.0);
            }
        }
    }
}

/// [`copy_run`] in AVX registers, for the row-order packings: a loop of vector moves over a run of unknown length is
/// turned into a `memcpy` call by the compiler, one per run (perf: ~20 % of the ViT-Ti weight gradient in
/// `__memmove_avx512_unaligned_erms`).
///
/// # Safety
/// The CPU must support AVX.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
#[inline]
unsafe fn copy_avx(dst: &mut [f32], src: &[f32]) {
    // Inlined here, so its fixed-size moves are compiled with AVX.
    copy_run(dst, src)
}

/// Values of B from which packing is split over threads (256 KiB).
const PARALLEL_PACK: usize = 1 << 16;

/// Panel `jp` of [`pack_b`].
fn pack_b_panel(b: &Mat, p0: usize, kc: usize, n: usize, big_nr: usize, jp: usize, panel: &mut [f32]) {
    {
        let j0 = jp * big_nr;
        let nr = big_nr.min(n - j0);
        #[cfg(target_arch = "x86_64")]
        if b.rs == 1 && b.cs != 1 && std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: the CPU has AVX (checked).
            unsafe { pack_b_transposed_avx(b, p0, kc, j0, nr, big_nr, panel) };
            return;
        }
        for p in 0..kc {
            let row = &mut panel[p * big_nr..p * big_nr + big_nr];
            let base = (p0 + p) * b.rs + j0 * b.cs;
            if b.cs == 1 {
                copy_run(&mut row[..nr], &b.data[base..base + nr]);
            } else {
                for (j, v) in row[..nr].iter_mut().enumerate() {
                    *v = b.data[base + j * b.cs];
                }
            }
            row[nr..].fill(0.0);
        }
    }
}

/// [`pack_b_panel`] for a transposed B (`rs = 1`: each column's values are contiguous, as in the attention's
/// `kᵀ` and the backward pass's `Wᵀ`): 8 × 8 blocks loaded a column run at a time and transposed in registers,
/// instead of one strided read per value (the same values land in the same places).
///
/// # Safety
/// The CPU must support AVX.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
#[allow(clippy::too_many_arguments)]
unsafe fn pack_b_transposed_avx(b: &Mat, p0: usize, kc: usize, j0: usize, nr: usize, big_nr: usize, panel: &mut [f32]) {
    use std::arch::x86_64::*;
    let at = |j: usize, p: usize| (j0 + j) * b.cs + p0 + p;
    let (j8, p8) = (nr / 8 * 8, kc / 8 * 8);
    for j in (0..j8).step_by(8) {
        for p in (0..p8).step_by(8) {
            // Column j + i, values p..p + 8 (bounds-checked slices; the loads read exactly them).
            let r: [__m256; 8] = std::array::from_fn(|i| {
                let src = &b.data[at(j + i, p)..at(j + i, p) + 8];
                // SAFETY: `src` holds 8 values; unaligned load.
                unsafe { _mm256_loadu_ps(src.as_ptr()) }
            });
            // SAFETY: the CPU has AVX (this function's contract).
            let rows = unsafe { crate::transpose::transpose8(r) };
            for (q, row) in rows.into_iter().enumerate() {
                let dst = &mut panel[(p + q) * big_nr + j..(p + q) * big_nr + j + 8];
                // SAFETY: `dst` holds 8 values; unaligned store.
                unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), row) };
            }
        }
        for p in p8..kc {
            for i in 0..8 {
                panel[p * big_nr + j + i] = b.data[at(j + i, p)];
            }
        }
    }
    for j in j8..nr {
        for p in 0..kc {
            panel[p * big_nr + j] = b.data[at(j, p)];
        }
    }
    for p in 0..kc {
        panel[p * big_nr + nr..(p + 1) * big_nr].fill(0.0);
    }
}

/// `dst ← src` for the short runs packing copies (a panel's row of 48, 32 or 16, an A column of 12, 8 or 6): at those
/// lengths as register moves, not a `memmove` call each (measured: the calls were ~7 % of a training step,
/// most of them packing the transposed operands of the weight gradients 12 values at a time).
#[inline(always)]
fn copy_run(dst: &mut [f32], src: &[f32]) {
    #[inline(always)]
    fn fixed<const N: usize>(dst: &mut [f32], src: &[f32]) {
        let d: &mut [f32; N] = dst.try_into().expect("run length");
        let s: &[f32; N] = src.try_into().expect("run length");
        *d = *s;
    }
    match dst.len() {
        48 => fixed::<48>(dst, src),
        32 => fixed::<32>(dst, src),
        16 => fixed::<16>(dst, src),
        12 => fixed::<12>(dst, src),
        8 => fixed::<8>(dst, src),
        6 => fixed::<6>(dst, src),
        _ => dst.copy_from_slice(src),
    }
}

/// Packs `a[i0..i0+mc, p0..p0+kc]` as panels of `kc × MR` (k-major, zero-padded rows). Reads along
/// whichever of `a`'s dimensions is contiguous (a transposed operand, `rs = 1`, is copied `MR` at a time).
fn pack_a(a: &Mat, i0: usize, mc: usize, p0: usize, kc: usize, big_mr: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if a.rs == 1 && std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX (checked).
        unsafe { pack_a_columns_avx(a, i0, mc, p0, kc, big_mr, out) };
        return;
    }
    for (ip, panel) in out.chunks_mut(kc * big_mr).enumerate() {
        let r0 = i0 + ip * big_mr;
        let mr = big_mr.min(i0 + mc - r0);
        if a.rs == 1 {
            for (p, dst) in panel.chunks_mut(big_mr).enumerate() {
                let base = r0 + (p0 + p) * a.cs;
                copy_run(&mut dst[..mr], &a.data[base..base + mr]);
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

/// [`pack_a`] for a transposed A (`rs = 1`: each of A's columns `p` is a contiguous run, as `xᵀ` in the weight
/// gradients), one column of A at a time across all the panels (read in order; a panel at a time read `MR`
/// values from each of `kc` columns far apart), the runs copied in AVX registers.
///
/// # Safety
/// The CPU must support AVX.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn pack_a_columns_avx(a: &Mat, i0: usize, mc: usize, p0: usize, kc: usize, big_mr: usize, out: &mut [f32]) {
    for p in 0..kc {
        let base = (p0 + p) * a.cs;
        for (ip, panel) in out.chunks_mut(kc * big_mr).enumerate() {
            let r0 = i0 + ip * big_mr;
            let mr = big_mr.min(i0 + mc - r0);
            let dst = &mut panel[p * big_mr..(p + 1) * big_mr];
            // SAFETY: AVX (this function's contract); both runs hold `mr` values.
            unsafe { copy_avx(&mut dst[..mr], &a.data[base + r0..base + r0 + mr]) };
            dst[mr..].fill(0.0);
        }
    }
}

/// The A operand of one block: its first `full` rows read in place (row-major, `cs = 1`), the rest packed.
struct Panels<'a> {
    direct: Option<(Mat<'a>, usize)>,
    packed: &'a [f32],
}

/// One block of `k` for a row block: its depth, the A operand, the packed B panels.
struct KBlock<'a> {
    kc: usize,
    a: Panels<'a>,
    bp: &'a [f32],
}

/// One A block times all packed B panels into `c` (rows of this block, row stride `ldc`), for each column
/// panel every block of `k` in `ks` in order (`init` before the first when `first`, added to after). Full
/// tiles are written by the kernel straight into `c`; ragged ones go through a tile buffer.
///
/// # Safety
/// With [`Init::Acc`] or `!first`, the block's `mc × n` view of `c` must be initialised.
#[allow(clippy::too_many_arguments)]
unsafe fn block(isa: Isa, mc: usize, n: usize, ks: &[KBlock], c: &mut [MaybeUninit<f32>], ldc: usize, init: Init, first: bool) {
    let (big_mr, big_nr) = (isa.mr, isa.nr);
    let mut tile = [0.0f32; TILE_MAX];
    for jp in 0..n.div_ceil(big_nr) {
        let j0 = jp * big_nr;
        let nr = big_nr.min(n - j0);
        for (bi, kb) in ks.iter().enumerate() {
            // Later blocks of `k` add to what the first wrote.
            let init = if first && bi == 0 { init } else { Init::Acc };
            let (kc, a) = (kb.kc, &kb.a);
            let bpanel = &kb.bp[jp * kc * big_nr..(jp + 1) * kc * big_nr];
            let full_rows = a.direct.map(|d| d.1).unwrap_or(0);
            for i0 in (0..mc).step_by(big_mr) {
                let mr = big_mr.min(mc - i0);
                // (pointer to A(i0, 0), row stride, k stride)
                let (ap, ars, acs) = match a.direct {
                    Some((d, full)) if i0 < full => (d.data[i0 * d.rs..].as_ptr(), d.rs, d.cs),
                    _ => (a.packed[(i0 - full_rows) / big_mr * kc * big_mr..].as_ptr(), 1, big_mr),
                };
                if mr == big_mr && nr == big_nr {
                    let dst = &mut c[i0 * ldc + j0..(i0 + big_mr - 1) * ldc + j0 + big_nr];
                    // A bias goes into the tile's rows (in L1 for the kernel's read) just before it adds to them.
                    for i in 0..big_mr {
                        init.start(&mut dst[i * ldc..i * ldc + big_nr], j0, false);
                    }
                    let add = !matches!(init, Init::Zero);
                    // SAFETY: the CPU supports `isa` (checked by `isa()`); A holds MR rows of kc values at the
                    // given strides (the views were sliced from bounds-checked operands), the B panel kc·NR
                    // values, and `dst` the MR × NR tile at row stride `ldc`, initialised when `add` (the bias
                    // above, an earlier block, or the caller's contract).
                    unsafe { (isa.kernel)(kc, ap, ars, acs, bpanel.as_ptr(), dst.as_mut_ptr() as *mut f32, ldc, add) };
                } else {
                    // SAFETY: as above, into the local MR × NR tile.
                    unsafe { (isa.kernel)(kc, ap, ars, acs, bpanel.as_ptr(), tile.as_mut_ptr(), big_nr, false) };
                    for i in 0..mr {
                        let row = &mut c[(i0 + i) * ldc + j0..(i0 + i) * ldc + j0 + nr];
                        let t = &tile[i * big_nr..i * big_nr + nr];
                        // SAFETY: the caller's contract for `Acc`, or what an earlier block wrote.
                        unsafe { init.add_row(row, j0, t) };
                    }
                }
            }
        }
    }
}

// The micro-kernels, `c[MR × NR] (+)= Σ_p A(0..MR, p) · b[p, 0..NR]` (two vectors per row): A element
// `(i, p)` at `a[i·ars + p·acs]` (packed panels: `ars = 1, acs = MR`; row-major in place: `ars = rs,
// acs = 1`), B a packed `kc × NR` panel, C at row stride `ldc`, added to when `acc`.
//
// Inline assembly, not intrinsics: with intrinsics the register allocation was up to LLVM, and the dev
// profile (opt-level 2) spilled 24 of the AVX-512 kernel's accumulator moves to the stack (197 stack
// operands in the kernel, 5 at opt-level 3). On a Zen 5 that cost little; on a Zen 4 the dev build ran at
// 144 GFLOP/s against 181 for the release build (BENCHMARKS.md, "CPUs other than Zen 5"). The assembly is
// the same code at every optimisation level. Each accumulator is zeroed and then updated by one FMA per
// `p` in ascending order, as the intrinsics did, so the products are bit-identical to before.
//
// Generated once from a short script (each row written out); rows 0–3 of A are addressed from `a0`, rows
// 4–7 from `a4 = a0 + 4·lda`, rows 8–11 from `a8`, at offsets 0, lda, 2·lda and 3·lda. The AVX-512 kernel's
// set-up and store (shared with the bf16 kernel) are the macros of `asm_tile.rs`.

/// The AVX-512F micro-kernel: 12 rows × 32 columns in `zmm0`–`zmm23`, B rows in `zmm24`/`zmm25`,
/// broadcasts of A alternating in `zmm26`/`zmm27`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_avx512(kc: usize, a: *const f32, ars: usize, acs: usize, b: *const f32, c: *mut f32, ldc: usize, acc: bool) {
    // SAFETY: the caller guarantees what `Kernel` documents; the assembly reads 12 rows of A at
    // `a + i·ars + p·acs` (p < kc), kc·NR values of B and writes the 12 × NR tile of C, nothing else.
    unsafe {
        std::arch::asm!(
            tile_12x32_start!(),
            "vmovups zmm24, [{b}]",
            "vmovups zmm25, [{b} + 64]",
            "vbroadcastss zmm26, dword ptr [{a0}]",
            "vfmadd231ps zmm0, zmm26, zmm24",
            "vfmadd231ps zmm1, zmm26, zmm25",
            "vbroadcastss zmm27, dword ptr [{a0} + {lda}]",
            "vfmadd231ps zmm2, zmm27, zmm24",
            "vfmadd231ps zmm3, zmm27, zmm25",
            "vbroadcastss zmm26, dword ptr [{a0} + 2*{lda}]",
            "vfmadd231ps zmm4, zmm26, zmm24",
            "vfmadd231ps zmm5, zmm26, zmm25",
            "vbroadcastss zmm27, dword ptr [{a0} + {lda3}]",
            "vfmadd231ps zmm6, zmm27, zmm24",
            "vfmadd231ps zmm7, zmm27, zmm25",
            "vbroadcastss zmm26, dword ptr [{a4}]",
            "vfmadd231ps zmm8, zmm26, zmm24",
            "vfmadd231ps zmm9, zmm26, zmm25",
            "vbroadcastss zmm27, dword ptr [{a4} + {lda}]",
            "vfmadd231ps zmm10, zmm27, zmm24",
            "vfmadd231ps zmm11, zmm27, zmm25",
            "vbroadcastss zmm26, dword ptr [{a4} + 2*{lda}]",
            "vfmadd231ps zmm12, zmm26, zmm24",
            "vfmadd231ps zmm13, zmm26, zmm25",
            "vbroadcastss zmm27, dword ptr [{a4} + {lda3}]",
            "vfmadd231ps zmm14, zmm27, zmm24",
            "vfmadd231ps zmm15, zmm27, zmm25",
            "vbroadcastss zmm26, dword ptr [{a8}]",
            "vfmadd231ps zmm16, zmm26, zmm24",
            "vfmadd231ps zmm17, zmm26, zmm25",
            "vbroadcastss zmm27, dword ptr [{a8} + {lda}]",
            "vfmadd231ps zmm18, zmm27, zmm24",
            "vfmadd231ps zmm19, zmm27, zmm25",
            "vbroadcastss zmm26, dword ptr [{a8} + 2*{lda}]",
            "vfmadd231ps zmm20, zmm26, zmm24",
            "vfmadd231ps zmm21, zmm26, zmm25",
            "vbroadcastss zmm27, dword ptr [{a8} + {lda3}]",
            "vfmadd231ps zmm22, zmm27, zmm24",
            "vfmadd231ps zmm23, zmm27, zmm25",
            "add {a0}, {step}",
            "add {a4}, {step}",
            "add {a8}, {step}",
            "add {b}, 128",
            "dec {k}",
            "jnz 2b",
            tile_12x32_finish!(),
            k = inout(reg) kc => _,
            a0 = inout(reg) a => _,
            b = inout(reg) b => _,
            lda = in(reg) ars * 4,
            step = in(reg) acs * 4,
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

/// The AVX-512F micro-kernel with the 8 × 48 tile: 8 rows × 48 columns in `zmm0`–`zmm23` (row `i` in `zmm(3i)`–`zmm(3i+2)`),
/// B rows in `zmm24`–`zmm26`, broadcasts of A alternating in `zmm27`/`zmm28`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_avx512_8x48(kc: usize, a: *const f32, ars: usize, acs: usize, b: *const f32, c: *mut f32, ldc: usize, acc: bool) {
    // SAFETY: the caller guarantees what `Kernel` documents; the assembly reads 8 rows of A at
    // `a + i·ars + p·acs` (p < kc), kc·NR values of B and writes the 8 × NR tile of C, nothing else.
    unsafe {
        std::arch::asm!(
            zero_zmm0_23!(),
            "lea {a4}, [{a0} + 4*{lda}]",
            "lea {lda3}, [{lda} + 2*{lda}]",
            "test {k}, {k}",
            "jz 3f",
            "2:",
            "vmovups zmm24, [{b}]",
            "vmovups zmm25, [{b} + 64]",
            "vmovups zmm26, [{b} + 128]",
            "vbroadcastss zmm27, dword ptr [{a0}]",
            "vfmadd231ps zmm0, zmm27, zmm24",
            "vfmadd231ps zmm1, zmm27, zmm25",
            "vfmadd231ps zmm2, zmm27, zmm26",
            "vbroadcastss zmm28, dword ptr [{a0} + {lda}]",
            "vfmadd231ps zmm3, zmm28, zmm24",
            "vfmadd231ps zmm4, zmm28, zmm25",
            "vfmadd231ps zmm5, zmm28, zmm26",
            "vbroadcastss zmm27, dword ptr [{a0} + 2*{lda}]",
            "vfmadd231ps zmm6, zmm27, zmm24",
            "vfmadd231ps zmm7, zmm27, zmm25",
            "vfmadd231ps zmm8, zmm27, zmm26",
            "vbroadcastss zmm28, dword ptr [{a0} + {lda3}]",
            "vfmadd231ps zmm9, zmm28, zmm24",
            "vfmadd231ps zmm10, zmm28, zmm25",
            "vfmadd231ps zmm11, zmm28, zmm26",
            "vbroadcastss zmm27, dword ptr [{a4}]",
            "vfmadd231ps zmm12, zmm27, zmm24",
            "vfmadd231ps zmm13, zmm27, zmm25",
            "vfmadd231ps zmm14, zmm27, zmm26",
            "vbroadcastss zmm28, dword ptr [{a4} + {lda}]",
            "vfmadd231ps zmm15, zmm28, zmm24",
            "vfmadd231ps zmm16, zmm28, zmm25",
            "vfmadd231ps zmm17, zmm28, zmm26",
            "vbroadcastss zmm27, dword ptr [{a4} + 2*{lda}]",
            "vfmadd231ps zmm18, zmm27, zmm24",
            "vfmadd231ps zmm19, zmm27, zmm25",
            "vfmadd231ps zmm20, zmm27, zmm26",
            "vbroadcastss zmm28, dword ptr [{a4} + {lda3}]",
            "vfmadd231ps zmm21, zmm28, zmm24",
            "vfmadd231ps zmm22, zmm28, zmm25",
            "vfmadd231ps zmm23, zmm28, zmm26",
            "add {a0}, {step}",
            "add {a4}, {step}",
            "add {b}, 192",
            "dec {k}",
            "jnz 2b",
            "3:",
            "lea {a4}, [{c0} + 4*{ldc}]",
            "lea {lda3}, [{ldc} + 2*{ldc}]",
            "test {acc}, {acc}",
            "jz 4f",
            "vaddps zmm0, zmm0, [{c0}]",
            "vaddps zmm1, zmm1, [{c0} + 64]",
            "vaddps zmm2, zmm2, [{c0} + 128]",
            "vaddps zmm3, zmm3, [{c0} + {ldc}]",
            "vaddps zmm4, zmm4, [{c0} + {ldc} + 64]",
            "vaddps zmm5, zmm5, [{c0} + {ldc} + 128]",
            "vaddps zmm6, zmm6, [{c0} + 2*{ldc}]",
            "vaddps zmm7, zmm7, [{c0} + 2*{ldc} + 64]",
            "vaddps zmm8, zmm8, [{c0} + 2*{ldc} + 128]",
            "vaddps zmm9, zmm9, [{c0} + {lda3}]",
            "vaddps zmm10, zmm10, [{c0} + {lda3} + 64]",
            "vaddps zmm11, zmm11, [{c0} + {lda3} + 128]",
            "vaddps zmm12, zmm12, [{a4}]",
            "vaddps zmm13, zmm13, [{a4} + 64]",
            "vaddps zmm14, zmm14, [{a4} + 128]",
            "vaddps zmm15, zmm15, [{a4} + {ldc}]",
            "vaddps zmm16, zmm16, [{a4} + {ldc} + 64]",
            "vaddps zmm17, zmm17, [{a4} + {ldc} + 128]",
            "vaddps zmm18, zmm18, [{a4} + 2*{ldc}]",
            "vaddps zmm19, zmm19, [{a4} + 2*{ldc} + 64]",
            "vaddps zmm20, zmm20, [{a4} + 2*{ldc} + 128]",
            "vaddps zmm21, zmm21, [{a4} + {lda3}]",
            "vaddps zmm22, zmm22, [{a4} + {lda3} + 64]",
            "vaddps zmm23, zmm23, [{a4} + {lda3} + 128]",
            "4:",
            "vmovups [{c0}], zmm0",
            "vmovups [{c0} + 64], zmm1",
            "vmovups [{c0} + 128], zmm2",
            "vmovups [{c0} + {ldc}], zmm3",
            "vmovups [{c0} + {ldc} + 64], zmm4",
            "vmovups [{c0} + {ldc} + 128], zmm5",
            "vmovups [{c0} + 2*{ldc}], zmm6",
            "vmovups [{c0} + 2*{ldc} + 64], zmm7",
            "vmovups [{c0} + 2*{ldc} + 128], zmm8",
            "vmovups [{c0} + {lda3}], zmm9",
            "vmovups [{c0} + {lda3} + 64], zmm10",
            "vmovups [{c0} + {lda3} + 128], zmm11",
            "vmovups [{a4}], zmm12",
            "vmovups [{a4} + 64], zmm13",
            "vmovups [{a4} + 128], zmm14",
            "vmovups [{a4} + {ldc}], zmm15",
            "vmovups [{a4} + {ldc} + 64], zmm16",
            "vmovups [{a4} + {ldc} + 128], zmm17",
            "vmovups [{a4} + 2*{ldc}], zmm18",
            "vmovups [{a4} + 2*{ldc} + 64], zmm19",
            "vmovups [{a4} + 2*{ldc} + 128], zmm20",
            "vmovups [{a4} + {lda3}], zmm21",
            "vmovups [{a4} + {lda3} + 64], zmm22",
            "vmovups [{a4} + {lda3} + 128], zmm23",
            "vzeroupper",
            k = inout(reg) kc => _,
            a0 = inout(reg) a => _,
            b = inout(reg) b => _,
            lda = in(reg) ars * 4,
            step = in(reg) acs * 4,
            lda3 = out(reg) _,
            a4 = out(reg) _,
            c0 = in(reg) c,
            ldc = in(reg) ldc * 4,
            acc = in(reg) acc as usize,
            out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _, out("zmm4") _, out("zmm5") _, out("zmm6") _, out("zmm7") _, out("zmm8") _, out("zmm9") _, out("zmm10") _, out("zmm11") _, out("zmm12") _, out("zmm13") _, out("zmm14") _, out("zmm15") _, out("zmm16") _, out("zmm17") _, out("zmm18") _, out("zmm19") _, out("zmm20") _, out("zmm21") _, out("zmm22") _, out("zmm23") _, out("zmm24") _, out("zmm25") _, out("zmm26") _, out("zmm27") _, out("zmm28") _,
            options(nostack),
        );
    }
}

/// The AVX2 + FMA micro-kernel: 6 rows × 16 columns in `ymm0`–`ymm11`, B rows in `ymm12`/`ymm13`,
/// broadcasts of A alternating in `ymm14`/`ymm15`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_avx2(kc: usize, a: *const f32, ars: usize, acs: usize, b: *const f32, c: *mut f32, ldc: usize, acc: bool) {
    // SAFETY: the caller guarantees what `Kernel` documents; the assembly reads 6 rows of A at
    // `a + i·ars + p·acs` (p < kc), kc·NR values of B and writes the 6 × NR tile of C, nothing else.
    unsafe {
        std::arch::asm!(
            "vxorps ymm0, ymm0, ymm0",
            "vxorps ymm1, ymm1, ymm1",
            "vxorps ymm2, ymm2, ymm2",
            "vxorps ymm3, ymm3, ymm3",
            "vxorps ymm4, ymm4, ymm4",
            "vxorps ymm5, ymm5, ymm5",
            "vxorps ymm6, ymm6, ymm6",
            "vxorps ymm7, ymm7, ymm7",
            "vxorps ymm8, ymm8, ymm8",
            "vxorps ymm9, ymm9, ymm9",
            "vxorps ymm10, ymm10, ymm10",
            "vxorps ymm11, ymm11, ymm11",
            "lea {a4}, [{a0} + 4*{lda}]",
            "lea {lda3}, [{lda} + 2*{lda}]",
            "test {k}, {k}",
            "jz 3f",
            "2:",
            "vmovups ymm12, [{b}]",
            "vmovups ymm13, [{b} + 32]",
            "vbroadcastss ymm14, dword ptr [{a0}]",
            "vfmadd231ps ymm0, ymm14, ymm12",
            "vfmadd231ps ymm1, ymm14, ymm13",
            "vbroadcastss ymm15, dword ptr [{a0} + {lda}]",
            "vfmadd231ps ymm2, ymm15, ymm12",
            "vfmadd231ps ymm3, ymm15, ymm13",
            "vbroadcastss ymm14, dword ptr [{a0} + 2*{lda}]",
            "vfmadd231ps ymm4, ymm14, ymm12",
            "vfmadd231ps ymm5, ymm14, ymm13",
            "vbroadcastss ymm15, dword ptr [{a0} + {lda3}]",
            "vfmadd231ps ymm6, ymm15, ymm12",
            "vfmadd231ps ymm7, ymm15, ymm13",
            "vbroadcastss ymm14, dword ptr [{a4}]",
            "vfmadd231ps ymm8, ymm14, ymm12",
            "vfmadd231ps ymm9, ymm14, ymm13",
            "vbroadcastss ymm15, dword ptr [{a4} + {lda}]",
            "vfmadd231ps ymm10, ymm15, ymm12",
            "vfmadd231ps ymm11, ymm15, ymm13",
            "add {a0}, {step}",
            "add {a4}, {step}",
            "add {b}, 64",
            "dec {k}",
            "jnz 2b",
            "3:",
            "lea {a4}, [{c0} + 4*{ldc}]",
            "lea {lda3}, [{ldc} + 2*{ldc}]",
            "test {acc}, {acc}",
            "jz 4f",
            "vaddps ymm0, ymm0, [{c0}]",
            "vaddps ymm1, ymm1, [{c0} + 32]",
            "vaddps ymm2, ymm2, [{c0} + {ldc}]",
            "vaddps ymm3, ymm3, [{c0} + {ldc} + 32]",
            "vaddps ymm4, ymm4, [{c0} + 2*{ldc}]",
            "vaddps ymm5, ymm5, [{c0} + 2*{ldc} + 32]",
            "vaddps ymm6, ymm6, [{c0} + {lda3}]",
            "vaddps ymm7, ymm7, [{c0} + {lda3} + 32]",
            "vaddps ymm8, ymm8, [{a4}]",
            "vaddps ymm9, ymm9, [{a4} + 32]",
            "vaddps ymm10, ymm10, [{a4} + {ldc}]",
            "vaddps ymm11, ymm11, [{a4} + {ldc} + 32]",
            "4:",
            "vmovups [{c0}], ymm0",
            "vmovups [{c0} + 32], ymm1",
            "vmovups [{c0} + {ldc}], ymm2",
            "vmovups [{c0} + {ldc} + 32], ymm3",
            "vmovups [{c0} + 2*{ldc}], ymm4",
            "vmovups [{c0} + 2*{ldc} + 32], ymm5",
            "vmovups [{c0} + {lda3}], ymm6",
            "vmovups [{c0} + {lda3} + 32], ymm7",
            "vmovups [{a4}], ymm8",
            "vmovups [{a4} + 32], ymm9",
            "vmovups [{a4} + {ldc}], ymm10",
            "vmovups [{a4} + {ldc} + 32], ymm11",
            // Clean upper register halves: without this, the scalar SSE code after the kernel (glibc's expf
            // in GELU and softmax) ran 3–4 times slower (false dependencies on the dirty upper state; perf:
            // `__expf_fma` 6 % → 23 % of the train step on a Zen 4).
            "vzeroupper",
            k = inout(reg) kc => _,
            a0 = inout(reg) a => _,
            b = inout(reg) b => _,
            lda = in(reg) ars * 4,
            step = in(reg) acs * 4,
            lda3 = out(reg) _,
            a4 = out(reg) _,
            c0 = in(reg) c,
            ldc = in(reg) ldc * 4,
            acc = in(reg) acc as usize,
            out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _, out("ymm4") _, out("ymm5") _, out("ymm6") _, out("ymm7") _, out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _, out("ymm12") _, out("ymm13") _, out("ymm14") _, out("ymm15") _,
            options(nostack),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernels this CPU can run.
    fn kernels() -> Vec<Isa> {
        let mut v = vec![];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                v.extend([AVX512, AVX512_8X48]);
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                v.push(AVX2);
            }
        }
        v
    }

    /// On Intel the 8 × 48 tile takes the products whose A is read in place and whose columns it pads no more
    /// than 12 × 32 does; the others keep 12 × 32.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_intel_kernel_picks_its_tile_per_product() {
        let v = vec![0.0f32; 4];
        let (rows, short, long) = (Mat::rows(&v, 192), Mat::t(&v, 192), Mat::t(&v, 768));
        for (n, a, want) in [(192, &rows, 48), (768, &short, 48), (65, &rows, 48), (64, &rows, 32), (192, &long, 32), (576, &rows, 48)] {
            assert_eq!(AVX512_INTEL.tile(n, a).nr, want, "n {n}");
            assert_eq!(AVX512.tile(n, a).nr, 32);
        }
    }

    /// The bits are those of the documented order, computed here one element at a time: blocks of [`KC`]
    /// values of `k`, each summed by FMA from zero in ascending order, added to the output in order. The shape
    /// spans several groups of `k` blocks (n = 8200: one block per group), a ragged last block and tile, a
    /// transposed A (packed) and a row-major one (read in place), with and without accumulation.
    #[test]
    fn sums_follow_the_documented_order_across_groups_of_k_blocks() {
        let (m, n, k): (usize, usize, usize) = (13, 8200, 600);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0).collect();
        let at: Vec<f32> = (0..k * m).map(|x| a[(x % m) * k + x / m]).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 53 % 97) as f32 - 48.0) / 13.0).collect();
        for isa in kernels() {
            assert!(B_GROUP / (KC * n.div_ceil(isa.nr) * isa.nr * 4) < k.div_ceil(KC), "several groups");
            for (acc, transposed) in [(false, false), (true, false), (false, true)] {
                let start: Vec<f32> = (0..m * n).map(|i| (i % 9) as f32 - 4.0).collect();
                let mut got = start.clone();
                let am = if transposed { Mat::t(&at, m) } else { Mat::rows(&a, k) };
                // SAFETY: `got` is initialised.
                unsafe { products(isa, m, n, k, am, Mat::rows(&b, n), crate::as_uninit(&mut got), n, Init::acc(acc), true) };
                for i in 0..m {
                    for j in (0..n).step_by(41).chain([n - 1]) {
                        let mut c: Option<f32> = acc.then_some(start[i * n + j]);
                        for p0 in (0..k).step_by(KC) {
                            let s = (p0..(p0 + KC).min(k)).fold(0.0f32, |s, p| a[i * k + p].mul_add(b[p * n + j], s));
                            c = Some(c.map_or(s, |c| c + s));
                        }
                        let want = c.unwrap();
                        assert_eq!(got[i * n + j].to_bits(), want.to_bits(), "{} acc {acc} t {transposed} [{i},{j}]", isa.name);
                    }
                }
            }
        }
    }

    /// A product that starts from a bias (each tile's rows set just before the kernel adds to them) or from
    /// nothing (an uninitialised output) gives the bits of filling the whole output first and accumulating:
    /// ragged tiles in both directions, several blocks of `k`, `k = 0`, one thread and many.
    #[test]
    fn bias_and_zero_starts_give_the_bits_of_filling_first() {
        for isa in kernels() {
            for (m, n, k, par) in [(101, 77, 300, true), (12, 32, 256, false), (200, 45, 13, true), (7, 5, 0, false)] {
                let a: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0).collect();
                let b: Vec<f32> = (0..k * n).map(|i| ((i * 53 % 89) as f32 - 44.0) / 13.0).collect();
                let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.37 - 3.0).collect();
                let (am, bm) = (Mat::rows(&a, k), Mat::rows(&b, n));
                let mut want: Vec<f32> = (0..m * n).map(|i| bias[i % n]).collect();
                matmul_with(isa, m, n, k, am, bm, &mut want, n, true, par);
                let mut want0 = vec![7.0f32; m * n];
                matmul_with(isa, m, n, k, am, bm, &mut want0, n, false, par);
                for (init, want) in [(Init::Bias(&bias), &want), (Init::Zero, &want0)] {
                    let mut got: Vec<f32> = Vec::with_capacity(m * n);
                    // SAFETY: not `Acc`; all m·n values are written (then read below).
                    unsafe {
                        products(isa, m, n, k, am, bm, &mut got.spare_capacity_mut()[..m * n], n, init, par);
                        got.set_len(m * n);
                    }
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert!(bits(&got) == bits(want), "{} {init:?} ({m}, {n}, {k})", isa.name);
                }
            }
        }
    }

    /// The transposing pack puts every value where the per-value loop does (ragged panels, depths not a
    /// multiple of 8, an offset `p0`, padding zeroed over old contents).
    #[test]
    fn transposed_packing_equals_the_per_value_loop() {
        #[cfg(target_arch = "x86_64")]
        {
            if !std::arch::is_x86_feature_detected!("avx") {
                eprintln!("SKIPPED: no AVX");
                return;
            }
            for (k, n, big_nr, p0, kc) in [(64, 65, 32, 0, 64), (600, 77, 16, 256, 256), (19, 9, 32, 3, 13), (8, 8, 32, 0, 8)] {
                let data: Vec<f32> = (0..k * n + 5).map(|i| i as f32 * 0.5 - 7.0).collect();
                let b = Mat::t(&data, k); // [k, n], column j's values contiguous at j·k
                for jp in 0..n.div_ceil(big_nr) {
                    let mut want = vec![f32::NAN; kc * big_nr];
                    let (j0, nr) = (jp * big_nr, big_nr.min(n - jp * big_nr));
                    for p in 0..kc {
                        for j in 0..big_nr {
                            want[p * big_nr + j] = if j < nr { data[(j0 + j) * k + p0 + p] } else { 0.0 };
                        }
                    }
                    let mut got = vec![f32::NAN; kc * big_nr];
                    pack_b_panel(&b, p0, kc, n, big_nr, jp, &mut got);
                    assert_eq!(
                        got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        "k {k} n {n} panel {jp}"
                    );
                }
            }
        }
    }

    /// `c (+)= init + a·b` one element at a time in the documented order (blocks of `KC`, each summed by FMA
    /// from zero, added in order to the starting value).
    fn documented((m, n, k): (usize, usize, usize), a: &Mat, b: &Mat, start: &[f32], ldc: usize, init: Init) -> Vec<u32> {
        let (bias, acc) = match init {
            Init::Zero => (None, false),
            Init::Bias(v) => (Some(v), false),
            Init::Acc => (None, true),
        };
        let mut out = vec![];
        for i in 0..m {
            for j in 0..n {
                let mut c: Option<f32> = bias.map(|b| b[j]).or(acc.then_some(start[i * ldc + j]));
                for p0 in (0..k).step_by(KC) {
                    let s = (p0..(p0 + KC).min(k)).fold(0.0f32, |s, p| a.data[i * a.rs + p * a.cs].mul_add(b.data[p * b.rs + j * b.cs], s));
                    c = Some(c.map_or(s, |c| c + s));
                }
                out.push(c.unwrap_or(0.0).to_bits());
            }
        }
        out
    }

    /// Every plan — the column split into 1–3 parts, row blocks of 12 to 384 rows, groups of 1 to 3 blocks of
    /// `k`, A transposed in place (short stride) or packed (long stride) or row-major — gives the bits of the
    /// documented order, from zero, from a bias and added to C (row stride past `n`, ragged columns and rows).
    #[test]
    fn every_plan_gives_the_bits_of_the_documented_order() {
        let (m, n, k, ldc) = (37, 77, 600, 80);
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 53 % 97) as f32 - 48.0) / 13.0).collect();
        let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.37 - 3.0).collect();
        let start: Vec<f32> = (0..m * ldc).map(|i| (i % 9) as f32 - 4.0).collect();
        let bm = Mat::rows(&b, n);
        // A row-major [m, k]; transposed at stride m (in place); transposed at stride 300 (packed).
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0).collect();
        let at: Vec<f32> = (0..k * m).map(|x| a[(x % m) * k + x / m]).collect();
        let wide = 300;
        let atw: Vec<f32> = (0..k * wide).map(|x| if x % wide < m { a[(x % wide) * k + x / wide] } else { f32::NAN }).collect();
        let operands = [("rows", Mat::rows(&a, k)), ("t in place", Mat::t(&at, m)), ("t packed", Mat::t(&atw, wide))];
        assert!(a_in_place(&operands[1].1) && !a_in_place(&operands[2].1));
        for isa in kernels() {
            for (what, am) in operands {
                for init in [Init::Zero, Init::Bias(&bias), Init::Acc] {
                    let want = documented((m, n, k), &am, &bm, &start, ldc, init);
                    let mut plans = vec![Plan::Columns { parts: 1 }, Plan::Columns { parts: 2 }, Plan::Columns { parts: 3 }];
                    for mc in [isa.mr, 48, 384] {
                        plans.extend([1, 3].map(|group| Plan::Rows { mc, group }));
                    }
                    for plan in plans {
                        let mut c = start.clone();
                        // SAFETY: the CPU runs `isa`; `c` is initialised.
                        unsafe {
                            let cv = crate::as_uninit(&mut c);
                            match plan {
                                Plan::Columns { parts } => by_columns(isa, m, n, k, am, bm, cv, ldc, init, parts),
                                Plan::Rows { mc, group } => by_rows(isa, m, n, k, am, bm, cv, ldc, init, true, mc, group),
                            }
                        }
                        let got: Vec<u32> = (0..m).flat_map(|i| c[i * ldc..i * ldc + n].iter().map(|v| v.to_bits())).collect();
                        assert!(got == want, "{} {what} {init:?} {plan:?}", isa.name);
                        for i in 0..m {
                            assert_eq!(&c[i * ldc + n..(i + 1) * ldc], &start[i * ldc + n..(i + 1) * ldc], "padding kept");
                        }
                    }
                }
            }
        }
    }

    /// A product computed swapped (`(Bᵀ·Aᵀ)ᵀ`: A transposed at a long stride, B row-major and narrow, two threads)
    /// gives the bits of the documented order, as the same product unswapped on one thread does; the padding of
    /// C's rows is not written.
    #[test]
    fn swapped_products_give_the_bits_of_the_documented_order() {
        let (m, n, k, ldc, wide) = (100, 37, 600, 41, 300);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0).collect();
        let atw: Vec<f32> = (0..k * wide).map(|x| if x % wide < m { a[(x % wide) * k + x / wide] } else { f32::NAN }).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 53 % 97) as f32 - 48.0) / 13.0).collect();
        let (am, bm) = (Mat::t(&atw, wide), Mat::rows(&b, n));
        let start: Vec<f32> = (0..m * ldc).map(|i| (i % 9) as f32 - 4.0).collect();
        let want = documented((m, n, k), &am, &bm, &start, ldc, Init::Zero);
        for isa in kernels() {
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
                let mut c = start.clone();
                pool.install(|| {
                    assert_eq!(swapped(isa, m, n, k, &am, &bm, Init::Zero, true), threads > 1, "{} on {threads}", isa.name);
                    // SAFETY: the CPU runs `isa`; `Init::Zero` reads nothing of `c`.
                    unsafe { products(isa, m, n, k, am, bm, crate::as_uninit(&mut c), ldc, Init::Zero, true) };
                });
                let got: Vec<u32> = (0..m).flat_map(|i| c[i * ldc..i * ldc + n].iter().map(|v| v.to_bits())).collect();
                assert!(got == want, "{} on {threads} threads", isa.name);
                for i in 0..m {
                    assert_eq!(&c[i * ldc + n..(i + 1) * ldc], &start[i * ldc + n..(i + 1) * ldc], "padding kept");
                }
                // Not from a bias or added to C (those keep the packed plan).
                assert!(!swapped(isa, m, n, k, &am, &bm, Init::Acc, true));
            }
        }
    }

    /// The plans chosen for the ViT-Ti probe's weight gradients on two threads (batch 64 × 65 tokens): `xᵀ·dy`
    /// (A transposed at stride 192, read in place) split by columns; `hᵀ·dy` (stride 768, packed; B 192 wide)
    /// in 384-row blocks; the forward and input-gradient products (shallow, or row-major A) as before.
    #[test]
    fn the_weight_gradients_take_the_deep_plans() {
        if kernels().is_empty() {
            eprintln!("SKIPPED: no AVX2+FMA on this CPU");
            return;
        }
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("pool");
        let data = vec![0.0f32; 4160 * 768];
        for isa in kernels() {
            pool.install(|| {
                let x_t = Mat::t(&data, 192);
                let h_t = Mat::t(&data, 768);
                assert_eq!(plan(isa, 192, 768, 4160, &x_t, true), Plan::Columns { parts: 2 });
                assert_eq!(plan(isa, 192, 576, 4160, &x_t, true), Plan::Columns { parts: 2 });
                assert!(matches!(plan(isa, 768, 192, 4160, &h_t, true), Plan::Rows { mc: 384, .. }));
                assert_eq!(plan(isa, 192, 768, 4160, &x_t, false), Plan::Rows { mc: MC, group: (B_GROUP / (KC * 768 * 4)).max(1) });
                assert!(matches!(plan(isa, 4160, 768, 192, &Mat::rows(&data, 192), true), Plan::Rows { mc: MC, .. }));
                let deep_rows = if isa.nr == NR_8X48 { MC_DEEP_ROWS } else { MC };
                assert!(matches!(plan(isa, 4160, 192, 768, &Mat::rows(&data, 768), true), Plan::Rows { mc, .. } if mc == deep_rows));
                // ViT-B/16's input gradient of fc1 (n = 768) and forward of fc1 (n = 3072, k = 768): 48-row blocks.
                assert!(matches!(plan(isa, 3152, 768, 3072, &Mat::rows(&data, 3072), true), Plan::Rows { mc: MC, .. }));
                assert!(matches!(plan(isa, 3152, 3072, 768, &Mat::rows(&data, 768), true), Plan::Rows { mc: MC, .. }));
                // ViT-B/16's `hᵀ·dz` ([3072, 3152]·[3152, 768]): a packed A and a B too wide for the narrow plan.
                let wide = (B_GROUP / (KC * (768 + 384) * 4)).max(1);
                assert_eq!(plan(isa, 3072, 768, 3152, &Mat::t(&data, 3072), true), Plan::Rows { mc: 384, group: wide });
                // ViT-Ti's `hᵀ·dz` is computed as `dzᵀ·h` on two threads (not on one); ViT-B/16's (dz 768 wide) is not.
                assert!(swapped(isa, 768, 192, 4160, &h_t, &Mat::rows(&data, 192), Init::Zero, true));
                assert!(!swapped(isa, 768, 192, 4160, &h_t, &Mat::rows(&data, 192), Init::Zero, false));
                assert!(!swapped(isa, 3072, 768, 3152, &Mat::t(&data, 3072), &Mat::rows(&data, 768), Init::Zero, true));
            });
        }
    }

    /// Packing a row-major B row by row across panels and a transposed A column by column across panels puts
    /// every value where the per-value loops do (ragged last panel, offset `p0`, padding zeroed over old contents).
    #[test]
    fn row_order_packing_equals_the_per_value_loops() {
        for (k, n, big, p0, kc) in [(600, 77, 32, 256, 256), (19, 9, 16, 3, 13), (300, 64, 12, 0, 256), (40, 13, 6, 7, 30)] {
            let data: Vec<f32> = (0..k * n).map(|i| i as f32 * 0.5 - 7.0).collect();
            let m = Mat::rows(&data, n); // [k, n]: B row-major, or A = mᵀ transposed with n rows
            let panels = n.div_ceil(big);
            let mut want = vec![f32::NAN; panels * kc * big];
            for (jp, panel) in want.chunks_mut(kc * big).enumerate() {
                for p in 0..kc {
                    for j in 0..big {
                        let col = jp * big + j;
                        panel[p * big + j] = if col < n { data[(p0 + p) * n + col] } else { 0.0 };
                    }
                }
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            let mut got = vec![f32::NAN; panels * kc * big];
            pack_b(&m, p0, kc, n, big, &mut got, true);
            assert_eq!(bits(&got), bits(&want), "B: k {k} n {n} NR {big}");
            let mut got = vec![f32::NAN; panels * kc * big];
            pack_a(&Mat::t(&data, n), 0, n, p0, kc, big, &mut got);
            assert_eq!(bits(&got), bits(&want), "A: k {k} m {n} MR {big}");
        }
    }

    #[test]
    fn every_kernel_gives_bit_identical_products() {
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
            let first = run(ks[0]);
            for isa in &ks[1..] {
                assert!(run(*isa) == first, "{} and {} differ (transposed A: {ta})", ks[0].name, isa.name);
            }
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
