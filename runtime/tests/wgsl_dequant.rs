//! The WGSL dequantization functions (`kiln_compiler::backend::wgsl::dequant`), run on a real
//! wgpu adapter (lavapipe in CI), against the reference `kiln_ir::quant::dequantize` bit for bit.
//!
//! Each type gets random but valid blocks (finite scales, random quant bytes), uploaded into a
//! storage buffer bound as `array<u32>` at several byte offsets (word-aligned and not), one
//! invocation per element writing the f32 bits of its value. `kiln_f16_to_f32` is also checked
//! against `half` on all 65536 f16 bit patterns.
//!
//! Without an adapter the tests print a message and pass, except under `CI`, which must provide
//! a Vulkan driver.

use kiln_compiler::backend::wgsl::dequant::{dequant_function, f16_helper};
use kiln_ir::quant::{dequantize, QuantType};
use wgpu::util::DeviceExt;

/// Blocks per type: odd, so the last block does not end on a word boundary for most types.
const BLOCKS: usize = 7;

/// Byte offsets of the blocks within the bound buffer: none, 3 words, and an unaligned one.
const OFFSETS: [usize; 3] = [0, 12, 5];

struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
}

/// The first adapter's device, or `None` (after saying why) where there is none outside CI.
fn gpu() -> Option<Gpu> {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    let Some(adapter) = adapters.into_iter().next() else {
        if std::env::var_os("CI").is_some() {
            panic!(
                "no wgpu adapter: CI must provide a Vulkan driver (mesa-vulkan-drivers, lavapipe) \
                 for the WGSL tests"
            );
        }
        eprintln!("skipped: no wgpu adapter (install mesa-vulkan-drivers for lavapipe)");
        return None;
    };
    eprintln!("adapter: {:?}", adapter.get_info());
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("wgsl_dequant"),
        required_features: wgpu::Features::empty(),
        required_limits: adapter.limits(),
        experimental_features: Default::default(),
        memory_hints: Default::default(),
        trace: Default::default(),
    }))
    .expect("request_device");
    Some(Gpu { device, queue })
}

impl Gpu {
    /// Runs `shader` (entry point `main`, workgroup size 64) over `invocations` invocations with
    /// `input` bound at binding 0 and a `u32` output of `invocations` words at binding 1, and
    /// returns the output.
    fn run(&self, shader: &str, input: &[u8], invocations: usize) -> Vec<u32> {
        assert_eq!(input.len() % 4, 0);
        let device = &self.device;
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("wgsl_dequant"),
            source: wgpu::ShaderSource::Wgsl(shader.into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("wgsl_dequant"),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        let input = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("input"),
            contents: input,
            usage: wgpu::BufferUsages::STORAGE,
        });
        let size = (invocations * 4) as u64;
        let output = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("output"),
            size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let readback = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("wgsl_dequant"),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: input.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: output.as_entire_binding(),
                },
            ],
        });
        let mut encoder = device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("wgsl_dequant"),
                timestamp_writes: None,
            });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(invocations.div_ceil(64) as u32, 1, 1);
        }
        encoder.copy_buffer_to_buffer(&output, 0, &readback, 0, size);
        self.queue.submit([encoder.finish()]);
        let slice = readback.slice(..);
        slice.map_async(wgpu::MapMode::Read, |r| r.expect("map_async"));
        device
            .poll(wgpu::PollType::wait_indefinitely())
            .expect("poll");
        let view = slice.get_mapped_range().expect("get_mapped_range");
        view.chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect()
    }
}

/// SplitMix64: a small deterministic generator (the test needs no statistical quality).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// A random sign times a log-uniform magnitude in `[lo, hi]`.
    fn scale(&mut self, lo: f32, hi: f32) -> f32 {
        let m = lo * (hi / lo).powf(self.unit());
        if self.next() & 1 == 0 {
            m
        } else {
            -m
        }
    }
}

/// `BLOCKS` random blocks of `qt`: random bytes, then finite scales. Most blocks take scales
/// of magnitude in `[1e-3, 2]`; block 5 takes f16 subnormal scales (f32 `1e-30` for `Q8_K`) and
/// block 6 large ones (up to 60000; `1e30` for `Q8_K`), all with finite results.
fn random_blocks(qt: QuantType, rng: &mut Rng) -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..BLOCKS * qt.block_bytes())
        .map(|_| rng.next() as u8)
        .collect();
    for (b, block) in bytes.chunks_exact_mut(qt.block_bytes()).enumerate() {
        let (lo, hi) = match b {
            5 => (1e-7, 5e-5),
            6 => (1e3, 6e4),
            _ => (1e-3, 2.0),
        };
        for &off in qt.f16_scale_offsets() {
            let s = half::f16::from_f32(rng.scale(lo, hi));
            assert!(s.is_finite());
            block[off..off + 2].copy_from_slice(&s.to_le_bytes());
        }
        if qt == QuantType::Q8_K {
            let (lo, hi) = match b {
                5 => (1e-30, 1e-29),
                6 => (1e30, 1e31),
                _ => (1e-3, 2.0),
            };
            block[0..4].copy_from_slice(&rng.scale(lo, hi).to_le_bytes());
        }
    }
    bytes
}

/// A compute shader writing the f32 bits of `deq(i)` to `out[i]` for `i < n`, over blocks
/// starting `offset` bytes into the bound `data` buffer.
fn dequant_shader(qt: QuantType, offset: usize, n: usize) -> String {
    format!(
        "@group(0) @binding(0) var<storage, read> data: array<u32>;\n\
         @group(0) @binding(1) var<storage, read_write> out: array<u32>;\n\
         \n\
         fn read_byte(b: i32) -> u32 {{\n    \
             let p = b + {offset}i;\n    \
             return (data[p >> 2u] >> (8u * u32(p & 3i))) & 0xffu;\n\
         }}\n\
         \n\
         {f16}\n\
         {deq}\n\
         @compute @workgroup_size(64)\n\
         fn main(@builtin(global_invocation_id) id: vec3<u32>) {{\n    \
             if (id.x >= {n}u) {{\n        return;\n    }}\n    \
             out[id.x] = bitcast<u32>(deq(i32(id.x)));\n\
         }}\n",
        f16 = f16_helper(),
        deq = dequant_function(qt, "deq", "read_byte"),
    )
}

#[test]
fn wgsl_dequant_matches_reference_bit_for_bit() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng(0x6b69_6c6e);
    let mut failures = Vec::new();
    for qt in QuantType::ALL {
        let blocks = random_blocks(qt, &mut rng);
        let n = BLOCKS * qt.block_size();
        let mut expected = vec![0.0f32; n];
        dequantize(qt, &blocks, &mut expected).expect("reference dequantize");
        for offset in OFFSETS {
            // `offset` bytes of garbage before the blocks, zeros after up to a whole word.
            let mut input: Vec<u8> = (0..offset).map(|_| rng.next() as u8).collect();
            input.extend_from_slice(&blocks);
            input.resize(input.len().next_multiple_of(4), 0);
            let got = gpu.run(&dequant_shader(qt, offset, n), &input, n);
            let mut bad = 0;
            for (i, (e, &g)) in expected.iter().zip(&got).enumerate() {
                if e.to_bits() != g {
                    bad += 1;
                    if failures.len() < 40 {
                        failures.push(format!(
                            "{qt} offset {offset}: element {i} (block {}, index {}): expected {e:e} \
                             ({:#010x}), got {:e} ({g:#010x})",
                            i / qt.block_size(),
                            i % qt.block_size(),
                            e.to_bits(),
                            f32::from_bits(g),
                        ));
                    }
                }
            }
            eprintln!("{qt}, byte offset {offset}: {n} elements compared, {bad} differ");
        }
    }
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
}

#[test]
fn wgsl_f16_to_f32_is_exact_for_every_f16() {
    let Some(gpu) = gpu() else { return };
    let n = 1usize << 16;
    let shader = format!(
        "@group(0) @binding(0) var<storage, read> data: array<u32>;\n\
         @group(0) @binding(1) var<storage, read_write> out: array<u32>;\n\
         {}\n\
         @compute @workgroup_size(64)\n\
         fn main(@builtin(global_invocation_id) id: vec3<u32>) {{\n    \
             // The high half of each word is junk the helper must ignore.\n    \
             out[id.x] = bitcast<u32>(kiln_f16_to_f32(data[id.x]));\n\
         }}\n",
        f16_helper()
    );
    let input: Vec<u8> = (0..n as u32)
        .flat_map(|h| (h | (h.wrapping_mul(0x9e37) << 16)).to_le_bytes())
        .collect();
    let got = gpu.run(&shader, &input, n);
    let mut failures = Vec::new();
    for (h, &g) in got.iter().enumerate() {
        let e = half::f16::from_bits(h as u16).to_f32();
        // NaN payloads may be canonicalized by a driver; any NaN is accepted for a NaN.
        let ok = if e.is_nan() {
            f32::from_bits(g).is_nan()
        } else {
            e.to_bits() == g
        };
        if !ok && failures.len() < 40 {
            failures.push(format!(
                "f16 {h:#06x}: expected {e:e} ({:#010x}), got {:e} ({g:#010x})",
                e.to_bits(),
                f32::from_bits(g)
            ));
        }
    }
    eprintln!("kiln_f16_to_f32: {n} f16 bit patterns compared");
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
}
