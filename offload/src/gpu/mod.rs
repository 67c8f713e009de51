//! The GPU backend: WGSL compute shaders through wgpu (Vulkan, or GL where Vulkan is missing;
//! Mesa's lavapipe where there is no GPU at all), in f32.
//!
//! One device and queue live as long as the backend; buffers grow and are reused between calls.
//! The join (`join.wgsl`) is tiled to respect the storage-binding and dispatch limits: bands of
//! 256 diagonals are handed out in batches, each batch's candidates folded into the running
//! profile on the device, so the host reads back one index per window.
//!
//! **Error bound.** The device picks each window's nearest neighbour from f32 distances; the
//! host then recomputes the chosen pair's distance exactly in f64. The covariance along a
//! diagonal is seeded by a direct sum over the window (values and means each split into two
//! f32s, so a quiet window far from the series' mean keeps its digits), updated in O(1) a step,
//! and re-seeded every 1024 steps and wherever the magnitudes its updates summed since the seed,
//! against the pair's norms, could have cost more than 2^-16 of correlation (a quiet window
//! after loud ones: without this the f32 error there reached 5·10^-4). Keys keep 15 bits of
//! mantissa. So every reported distance
//! is the true distance of the reported pair, and it exceeds the true nearest-neighbour
//! distance only where two candidates were within the f32 error of each other:
//! `gpu ≤ cpu + GPU_TOLERANCE` (distances, measured against the brute-force reference on random
//! walks and on the NAB series; see the tests). Window statistics are computed in f32 on values
//! centred on their series' mean: min and max are the inputs rounded to f32; mean, standard
//! deviation and slope are within `STATS_TOLERANCE` of the f64 result, relative to the largest
//! deviation of the series from its mean (slope: per window length).

use std::borrow::Cow;
use std::sync::Mutex;
use std::time::Duration;

use arrow::array::Float64Array;

use crate::cpu::{Windows, ab_windows, exact_dist2, finite_mean, self_windows, special_dist2};
use crate::{
    Backend, MatrixProfile, MiningError, Progress, WindowSpec, WindowStats, diagonal_pairs,
    exclusion_zone, values,
};

/// Documented bound on the f32 error of a correlation on the device: a reported distance d
/// exceeds the true nearest distance d* by at most d² − d*² ≤ 2m · 2ε (d² = 2m(1 − r)).
pub const CORRELATION_TOLERANCE: f64 = 1e-4;
/// Documented bound on GPU window statistics, relative to the series' largest deviation.
pub const STATS_TOLERANCE: f64 = 1e-5;

/// Diagonals per band (`BAND` in join.wgsl).
const BAND: usize = 256;
/// Rows per tile (`TILE` in join.wgsl).
const TILE: usize = 1024;
/// Bands per batch at most: a batch is one submission, and progress advances per batch.
const MAX_BATCH: usize = 64;
/// The most workgroups along one dispatch dimension.
const MAX_GROUPS: usize = 65535;

fn device_error(message: impl std::fmt::Display) -> MiningError {
    MiningError::Device {
        backend: "gpu".into(),
        message: message.to_string(),
    }
}

/// Buffers kept between calls, by role; one grows when a call needs more.
#[derive(Default)]
struct Pool {
    buffers: Vec<(&'static str, wgpu::Buffer)>,
}

impl Pool {
    fn get(
        &mut self,
        device: &wgpu::Device,
        name: &'static str,
        size: u64,
        usage: wgpu::BufferUsages,
    ) -> wgpu::Buffer {
        let size = size.max(16).next_multiple_of(16);
        if let Some((_, b)) = self.buffers.iter().find(|(n, _)| *n == name)
            && b.size() >= size
        {
            return b.clone();
        }
        self.buffers.retain(|(n, _)| *n != name);
        // Room to grow, but never past what the device allows in one buffer.
        let room = size
            .next_power_of_two()
            .min(device.limits().max_buffer_size);
        let buffer = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(name),
            size: room.max(size),
            usage,
            mapped_at_creation: false,
        });
        self.buffers.push((name, buffer.clone()));
        buffer
    }
}

/// The GPU backend.
pub struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    join: wgpu::ComputePipeline,
    reduce: wgpu::ComputePipeline,
    stats: wgpu::ComputePipeline,
    max_binding: u64,
    pool: Mutex<Pool>,
    progress: Option<Progress>,
    /// Bands per submission (tests lower it to cover several batches on small series).
    max_batch: usize,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu").field("adapter", &self.info).finish()
    }
}

/// A series prepared for the join, in f32.
struct Prepared {
    /// The centred values, then each window's mean, each split into (high, rest) so that the
    /// seed of a covariance keeps a quiet window's digits however far it lies from the mean.
    x: Vec<[f32; 2]>,
    /// Per window: 0 (unused), 1/norm (0 constant, −1 gap), df, dg.
    stats: Vec<[f32; 4]>,
}

/// `v` as an f32 and the f32 of what that rounding left out.
fn split(v: f64) -> [f32; 2] {
    let high = v as f32;
    [high, (v - f64::from(high)) as f32]
}

impl Prepared {
    fn new(w: &Windows, m: usize) -> Prepared {
        let l = w.len();
        let sqrt_m = (m as f64).sqrt();
        let stats = (0..l)
            .map(|i| {
                let inv_norm = if w.gap[i] {
                    -1.0
                } else if w.constant[i] {
                    0.0
                } else {
                    w.inv_sd[i] / sqrt_m
                };
                let (df, dg) = if i + 1 < l {
                    let (enter, leave) = (w.t[i + m], w.t[i]);
                    (
                        (enter - leave) / 2.0,
                        (enter - w.mean[i + 1]) + (leave - w.mean[i]),
                    )
                } else {
                    (0.0, 0.0)
                };
                [0.0, inv_norm as f32, df as f32, dg as f32]
            })
            .collect();
        Prepared {
            x: w.t.iter().chain(&w.mean[..l]).map(|v| split(*v)).collect(),
            stats,
        }
    }
}

/// The join's uniform parameters (`Params` in join.wgsl).
#[repr(C)]
#[derive(Clone, Copy)]
struct JoinParams {
    la: u32,
    lb: u32,
    m: u32,
    self_join: u32,
    k_first: i32,
    band0: u32,
    nbands: u32,
    pad: u32,
}

impl JoinParams {
    fn bytes(&self) -> Vec<u8> {
        [
            self.la,
            self.lb,
            self.m,
            self.self_join,
            self.k_first as u32,
            self.band0,
            self.nbands,
            self.pad,
        ]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect()
    }
}

/// A 1-D grid of `groups` workgroups folded into two dimensions under the per-dimension limit.
fn grid(groups: usize) -> (u32, u32) {
    if groups <= MAX_GROUPS {
        (groups.max(1) as u32, 1)
    } else {
        (MAX_GROUPS as u32, groups.div_ceil(MAX_GROUPS) as u32)
    }
}

impl Gpu {
    /// Opens the adapter wgpu prefers (`WGPU_BACKEND=vulkan|gl` and `WGPU_ADAPTER_NAME=…`
    /// choose another) and compiles the shaders; fails when there is no adapter.
    pub fn new() -> Result<Gpu, MiningError> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = pollster::block_on(wgpu::util::initialize_adapter_from_env_or_default(
            &instance, None,
        ))
        .map_err(|e| device_error(format!("no GPU adapter ({e})")))?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("samos-offload"),
            required_features: wgpu::Features::empty(),
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| device_error(format!("{}: {e}", info.name)))?;
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = |label: &str, source: &'static str| {
            device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(label),
                source: wgpu::ShaderSource::Wgsl(Cow::Borrowed(source)),
            })
        };
        let join_module = module("join", include_str!("join.wgsl"));
        let stats_module = module("stats", include_str!("stats.wgsl"));
        let pipeline = |module: &wgpu::ShaderModule, entry: &str| {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            })
        };
        let join = pipeline(&join_module, "join");
        let reduce = pipeline(&join_module, "reduce");
        let stats = pipeline(&stats_module, "stats");
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(device_error(format!(
                "{}: shaders rejected: {e}",
                info.name
            )));
        }
        Ok(Gpu {
            max_binding: limits
                .max_storage_buffer_binding_size
                .min(limits.max_buffer_size),
            device,
            queue,
            info,
            join,
            reduce,
            stats,
            pool: Mutex::new(Pool::default()),
            progress: None,
            max_batch: MAX_BATCH,
        })
    }

    /// Reports pairs compared to `progress` as batches complete.
    pub fn with_progress(mut self, progress: Progress) -> Gpu {
        self.progress = Some(progress);
        self
    }

    /// What wgpu says of the adapter.
    pub fn adapter(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// A CPU rasterizer (lavapipe, llvmpipe): slower than the CPU backend, fine for testing.
    pub fn is_software(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    fn storage(&self, pool: &mut Pool, name: &'static str, bytes: &[u8]) -> wgpu::Buffer {
        let buffer = pool.get(
            &self.device,
            name,
            bytes.len() as u64,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        );
        self.queue.write_buffer(&buffer, 0, bytes);
        buffer
    }

    fn uniform(&self, pool: &mut Pool, name: &'static str, bytes: &[u8]) -> wgpu::Buffer {
        let buffer = pool.get(
            &self.device,
            name,
            bytes.len() as u64,
            wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        );
        self.queue.write_buffer(&buffer, 0, bytes);
        buffer
    }

    fn bind(
        &self,
        pipeline: &wgpu::ComputePipeline,
        buffers: &[(u32, &wgpu::Buffer, u64)],
    ) -> wgpu::BindGroup {
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .map(|(binding, buffer, size)| wgpu::BindGroupEntry {
                binding: *binding,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer,
                    offset: 0,
                    size: wgpu::BufferSize::new((*size).max(16).next_multiple_of(16)),
                }),
            })
            .collect();
        self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        })
    }

    fn wait(&self, submission: Option<wgpu::SubmissionIndex>) -> Result<(), MiningError> {
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: submission,
                timeout: None,
            })
            .map(|_| ())
            .map_err(device_error)
    }

    /// Copies `size` bytes of `source` back to the host.
    fn read_back(
        &self,
        pool: &mut Pool,
        source: &wgpu::Buffer,
        size: u64,
    ) -> Result<Vec<u8>, MiningError> {
        let staging = pool.get(
            &self.device,
            "staging",
            size,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        );
        let mut encoder = self.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(source, 0, &staging, 0, size);
        let submission = self.queue.submit([encoder.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, 0..size, move |r| {
            let _ = tx.send(r);
        });
        self.wait(Some(submission))?;
        rx.recv_timeout(Duration::from_secs(60))
            .map_err(|_| device_error("read-back never completed"))?
            .map_err(device_error)?;
        let bytes = staging
            .get_mapped_range(0..size)
            .map_err(device_error)?
            .to_vec();
        staging.unmap();
        Ok(bytes)
    }

    /// Runs `work` inside validation and out-of-memory error scopes.
    fn scoped<T>(&self, work: impl FnOnce() -> Result<T, MiningError>) -> Result<T, MiningError> {
        let memory = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = work();
        let validation = pollster::block_on(validation.pop());
        let memory = pollster::block_on(memory.pop());
        if let Some(e) = validation.or(memory) {
            return Err(device_error(format!("{}: {e}", self.info.name)));
        }
        out
    }

    /// Nearest neighbour of each window of `a` among the windows of `b` (of `a` itself when
    /// `b` is `None`, outside the exclusion zone): indices, −1 where there is none.
    fn join_indices(
        &self,
        a: &Prepared,
        b: Option<&Prepared>,
        m: usize,
    ) -> Result<Vec<i64>, MiningError> {
        let self_join = b.is_none();
        let b_ref = b.unwrap_or(a);
        let (la, lb) = (a.stats.len(), b_ref.stats.len());
        if la.div_ceil(TILE) > MAX_GROUPS {
            return Err(device_error(format!(
                "{la} windows: at most {} per join",
                MAX_GROUPS * TILE
            )));
        }
        let k_first: isize = if self_join {
            (exclusion_zone(m) + 1) as isize
        } else {
            1 - la as isize
        };
        let diagonals = (lb as isize - k_first).max(0) as usize;
        let bands = diagonals.div_ceil(BAND);
        let band_bytes = if self_join { 2 * lb * 4 } else { la * 4 } as u64;
        let batch = (self.max_binding / band_bytes.max(1))
            .min(self.max_batch as u64)
            .max(1) as usize;
        if band_bytes > self.max_binding {
            return Err(device_error(format!(
                "{la} windows need {band_bytes} bytes per binding, the adapter allows {}",
                self.max_binding
            )));
        }
        let pairs_of_band = |band: usize| -> u64 {
            let k0 = k_first + (band * BAND) as isize;
            (k0..k0 + BAND as isize)
                .filter(|&k| k < lb as isize)
                .map(|k| diagonal_pairs(la, lb, k))
                .sum()
        };
        if let Some(p) = &self.progress {
            p.start((0..bands).map(pairs_of_band).sum());
        }

        let mut pool = self
            .pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let pool = &mut *pool;
        self.scoped(|| {
            let xa = self.storage(pool, "xa", bytemuck::cast_slice(&a.x));
            let sa = self.storage(pool, "sa", bytemuck::cast_slice(&a.stats));
            let (xb, sb) = match b {
                Some(b) => (
                    self.storage(pool, "xb", bytemuck::cast_slice(&b.x)),
                    self.storage(pool, "sb", bytemuck::cast_slice(&b.stats)),
                ),
                None => (xa.clone(), sa.clone()),
            };
            let rows_bytes = (batch * la * 4) as u64;
            let cols_bytes = if self_join {
                (batch * 2 * lb * 4) as u64
            } else {
                16
            };
            let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
            let rows = pool.get(&self.device, "rows", rows_bytes, usage);
            let cols = pool.get(&self.device, "cols", cols_bytes, usage);
            let start: Vec<u32> = (0..la).flat_map(|_| [u32::MAX, u32::MAX]).collect();
            let best = pool.get(
                &self.device,
                "best",
                (la * 8) as u64,
                usage | wgpu::BufferUsages::COPY_SRC,
            );
            self.queue
                .write_buffer(&best, 0, bytemuck::cast_slice(&start));

            let mut previous: Option<(wgpu::SubmissionIndex, u64)> = None;
            for band0 in (0..bands).step_by(batch) {
                let nbands = batch.min(bands - band0);
                let params = JoinParams {
                    la: la as u32,
                    lb: lb as u32,
                    m: m as u32,
                    self_join: u32::from(self_join),
                    k_first: k_first as i32,
                    band0: band0 as u32,
                    nbands: nbands as u32,
                    pad: 0,
                };
                // Queue writes land in submission order: each batch sees its own parameters.
                let uniform = self.uniform(pool, "params", &params.bytes());
                let f32s = |n: usize| (n * 4) as u64;
                let join_group = self.bind(
                    &self.join,
                    &[
                        (0, &uniform, 32),
                        (1, &xa, f32s(2 * a.x.len())),
                        (2, &sa, f32s(4 * la)),
                        (3, &xb, f32s(2 * b_ref.x.len())),
                        (4, &sb, f32s(4 * lb)),
                        (5, &rows, rows_bytes),
                        (6, &cols, cols_bytes),
                    ],
                );
                let reduce_group = self.bind(
                    &self.reduce,
                    &[
                        (0, &uniform, 32),
                        (5, &rows, rows_bytes),
                        (6, &cols, cols_bytes),
                        (7, &best, (la * 8) as u64),
                    ],
                );
                let mut encoder = self.device.create_command_encoder(&Default::default());
                encoder.clear_buffer(&rows, 0, Some(rows_bytes));
                encoder.clear_buffer(&cols, 0, Some(cols_bytes));
                {
                    let mut pass = encoder.begin_compute_pass(&Default::default());
                    pass.set_pipeline(&self.join);
                    pass.set_bind_group(0, &join_group, &[]);
                    pass.dispatch_workgroups(la.div_ceil(TILE) as u32, nbands as u32, 1);
                    let (x, y) = grid(la.div_ceil(256));
                    pass.set_pipeline(&self.reduce);
                    pass.set_bind_group(0, &reduce_group, &[]);
                    pass.dispatch_workgroups(x, y, 1);
                }
                let submission = self.queue.submit([encoder.finish()]);
                let pairs: u64 = (band0..band0 + nbands).map(pairs_of_band).sum();
                // Keep one batch queued behind the running one; count a batch once it is done.
                if let Some((done, pairs)) = previous.replace((submission, pairs)) {
                    self.wait(Some(done))?;
                    if let Some(p) = &self.progress {
                        p.add(pairs);
                    }
                }
            }
            if let Some((done, pairs)) = previous {
                self.wait(Some(done))?;
                if let Some(p) = &self.progress {
                    p.add(pairs);
                }
            }
            let bytes = self.read_back(pool, &best, (la * 8) as u64)?;
            let words: &[u32] = bytemuck::cast_slice(&bytes);
            Ok(words.chunks(2).map(|w| i64::from(w[1] as i32)).collect())
        })
    }
}

/// The profile of windows `a` against `b` from the device's choice of neighbours, each
/// distance recomputed exactly.
fn exact_profile(a: &Windows, b: &Windows, index: Vec<i64>, m: usize) -> MatrixProfile {
    let profile = index
        .iter()
        .enumerate()
        .map(|(i, &j)| {
            if j < 0 {
                return f64::INFINITY;
            }
            let j = j as usize;
            let d2 = if a.constant[i] || b.constant[j] {
                special_dist2(a, b, i, j, m as f64)
            } else {
                exact_dist2(a, b, i, j, m)
            };
            d2.sqrt()
        })
        .collect();
    MatrixProfile {
        window: m,
        profile,
        index,
    }
}

impl Backend for Gpu {
    fn describe(&self) -> String {
        format!(
            "gpu ({}, {:?}{})",
            self.info.name,
            self.info.backend,
            if self.is_software() { ", software" } else { "" }
        )
    }

    fn self_join(&self, series: &Float64Array, m: usize) -> Result<MatrixProfile, MiningError> {
        let w = self_windows(series, m)?;
        let index = self.join_indices(&Prepared::new(&w, m), None, m)?;
        Ok(exact_profile(&w, &w, index, m))
    }

    fn ab_join(
        &self,
        query: &Float64Array,
        target: &Float64Array,
        m: usize,
    ) -> Result<MatrixProfile, MiningError> {
        let (wq, wt) = ab_windows(query, target, m)?;
        let index = self.join_indices(&Prepared::new(&wq, m), Some(&Prepared::new(&wt, m)), m)?;
        Ok(exact_profile(&wq, &wt, index, m))
    }

    fn window_stats(
        &self,
        series: &[&Float64Array],
        spec: WindowSpec,
    ) -> Result<Vec<WindowStats>, MiningError> {
        spec.check()?;
        let raw: Vec<Vec<f64>> = series.iter().map(|s| values(s)).collect();
        let centers: Vec<f64> = raw.iter().map(|t| finite_mean(t)).collect();
        let counts: Vec<usize> = raw
            .iter()
            .map(|t| {
                if t.len() < spec.window {
                    0
                } else {
                    (t.len() - spec.window) / spec.step + 1
                }
            })
            .collect();
        let windows: usize = counts.iter().sum();
        if windows == 0 {
            return Ok(raw.iter().map(|_| WindowStats::default()).collect());
        }
        let mut vals = Vec::new();
        let mut valid = Vec::new();
        let mut table = Vec::new();
        let mut first_window = 0u32;
        for ((t, c), n) in raw.iter().zip(&centers).zip(&counts) {
            table.extend([vals.len() as u32, first_window, *n as u32, 0]);
            first_window += *n as u32;
            for v in t {
                vals.push(if v.is_finite() { (v - c) as f32 } else { 0.0 });
                valid.push(u32::from(v.is_finite()));
            }
        }
        let params: Vec<u8> = [
            spec.window as u32,
            spec.step as u32,
            raw.len() as u32,
            windows as u32,
        ]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
        let out_bytes = (windows * 6 * 4) as u64;
        if out_bytes > self.max_binding || (vals.len() * 4) as u64 > self.max_binding {
            return Err(device_error(format!(
                "{windows} windows over {} values exceed the adapter's binding size",
                vals.len()
            )));
        }
        let mut pool = self
            .pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let pool = &mut *pool;
        let out = self.scoped(|| {
            let uniform = self.uniform(pool, "stats_params", &params);
            let values_buf = self.storage(pool, "stats_values", bytemuck::cast_slice(&vals));
            let valid_buf = self.storage(pool, "stats_valid", bytemuck::cast_slice(&valid));
            let table_buf = self.storage(pool, "stats_series", bytemuck::cast_slice(&table));
            let out = pool.get(
                &self.device,
                "stats_out",
                out_bytes,
                wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            );
            let group = self.bind(
                &self.stats,
                &[
                    (0, &uniform, 16),
                    (1, &values_buf, (vals.len() * 4) as u64),
                    (2, &valid_buf, (valid.len() * 4) as u64),
                    (3, &table_buf, (table.len() * 4) as u64),
                    (4, &out, out_bytes),
                ],
            );
            let mut encoder = self.device.create_command_encoder(&Default::default());
            {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                pass.set_pipeline(&self.stats);
                pass.set_bind_group(0, &group, &[]);
                let (x, y) = grid(windows.div_ceil(256));
                pass.dispatch_workgroups(x, y, 1);
            }
            self.queue.submit([encoder.finish()]);
            self.read_back(pool, &out, out_bytes)
        })?;
        let out: &[f32] = bytemuck::cast_slice(&out);
        let mut results = Vec::with_capacity(raw.len());
        let mut w = 0;
        for (c, n) in centers.iter().zip(&counts) {
            let mut stats = WindowStats::default();
            for row in out[w * 6..(w + n) * 6].chunks(6) {
                let count = row[0];
                let f = |v: f32| f64::from(v);
                if count == 0.0 {
                    stats.push_gap();
                    continue;
                }
                stats.min.push(f(row[1]) + c);
                stats.max.push(f(row[2]) + c);
                stats.mean.push(f(row[3]) + c);
                stats.std.push(f(row[4]));
                stats
                    .slope
                    .push(if count >= 2.0 { f(row[5]) } else { f64::NAN });
            }
            w += n;
            results.push(stats);
        }
        Ok(results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_batches_give_what_one_batch_gives() {
        let mut gpu = Gpu::new().expect("a GPU adapter (bash scripts/setup.sh installs lavapipe)");
        let t: Vec<f64> = (0..3000)
            .map(|i| (f64::from(i) / 17.0).sin() + f64::from((i * 7919) % 101) / 300.0)
            .collect();
        let column = Float64Array::from(t);
        let one = gpu.self_join(&column, 40).unwrap();
        let progress = Progress::new();
        gpu.max_batch = 2;
        let gpu = gpu.with_progress(progress.clone());
        let many = gpu.self_join(&column, 40).unwrap();
        assert_eq!(one, many);
        // Every pair counted once, whatever the batching.
        let (done, total) = progress.get();
        assert_eq!(done, total);
        assert_eq!(total as f64, crate::self_join_pairs(3000, 40));
    }
}
