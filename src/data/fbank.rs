//! Kaldi-compatible log-mel filterbank, matching `torchaudio.compliance.kaldi.fbank` (what AST/MBT feed
//! their models), including torchaudio's behaviour where Kaldi refuses: with 128 bins at 16 kHz / 25 ms the
//! lowest filters are empty and come out as `log(f32::EPSILON)`.
//!
//! Per frame: extract (snip_edges or reflect), DC removal, raw log-energy, pre-emphasis (first sample
//! replicated), window, zero-pad to a power of two, |rfft|² (or magnitude), triangular mel filters on
//! Kaldi's mel scale `1127 ln(1 + f/700)`, log with an ε floor. Mel filters are stored sparsely.

use realfft::RealFftPlanner;
use serde::{Deserialize, Serialize};

/// Window shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    /// Hann (symmetric).
    Hanning,
    /// Hamming (symmetric, 0.54/0.46).
    Hamming,
    /// Kaldi's default: Hann^0.85.
    Povey,
    /// Rectangular.
    Rectangular,
    /// Blackman with `blackman_coeff`.
    Blackman,
}

/// Every option of torchaudio's `kaldi.fbank` that changes the output (no VTLN warping).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FbankOptions {
    /// Sample rate in Hz.
    pub sample_frequency: f64,
    /// Frame length in ms.
    pub frame_length: f64,
    /// Frame shift in ms.
    pub frame_shift: f64,
    /// Mel bins.
    pub num_mel_bins: usize,
    /// Lowest filter edge in Hz.
    pub low_freq: f64,
    /// Highest filter edge in Hz (≤ 0: offset from Nyquist).
    pub high_freq: f64,
    /// Pre-emphasis coefficient.
    pub preemphasis_coefficient: f64,
    /// Subtract each frame's mean.
    pub remove_dc_offset: bool,
    /// Window.
    pub window_type: Window,
    /// Blackman coefficient.
    pub blackman_coeff: f64,
    /// Pad frames to a power of two for the FFT.
    pub round_to_power_of_two: bool,
    /// Only frames that fit entirely (else reflect-pad the edges).
    pub snip_edges: bool,
    /// Power spectrum (else magnitude).
    pub use_power: bool,
    /// Take the log.
    pub use_log_fbank: bool,
    /// Append (htk_compat) or prepend the log energy.
    pub use_energy: bool,
    /// Energy goes last (HTK) instead of first.
    pub htk_compat: bool,
    /// Energy before pre-emphasis and windowing.
    pub raw_energy: bool,
    /// Floor of the energy (0 = none).
    pub energy_floor: f64,
    /// Subtract the per-bin mean over frames.
    pub subtract_mean: bool,
    /// Multiply samples by this before everything (32768 = Kaldi's int16 scale; 1 = waveform in [-1, 1]).
    pub input_scale: f64,
}

impl Default for FbankOptions {
    /// The AST recipe: 128 bins, Hanning, 25 ms / 10 ms, no dither, no energy, waveform in [-1, 1].
    fn default() -> Self {
        FbankOptions {
            sample_frequency: 16000.0,
            frame_length: 25.0,
            frame_shift: 10.0,
            num_mel_bins: 128,
            low_freq: 20.0,
            high_freq: 0.0,
            preemphasis_coefficient: 0.97,
            remove_dc_offset: true,
            window_type: Window::Hanning,
            blackman_coeff: 0.42,
            round_to_power_of_two: true,
            snip_edges: true,
            use_power: true,
            use_log_fbank: true,
            use_energy: false,
            htk_compat: true,
            raw_energy: true,
            energy_floor: 1.0,
            subtract_mean: false,
            input_scale: 1.0,
        }
    }
}

impl FbankOptions {
    /// Kaldi's own defaults (`compute-fbank-feats`): povey window, 23 bins, int16-scaled samples.
    pub fn kaldi_defaults() -> Self {
        FbankOptions { num_mel_bins: 23, window_type: Window::Povey, htk_compat: false, input_scale: 32768.0, ..Default::default() }
    }
}

/// A prepared filterbank (window, FFT plan and sparse mel filters).
pub struct Fbank {
    opts: FbankOptions,
    win_size: usize,
    shift: usize,
    padded: usize,
    window: Vec<f64>,
    /// Per bin: first FFT index and weights.
    banks: Vec<(usize, Vec<f64>)>,
    fft: std::sync::Arc<dyn realfft::RealToComplex<f64>>,
}

const EPS: f64 = f32::EPSILON as f64;

fn mel(f: f64) -> f64 {
    1127.0 * (1.0 + f / 700.0).ln()
}

impl Fbank {
    /// Prepares the filterbank; errors on impossible settings.
    pub fn new(opts: FbankOptions) -> Result<Self, String> {
        let win_size = (opts.sample_frequency * opts.frame_length * 0.001) as usize;
        let shift = (opts.sample_frequency * opts.frame_shift * 0.001) as usize;
        if win_size < 2 || shift == 0 {
            return Err(format!(
                "frame length {} ms / shift {} ms too short at {} Hz",
                opts.frame_length, opts.frame_shift, opts.sample_frequency
            ));
        }
        let padded = if opts.round_to_power_of_two { win_size.next_power_of_two() } else { win_size };
        let n = win_size as f64;
        let window: Vec<f64> = (0..win_size)
            .map(|i| {
                let i = i as f64;
                let a = 2.0 * std::f64::consts::PI / (n - 1.0);
                match opts.window_type {
                    Window::Hanning => 0.5 - 0.5 * (a * i).cos(),
                    Window::Hamming => 0.54 - 0.46 * (a * i).cos(),
                    Window::Povey => (0.5 - 0.5 * (a * i).cos()).powf(0.85),
                    Window::Rectangular => 1.0,
                    Window::Blackman => opts.blackman_coeff - 0.5 * (a * i).cos() + (0.5 - opts.blackman_coeff) * (2.0 * a * i).cos(),
                }
            })
            .collect();
        let nyquist = 0.5 * opts.sample_frequency;
        let high = if opts.high_freq <= 0.0 { opts.high_freq + nyquist } else { opts.high_freq };
        if !(0.0 <= opts.low_freq && opts.low_freq < high && high <= nyquist) {
            return Err(format!("bad mel range: low_freq {} / high_freq {high} at Nyquist {nyquist}", opts.low_freq));
        }
        let num_fft_bins = padded / 2;
        let bin_width = opts.sample_frequency / padded as f64;
        let (ml, mh) = (mel(opts.low_freq), mel(high));
        let delta = (mh - ml) / (opts.num_mel_bins as f64 + 1.0);
        // torchaudio computes the banks in float32; mirror that rounding.
        let f32r = |x: f64| x as f32 as f64;
        let banks = (0..opts.num_mel_bins)
            .map(|b| {
                let left = f32r(ml + b as f64 * delta);
                let center = f32r(ml + (b as f64 + 1.0) * delta);
                let right = f32r(ml + (b as f64 + 2.0) * delta);
                let w: Vec<f64> = (0..num_fft_bins)
                    .map(|k| {
                        let m = f32r(mel(f32r(bin_width * k as f64)));
                        let up = f32r((m - left) / (center - left));
                        let down = f32r((right - m) / (right - center));
                        up.min(down).max(0.0)
                    })
                    .collect();
                let first = w.iter().position(|&x| x > 0.0).unwrap_or(0);
                let last = w.iter().rposition(|&x| x > 0.0).map(|i| i + 1).unwrap_or(first);
                (first, w[first..last].to_vec())
            })
            .collect();
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(padded);
        Ok(Fbank { opts, win_size, shift, padded, window, banks, fft })
    }

    /// Number of frames for `n` samples.
    pub fn num_frames(&self, n: usize) -> usize {
        if self.opts.snip_edges {
            if n < self.win_size {
                0
            } else {
                1 + (n - self.win_size) / self.shift
            }
        } else {
            (n + self.shift / 2) / self.shift
        }
    }

    /// Features `[frames, bins (+1 with energy)]`, row-major.
    pub fn compute(&self, wave: &[f32]) -> (usize, usize, Vec<f32>) {
        let o = &self.opts;
        let x: Vec<f64> = wave.iter().map(|&v| v as f64 * o.input_scale).collect();
        let m = self.num_frames(x.len());
        let bins = o.num_mel_bins;
        let cols = bins + usize::from(o.use_energy);
        let mut out = vec![0f32; m * cols];
        let mut frame = vec![0f64; self.padded];
        let mut spec = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut power = vec![0f64; self.padded / 2 + 1];
        let sample = |i: isize| -> f64 {
            // Reflection used when snip_edges = false (torchaudio: flip-padded edges).
            let n = x.len() as isize;
            let j = if i < 0 {
                -i - 1
            } else if i >= n {
                2 * n - i - 1
            } else {
                i
            };
            x[j.clamp(0, n - 1) as usize]
        };
        for f in 0..m {
            let start = if o.snip_edges {
                (f * self.shift) as isize
            } else {
                (f * self.shift) as isize + (self.shift / 2) as isize - (self.win_size / 2) as isize
            };
            let w = &mut frame[..self.win_size];
            for (k, v) in w.iter_mut().enumerate() {
                *v = sample(start + k as isize);
            }
            if o.remove_dc_offset {
                let mean = w.iter().sum::<f64>() / self.win_size as f64;
                w.iter_mut().for_each(|v| *v -= mean);
            }
            let log_energy = |v: &[f64]| {
                let e = v.iter().map(|a| a * a).sum::<f64>().max(EPS).ln();
                if o.energy_floor > 0.0 {
                    e.max(o.energy_floor.ln())
                } else {
                    e
                }
            };
            let mut energy = if o.raw_energy { log_energy(w) } else { 0.0 };
            if o.preemphasis_coefficient != 0.0 {
                for k in (1..self.win_size).rev() {
                    w[k] -= o.preemphasis_coefficient * w[k - 1];
                }
                w[0] -= o.preemphasis_coefficient * w[0];
            }
            for (v, win) in w.iter_mut().zip(&self.window) {
                *v *= win;
            }
            frame[self.win_size..].iter_mut().for_each(|v| *v = 0.0);
            if !o.raw_energy {
                energy = log_energy(&frame);
            }
            self.fft.process_with_scratch(&mut frame, &mut spec, &mut scratch).expect("fft");
            for (p, c) in power.iter_mut().zip(&spec) {
                let mag2 = c.re * c.re + c.im * c.im;
                *p = if o.use_power { mag2 } else { mag2.sqrt() };
            }
            let row = &mut out[f * cols..(f + 1) * cols];
            let off = usize::from(o.use_energy && !o.htk_compat);
            for (b, (first, w)) in self.banks.iter().enumerate() {
                let e: f64 = w.iter().zip(&power[*first..]).map(|(a, p)| a * p).sum();
                row[off + b] = if o.use_log_fbank { e.max(EPS).ln() as f32 } else { e as f32 };
            }
            if o.use_energy {
                row[if o.htk_compat { bins } else { 0 }] = energy as f32;
            }
        }
        if o.subtract_mean && m > 0 {
            for c in 0..cols {
                let mean = (0..m).map(|f| out[f * cols + c] as f64).sum::<f64>() / m as f64;
                (0..m).for_each(|f| out[f * cols + c] -= mean as f32);
            }
        }
        (m, cols, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn ast_recipe_shapes_and_empty_low_bins() {
        let fb = Fbank::new(FbankOptions::default()).unwrap();
        let wave: Vec<f32> = (0..16000).map(|i| (i as f32 * 0.05).sin() * 0.3).collect();
        let (m, c, v) = fb.compute(&wave);
        assert_eq!((m, c), (98, 128));
        // Some low mel filters are empty at 16 kHz / 512-point FFT with 128 bins (Kaldi refuses this);
        // torchaudio outputs log(f32::EPSILON) there, and so do we.
        let empty: Vec<usize> = fb.banks.iter().enumerate().filter(|(_, (_, w))| w.is_empty()).map(|(b, _)| b).collect();
        assert!(!empty.is_empty());
        for b in empty {
            assert!((v[b] as f64 - EPS.ln()).abs() < 1e-6);
        }
    }
}
