//! Mapped memory in a dump: the entries `mapped::table` tracks, with the
//! stacks this collector interned for them (the heap's intern table), as
//! `#` lines that jeprof and pprof skip, so they never enter the heap's
//! totals.

use super::{Collector, LOST};
use crate::mapped::table::{self, Kind};
use crate::profile::dump::Row;
use crate::sample::sampling;
use crate::sys::word_hash::WordMap;

impl Collector {
    /// The dump's facts about mapped memory, one `mapped` line per (kind,
    /// stack, size): `<kind> <live n>: <live bytes> [<n>: <bytes>] @
    /// 0x<frame0> ...`, in the heap rows' format.
    pub(super) fn mapped_facts(&self, period: usize) -> Vec<(&'static str, String)> {
        let Some(mut live) = table::live_entries() else {
            return Vec::new();
        };
        // Stacks lost in a fork (see `fork`) have no frames to show.
        live.retain(|e| e.stack < LOST);
        // Rows by (kind, stack, size); a mapping cut in pieces counts once.
        live.sort_unstable_by_key(|e| (e.kind as u8, e.stack, e.size, e.seq));
        let mut rows: WordMap<(Kind, u32, usize), Row> = WordMap::default();
        let mut last_seq = 0;
        for e in &live {
            let r = rows.entry((e.kind, e.stack, e.size)).or_default();
            if e.seq != last_seq {
                r.live_count += 1;
            }
            last_seq = e.seq;
            r.live_bytes += e.bytes() as u64;
        }
        for (&key, &(n, b)) in &self.mapped_allocated {
            let r = rows.entry(key).or_default();
            r.alloc_count = n;
            r.alloc_bytes = b;
        }
        let mut keys: Vec<_> = rows.keys().copied().collect();
        keys.sort_unstable_by_key(|k| (k.0 as u8, core::cmp::Reverse(rows[k].live_bytes)));
        let mut facts = vec![("mapped_live_samples", live.len().to_string())];
        for kind in Kind::ALL {
            let estimate: f64 = keys
                .iter()
                .filter(|k| k.0 == kind)
                .map(|k| sampling::unsample(rows[k].live_count, rows[k].live_bytes, period).1)
                .sum();
            facts.push((kind.fact(), (estimate.round() as u64).to_string()));
        }
        let (dropped, allocator_calls) = table::counts();
        facts.push(("mapped_samples_dropped", dropped.to_string()));
        facts.push(("mapped_allocator_calls", allocator_calls.to_string()));
        for k in keys {
            let r = &rows[&k];
            let mut line = format!(
                "{} {}: {} [{}: {}] @",
                k.0.name(),
                r.live_count,
                r.live_bytes,
                r.alloc_count,
                r.alloc_bytes
            );
            for f in self.stacks.get(k.1 as usize).map_or(&[][..], |f| &f[..]) {
                use core::fmt::Write as _;
                let _ = write!(line, " {f:#x}");
            }
            facts.push(("mapped", line));
        }
        facts
    }
}
