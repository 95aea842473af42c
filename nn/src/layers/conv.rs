//! Convolutions: `Conv1d`, `Conv2d` and `ConvTranspose1d`, as in PyTorch (NCL / NCHW layouts,
//! zero padding, stride, dilation, groups).
//!
//! The IR has no convolution op. A convolution is written as im2col: for every kernel offset a
//! strided slice of the zero-padded input, stacked along a new axis and multiplied by the
//! reshaped weight in one (batched, for groups) matmul. Spatial sizes may be symbolic; kernel
//! size, stride, padding, dilation and channel counts are constants of the config.

use crate::tensor::Tensor;
use crate::Param;
use kiln_ir::{Dim, Shape};
use std::panic::Location;

/// Configuration of a [`Conv1d`] layer.
#[derive(Clone, Debug, PartialEq)]
pub struct Conv1dConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel width.
    pub kernel_size: usize,
    /// Step between output positions.
    pub stride: usize,
    /// Zeros added on both sides.
    pub padding: usize,
    /// Spacing between kernel taps.
    pub dilation: usize,
    /// Channel groups; `in_channels` and `out_channels` must be multiples of it.
    pub groups: usize,
    /// Whether there is a bias.
    pub bias: bool,
}

impl Conv1dConfig {
    /// Stride 1, no padding, no dilation, one group, with a bias.
    pub fn new(in_channels: usize, out_channels: usize, kernel_size: usize) -> Conv1dConfig {
        Conv1dConfig {
            in_channels,
            out_channels,
            kernel_size,
            stride: 1,
            padding: 0,
            dilation: 1,
            groups: 1,
            bias: true,
        }
    }

    /// With this stride.
    pub fn stride(self, stride: usize) -> Conv1dConfig {
        Conv1dConfig { stride, ..self }
    }

    /// With this zero padding on both sides.
    pub fn padding(self, padding: usize) -> Conv1dConfig {
        Conv1dConfig { padding, ..self }
    }

    /// With this dilation.
    pub fn dilation(self, dilation: usize) -> Conv1dConfig {
        Conv1dConfig { dilation, ..self }
    }

    /// With this many groups.
    pub fn groups(self, groups: usize) -> Conv1dConfig {
        Conv1dConfig { groups, ..self }
    }

    /// Without a bias.
    pub fn no_bias(self) -> Conv1dConfig {
        Conv1dConfig {
            bias: false,
            ..self
        }
    }
}

/// `torch.nn.Conv1d` (zero padding): input `[N, C_in, L]` (or unbatched `[C_in, L]`), output
/// `[N, C_out, L_out]` with
///
/// ```text
/// L_out = (L + 2·padding − dilation·(kernel_size − 1) − 1) // stride + 1
/// ```
#[crate::model(config = Conv1dConfig)]
pub struct Conv1d {
    /// `[out_channels, in_channels / groups, kernel_size]`.
    #[param(shape = [cfg.out_channels, cfg.in_channels / cfg.groups.max(1), cfg.kernel_size])]
    pub weight: Param,
    /// `[out_channels]`, if configured.
    #[param(shape = [cfg.out_channels], when = cfg.bias)]
    pub bias: Option<Param>,
    /// The configuration.
    #[config(cfg.clone())]
    pub config: Conv1dConfig,
}

impl Conv1d {
    /// Applies the convolution to `[N, in_channels, L]` or `[in_channels, L]`.
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let c = &self.config;
        let spec = ConvSpec {
            op: "conv1d",
            in_channels: c.in_channels,
            out_channels: c.out_channels,
            kernel: vec![c.kernel_size],
            stride: vec![c.stride],
            padding: vec![c.padding],
            dilation: vec![c.dilation],
            groups: c.groups,
        };
        let bias = self.bias.as_ref().map(|b| b.val());
        conv_nd(
            x,
            &self.weight.val(),
            bias.as_ref(),
            &spec,
            Location::caller(),
        )
    }
}

/// Configuration of a [`Conv2d`] layer; pairs are `[height, width]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Conv2dConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel `[height, width]`.
    pub kernel_size: [usize; 2],
    /// Steps between output positions.
    pub stride: [usize; 2],
    /// Zeros added on both sides of each spatial axis.
    pub padding: [usize; 2],
    /// Spacing between kernel taps.
    pub dilation: [usize; 2],
    /// Channel groups; `in_channels` and `out_channels` must be multiples of it.
    pub groups: usize,
    /// Whether there is a bias.
    pub bias: bool,
}

impl Conv2dConfig {
    /// A square `kernel_size` kernel, stride 1, no padding, no dilation, one group, a bias.
    pub fn new(in_channels: usize, out_channels: usize, kernel_size: usize) -> Conv2dConfig {
        Conv2dConfig {
            in_channels,
            out_channels,
            kernel_size: [kernel_size; 2],
            stride: [1; 2],
            padding: [0; 2],
            dilation: [1; 2],
            groups: 1,
            bias: true,
        }
    }

    /// With a `[height, width]` kernel.
    pub fn kernel(self, kernel_size: [usize; 2]) -> Conv2dConfig {
        Conv2dConfig {
            kernel_size,
            ..self
        }
    }

    /// With this stride on both axes.
    pub fn stride(self, stride: usize) -> Conv2dConfig {
        Conv2dConfig {
            stride: [stride; 2],
            ..self
        }
    }

    /// With this zero padding on both axes.
    pub fn padding(self, padding: usize) -> Conv2dConfig {
        Conv2dConfig {
            padding: [padding; 2],
            ..self
        }
    }

    /// With this dilation on both axes.
    pub fn dilation(self, dilation: usize) -> Conv2dConfig {
        Conv2dConfig {
            dilation: [dilation; 2],
            ..self
        }
    }

    /// With this many groups.
    pub fn groups(self, groups: usize) -> Conv2dConfig {
        Conv2dConfig { groups, ..self }
    }

    /// Without a bias.
    pub fn no_bias(self) -> Conv2dConfig {
        Conv2dConfig {
            bias: false,
            ..self
        }
    }
}

/// `torch.nn.Conv2d` (zero padding): input `[N, C_in, H, W]` (or unbatched `[C_in, H, W]`),
/// output `[N, C_out, H_out, W_out]` with, per spatial axis,
///
/// ```text
/// H_out = (H + 2·padding[0] − dilation[0]·(kernel_size[0] − 1) − 1) // stride[0] + 1
/// W_out = (W + 2·padding[1] − dilation[1]·(kernel_size[1] − 1) − 1) // stride[1] + 1
/// ```
#[crate::model(config = Conv2dConfig)]
pub struct Conv2d {
    /// `[out_channels, in_channels / groups, kernel_h, kernel_w]`.
    #[param(shape = [
        cfg.out_channels,
        cfg.in_channels / cfg.groups.max(1),
        cfg.kernel_size[0],
        cfg.kernel_size[1],
    ])]
    pub weight: Param,
    /// `[out_channels]`, if configured.
    #[param(shape = [cfg.out_channels], when = cfg.bias)]
    pub bias: Option<Param>,
    /// The configuration.
    #[config(cfg.clone())]
    pub config: Conv2dConfig,
}

impl Conv2d {
    /// Applies the convolution to `[N, in_channels, H, W]` or `[in_channels, H, W]`.
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let c = &self.config;
        let spec = ConvSpec {
            op: "conv2d",
            in_channels: c.in_channels,
            out_channels: c.out_channels,
            kernel: c.kernel_size.to_vec(),
            stride: c.stride.to_vec(),
            padding: c.padding.to_vec(),
            dilation: c.dilation.to_vec(),
            groups: c.groups,
        };
        let bias = self.bias.as_ref().map(|b| b.val());
        conv_nd(
            x,
            &self.weight.val(),
            bias.as_ref(),
            &spec,
            Location::caller(),
        )
    }
}

/// Configuration of a [`ConvTranspose1d`] layer.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvTranspose1dConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel width.
    pub kernel_size: usize,
    /// Upsampling factor (the stride of the convolution this one is the transpose of).
    pub stride: usize,
    /// `dilation·(kernel_size − 1) − padding` zeros are added on both sides of the input.
    pub padding: usize,
    /// Extra size added on one side of the output; less than `stride` or `dilation`.
    pub output_padding: usize,
    /// Spacing between kernel taps.
    pub dilation: usize,
    /// Channel groups; `in_channels` and `out_channels` must be multiples of it.
    pub groups: usize,
    /// Whether there is a bias.
    pub bias: bool,
}

impl ConvTranspose1dConfig {
    /// Stride 1, no padding, no dilation, one group, with a bias.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel_size: usize,
    ) -> ConvTranspose1dConfig {
        ConvTranspose1dConfig {
            in_channels,
            out_channels,
            kernel_size,
            stride: 1,
            padding: 0,
            output_padding: 0,
            dilation: 1,
            groups: 1,
            bias: true,
        }
    }

    /// With this stride.
    pub fn stride(self, stride: usize) -> ConvTranspose1dConfig {
        ConvTranspose1dConfig { stride, ..self }
    }

    /// With this padding.
    pub fn padding(self, padding: usize) -> ConvTranspose1dConfig {
        ConvTranspose1dConfig { padding, ..self }
    }

    /// With this output padding.
    pub fn output_padding(self, output_padding: usize) -> ConvTranspose1dConfig {
        ConvTranspose1dConfig {
            output_padding,
            ..self
        }
    }

    /// With this dilation.
    pub fn dilation(self, dilation: usize) -> ConvTranspose1dConfig {
        ConvTranspose1dConfig { dilation, ..self }
    }

    /// With this many groups.
    pub fn groups(self, groups: usize) -> ConvTranspose1dConfig {
        ConvTranspose1dConfig { groups, ..self }
    }

    /// Without a bias.
    pub fn no_bias(self) -> ConvTranspose1dConfig {
        ConvTranspose1dConfig {
            bias: false,
            ..self
        }
    }
}

/// `torch.nn.ConvTranspose1d`: input `[N, C_in, L]` (or unbatched `[C_in, L]`), output
/// `[N, C_out, L_out]` with
///
/// ```text
/// L_out = (L − 1)·stride − 2·padding + dilation·(kernel_size − 1) + output_padding + 1
/// ```
///
/// Computed as a stride-1 convolution of the input with `stride − 1` zeros inserted between
/// samples, padded by `dilation·(kernel_size − 1) − padding` on the left (plus
/// `output_padding` on the right; negative amounts crop), with the kernel flipped and its
/// in/out channel axes swapped per group.
#[crate::model(config = ConvTranspose1dConfig)]
pub struct ConvTranspose1d {
    /// `[in_channels, out_channels / groups, kernel_size]`.
    #[param(shape = [cfg.in_channels, cfg.out_channels / cfg.groups.max(1), cfg.kernel_size])]
    pub weight: Param,
    /// `[out_channels]`, if configured.
    #[param(shape = [cfg.out_channels], when = cfg.bias)]
    pub bias: Option<Param>,
    /// The configuration.
    #[config(cfg.clone())]
    pub config: ConvTranspose1dConfig,
}

impl ConvTranspose1d {
    /// Applies the transposed convolution to `[N, in_channels, L]` or `[in_channels, L]`.
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let loc = Location::caller();
        let c = &self.config;
        let op = "conv_transpose1d";
        if let Some(msg) = check_config(
            op,
            c.in_channels,
            c.out_channels,
            c.groups,
            &[c.kernel_size],
            &[c.stride],
            &[c.dilation],
        ) {
            return x.usage(loc, msg);
        }
        if c.output_padding >= c.stride && c.output_padding >= c.dilation {
            return x.usage(
                loc,
                format!(
                    "{op}: output_padding ({}) must be smaller than stride ({}) or dilation ({})",
                    c.output_padding, c.stride, c.dilation
                ),
            );
        }
        let Some((x, batched)) = batched_input(op, x, 1, c.in_channels, loc) else {
            return x.tracer.placeholder();
        };
        let (n, cin, len) = (x.size(0), x.size(1), x.size(2));
        let (s, k, d, g) = (c.stride, c.kernel_size, c.dilation, c.groups);

        // Insert `s - 1` zeros after every sample, then drop the trailing ones:
        // [N, C, L] -> [N, C, L, 1] -> [N, C, L, s] -> [N, C, L·s] -> [N, C, (L − 1)·s + 1].
        let up = if s == 1 {
            x.clone()
        } else {
            let s_dim = Dim::from(s);
            x.unsqueeze(-1)
                .pad(&[(Dim::constant(0), Dim::from(s - 1))], 0.0)
                .reshape(Shape(vec![
                    n.clone(),
                    cin.clone(),
                    len.clone() * s_dim.clone(),
                ]))
                .slice(-1, 0, (len.clone() - 1) * s_dim + 1, 1)
        };

        // Pad (or crop) so that a stride-1 convolution gives the transposed one.
        let reach = (d * (k - 1)) as i64;
        let left = reach - c.padding as i64;
        let right = left + c.output_padding as i64;
        let up = pad_or_crop(&up, left, right);

        // Weight [C_in, C_out/g, K] -> [g, C_in/g, C_out/g, K] -> [g, C_out/g, C_in/g, K]
        // -> [C_out, C_in/g, K], flipped along K.
        let (cin_g, cout_g) = (c.in_channels / g, c.out_channels / g);
        let w = self
            .weight
            .val()
            .reshape(crate::dims![g, cin_g, cout_g, k])
            .permute(&[0, 2, 1, 3])
            .reshape(crate::dims![c.out_channels, cin_g, k])
            .flip(&[-1]);
        let spec = ConvSpec {
            op,
            in_channels: c.in_channels,
            out_channels: c.out_channels,
            kernel: vec![k],
            stride: vec![1],
            padding: vec![0],
            dilation: vec![d],
            groups: g,
        };
        let bias = self.bias.as_ref().map(|b| b.val());
        let y = conv_core(&up, &w, bias.as_ref(), &spec, loc);
        if batched {
            y
        } else {
            y.squeeze(0)
        }
    }
}

/// The constants of one convolution.
struct ConvSpec {
    op: &'static str,
    in_channels: usize,
    out_channels: usize,
    kernel: Vec<usize>,
    stride: Vec<usize>,
    padding: Vec<usize>,
    dilation: Vec<usize>,
    groups: usize,
}

/// A description of what is wrong with the configuration, if anything.
fn check_config(
    op: &str,
    in_channels: usize,
    out_channels: usize,
    groups: usize,
    kernel: &[usize],
    stride: &[usize],
    dilation: &[usize],
) -> Option<String> {
    if groups == 0 || !in_channels.is_multiple_of(groups) || !out_channels.is_multiple_of(groups) {
        return Some(format!(
            "{op}: groups ({groups}) must be at least 1 and divide in_channels ({in_channels}) \
             and out_channels ({out_channels})"
        ));
    }
    let bad = |v: &[usize]| v.contains(&0);
    if bad(kernel) || bad(stride) || bad(dilation) {
        return Some(format!(
            "{op}: kernel_size {kernel:?}, stride {stride:?} and dilation {dilation:?} must be \
             at least 1"
        ));
    }
    None
}

/// `x` as a batched `[N, C, *spatial]` tensor (an unbatched `[C, *spatial]` one gets a
/// batch axis of 1) and whether it was batched; `None` after recording an error.
#[track_caller]
fn batched_input(
    op: &str,
    x: &Tensor,
    spatial: usize,
    in_channels: usize,
    loc: &Location<'_>,
) -> Option<(Tensor, bool)> {
    let rank = x.rank();
    let layout = if spatial == 1 { "L" } else { "H, W" };
    if rank != spatial + 2 && rank != spatial + 1 {
        x.usage(
            loc,
            format!(
                "{op} expects a [N, C, {layout}] or unbatched [C, {layout}] input, got {}",
                x.ty()
            ),
        );
        return None;
    }
    let batched = rank == spatial + 2;
    let x = if batched { x.clone() } else { x.unsqueeze(0) };
    if x.shape()[1] != Dim::from(in_channels) {
        x.usage(
            loc,
            format!(
                "{op}: input {} has {} channels (dim {}), the layer expects {in_channels}",
                x.ty(),
                x.shape()[1],
                if batched { 1 } else { 0 }
            ),
        );
        return None;
    }
    Some((x, batched))
}

/// Pads the last axis with `left` / `right` zeros; a negative amount crops instead.
#[track_caller]
fn pad_or_crop(x: &Tensor, left: i64, right: i64) -> Tensor {
    let pad = |v: i64| Dim::constant(v.max(0));
    let x = if left > 0 || right > 0 {
        x.pad(&[(pad(left), pad(right))], 0.0)
    } else {
        x.clone()
    };
    if left < 0 || right < 0 {
        let size = x.size(-1);
        x.slice(-1, Dim::constant((-left).max(0)), size - (-right).max(0), 1)
    } else {
        x
    }
}

/// A convolution of a batched or unbatched input with a `[out, in/groups, *kernel]` weight.
#[track_caller]
fn conv_nd(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    spec: &ConvSpec,
    loc: &Location<'_>,
) -> Tensor {
    if let Some(msg) = check_config(
        spec.op,
        spec.in_channels,
        spec.out_channels,
        spec.groups,
        &spec.kernel,
        &spec.stride,
        &spec.dilation,
    ) {
        return x.usage(loc, msg);
    }
    let Some((xb, batched)) = batched_input(spec.op, x, spec.kernel.len(), spec.in_channels, loc)
    else {
        return x.tracer.placeholder();
    };
    // Zero padding of the spatial axes, listed from the last axis backwards.
    let pads: Vec<(Dim, Dim)> = spec
        .padding
        .iter()
        .rev()
        .map(|&p| (Dim::from(p), Dim::from(p)))
        .collect();
    let xp = if spec.padding.iter().any(|&p| p > 0) {
        xb.pad(&pads, 0.0)
    } else {
        xb
    };
    let y = conv_core(&xp, w, bias, spec, loc);
    if batched {
        y
    } else {
        y.squeeze(0)
    }
}

/// The im2col convolution of an already padded `[N, C, *spatial]` input (padding in `spec`
/// is ignored here).
#[track_caller]
fn conv_core(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    spec: &ConvSpec,
    loc: &Location<'_>,
) -> Tensor {
    let r = spec.kernel.len();
    let shape = x.shape();
    let n = shape[0].clone();
    // Output sizes per spatial axis.
    let mut out = Vec::with_capacity(r);
    for i in 0..r {
        let size = shape[2 + i].clone();
        let reach = (spec.dilation[i] * (spec.kernel[i] - 1)) as i64;
        let o = (size.clone() - (reach + 1)).floor_div(&Dim::from(spec.stride[i])) + 1;
        if o.as_const().is_some_and(|v| v < 1) {
            return x.usage(
                loc,
                format!(
                    "{}: input {} (after padding {:?}) is smaller than the dilated kernel \
                     (kernel_size {:?}, dilation {:?})",
                    spec.op,
                    x.ty(),
                    spec.padding,
                    spec.kernel,
                    spec.dilation
                ),
            );
        }
        out.push(o);
    }
    // One strided slice per kernel offset, row-major over the kernel axes (the order of the
    // weight's trailing axes): [N, C, *out] each, stacked to [N, C, K, *out].
    let taps: usize = spec.kernel.iter().product();
    let mut patches = Vec::with_capacity(taps);
    for t in 0..taps {
        let mut rest = t;
        let mut offsets = vec![0usize; r];
        for i in (0..r).rev() {
            offsets[i] = rest % spec.kernel[i];
            rest /= spec.kernel[i];
        }
        let mut p = x.clone();
        for i in 0..r {
            let s = spec.stride[i] as i64;
            let start = (offsets[i] * spec.dilation[i]) as i64;
            let end = out[i].clone() * s - (s - 1) + start;
            p = p.slice(2 + i as isize, start, end, s);
        }
        patches.push(p);
    }
    let cols = Tensor::stack(&patches, 2);
    let g = spec.groups;
    let cg_k = (spec.in_channels / g) * taps;
    let positions = out.iter().fold(Dim::constant(1), |acc, d| acc * d.clone());
    let og = spec.out_channels / g;
    let y = if g == 1 {
        let cols = cols.reshape(Shape(vec![n.clone(), Dim::from(cg_k), positions]));
        w.reshape(crate::dims![spec.out_channels, cg_k])
            .matmul(&cols)
    } else {
        let cols = cols.reshape(Shape(vec![
            n.clone(),
            Dim::from(g),
            Dim::from(cg_k),
            positions,
        ]));
        w.reshape(crate::dims![g, og, cg_k]).matmul(&cols)
    };
    let mut dims = vec![n, Dim::from(spec.out_channels)];
    dims.extend(out);
    let y = y.reshape(Shape(dims));
    match bias {
        Some(b) => {
            let mut bshape = vec![Dim::from(spec.out_channels)];
            bshape.extend(std::iter::repeat_n(Dim::constant(1), r));
            y + b.reshape(Shape(bshape))
        }
        None => y,
    }
}
