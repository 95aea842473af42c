//! Per-kernel wall-clock profile of an executable, switched on by the environment
//! variable `KILN_PROFILE=1` (`crate::cpu::switches::profile`; the wgpu executable then
//! submits and waits for each launch alone). Each executable accumulates
//! the time and count of every launch and prints a table to stderr when it is dropped:
//! kernels grouped by their name without the `kN_` prefix (the executable names them
//! `k12_matmul (MatMul)`: the op they were lowered from and their kind), largest total
//! first. It answers "which kind of kernel takes the time" without an external profiler;
//! `perf` resolves the JIT code's symbols (`kiln_k12_matmul_12`) for a finer view.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Launch counts and times, per kernel index.
pub(crate) struct Profile {
    label: String,
    names: Vec<String>,
    slots: Mutex<Vec<(u64, Duration)>>,
}

impl Profile {
    /// A profile of the kernels named `names`, printed under `label`.
    pub fn new(label: String, names: Vec<String>) -> Profile {
        let slots = Mutex::new(vec![(0, Duration::ZERO); names.len()]);
        Profile {
            label,
            names,
            slots,
        }
    }

    /// Renames the report.
    pub fn set_label(&mut self, label: &str) {
        self.label = label.to_string();
    }

    /// Times `f` as one launch of kernel `kernel`.
    pub fn time<T>(&self, kernel: usize, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        let spent = start.elapsed();
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots[kernel].0 += 1;
        slots[kernel].1 += spent;
        out
    }

    /// The table: per op, launches, total milliseconds and share of the total.
    pub fn report(&self) -> String {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let mut groups: Vec<(String, u64, Duration)> = Vec::new();
        for (name, &(count, spent)) in self.names.iter().zip(slots.iter()) {
            if count == 0 {
                continue;
            }
            let op = op_of(name);
            match groups.iter_mut().find(|g| g.0 == op) {
                Some(g) => {
                    g.1 += count;
                    g.2 += spent;
                }
                None => groups.push((op.to_string(), count, spent)),
            }
        }
        groups.sort_by_key(|g| std::cmp::Reverse(g.2));
        let total: Duration = groups.iter().map(|g| g.2).sum();
        let mut out = format!(
            "kiln profile: {} ({:.1} ms in kernels)\n",
            self.label,
            total.as_secs_f64() * 1e3
        );
        for (op, count, spent) in groups {
            out += &format!(
                "  {:<28} {:>8} launches {:>10.2} ms {:>6.1}%\n",
                op,
                count,
                spent.as_secs_f64() * 1e3,
                100.0 * spent.as_secs_f64() / total.as_secs_f64().max(1e-12)
            );
        }
        out
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        let any = self
            .slots
            .lock()
            .map(|s| s.iter().any(|s| s.0 > 0))
            .unwrap_or(false);
        if any {
            eprint!("{}", self.report());
        }
    }
}

/// The op part of a scheduled kernel's name: `k12_matmul` -> `matmul`.
fn op_of(name: &str) -> &str {
    match name.split_once('_') {
        Some((k, op)) if k.starts_with('k') && k[1..].chars().all(|c| c.is_ascii_digit()) => op,
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_op_and_sorts_by_time() {
        let p = Profile::new(
            "test".into(),
            vec!["k0_matmul".into(), "k1_softmax".into(), "k2_matmul".into()],
        );
        p.time(1, || std::thread::sleep(Duration::from_millis(2)));
        p.time(0, || std::thread::sleep(Duration::from_millis(3)));
        p.time(2, || std::thread::sleep(Duration::from_millis(3)));
        let r = p.report();
        let lines: Vec<&str> = r.lines().collect();
        assert!(lines[1].trim_start().starts_with("matmul"), "{r}");
        assert!(lines[1].contains(" 2 launches"), "{r}");
        assert!(lines[2].trim_start().starts_with("softmax"), "{r}");
        assert_eq!(op_of("k12_rms_norm"), "rms_norm");
        assert_eq!(op_of("custom"), "custom");
    }
}
