//! Objects unloaded with `dlclose` (`hook::unload` reports them): their
//! executable segments keep their place in the dump's memory map, where
//! nothing else is mapped now, so stacks through them are still named.

use crate::sys::lock::SpinLock;

/// Most unloaded objects remembered (the oldest are forgotten first).
const KEEP: usize = 256;

/// Memory-map lines of unloaded objects' executable segments.
static RETIRED: SpinLock<Vec<(u64, u64, String)>> = SpinLock::new(Vec::new());

/// Remembers an unloaded object's segments: (start, end, map line).
pub fn retire(segments: Vec<(u64, u64, String)>) {
    RETIRED.with(|retired| {
        retired.extend(segments);
        let excess = retired.len().saturating_sub(KEEP);
        retired.drain(..excess);
    });
}

/// Memory-map lines for unloaded objects whose addresses nothing mapped now
/// overlaps (`current`: the map as it stands).
pub fn retired_lines(current: &[u8]) -> String {
    let live: Vec<(u64, u64)> = String::from_utf8_lossy(current)
        .lines()
        .filter_map(|l| {
            let (lo, hi) = l.split_whitespace().next()?.split_once('-')?;
            Some((
                u64::from_str_radix(lo, 16).ok()?,
                u64::from_str_radix(hi, 16).ok()?,
            ))
        })
        .collect();
    RETIRED.with(|retired| {
        retired
            .iter()
            .filter(|(lo, hi, _)| !live.iter().any(|(a, b)| lo < b && a < hi))
            .map(|(_, _, line)| line.as_str())
            .collect()
    })
}
