//! Intel AMX (`tdpbf16ps`) for the bf16 products: detection, the Linux permission request, each thread's tile
//! configuration, and the 32 × 32 micro-kernel.
//!
//! AMX multiplies tiles: `tdpbf16ps` adds a 16 × 32 bf16 tile of A times a 32 × 16 bf16 tile of B (stored as 16
//! rows of 16 pairs: the layout [`crate::bf16`] packs B in for `vdpbf16ps`) to a 16 × 16 f32 tile, 8,192
//! multiply-adds per instruction. Its sums are not the sequence of roundings `vdpbf16ps` documents: measured on
//! a Sapphire-Rapids-class Xeon, no order of f32 FMAs, nor one rounding per instruction, reproduced its bits (38–105
//! of 256 sums matched each model tried). So products on AMX differ in their last bits from the AVX512-BF16 kernel
//! and the emulation; they are deterministic (same instructions in the same order for every thread count) and
//! within bf16's error of the exact product (unit tests in `bf16.rs`).

use std::cell::Cell;
use std::sync::OnceLock;

/// Rows of the micro-kernel's C tile (two AMX tiles of 16 rows).
pub(crate) const MR: usize = 32;
/// Pairs of `k` per `tdpbf16ps` (a tile row of A: 32 bf16 values, 64 bytes).
pub(crate) const KQ: usize = 16;

/// Whether this CPU and OS run AMX-BF16: CPUID's AMX-TILE and AMX-BF16 bits, the OS enabling the tile state
/// (XCR0 bits 17 and 18), and on Linux the process's permission to use it (`arch_prctl(ARCH_REQ_XCOMP_PERM)`,
/// asked once here; Linux 5.16 and later).
pub(crate) fn available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(detect)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    use std::arch::x86_64::{__cpuid_count, _xgetbv};
    // `cpuid` exists on every x86-64 CPU; leaf 7 is read only when the CPU reports it.
    let max_leaf = __cpuid_count(0, 0).eax;
    if max_leaf < 7 {
        return false;
    }
    let edx = __cpuid_count(7, 0).edx;
    let (amx_bf16, amx_tile) = (edx >> 22 & 1 == 1, edx >> 24 & 1 == 1);
    // OSXSAVE (leaf 1, ECX bit 27): the OS has enabled `xgetbv`.
    let osxsave = __cpuid_count(1, 0).ecx >> 27 & 1 == 1;
    if !(amx_bf16 && amx_tile && osxsave) {
        return false;
    }
    // SAFETY: `xgetbv` may run: the OS enabled it (OSXSAVE, checked above).
    let xcr0 = unsafe { _xgetbv(0) };
    if xcr0 >> 17 & 3 != 3 {
        return false;
    }
    request_permission()
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`: Linux hands out the 8 KB tile state only to processes
/// that ask (once per process, for all its threads); 0 on success.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_permission() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: a system call that only changes this process's permitted state components; it reads and writes no
    // memory of ours, and `syscall` clobbers only rcx and r11 (declared).
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

/// The tile configuration (`ldtilecfg`'s 64-byte operand): palette 1, tiles 0–7 all 16 rows of 64 bytes.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    _reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

const CONFIG: TileConfig = {
    let mut colsb = [0u16; 16];
    let mut rows = [0u8; 16];
    let mut t = 0;
    while t < 8 {
        colsb[t] = 64;
        rows[t] = 16;
        t += 1;
    }
    TileConfig { palette: 1, start_row: 0, _reserved: [0; 14], colsb, rows }
};

thread_local! {
    /// Whether this thread has loaded [`CONFIG`] (the configuration is per thread; Linux saves it with the
    /// thread's other state, and nothing else in this process changes it).
    static CONFIGURED: Cell<bool> = const { Cell::new(false) };
}

/// Loads the tile configuration on this thread, once.
///
/// # Safety
/// [`available`] must have returned true.
#[cfg(target_arch = "x86_64")]
#[inline]
unsafe fn configure() {
    CONFIGURED.with(|c| {
        if !c.get() {
            // SAFETY: AMX is available (caller); `CONFIG` is a valid 64-byte, 64-aligned configuration.
            unsafe { std::arch::asm!("ldtilecfg [{}]", in(reg) &CONFIG as *const TileConfig, options(nostack, readonly)) };
            c.set(true);
        }
    });
}

/// Where the micro-kernel's C tile starts from.
#[derive(Clone, Copy)]
pub(crate) enum Start {
    /// Zero.
    Zero,
    /// The values in C (added to).
    C,
    /// A row of 32 values (a bias) for every row: one tile load of stride 0, without writing it into C first.
    Row(*const f32),
}

/// The AMX micro-kernel: `c[32 × 32] = start + Σ_q A(0..32, q) · b[q, 0..32]` over `kq` pairs (a multiple of
/// [`KQ`]): A's row `i` holds its pairs contiguously from `a + i·ri` (bf16 values, row stride `ri` values), B is a
/// packed panel of `kq` rows of 32 pairs, C at row stride `ldc`. C lives in `tmm0`–`tmm3` (rows 0–15 / 16–31 ×
/// columns 0–15 / 16–31), A's two row halves in `tmm4`/`tmm5`, B's two column halves in `tmm6`/`tmm7`.
///
/// A C that is not read first is prefetched for writing at the start: the tile stores at the end otherwise wait on
/// 64 lines fetched one after the other (the products of the ViT-Ti probe ran 15–25 % faster with it in 4 of 4
/// alternations on a 2-core Xeon; BENCHMARKS.md).
///
/// # Safety
/// [`available`] must have returned true; `a` must hold 32 rows of `kq` pairs at stride `ri`, `b` `kq·32` pairs,
/// `c` the 32 × 32 tile at stride `ldc`, and a [`Start::Row`] 32 values.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn kernel(kq: usize, a: *const u16, ri: usize, b: *const u32, c: *mut f32, ldc: usize, start: Start) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_ET0};
    debug_assert_eq!(kq % KQ, 0);
    // (where the starting tile is read, its row stride in bytes, whether it is read at all: zero otherwise)
    let (src, stride, load) = match start {
        Start::Zero => (c as *const f32, 0, false),
        Start::C => (c as *const f32, ldc * 4, true),
        Start::Row(r) => (r, 0, true),
    };
    if !matches!(start, Start::C) {
        for i in 0..MR {
            // SAFETY: a hint only (no fault); the addresses are rows of the caller's C tile.
            unsafe {
                _mm_prefetch::<{ _MM_HINT_ET0 }>(c.wrapping_add(i * ldc) as *const i8);
                _mm_prefetch::<{ _MM_HINT_ET0 }>(c.wrapping_add(i * ldc + 16) as *const i8);
            }
        }
    }
    // SAFETY: the caller's contract; the tiles then read the start (C's tile or one row of 32 values), 32 rows × kq
    // pairs of A, kq × 32 pairs of B (rows of 128 bytes), and write the 32 × 32 tile of C, nothing else.
    unsafe {
        configure();
        std::arch::asm!(
            "test {load}, {load}",
            "jz 4f",
            "tileloadd tmm0, [{s0} + {ss}*1]",
            "tileloadd tmm1, [{s0} + {ss}*1 + 64]",
            "tileloadd tmm2, [{s16} + {ss}*1]",
            "tileloadd tmm3, [{s16} + {ss}*1 + 64]",
            "jmp 5f",
            "4:",
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "5:",
            "test {k}, {k}",
            "jz 3f",
            "2:",
            "tileloadd tmm4, [{a0} + {lda}*1]",
            "tileloadd tmm6, [{b} + {ldb}*1]",
            "tileloadd tmm7, [{b} + {ldb}*1 + 64]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tileloadd tmm5, [{a16} + {lda}*1]",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "add {a0}, 64",
            "add {a16}, 64",
            "add {b}, 2048",
            "dec {k}",
            "jnz 2b",
            "3:",
            "tilestored [{c0} + {ldc}*1], tmm0",
            "tilestored [{c0} + {ldc}*1 + 64], tmm1",
            "tilestored [{c16} + {ldc}*1], tmm2",
            "tilestored [{c16} + {ldc}*1 + 64], tmm3",
            k = inout(reg) kq / KQ => _,
            a0 = inout(reg) a => _,
            a16 = inout(reg) a.wrapping_add(16 * ri) => _,
            b = inout(reg) b => _,
            lda = in(reg) ri * 2,
            ldb = in(reg) 128usize,
            s0 = in(reg) src,
            s16 = in(reg) src.wrapping_byte_add(16 * stride),
            ss = in(reg) stride,
            load = in(reg) load as usize,
            c0 = in(reg) c,
            c16 = in(reg) c.wrapping_add(16 * ldc),
            ldc = in(reg) ldc * 4,
            options(nostack),
        );
    }
}
