//! CPU kernels on row-major `f32` slices for polyflow's fused transformer block: strided matrix products
//! ([`sgemm`] on x86-64, the `gemm` crate elsewhere), LayerNorm, tanh-GELU, softmax and column sums, each
//! forward and backward.
//!
//! A crate of its own so that it is built at `opt-level = 3` in every profile (the workspace's
//! `Cargo.toml`): the element-wise kernels need the loop vectoriser, and the dev profile is what
//! `cargo run` uses. It knows nothing of burn or of models.
//!
//! Row-parallel kernels split rows into fixed chunks ([`ROWS`]) and reduce per-chunk partial sums in chunk
//! order, so results do not depend on how many threads ran them (determinism).

mod amx;
#[macro_use]
mod asm_tile;
pub mod bf16;
pub mod expf;
mod scratch;
pub mod sgemm;
#[cfg(target_arch = "x86_64")]
mod small;
mod transpose;

use scratch::Scratch;

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// Whether [`split`] hands out one item at a time (the default; see [`fine_split`]).
static FINE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Turns [`split`]'s one-item tasks on or off, for measurements that compare both in one process
/// (`polyflow bench-model --ab fine-split`). The bits are the same either way: every item is computed alike and
/// every reduction over items is in item order.
#[doc(hidden)]
pub fn fine_split(on: bool) {
    FINE.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// A parallel loop over row blocks, examples or chunks whose items are each one task that an idle thread can take.
///
/// rayon's adaptive split cuts a loop into about two pieces per thread and splits a piece again only when another
/// thread steals it; the piece a thread is running cannot be taken. So a thread that ran out of work waited for
/// the other's whole last piece, which can be a large share of the loop: perf on an Intel Xeon (2 vCPU) found one
/// CPU idle for 10 % of a ViT-Ti training step, about half of it while the other ran a product's row blocks.
/// With one-item tasks (each a row block of a product — 48–384 rows in the fused block's products —, an
/// example's attention, 64 rows of LayerNorm, 16 Ki values of GELU: about ten microseconds or more, against about
/// a microsecond for a split) the idle share fell to 5 % (BENCHMARKS.md).
pub fn split<I: IndexedParallelIterator>(items: I) -> rayon::iter::MaxLen<I> {
    items.with_max_len(if FINE.load(std::sync::atomic::Ordering::Relaxed) { 1 } else { usize::MAX })
}

/// Rows per parallel chunk of the row-wise kernels (fixed: reductions must not depend on thread count).
pub const ROWS: usize = 64;

/// A strided matrix view: element `(i, j)` is `data[i * rs + j * cs]`; of `f32` values, or (`T = u16`) of bf16
/// bits, as activations a bf16 layer keeps for its backward pass ([`linear16`]).
#[derive(Clone, Copy)]
pub struct Mat<'a, T = f32> {
    /// Backing storage (offset already applied).
    pub data: &'a [T],
    /// Row stride.
    pub rs: usize,
    /// Column stride.
    pub cs: usize,
}

impl<'a, T> Mat<'a, T> {
    /// A row-major matrix with `cols` columns.
    pub fn rows(data: &'a [T], cols: usize) -> Self {
        Mat { data, rs: cols, cs: 1 }
    }
    /// The transpose of a row-major matrix with `cols` columns.
    pub fn t(data: &'a [T], cols: usize) -> Self {
        Mat { data, rs: 1, cs: cols }
    }
}

/// The arithmetic of matrix products.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// f32 operands, f32 accumulation.
    #[default]
    F32,
    /// bf16 operands (rounded to nearest even), f32 accumulation and result ([`bf16`]).
    Bf16,
}

/// What a product's output holds before `a · b` is added to it (the kernels' internal entry points).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Init<'a> {
    /// Nothing that is read: every value is written with the product (the output may be uninitialised).
    Zero,
    /// Its current values: the product is added to them (they must be initialised).
    Acc,
    /// `bias[j]` in every row `i` (the output may be uninitialised). Each tile's rows are set to the bias
    /// just before its first product is added — the sums `bias + a·b` of filling every row first and
    /// accumulating, without a separate pass over the whole output (which was 7 % of a bf16 inference step
    /// on a Zen 5; BENCHMARKS.md).
    Bias(&'a [f32]),
}

impl Init<'_> {
    /// [`Init::Acc`] when `acc`, else [`Init::Zero`]: the public functions' `acc` flag.
    pub(crate) fn acc(acc: bool) -> Self {
        if acc {
            Init::Acc
        } else {
            Init::Zero
        }
    }

    /// Panics unless a bias covers all `n` columns (a short one would leave values unwritten).
    pub(crate) fn check(self, n: usize) {
        if let Init::Bias(b) = self {
            assert!(b.len() >= n, "matmul: bias of {} for {n} columns", b.len());
        }
    }

    /// [`Init::start`] on rows `0..m` of a view with row stride `ldc` (columns `0..n`).
    pub(crate) fn start_rows(self, c: &mut [MaybeUninit<f32>], m: usize, n: usize, ldc: usize, zero: bool) {
        for i in 0..m {
            self.start(&mut c[i * ldc..i * ldc + n], 0, zero);
        }
    }

    /// Writes the starting values of `row` (columns `j0..j0 + row.len()`): the bias for [`Init::Bias`],
    /// zeros for [`Init::Zero`] when `zero`; leaves it as it is otherwise. Reads nothing of `row`.
    pub(crate) fn start(self, row: &mut [MaybeUninit<f32>], j0: usize, zero: bool) {
        match self {
            Init::Bias(b) => {
                for (o, v) in row.iter_mut().zip(&b[j0..]) {
                    o.write(*v);
                }
            }
            Init::Zero if zero => {
                for o in row.iter_mut() {
                    o.write(0.0);
                }
            }
            _ => {}
        }
    }

    /// `row = init + t` for one row of a ragged tile (columns `j0..`): the bias plus the product (the bits of
    /// adding the product to a row that holds the bias), the product alone, or added to the row.
    ///
    /// # Safety
    /// With [`Init::Acc`], `row` must be initialised.
    pub(crate) unsafe fn add_row(self, row: &mut [MaybeUninit<f32>], j0: usize, t: &[f32]) {
        match self {
            Init::Zero => row.iter_mut().zip(t).for_each(|(o, v)| {
                o.write(*v);
            }),
            Init::Bias(b) => row.iter_mut().zip(t).zip(&b[j0..]).for_each(|((o, v), bv)| {
                o.write(bv + v);
            }),
            // SAFETY: the caller's contract.
            Init::Acc => row.iter_mut().zip(t).for_each(|(o, v)| unsafe { *o.assume_init_mut() += v }),
        }
    }
}

/// `c` as possibly uninitialised values, for the internal entry points (which only write floats into it).
pub(crate) fn as_uninit(c: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and nothing writes an uninitialised value through
    // the returned slice (the internal products write finished floats only).
    unsafe { &mut *(c as *mut [f32] as *mut [MaybeUninit<f32>]) }
}

/// [`matmul`] at the given precision.
#[allow(clippy::too_many_arguments)]
pub fn matmul_p(prec: Precision, m: usize, n: usize, k: usize, a: Mat, b: Mat, c: &mut [f32], ldc: usize, acc: bool, parallel: bool) {
    matmul_any(prec, m, n, k, a, b, c, ldc, acc, parallel)
}

/// [`matmul_p`] for operands that may hold bf16 bits already ([`bf16::Elem`]: `u16`), as a block keeps an
/// activation it uses in several bf16 products: at [`Precision::Bf16`] the bits of converting each operand at
/// the product. Panics if an operand holds bf16 bits and `prec` is [`Precision::F32`].
#[allow(clippy::too_many_arguments)]
pub fn matmul_any<TA: bf16::Elem, TB: bf16::Elem>(
    prec: Precision,
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
    // SAFETY: `c` is initialised (a `&mut [f32]`), as `Init::Acc` needs.
    unsafe { any_init(prec, m, n, k, a, b, as_uninit(c), ldc, Init::acc(acc), parallel) }
}

/// [`matmul_any`] without accumulation into a possibly uninitialised `c`: writes every value of the `m × n` view
/// (row stride `ldc`) and reads none, so an output can be written without being zero-filled first.
#[allow(clippy::too_many_arguments)]
pub fn matmul_any_into<TA: bf16::Elem, TB: bf16::Elem>(
    prec: Precision,
    m: usize,
    n: usize,
    k: usize,
    a: Mat<TA>,
    b: Mat<TB>,
    c: &mut [MaybeUninit<f32>],
    ldc: usize,
    parallel: bool,
) {
    // SAFETY: `Init::Zero` reads nothing of `c`.
    unsafe { any_init(prec, m, n, k, a, b, c, ldc, Init::Zero, parallel) }
}

/// [`matmul_any`] and [`matmul_any_into`]: the product at `prec` on operands that may hold bf16 bits.
///
/// # Safety
/// As [`matmul_init`].
#[allow(clippy::too_many_arguments)]
unsafe fn any_init<TA: bf16::Elem, TB: bf16::Elem>(
    prec: Precision,
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
    // SAFETY (both): the caller's contract.
    match (prec, TA::as_f32(a), TB::as_f32(b)) {
        (Precision::Bf16, ..) => unsafe { bf16::matmul_init(bf16::kernel(), m, n, k, a, b, c, ldc, init, parallel) },
        (Precision::F32, Some(a), Some(b)) => unsafe { matmul_init(prec, m, n, k, a, b, c, ldc, init, parallel) },
        (Precision::F32, ..) => panic!("matmul_any: an operand of bf16 bits in an f32 product"),
    }
}

/// `c[m, n] (row stride ldc) (+)= a[m, k] · b[k, n]`; accumulates into `c` when `acc`. `parallel` uses the
/// current rayon pool (large products); small per-head products run on the calling thread. On x86-64 CPUs
/// with AVX2 + FMA or AVX-512F this is [`sgemm`], elsewhere the `gemm` crate.
#[allow(clippy::too_many_arguments)]
pub fn matmul(m: usize, n: usize, k: usize, a: Mat, b: Mat, c: &mut [f32], ldc: usize, acc: bool, parallel: bool) {
    matmul_p(Precision::F32, m, n, k, a, b, c, ldc, acc, parallel)
}

/// The products' common entry point: `c[m, n] = init + a · b` at precision `prec`; every value of the
/// `m × n` view of `c` is initialised on return.
///
/// # Safety
/// With [`Init::Acc`], the `m × n` view of `c` (row stride `ldc`) must be initialised.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn matmul_init(
    prec: Precision,
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
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY (both): the caller's contract, passed on; the f32 kernel is one `sgemm::isa` found on this CPU.
    match prec {
        Precision::Bf16 => return unsafe { bf16::matmul_init(bf16::kernel(), m, n, k, a, b, c, ldc, init, parallel) },
        Precision::F32 => {
            if let Some(isa) = sgemm::isa() {
                return unsafe { sgemm::products(isa, m, n, k, a, b, c, ldc, init, parallel) };
            }
        }
    }
    check_views(m, n, k, &a, &b, c, ldc);
    init.check(n);
    if k == 0 {
        // Nothing to add: the starting values are the result (not left to the `gemm` crate, whose writes of
        // an empty product's output are not documented).
        init.start_rows(c, m, n, ldc, true);
        return;
    }
    // The `gemm` crate reads its output when accumulating: a bias is written first, then accumulated into;
    // `Zero` is not read (as before: `0 + x` would turn a -0 product into +0).
    init.start_rows(c, m, n, ldc, false);
    let par = if parallel { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
    // SAFETY: every view was bounds-checked above for its full (rows, cols, strides) extent and the output's
    // view is initialised (above); `c` is a unique borrow, disjoint from `a` and `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr() as *mut f32,
            1,
            ldc as isize,
            !matches!(init, Init::Zero),
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// Panics unless `a: [m, k]`, `b: [k, n]` and `c: [m, n]` (row stride `ldc ≥ n`) lie inside their slices:
/// the products read and write through raw pointers within exactly these extents.
pub fn check_views<TA, TB, C>(m: usize, n: usize, k: usize, a: &Mat<TA>, b: &Mat<TB>, c: &[C], ldc: usize) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(ldc >= n, "matmul: output row stride {ldc} < {n} columns");
    assert!(k == 0 || a.data.len() > last(m, k, a.rs, a.cs), "matmul: lhs view out of bounds");
    assert!(k == 0 || b.data.len() > last(k, n, b.rs, b.cs), "matmul: rhs view out of bounds");
    assert!(c.len() > last(m, n, ldc, 1), "matmul: output view out of bounds");
}

/// A new `[m, n]` matrix (row stride `n`) written by `product`, a product starting from `init` (not
/// [`Init::Acc`]: a new matrix has nothing to accumulate) into the uninitialised buffer it is given — no pass
/// over the matrix before the product writes it.
///
/// # Safety
/// `product` must write every value of its `m × n` buffer (as [`matmul_init`] does when `init` is not `Acc`).
unsafe fn fresh<'a>(m: usize, n: usize, init: Init<'a>, product: impl FnOnce(&mut [MaybeUninit<f32>], Init<'a>)) -> Vec<f32> {
    debug_assert!(!matches!(init, Init::Acc), "a new matrix has nothing to accumulate into");
    // SAFETY: `product` writes all `m·n` values (the caller's contract).
    unsafe { written(m * n, |y| product(y, init)) }
}

/// `c` as the floats written into it (e.g. by [`matmul_any_into`]), for reading them in place.
///
/// # Safety
/// Every value of `c` must have been written.
pub unsafe fn assume_written(c: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and every value is initialised (the caller's contract).
    unsafe { &mut *(c as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// A new vector of `len` values written by `fill` into its uninitialised buffer: no zero-filling pass before
/// the values are written (perf, ViT-Ti f32 training on an Intel Xeon: `memset` of the zeroed outputs of GELU,
/// LayerNorm and the attention took 2.3 % of a step).
///
/// # Safety
/// `fill` must write every value of the slice it is given.
pub unsafe fn written(len: usize, fill: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut y: Vec<f32> = Vec::with_capacity(len);
    fill(&mut y.spare_capacity_mut()[..len]);
    // SAFETY: `fill` initialised all `len` values (the caller's contract).
    unsafe { y.set_len(len) };
    y
}

/// `init + a · b` as a new `[m, n]` matrix at precision `prec`, in parallel.
fn product(prec: Precision, m: usize, n: usize, k: usize, a: Mat, b: Mat, init: Init) -> Vec<f32> {
    // SAFETY: `matmul_init` writes the whole `m × n` view (at row stride `n`) and reads nothing of it, `init`
    // not being `Acc` (checked by `fresh`).
    unsafe { fresh(m, n, init, |y, init| matmul_init(prec, m, n, k, a, b, y, n, init, true)) }
}

/// [`product`] at bf16 with either operand possibly in bf16 bits already.
fn product16<TA: bf16::Elem, TB: bf16::Elem>(m: usize, n: usize, k: usize, a: Mat<TA>, b: Mat<TB>, init: Init) -> Vec<f32> {
    // SAFETY: as in `product`.
    unsafe { fresh(m, n, init, |y, init| bf16::matmul_init(bf16::kernel(), m, n, k, a, b, y, n, init, true)) }
}

/// `y = x · w + bias` for `x: [m, k]`, `w: [k, n]`, `bias: [n]` (all row-major), parallel; the product at
/// precision `prec`, the bias added in f32 (each tile starts from the bias: no pass over `y` beforehand).
pub fn linear(x: &[f32], w: &[f32], bias: &[f32], m: usize, k: usize, n: usize, prec: Precision) -> Vec<f32> {
    assert_eq!(bias.len(), n, "linear: bias of {} for {n} outputs", bias.len());
    product(prec, m, n, k, Mat::rows(x, k), Mat::rows(w, n), Init::Bias(bias))
}

/// Backward of [`linear`]: returns `(dx [m, k], dw [k, n], dbias [n])` for `dy: [m, n]`; both products at
/// precision `prec` (as autocast runs a bf16 layer's backward), the bias gradient summed in f32.
pub fn linear_backward(x: &[f32], w: &[f32], dy: &[f32], m: usize, k: usize, n: usize, prec: Precision) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let dx = product(prec, m, k, n, Mat::rows(dy, n), Mat::t(w, n), Init::Zero);
    let dw = product(prec, k, n, m, Mat::t(x, k), Mat::rows(dy, n), Init::Zero);
    (dx, dw, col_sum(dy, n))
}

/// [`linear`] at bf16 for an input already in bf16 bits (`x16: [m, k]`, e.g. from [`layer_norm_bf16`]): the
/// same bits as `linear(x, …, Precision::Bf16)` with `x16 = bf16(x)`, without converting `x` again.
pub fn linear16(x16: &[u16], w: &[f32], bias: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    assert_eq!(bias.len(), n, "linear: bias of {} for {n} outputs", bias.len());
    product16(m, n, k, Mat::rows(x16, k), Mat::rows(w, n), Init::Bias(bias))
}

/// Backward of [`linear16`]: [`linear_backward`] at bf16 with the input kept in bf16 bits (the same bits).
/// `dy` is converted by each product where it packs it (converting it once into bf16 first and packing the
/// bits was about 5 % slower on a ViT-Ti bf16 training step: one more pass over the largest operand; BENCHMARKS.md).
pub fn linear_backward16(x16: &[u16], w: &[f32], dy: &[f32], m: usize, k: usize, n: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let dx = product16(m, k, n, Mat::rows(dy, n), Mat::t(w, n), Init::Zero);
    let dw = product16(k, n, m, Mat::t(x16, k), Mat::rows(dy, n), Init::Zero);
    (dx, dw, col_sum(dy, n))
}

/// `x` as bf16 bits (round to nearest even), in parallel.
pub fn to_bf16_vec(x: &[f32]) -> Vec<u16> {
    let mut y = vec![0u16; x.len()];
    y.par_chunks_mut(1 << 14).zip(x.par_chunks(1 << 14)).for_each(|(yc, xc)| bf16::convert(xc, yc));
    y
}

/// Sums of the columns of a row-major `[rows, n]` matrix, reduced in fixed chunk order.
pub fn col_sum(x: &[f32], n: usize) -> Vec<f32> {
    let partial: Vec<Vec<f32>> = split(x.par_chunks(ROWS * n))
        .map(|rows| {
            let mut s = vec![0.0f32; n];
            add_rows(&mut s, rows);
            s
        })
        .collect();
    reduce(partial, n)
}

/// `s[j] += r[j]` for each row `r` of `rows` (rows of `s.len()` values), in order: compiled for AVX-512 and
/// AVX2 as well (the baseline build's 4-wide SSE loop was 1.6–2.2 % of a ViT-Ti bf16 training step: perf).
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl+avx512dq+avx2+fma", "x86_64+avx2+fma"))]
fn add_rows(s: &mut [f32], rows: &[f32]) {
    for r in rows.chunks(s.len()) {
        for (a, v) in s.iter_mut().zip(r) {
            *a += v;
        }
    }
}

fn reduce(partial: Vec<Vec<f32>>, n: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; n];
    for p in partial {
        add_rows(&mut out, &p);
    }
    out
}

/// LayerNorm over rows of `x: [rows, d]`: returns `(y, mean [rows], rstd [rows])` with
/// `y = (x − mean)·rstd·gamma + beta`, `rstd = 1/√(var + eps)` (biased variance).
pub fn layer_norm(x: &[f32], gamma: &[f32], beta: &[f32], d: usize, eps: f32) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    // Whole rows (with a partial one the row chunks would outnumber the statistics' and leave `y` unwritten).
    assert!(x.len().is_multiple_of(d) && gamma.len() == d && beta.len() == d, "layer_norm: {} values, rows of {d}", x.len());
    let rows = x.len() / d;
    let mut mean = vec![0.0f32; rows];
    let mut rstd = vec![0.0f32; rows];
    // SAFETY: `layer_norm_rows` writes every value of its rows.
    let y = unsafe {
        written(x.len(), |y| {
            split(y.par_chunks_mut(ROWS * d).zip(x.par_chunks(ROWS * d)).zip(mean.par_chunks_mut(ROWS).zip(rstd.par_chunks_mut(ROWS))))
                .for_each(|((yc, xc), (mc, rc))| layer_norm_rows(xc, yc, mc, rc, gamma, beta, d, eps))
        })
    };
    (y, mean, rstd)
}

/// [`layer_norm`] with `y` rounded to bf16 bits as it is written (the input of a bf16 layer): the bits of
/// `to_bf16_vec(&layer_norm(..).0)`, without an f32 copy of `y`.
pub fn layer_norm_bf16(x: &[f32], gamma: &[f32], beta: &[f32], d: usize, eps: f32) -> (Vec<u16>, Vec<f32>, Vec<f32>) {
    let rows = x.len() / d;
    let mut y = vec![0u16; x.len()];
    let mut mean = vec![0.0f32; rows];
    let mut rstd = vec![0.0f32; rows];
    split(y.par_chunks_mut(ROWS * d).zip(x.par_chunks(ROWS * d)).zip(mean.par_chunks_mut(ROWS).zip(rstd.par_chunks_mut(ROWS)))).for_each(
        |((yc, xc), (mc, rc))| {
            // This thread's spare buffer (one per task would allocate and zero-fill each 64-row chunk).
            let mut buf = Scratch::<f32>::take(xc.len());
            layer_norm_rows(xc, as_uninit(&mut buf), mc, rc, gamma, beta, d, eps);
            bf16::convert(&buf, yc);
        },
    );
    (y, mean, rstd)
}

/// [`layer_norm`] on a chunk of rows (sums in order; the per-element passes vectorise), writing every value of
/// `yc`.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl+avx512dq+avx2+fma", "x86_64+avx2+fma"))]
#[allow(clippy::too_many_arguments)]
fn layer_norm_rows(
    xc: &[f32],
    yc: &mut [MaybeUninit<f32>],
    mc: &mut [f32],
    rc: &mut [f32],
    gamma: &[f32],
    beta: &[f32],
    d: usize,
    eps: f32,
) {
    let mut xt = Scratch::<f32>::take(G * d); // written whole by `transpose_rows` before any read
    for (((yg, xg), mg), rg) in yc.chunks_mut(G * d).zip(xc.chunks(G * d)).zip(mc.chunks_mut(G)).zip(rc.chunks_mut(G)) {
        // `Iterator::sum` of f32 folds from −0.0: so do these.
        let (sums, sq, mus);
        if let Some(xt) = transpose_rows(xg, d, &mut xt) {
            // A whole group: its rows are the lanes of `xt`'s columns, one vector step per column.
            sums = fold_lanes([xt], -0.0, |a, [x], _, _| a + x);
            mus = sums.map(|s| s / d as f32);
            sq = fold_lanes([xt], -0.0, |a, [x], r, _| {
                let v = x - mus[r];
                a + v * v
            });
        } else {
            sums = fold_rows(xg, d, -0.0, |a, r, j| a + xg[r * d + j]);
            mus = sums.map(|s| s / d as f32);
            sq = fold_rows(xg, d, -0.0, |a, r, j| {
                let v = xg[r * d + j] - mus[r];
                a + v * v
            });
        }
        for (r, ((yr, xr), (m, rs))) in yg.chunks_mut(d).zip(xg.chunks(d)).zip(mg.iter_mut().zip(rg.iter_mut())).enumerate() {
            let mu = mus[r];
            let s = 1.0 / (sq[r] / d as f32 + eps).sqrt();
            for (((o, v), g), b) in yr.iter_mut().zip(xr).zip(gamma).zip(beta) {
                o.write((v - mu) * s * g + b);
            }
            *m = mu;
            *rs = s;
        }
    }
}

/// Rows reduced side by side by the row-wise kernels ([`fold_rows`]).
const G: usize = 8;

/// Per-row reductions of up to [`G`] rows of length `n` stored back to back in `x`, each in order from `init`:
/// `acc[r] = f(…f(f(init, r, 0), r, 1)…, r, n−1)`. The same operations per row as a loop over one row, so the
/// same bits; interleaving the rows' dependency chains lets the CPU overlap them (one row's additions wait on
/// each other's latency; eight rows' do not). Rows past `x.len() / n` stay at `init`.
#[inline(always)]
fn fold_rows(x: &[f32], n: usize, init: f32, f: impl Fn(f32, usize, usize) -> f32) -> [f32; G] {
    let mut acc = [init; G];
    let rows = x.len() / n;
    if rows == G {
        for j in 0..n {
            for (r, a) in acc.iter_mut().enumerate() {
                *a = f(*a, r, j);
            }
        }
    } else {
        for j in 0..n {
            for (r, a) in acc.iter_mut().enumerate().take(rows) {
                *a = f(*a, r, j);
            }
        }
    }
    acc
}

/// Per-row reductions of [`G`] rows given as the lanes of columns: `cols[k][j·G + r]` is value `j` of row `r`
/// of operand `k` (as [`transpose_rows`] writes it); `acc[r] = f(…f(init, values 0 of row r, r, 0)…)`, in
/// order of `j`. The operations of [`fold_rows`] on the same values, so the same bits, but each step is one
/// vector operation over the rows (the row-major reads of `fold_rows` compile to scalar code: perf).
#[inline(always)]
fn fold_lanes<const K: usize>(cols: [&[f32]; K], init: f32, f: impl Fn(f32, [f32; K], usize, usize) -> f32) -> [f32; G] {
    let mut acc = [init; G];
    let n = cols[0].len() / G;
    for j in 0..n {
        let c: [&[f32; G]; K] = std::array::from_fn(|k| cols[k][j * G..j * G + G].try_into().expect("whole columns"));
        for (r, a) in acc.iter_mut().enumerate() {
            *a = f(*a, std::array::from_fn(|k| c[k][r]), r, j);
        }
    }
    acc
}

/// `xt[j·G + r] = x[r·n + j]` when `x` holds [`G`] whole rows of `n` (moves only: the same bits), for
/// [`fold_lanes`]; `None` (and `xt` untouched) for a shorter group. 8 × 8 AVX transpositions where the CPU has
/// AVX (the columns past the last multiple of 8 one value at a time), one value at a time otherwise.
#[inline(always)]
fn transpose_rows<'a>(x: &[f32], n: usize, xt: &'a mut [f32]) -> Option<&'a [f32]> {
    if x.len() != G * n {
        return None;
    }
    let xt = &mut xt[..G * n];
    let mut n8 = 0;
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        n8 = n / 8 * 8;
        // SAFETY: the CPU has AVX; `x` and `xt` hold G·n values (checked above, G = 8), n8 ≤ n.
        unsafe { transpose_rows_avx(x, n, n8, xt) };
    }
    for (j, col) in xt.chunks_exact_mut(G).enumerate().skip(n8) {
        for (r, v) in col.iter_mut().enumerate() {
            *v = x[r * n + j];
        }
    }
    Some(xt)
}

/// [`transpose_rows`] for columns `0..n8`, 8 at a time.
///
/// # Safety
/// The CPU must have AVX; `x` and `xt` must hold `8·n` values, `n8 ≤ n` a multiple of 8.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn transpose_rows_avx(x: &[f32], n: usize, n8: usize, xt: &mut [f32]) {
    use std::arch::x86_64::*;
    const { assert!(G == 8) };
    debug_assert!(x.len() == 8 * n && xt.len() == 8 * n && n8.is_multiple_of(8) && n8 <= n);
    for j in (0..n8).step_by(8) {
        // SAFETY: row r, columns j..j + 8 (≤ n), lies within `x` (the contract); unaligned loads.
        let r: [__m256; 8] = std::array::from_fn(|r| unsafe { _mm256_loadu_ps(x.as_ptr().add(r * n + j)) });
        // SAFETY: the CPU has AVX.
        let cols = unsafe { transpose::transpose8(r) };
        for (c, v) in cols.into_iter().enumerate() {
            // SAFETY: column j + c's 8 lanes lie within `xt` (the contract); unaligned store.
            unsafe { _mm256_storeu_ps(xt.as_mut_ptr().add((j + c) * 8), v) };
        }
    }
}

/// Backward of [`layer_norm`]: returns `(dx, dgamma, dbeta)` for `dy`.
pub fn layer_norm_backward(x: &[f32], mean: &[f32], rstd: &[f32], gamma: &[f32], dy: &[f32], d: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    // Every row of `dx` has its input, gradient and statistics (else the zip below would leave rows unwritten).
    let rows = x.len() / d;
    assert!(
        x.len().is_multiple_of(d) && dy.len() == x.len() && mean.len() == rows && rstd.len() == rows && gamma.len() == d,
        "layer_norm_backward: {} values, {} gradients, rows of {d}",
        x.len(),
        dy.len()
    );
    let mut partial: Vec<(Vec<f32>, Vec<f32>)> = Vec::new();
    // SAFETY: `layer_norm_backward_rows` writes every value of its rows of `dx`.
    let dx = unsafe {
        written(x.len(), |dx| {
            partial = split(
                dx.par_chunks_mut(ROWS * d)
                    .zip(x.par_chunks(ROWS * d).zip(dy.par_chunks(ROWS * d)))
                    .zip(mean.par_chunks(ROWS).zip(rstd.par_chunks(ROWS))),
            )
            .map(|((dxc, (xc, dyc)), (mc, rc))| {
                let mut dg = vec![0.0f32; d];
                let mut db = vec![0.0f32; d];
                layer_norm_backward_rows(xc, dyc, dxc, mc, rc, gamma, &mut dg, &mut db, d);
                (dg, db)
            })
            .collect()
        })
    };
    let (dgs, dbs): (Vec<_>, Vec<_>) = partial.into_iter().unzip();
    (dx, reduce(dgs, d), reduce(dbs, d))
}

/// [`layer_norm_backward`] on a chunk of rows, writing every value of `dxc`, accumulating into `dg`, `db`. The
/// per-element passes are split from the two row sums (kept in order), so they vectorise and the bits are those of
/// one fused loop.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl+avx512dq+avx2+fma", "x86_64+avx2+fma"))]
#[allow(clippy::too_many_arguments)]
fn layer_norm_backward_rows(
    xc: &[f32],
    dyc: &[f32],
    dxc: &mut [MaybeUninit<f32>],
    mc: &[f32],
    rc: &[f32],
    gamma: &[f32],
    dg: &mut [f32],
    db: &mut [f32],
    d: usize,
) {
    // Each written whole before it is read (`x̂` for the group's rows, the columns by `transpose_rows`).
    let mut xhat = Scratch::<f32>::take(G * d);
    // Columns of `dy` and `x̂` (see `fold_lanes`).
    let (mut dyt, mut xht) = (Scratch::<f32>::take(G * d), Scratch::<f32>::take(G * d));
    for ((((dxg, xg), dyg), mg), rg) in
        dxc.chunks_mut(G * d).zip(xc.chunks(G * d)).zip(dyc.chunks(G * d)).zip(mc.chunks(G)).zip(rc.chunks(G))
    {
        let xhat = &mut xhat[..xg.len()];
        for (r, (xh, xr)) in xhat.chunks_mut(d).zip(xg.chunks(d)).enumerate() {
            let (mu, s) = (mg[r], rg[r]);
            for (h, v) in xh.iter_mut().zip(xr) {
                *h = (v - mu) * s;
            }
        }
        let xhat = &*xhat;
        // The two row sums of one loop, rows side by side.
        let (m1, m2) = match (transpose_rows(dyg, d, &mut dyt), transpose_rows(xhat, d, &mut xht)) {
            (Some(dyt), Some(xht)) => (
                fold_lanes([dyt], 0.0, |a, [dy], _, i| a + dy * gamma[i]),
                fold_lanes([dyt, xht], 0.0, |a, [dy, xh], _, i| a + dy * gamma[i] * xh),
            ),
            _ => (
                fold_rows(dyg, d, 0.0, |a, r, i| a + dyg[r * d + i] * gamma[i]),
                fold_rows(dyg, d, 0.0, |a, r, i| a + dyg[r * d + i] * gamma[i] * xhat[r * d + i]),
            ),
        };
        for (r, ((dxr, dyr), xh)) in dxg.chunks_mut(d).zip(dyg.chunks(d)).zip(xhat.chunks(d)).enumerate() {
            for (((g, b), dv), h) in dg.iter_mut().zip(db.iter_mut()).zip(dyr).zip(xh) {
                *g += dv * h;
                *b += dv;
            }
            let (m1, m2, s) = (m1[r] / d as f32, m2[r] / d as f32, rg[r]);
            for (((o, dv), h), g) in dxr.iter_mut().zip(dyr).zip(xh).zip(gamma) {
                o.write(s * (dv * g - m1 - h * m2));
            }
        }
    }
}

/// `√(2/π)` of the tanh-GELU.
const C: f32 = 0.797_884_6;

/// tanh-GELU, `x·σ(2z)`, `z = √(2/π)(x + 0.044715x³)` (the same function as polyflow's
/// `model::block::gelu_tanh`).
pub fn gelu_tanh(x: &[f32]) -> Vec<f32> {
    // SAFETY: `gelu_chunk` writes every value of its chunk.
    unsafe { written(x.len(), |y| split(y.par_chunks_mut(1 << 14).zip(x.par_chunks(1 << 14))).for_each(|(yc, xc)| gelu_chunk(xc, yc))) }
}

/// [`gelu_tanh`] rounded to bf16 bits as it is written (the input of a bf16 layer): the bits of
/// `to_bf16_vec(&gelu_tanh(x))`.
pub fn gelu_tanh_bf16(x: &[f32]) -> Vec<u16> {
    let mut y = vec![0u16; x.len()];
    split(y.par_chunks_mut(1 << 14).zip(x.par_chunks(1 << 14))).for_each(|(yc, xc)| {
        // This thread's spare buffer (one per task would allocate and zero-fill each chunk).
        let mut buf = Scratch::<f32>::take(xc.len());
        gelu_chunk(xc, as_uninit(&mut buf));
        bf16::convert(&buf, yc);
    });
    y
}

/// [`gelu_tanh`] in place (inference, where the input is not kept): the same bits.
pub fn gelu_tanh_in_place(x: &mut [f32]) {
    split(x.par_chunks_mut(1 << 14)).for_each(gelu_chunk_in_place);
}

// The element-wise loops below are compiled for AVX-512, AVX2 + FMA and the baseline, chosen at run time
// (`multiversion`): the crate is built for baseline x86-64, whose 4-wide SSE2 code and libm `expf` calls
// left them scalar. Each element goes through the same operations in every version and reductions stay
// sequential, so the versions give the same bits; [`expf::exp`] has glibc's bits (exhaustive test).

#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl+avx512dq+avx2+fma", "x86_64+avx2+fma"))]
fn gelu_chunk(x: &[f32], y: &mut [MaybeUninit<f32>]) {
    let (xb, xt) = x.as_chunks::<16>();
    let (yb, yt) = y.as_chunks_mut::<16>();
    for (o, v) in yb.iter_mut().zip(xb) {
        let e = exp_minus_2z16(v);
        for i in 0..16 {
            o[i].write(v[i] / (1.0 + e[i]));
        }
    }
    for (o, &v) in yt.iter_mut().zip(xt) {
        o.write(v / (1.0 + exp_minus_2z(v)));
    }
}

/// `−2z = −2·√(2/π)(x + 0.044715x³)`, the exponent of the tanh-GELU's `σ(2z) = 1 / (1 + e^−2z)`.
#[inline(always)]
fn minus_2z(v: f32) -> f32 {
    -(2.0 * C * (v + 0.044715 * v * v * v))
}

/// `e^−2z` of one value.
#[inline(always)]
fn exp_minus_2z(v: f32) -> f32 {
    expf::exp(minus_2z(v))
}

/// `e^−2z` of 16 values, the exponentials together ([`expf::exp16`]; the same bits as [`exp_minus_2z`]).
#[inline(always)]
fn exp_minus_2z16(v: &[f32; 16]) -> [f32; 16] {
    let mut t = v.map(minus_2z);
    expf::exp16(&mut t);
    t
}

#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl+avx512dq+avx2+fma", "x86_64+avx2+fma"))]
fn gelu_chunk_in_place(x: &mut [f32]) {
    let (xb, xt) = x.as_chunks_mut::<16>();
    for o in xb.iter_mut() {
        let e = exp_minus_2z16(o);
        for i in 0..16 {
            o[i] /= 1.0 + e[i];
        }
    }
    for o in xt.iter_mut() {
        *o /= 1.0 + exp_minus_2z(*o);
    }
}

/// Backward of [`gelu_tanh`] in place: `dy ← dy · gelu'(x)`.
pub fn gelu_tanh_backward(x: &[f32], dy: &mut [f32]) {
    split(dy.par_chunks_mut(1 << 14).zip(x.par_chunks(1 << 14))).for_each(|(dc, xc)| gelu_backward_chunk(xc, dc));
}

#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl+avx512dq+avx2+fma", "x86_64+avx2+fma"))]
fn gelu_backward_chunk(x: &[f32], dy: &mut [f32]) {
    /// `dy · gelu'(v)` given `e = e^−2z`.
    #[inline(always)]
    fn grad(g: f32, v: f32, e: f32) -> f32 {
        let s = 1.0 / (1.0 + e);
        let dz2 = 2.0 * C * (1.0 + 3.0 * 0.044715 * v * v);
        g * (s + v * s * (1.0 - s) * dz2)
    }
    let (xb, xt) = x.as_chunks::<16>();
    let (gb, gt) = dy.as_chunks_mut::<16>();
    for (g, v) in gb.iter_mut().zip(xb) {
        let e = exp_minus_2z16(v);
        for i in 0..16 {
            g[i] = grad(g[i], v[i], e[i]);
        }
    }
    for (g, &v) in gt.iter_mut().zip(xt) {
        *g = grad(*g, v, exp_minus_2z(v));
    }
}

/// Row-wise softmax in place over rows of length `n`, of the logits times `scale` (`x ← softmax(scale·x)`,
/// the product rounded first, exactly as a separate scaling pass; `scale = 1` is plain softmax).
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl+avx512dq+avx2+fma", "x86_64+avx2+fma"))]
pub fn softmax_rows(x: &mut [f32], n: usize, scale: f32) {
    // Written whole by `transpose_rows` before any read; a spare of this thread (called per head: thousands of
    // calls per step).
    let mut xt = Scratch::<f32>::take(G * n);
    for grp in x.chunks_mut(G * n) {
        grp.iter_mut().for_each(|v| *v *= scale);
        // Maximum and sum of each row in order, rows side by side (as lanes of columns for a whole group:
        // [`fold_lanes`]); the exponentials vectorise.
        let mx = match transpose_rows(grp, n, &mut xt) {
            Some(xt) => fold_lanes([xt], f32::NEG_INFINITY, |a, [v], _, _| a.max(v)),
            None => fold_rows(grp, n, f32::NEG_INFINITY, |a, r, j| a.max(grp[r * n + j])),
        };
        for (r, row) in grp.chunks_mut(n).enumerate() {
            let (blocks, tail) = row.as_chunks_mut::<16>();
            for v in blocks.iter_mut() {
                *v = v.map(|x| x - mx[r]);
                expf::exp16(v);
            }
            for v in tail.iter_mut() {
                *v = expf::exp(*v - mx[r]);
            }
        }
        let s = match transpose_rows(grp, n, &mut xt) {
            Some(xt) => fold_lanes([xt], 0.0, |a, [v], _, _| a + v),
            None => fold_rows(grp, n, 0.0, |a, r, j| a + grp[r * n + j]),
        };
        for (r, row) in grp.chunks_mut(n).enumerate() {
            let inv = 1.0 / s[r];
            for v in row.iter_mut() {
                *v *= inv;
            }
        }
    }
}

/// Backward of a row softmax in place, times `scale` (the chain rule through [`softmax_rows`]'s scaling):
/// `dp ← scale · (p ⊙ (dp − Σ_j dp_j p_j))` (rows of length `n`).
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl+avx512dq+avx2+fma", "x86_64+avx2+fma"))]
pub fn softmax_rows_backward(p: &[f32], dp: &mut [f32], n: usize, scale: f32) {
    let (mut pt, mut dt) = (Scratch::<f32>::take(G * n), Scratch::<f32>::take(G * n)); // as in `softmax_rows`
    for (pg, dg) in p.chunks(G * n).zip(dp.chunks_mut(G * n)) {
        let d = &*dg;
        // `Iterator::sum` folds from −0.0.
        let dot = match (transpose_rows(pg, n, &mut pt), transpose_rows(d, n, &mut dt)) {
            (Some(pt), Some(dt)) => fold_lanes([pt, dt], -0.0, |a, [p, d], _, _| a + p * d),
            _ => fold_rows(pg, n, -0.0, |a, r, j| a + pg[r * n + j] * d[r * n + j]),
        };
        for (r, (pr, dr)) in pg.chunks(n).zip(dg.chunks_mut(n)).enumerate() {
            for (d, &pv) in dr.iter_mut().zip(pr) {
                *d = pv * (*d - dot[r]) * scale;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: &dyn Fn(usize, usize) -> f32, b: &dyn Fn(usize, usize) -> f32) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|l| a(i, l) * b(l, j)).sum();
            }
        }
        c
    }

    fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "[{i}] {x} vs {y}");
        }
    }

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 1000) as f32 / 500.0 - 1.0).collect()
    }

    #[test]
    fn strided_products_match_naive_with_transposes_and_accumulation() {
        let (m, n, k) = (37, 29, 41);
        let a = data(m * k, 1);
        let bt = data(n * k, 2); // b stored transposed: [n, k]
        let mut c = data(m * n, 3);
        let c0 = c.clone();
        matmul(m, n, k, Mat::rows(&a, k), Mat::t(&bt, k), &mut c, n, true, true);
        let want = naive(m, n, k, &|i, l| a[i * k + l], &|l, j| bt[j * k + l]);
        let want: Vec<f32> = want.iter().zip(&c0).map(|(w, c)| w + c).collect();
        close(&c, &want, 1e-5);
    }

    #[test]
    #[should_panic(expected = "lhs view out of bounds")]
    fn a_view_past_its_slice_is_refused_before_any_raw_read() {
        let (a, b) = (vec![1.0f32; 10], vec![1.0f32; 12]);
        let mut c = vec![0.0f32; 12];
        // a claims [4, 3] but holds 10 values.
        matmul(4, 3, 3, Mat::rows(&a, 3), Mat::rows(&b, 3), &mut c, 3, false, false);
    }

    #[test]
    fn bf16_inputs_give_the_bits_of_converting_at_each_product() {
        // LayerNorm and GELU writing bf16, and the layers reading it, against the f32 kernels with the
        // products converting their f32 operands: the same bits (odd widths, rows past a tile).
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let (m, kk, n) = (101, 37, 45);
        let x = data(m * kk, 3);
        let (g, b) = (data(kk, 4), data(kk, 5));
        let (y, mean, rstd) = layer_norm(&x, &g, &b, kk, 1e-6);
        let (y16, mean16, rstd16) = layer_norm_bf16(&x, &g, &b, kk, 1e-6);
        assert_eq!(y16, to_bf16_vec(&y));
        assert_eq!((bits(&mean), bits(&rstd)), (bits(&mean16), bits(&rstd16)));
        assert_eq!(gelu_tanh_bf16(&x), to_bf16_vec(&gelu_tanh(&x)));
        let (w, bias, dy) = (data(kk * n, 6), data(n, 7), data(m * n, 8));
        let want = linear(&y, &w, &bias, m, kk, n, Precision::Bf16);
        assert_eq!(bits(&linear16(&y16, &w, &bias, m, kk, n)), bits(&want));
        let (dx, dw, db) = linear_backward(&y, &w, &dy, m, kk, n, Precision::Bf16);
        let (dx16, dw16, db16) = linear_backward16(&y16, &w, &dy, m, kk, n);
        assert_eq!((bits(&dx16), bits(&dw16), bits(&db16)), (bits(&dx), bits(&dw), bits(&db)));
        // And bf16 did round: the f32 layer differs.
        assert_ne!(bits(&linear(&y, &w, &bias, m, kk, n, Precision::F32)), bits(&want));
    }

    /// One-item tasks ([`split`]) change only which thread computes what: the outputs of the loops that use it,
    /// reductions over chunks included, are the same bits with it on and off, on two threads.
    /// Held by the tests that turn [`fine_split`] off, so that one does not see the other's setting.
    static SWITCH: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn one_item_tasks_give_the_same_bits() {
        let _held = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
        let (m, k, n) = (700, 24, 40);
        let (x, w, b, dy) = (data(m * k, 11), data(k * n, 12), data(n, 13), data(m * n, 14));
        let (g, beta) = (data(k, 15), data(k, 16));
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("pool");
        let run = |on: bool| {
            fine_split(on);
            pool.install(|| {
                let y = linear(&x, &w, &b, m, k, n, Precision::F32);
                let (dx, dw, db) = linear_backward(&x, &w, &dy, m, k, n, Precision::F32);
                let (xn, mean, rstd) = layer_norm(&x, &g, &beta, k, 1e-6);
                let (dxn, dg, dbeta) = layer_norm_backward(&x, &mean, &rstd, &g, &dx, k);
                let act = gelu_tanh(&y);
                let mut dact = dy.clone();
                gelu_tanh_backward(&y, &mut dact);
                [y, dx, dw, db, xn, dxn, dg, dbeta, act, dact].map(|v| v.iter().map(|f| f.to_bits()).collect::<Vec<u32>>())
            })
        };
        let (coarse, fine) = (run(false), run(true));
        fine_split(true);
        assert_eq!(coarse, fine);
        // The bf16 loops (their per-task spare buffers included).
        let run16 = |on: bool| {
            fine_split(on);
            pool.install(|| {
                let y = linear(&x, &w, &b, m, k, n, Precision::Bf16);
                let (dx, dw, _) = linear_backward(&x, &w, &dy, m, k, n, Precision::Bf16);
                let f = |v: Vec<f32>| v.iter().map(|f| f.to_bits()).collect::<Vec<u32>>();
                let h = |v: Vec<u16>| v.into_iter().map(u32::from).collect::<Vec<u32>>();
                [f(y.clone()), f(dx), f(dw), h(layer_norm_bf16(&x, &g, &beta, k, 1e-6).0), h(gelu_tanh_bf16(&y))]
            })
        };
        let (coarse, fine) = (run16(false), run16(true));
        fine_split(true);
        assert_eq!(coarse, fine);
    }

    /// [`split`] makes each item its own task (one fold accumulator per item); off, rayon's adaptive split
    /// groups them.
    #[test]
    fn split_hands_out_one_item_per_task() {
        let _held = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("pool");
        let tasks = |on: bool| {
            fine_split(on);
            let n = pool.install(|| split((0..1000).into_par_iter()).fold(|| 0, |c, _| c + 1).collect::<Vec<usize>>());
            assert_eq!(n.iter().sum::<usize>(), 1000);
            n.len()
        };
        let (coarse, fine) = (tasks(false), tasks(true));
        fine_split(true);
        assert_eq!(fine, 1000);
        assert!(coarse < 100, "{coarse} tasks without one-item tasks");
    }

    #[test]
    fn linear_backward_matches_naive() {
        let (m, k, n) = (70, 12, 9);
        let (x, w, dy) = (data(m * k, 4), data(k * n, 5), data(m * n, 6));
        let (dx, dw, db) = linear_backward(&x, &w, &dy, m, k, n, Precision::F32);
        close(&dx, &naive(m, k, n, &|i, l| dy[i * n + l], &|l, j| w[j * n + l]), 1e-5);
        close(&dw, &naive(k, n, m, &|i, l| x[l * k + i], &|l, j| dy[l * n + j]), 1e-5);
        let db_want: Vec<f32> = (0..n).map(|j| (0..m).map(|i| dy[i * n + j]).sum()).collect();
        close(&db, &db_want, 1e-5);
    }

    /// Outputs are written into uninitialised buffers, so operands that would leave rows of them unwritten (a
    /// partial row, a gradient or statistics of other lengths) are refused rather than returned half-written.
    #[test]
    fn layer_norms_refuse_operands_that_would_leave_rows_unwritten() {
        let (g, b) = (vec![1.0f32; 4], vec![0.0f32; 4]);
        let partial = std::panic::catch_unwind(|| layer_norm(&[0.5; 10], &g, &b, 4, 1e-6));
        assert!(partial.is_err(), "10 values in rows of 4");
        let (x, dy) = (vec![0.5f32; 12], vec![0.1f32; 8]);
        let (_, mean, rstd) = layer_norm(&x, &g, &b, 4, 1e-6);
        assert!(std::panic::catch_unwind(|| layer_norm_backward(&x, &mean, &rstd, &g, &dy, 4)).is_err(), "short gradient");
        assert!(std::panic::catch_unwind(|| layer_norm_backward(&x, &mean[..2], &rstd, &g, &x, 4)).is_err(), "short statistics");
        assert_eq!(layer_norm_backward(&x, &mean, &rstd, &g, &x, 4).0.len(), 12);
    }

    #[test]
    fn layer_norm_backward_matches_finite_differences() {
        let d = 8;
        let x = data(3 * d, 7);
        let g = data(d, 8);
        let b = data(d, 9);
        let dy = data(3 * d, 10);
        let loss = |x: &[f32], g: &[f32]| -> f64 {
            let (y, _, _) = layer_norm(x, g, &b, d, 1e-6);
            y.iter().zip(&dy).map(|(a, b)| (*a as f64) * (*b as f64)).sum()
        };
        let (_, mean, rstd) = layer_norm(&x, &g, &b, d, 1e-6);
        let (dx, dg, _) = layer_norm_backward(&x, &mean, &rstd, &g, &dy, d);
        let h = 1e-2f32;
        for i in [0, 5, 13, 22] {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[i] += h;
            xm[i] -= h;
            let fd = (loss(&xp, &g) - loss(&xm, &g)) / (2.0 * h as f64);
            assert!((fd as f32 - dx[i]).abs() < 2e-2 * (1.0 + dx[i].abs()), "dx[{i}] {} vs {fd}", dx[i]);
        }
        for i in [0, 3, 7] {
            let (mut gp, mut gm) = (g.clone(), g.clone());
            gp[i] += h;
            gm[i] -= h;
            let fd = (loss(&x, &gp) - loss(&x, &gm)) / (2.0 * h as f64);
            assert!((fd as f32 - dg[i]).abs() < 2e-2 * (1.0 + dg[i].abs()), "dg[{i}] {} vs {fd}", dg[i]);
        }
    }

    #[test]
    fn gelu_and_softmax_backward_match_finite_differences() {
        let x = data(50, 11);
        let h = 1e-3f32;
        let mut d = vec![1.0f32; x.len()];
        gelu_tanh_backward(&x, &mut d);
        for i in 0..x.len() {
            let (p, m) = (gelu_tanh(&[x[i] + h])[0], gelu_tanh(&[x[i] - h])[0]);
            assert!(((p - m) / (2.0 * h) - d[i]).abs() < 1e-2, "gelu'({}) {} vs {}", x[i], d[i], (p - m) / (2.0 * h));
        }
        let n = 5;
        let s = data(n, 12);
        let w = data(n, 13);
        let f = |s: &[f32]| -> f32 {
            let mut p = s.to_vec();
            softmax_rows(&mut p, n, 1.0);
            p.iter().zip(&w).map(|(a, b)| a * b).sum()
        };
        let mut p = s.clone();
        softmax_rows(&mut p, n, 1.0);
        let mut dp = w.clone();
        softmax_rows_backward(&p, &mut dp, n, 1.0);
        for i in 0..n {
            let (mut sp, mut sm) = (s.clone(), s.clone());
            sp[i] += h;
            sm[i] -= h;
            assert!(((f(&sp) - f(&sm)) / (2.0 * h) - dp[i]).abs() < 1e-2);
        }
    }

    /// The row-wise kernels as they were, one row at a time: the interleaved reductions must give their bits.
    mod one_row {
        pub fn softmax(x: &mut [f32], n: usize, scale: f32) {
            for r in x.chunks_mut(n) {
                r.iter_mut().for_each(|v| *v *= scale);
                let mx = r.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                for v in r.iter_mut() {
                    *v = crate::expf::exp(*v - mx);
                }
                let s = r.iter().fold(0.0f32, |s, v| s + v);
                let inv = 1.0 / s;
                for v in r.iter_mut() {
                    *v *= inv;
                }
            }
        }
        pub fn softmax_backward(p: &[f32], dp: &mut [f32], n: usize, scale: f32) {
            for (pr, dr) in p.chunks(n).zip(dp.chunks_mut(n)) {
                let dot: f32 = pr.iter().zip(dr.iter()).map(|(a, b)| a * b).sum();
                for (d, &pv) in dr.iter_mut().zip(pr) {
                    *d = pv * (*d - dot) * scale;
                }
            }
        }
        pub fn layer_norm(x: &[f32], gamma: &[f32], beta: &[f32], d: usize, eps: f32) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
            let (mut y, mut m, mut r) = (vec![0.0; x.len()], vec![], vec![]);
            for (yr, xr) in y.chunks_mut(d).zip(x.chunks(d)) {
                let mu = xr.iter().sum::<f32>() / d as f32;
                let var = xr.iter().map(|v| (v - mu) * (v - mu)).sum::<f32>() / d as f32;
                let s = 1.0 / (var + eps).sqrt();
                for (((o, v), g), b) in yr.iter_mut().zip(xr).zip(gamma).zip(beta) {
                    *o = (v - mu) * s * g + b;
                }
                m.push(mu);
                r.push(s);
            }
            (y, m, r)
        }
        pub fn layer_norm_backward(
            x: &[f32],
            mean: &[f32],
            rstd: &[f32],
            gamma: &[f32],
            dy: &[f32],
            d: usize,
        ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
            let (mut dx, mut dg, mut db) = (vec![0.0; x.len()], vec![0.0f32; d], vec![0.0f32; d]);
            let mut xhat = vec![0.0f32; d];
            for ((((dxr, xr), dyr), mu), s) in dx.chunks_mut(d).zip(x.chunks(d)).zip(dy.chunks(d)).zip(mean).zip(rstd) {
                for i in 0..d {
                    xhat[i] = (xr[i] - mu) * s;
                }
                let (mut m1, mut m2) = (0.0f32, 0.0f32);
                for i in 0..d {
                    let g = dyr[i] * gamma[i];
                    m1 += g;
                    m2 += g * xhat[i];
                }
                for i in 0..d {
                    dg[i] += dyr[i] * xhat[i];
                    db[i] += dyr[i];
                }
                let (m1, m2) = (m1 / d as f32, m2 / d as f32);
                for i in 0..d {
                    dxr[i] = s * (dyr[i] * gamma[i] - m1 - xhat[i] * m2);
                }
            }
            (dx, dg, db)
        }
    }

    /// GELU forward (both forms) and backward give the bits of the per-value loops with [`expf::exp`]: lengths
    /// with and without a tail of fewer than 16, values large enough for the exponential's special cases.
    #[test]
    fn gelu_keeps_the_per_value_bits() {
        for len in [1, 15, 16, 33, 1000, (1 << 14) + 5] {
            let mut x = data(len, 9);
            x.iter_mut().enumerate().for_each(|(i, v)| *v *= [1.0, 4.0, 12.0, 0.01, 100.0][i % 5]);
            let want: Vec<f32> = x
                .iter()
                .map(|&v| {
                    let z2 = 2.0 * C * (v + 0.044715 * v * v * v);
                    v / (1.0 + expf::exp(-z2))
                })
                .collect();
            assert_eq!(bits(&gelu_tanh(&x)), bits(&want), "gelu, {len}");
            let mut y = x.clone();
            gelu_tanh_in_place(&mut y);
            assert_eq!(bits(&y), bits(&want), "gelu in place, {len}");
            let dy = data(len, 4);
            let want: Vec<f32> = x
                .iter()
                .zip(&dy)
                .map(|(&v, &g)| {
                    let z2 = 2.0 * C * (v + 0.044715 * v * v * v);
                    let s = 1.0 / (1.0 + expf::exp(-z2));
                    let dz2 = 2.0 * C * (1.0 + 3.0 * 0.044715 * v * v);
                    g * (s + v * s * (1.0 - s) * dz2)
                })
                .collect();
            let mut got = dy.clone();
            gelu_tanh_backward(&x, &mut got);
            assert_eq!(bits(&got), bits(&want), "gelu backward, {len}");
        }
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// Column sums are per-chunk sums of [`ROWS`] rows in row order, then the chunks' sums in chunk order: the
    /// bits of that loop written out, on row counts around a chunk and widths around a vector.
    #[test]
    fn column_sums_keep_the_documented_order() {
        for (rows, n) in [(1, 3), (64, 17), (65, 192), (200, 33), (130, 768)] {
            let x: Vec<f32> = data(rows * n, 5).iter().enumerate().map(|(i, v)| v * [1.0, 1e4, 1e-3][i % 3]).collect();
            let mut want = vec![0.0f32; n];
            for chunk in x.chunks(ROWS * n) {
                let mut s = vec![0.0f32; n];
                for r in chunk.chunks(n) {
                    for j in 0..n {
                        s[j] += r[j];
                    }
                }
                for j in 0..n {
                    want[j] += s[j];
                }
            }
            assert_eq!(bits(&col_sum(&x, n)), bits(&want), "{rows}×{n}");
        }
    }

    /// Softmax, its backward, LayerNorm and its backward give the one-row-at-a-time bits: row counts that are
    /// and are not multiples of the interleave, rows of zeros (signs of zero sums), large and tiny values.
    #[test]
    fn row_kernels_keep_the_one_row_bits() {
        for (rows, n) in [(1, 5), (8, 65), (21, 65), (64, 192), (67, 192), (3, 1)] {
            // The kernels' column buffers are this thread's spares: full of NaN here, so a value they read
            // without writing it first would show.
            let spares: Vec<Scratch<f32>> = (0..4).map(|_| Scratch::<f32>::take(1 << 16)).collect();
            for mut b in spares {
                b.fill(f32::NAN);
            }
            let mut x = data(rows * n, 7);
            x.iter_mut().enumerate().for_each(|(i, v)| *v *= [1.0, 30.0, 1e-6, 3.0][i % 4]);
            x[..n].fill(0.0);
            if rows > 2 {
                x[n..2 * n].fill(-0.0);
            }
            let dy = data(rows * n, 11);
            let (mut a, mut b) = (x.clone(), x.clone());
            softmax_rows(&mut a, n, 0.125);
            one_row::softmax(&mut b, n, 0.125);
            assert_eq!(bits(&a), bits(&b), "softmax {rows}×{n}");
            let (mut da, mut db) = (dy.clone(), dy.clone());
            softmax_rows_backward(&a, &mut da, n, 0.125);
            one_row::softmax_backward(&b, &mut db, n, 0.125);
            assert_eq!(bits(&da), bits(&db), "softmax backward {rows}×{n}");
            let (gamma, beta) = (data(n, 3), data(n, 5));
            let got = layer_norm(&x, &gamma, &beta, n, 1e-6);
            let want = one_row::layer_norm(&x, &gamma, &beta, n, 1e-6);
            assert_eq!((bits(&got.0), bits(&got.1), bits(&got.2)), (bits(&want.0), bits(&want.1), bits(&want.2)), "layer norm {rows}×{n}");
            if rows <= ROWS {
                // One parallel chunk: dγ and dβ are summed over the same rows in the same order.
                let got = layer_norm_backward(&x, &want.1, &want.2, &gamma, &dy, n);
                let want = one_row::layer_norm_backward(&x, &want.1, &want.2, &gamma, &dy, n);
                assert_eq!(bits(&got.0), bits(&want.0), "layer norm backward dx {rows}×{n}");
                assert_eq!((bits(&got.1), bits(&got.2)), (bits(&want.1), bits(&want.2)), "layer norm backward dγ dβ {rows}×{n}");
            }
        }
    }
}
