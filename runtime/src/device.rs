//! Choosing where a compiled graph runs: [`Device`] (parsed from `cpu`, `wgpu`, `wgpu:N` or
//! `wgpu:NAME`) and [`Executable`], one compiled graph on either device behind the interface
//! both share (params, states, runs).

use crate::cpu::{CpuExecutable, CpuOptions};
use crate::program::ExecError;
use crate::weights::WeightTensor;
use crate::wgpu::{WgpuDevice, WgpuExecutable};
use kiln_compiler::Compiled;
use kiln_ir::{Bindings, Tensor};
use std::fmt;
use std::str::FromStr;

/// Where graphs run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Device {
    /// Native code on the host's cores.
    #[default]
    Cpu,
    /// WGSL on a GPU through wgpu: the adapter with this index or name part, or (`None`)
    /// the one `KILN_DEVICE` names, else the best one found.
    Wgpu(Option<String>),
}

impl FromStr for Device {
    type Err = String;

    fn from_str(s: &str) -> Result<Device, String> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "wgpu" | "gpu" => Ok(Device::Wgpu(None)),
            _ => match s.strip_prefix("wgpu:") {
                Some(a) if !a.is_empty() => Ok(Device::Wgpu(Some(a.to_string()))),
                _ => Err(format!(
                    "unknown device `{s}` (expected cpu, wgpu, wgpu:INDEX or wgpu:NAME)"
                )),
            },
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Wgpu(None) => f.write_str("wgpu"),
            Device::Wgpu(Some(a)) => write!(f, "wgpu:{a}"),
        }
    }
}

/// A compiled graph on a device.
pub enum Executable {
    /// On the CPU.
    Cpu(CpuExecutable),
    /// On a wgpu adapter.
    Wgpu(WgpuExecutable),
}

impl Executable {
    /// Builds `compiled` for `device` (`cpu` options apply to the CPU only).
    pub fn new(
        compiled: &Compiled,
        device: &Device,
        cpu: &CpuOptions,
    ) -> Result<Executable, ExecError> {
        Ok(match device {
            Device::Cpu => Executable::Cpu(CpuExecutable::new(compiled, cpu)?),
            Device::Wgpu(None) => {
                Executable::Wgpu(WgpuExecutable::new(compiled, WgpuDevice::shared()?)?)
            }
            Device::Wgpu(Some(a)) => {
                Executable::Wgpu(WgpuExecutable::new(compiled, WgpuDevice::open(Some(a))?)?)
            }
        })
    }

    /// Loads param `name` from bytes in Kiln's layout.
    pub fn set_param_bytes(&mut self, name: &str, w: &WeightTensor) -> Result<(), ExecError> {
        match self {
            Executable::Cpu(e) => e.set_param_bytes(name, w),
            Executable::Wgpu(e) => e.set_param_bytes(name, w),
        }
    }

    /// Sets a state's value.
    pub fn set_state(&mut self, name: &str, t: &Tensor) -> Result<(), ExecError> {
        match self {
            Executable::Cpu(e) => e.set_state(name, t),
            Executable::Wgpu(e) => e.set_state(name, t),
        }
    }

    /// A state's current value.
    pub fn state(&self, name: &str) -> Option<Tensor> {
        match self {
            Executable::Cpu(e) => e.state(name),
            Executable::Wgpu(e) => e.state(name),
        }
    }

    /// Exchanges every state value with `other` (which must be on the same device: states
    /// do not move between devices; a mismatch leaves both unchanged).
    pub fn swap_states(&mut self, other: &mut Executable) {
        match (self, other) {
            (Executable::Cpu(a), Executable::Cpu(b)) => a.swap_states(b),
            (Executable::Wgpu(a), Executable::Wgpu(b)) => a.swap_states(b),
            _ => {}
        }
    }

    /// Runs the graph (see [`CpuExecutable::run`]).
    pub fn run(
        &mut self,
        inputs: &[(&str, &Tensor)],
        bindings: &Bindings,
    ) -> Result<Vec<(String, Tensor)>, ExecError> {
        match self {
            Executable::Cpu(e) => e.run(inputs, bindings),
            Executable::Wgpu(e) => e.run(inputs, bindings),
        }
    }

    /// The CPU executable, if it is one.
    pub fn as_cpu(&self) -> Option<&CpuExecutable> {
        match self {
            Executable::Cpu(e) => Some(e),
            Executable::Wgpu(_) => None,
        }
    }

    /// The CPU executable, if it is one (mutably).
    pub fn as_cpu_mut(&mut self) -> Option<&mut CpuExecutable> {
        match self {
            Executable::Cpu(e) => Some(e),
            Executable::Wgpu(_) => None,
        }
    }

    /// What runs it: `cpu (N threads)` or the adapter's name and backend.
    pub fn describe(&self) -> String {
        match self {
            Executable::Cpu(e) => format!("cpu ({} threads)", e.threads()),
            Executable::Wgpu(e) => {
                let i = &e.device().info;
                format!("wgpu: {} ({:?}, {:?})", i.name, i.backend, i.device_type)
            }
        }
    }
}
