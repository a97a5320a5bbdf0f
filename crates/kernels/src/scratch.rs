//! Per-thread reusable packing buffers of the matrix products ([`Scratch`]).

/// A packing buffer borrowed from this thread's spares and given back when dropped. A fresh `vec!` per product
/// costs a page fault and a zero-fill per 4 KiB: the attention's products (thousands per step, f32) and the
/// bf16 products' operands (perf, bf16 training on a Zen 4: `clear_page_erms` 3.1 % and `memset` 4.3 % of the
/// step) did. Contents are unspecified: every user writes each value the kernels read, padding included.
pub(crate) struct Scratch<T: Pooled> {
    buf: Vec<T>,
    len: usize,
}

/// Element types with a pool of spare buffers per thread.
pub(crate) trait Pooled: Copy + Default + 'static {
    /// This thread's spare buffers of the type (a stack: a product run inside another's parallel loop, by
    /// work stealing, takes another one).
    fn pool() -> &'static std::thread::LocalKey<std::cell::RefCell<Vec<Vec<Self>>>>;
}

thread_local! {
    static SPARE_F32: std::cell::RefCell<Vec<Vec<f32>>> = const { std::cell::RefCell::new(Vec::new()) };
    static SPARE16: std::cell::RefCell<Vec<Vec<u16>>> = const { std::cell::RefCell::new(Vec::new()) };
    static SPARE32: std::cell::RefCell<Vec<Vec<u32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Pooled for f32 {
    fn pool() -> &'static std::thread::LocalKey<std::cell::RefCell<Vec<Vec<f32>>>> {
        &SPARE_F32
    }
}

impl Pooled for u16 {
    fn pool() -> &'static std::thread::LocalKey<std::cell::RefCell<Vec<Vec<u16>>>> {
        &SPARE16
    }
}

impl Pooled for u32 {
    fn pool() -> &'static std::thread::LocalKey<std::cell::RefCell<Vec<Vec<u32>>>> {
        &SPARE32
    }
}

impl<T: Pooled> Scratch<T> {
    /// `len` values, unspecified contents: the spare given back last, grown if needed and never shortened (so
    /// that a reused buffer is not filled again). A thread keeps at most four spares of each type (bounded
    /// memory), each as large as the largest operand it packed (a few MB for the ViT-Ti probe's products).
    pub(crate) fn take(len: usize) -> Self {
        let mut buf = T::pool().with(|s| s.borrow_mut().pop()).unwrap_or_default();
        if buf.len() < len {
            buf.resize(len, T::default());
        }
        Scratch { buf, len }
    }
}

impl<T: Pooled> Drop for Scratch<T> {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.buf);
        T::pool().with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < 4 {
                s.push(v);
            }
        });
    }
}

impl<T: Pooled> std::ops::Deref for Scratch<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.buf[..self.len]
    }
}

impl<T: Pooled> std::ops::DerefMut for Scratch<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.buf[..self.len]
    }
}
