//! The human-readable report of a [`MemoryPlan`].

use super::{BufferId, MemoryPlan, Placement};
use std::fmt;

impl MemoryPlan {
    fn name_of(&self, id: BufferId) -> &str {
        self.buffer(id).map_or("?", |b| b.decl.name.as_str())
    }

    fn step_name(&self, step: usize) -> &str {
        self.steps.get(step).map_or("?", String::as_str)
    }
}

/// Writes rows as left-aligned columns separated by two spaces, each line indented.
fn table(f: &mut fmt::Formatter<'_>, rows: &[Vec<String>]) -> fmt::Result {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::from(" ");
        for (c, cell) in row.iter().enumerate() {
            line.push(' ');
            line.push_str(cell);
            if c + 1 < row.len() {
                let pad = widths[c] - cell.chars().count();
                line.extend(std::iter::repeat_n(' ', pad + 1));
            }
        }
        writeln!(f, "{}", line.trim_end())?;
    }
    Ok(())
}

impl fmt::Display for MemoryPlan {
    /// The slots (offset, size, members), every buffer (kind, size, placement, lifetime as an
    /// inclusive step range) and the in-place decisions.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let in_arena = self
            .buffers
            .iter()
            .filter(|b| matches!(b.placement, Placement::Arena { .. }))
            .count();
        writeln!(
            f,
            "memory plan: {} steps, {} arena buffers in {} slots, arena {} bytes (align {})",
            self.steps.len(),
            in_arena,
            self.slots.len(),
            self.arena_size,
            self.arena_align()
        )?;

        writeln!(f, "slots:")?;
        let mut rows = vec![vec![
            "slot".to_string(),
            "align".into(),
            "offset".into(),
            "size".into(),
            "buffers".into(),
        ]];
        for (i, s) in self.slots.iter().enumerate() {
            let members: Vec<&str> = s.buffers.iter().map(|&id| self.name_of(id)).collect();
            rows.push(vec![
                format!("#{i}"),
                s.align.to_string(),
                s.offset.to_string(),
                s.size.to_string(),
                members.join(", "),
            ]);
        }
        table(f, &rows)?;

        writeln!(f, "buffers:")?;
        let mut rows = vec![vec![
            "buffer".to_string(),
            "kind".into(),
            "size".into(),
            "placement".into(),
            "offset".into(),
            "lifetime".into(),
        ]];
        for b in &self.buffers {
            let (placement, offset) = match &b.placement {
                Placement::External => ("external".to_string(), "-".to_string()),
                Placement::Unused => ("unused".to_string(), "-".to_string()),
                Placement::Arena { slot, offset } => (format!("slot #{slot}"), offset.to_string()),
            };
            let lifetime = b.lifetime.map_or("-".to_string(), |l| {
                format!("steps {}..={}", l.first, l.last)
            });
            rows.push(vec![
                b.decl.name.clone(),
                b.decl.kind.name().to_string(),
                b.decl.size.to_string(),
                placement,
                offset,
                lifetime,
            ]);
        }
        table(f, &rows)?;

        if !self.applied.is_empty() {
            writeln!(f, "in place:")?;
            for a in &self.applied {
                writeln!(
                    f,
                    "  step {} ({}): {} reuses {}",
                    a.step,
                    self.step_name(a.step),
                    self.name_of(a.hint.output),
                    self.name_of(a.hint.input)
                )?;
            }
        }
        if !self.rejected.is_empty() {
            writeln!(f, "in place rejected:")?;
            for r in &self.rejected {
                writeln!(
                    f,
                    "  step {} ({}): {} over {}: {}",
                    r.step,
                    self.step_name(r.step),
                    self.name_of(r.hint.output),
                    self.name_of(r.hint.input),
                    r.reason.describe()
                )?;
            }
        }
        Ok(())
    }
}
