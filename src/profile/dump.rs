//! The dump file: the text heap profile (`heap_v2`) that both jeprof and
//! pprof read and un-sample (written into the dump directory by `dumpdir`).
//!
//! ```text
//! heap profile: <live n>: <live bytes> [<alloc n>: <alloc bytes>] @ heap_v2/<period>
//! # leakprobe <key>: <value>            (metadata; both tools skip '#' lines)
//! <n>: <bytes> [<n>: <bytes>] @ 0x<frame0> 0x<frame1> ...
//!
//! MAPPED_LIBRARIES:
//! <the process's memory map, as /proc/self/maps>
//! ```

use std::fmt::Write as _;

/// Raw sampled counts of one (stack, requested size) pair.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Row {
    pub stack: u32,
    pub size: usize,
    pub live_count: u64,
    pub live_bytes: u64,
    pub alloc_count: u64,
    pub alloc_bytes: u64,
    /// Age of the oldest live sample and sum of all live samples' ages, in
    /// seconds at the time of the dump.
    pub oldest_age: u64,
    pub total_age: u64,
    /// Sum of the live samples' usable sizes, and whether the allocator
    /// failed to give one for any of them.
    pub live_usable: u64,
    pub usable_unknown: bool,
}

impl Row {
    /// Usable bytes of the live samples, if the allocator gave every one.
    pub fn usable(&self) -> Option<u64> {
        (self.live_count > 0 && !self.usable_unknown).then_some(self.live_usable)
    }
}

/// The dump's text. Its whole size is reserved first (an upper bound), so a
/// process out of memory gets an error here, not an abort (see `global_alloc`).
pub fn render<'a>(
    period: usize,
    meta: &[(&str, String)],
    rows: &[Row],
    frames_of: impl Fn(u32) -> &'a [usize],
    maps: &[u8],
) -> Result<Vec<u8>, std::collections::TryReserveError> {
    let total = |f: fn(&Row) -> u64| rows.iter().map(f).sum::<u64>();
    // Numbers of at most 20 digits; a frame " 0x" and 16 hex digits; the age
    // and usable lines.
    let bound = 5 * 24
        + meta
            .iter()
            // A control character escaped: at most 8 bytes for its 2.
            .map(|(k, v)| k.len() + v.len() + 6 * v.chars().filter(|c| c.is_control()).count() + 16)
            .sum::<usize>()
        + rows
            .iter()
            .map(|r| 4 * 24 + 19 * frames_of(r.stack).len() + 60 + 42)
            .sum::<usize>()
        + 32
        + maps.len();
    let mut s = String::new();
    s.try_reserve_exact(bound)?;
    let _ = writeln!(
        s,
        "heap profile: {}: {} [{}: {}] @ heap_v2/{}",
        total(|r| r.live_count),
        total(|r| r.live_bytes),
        total(|r| r.alloc_count),
        total(|r| r.alloc_bytes),
        period
    );
    for (key, value) in meta {
        // One line each, whatever a value holds (names from the program,
        // the JVM, the environment): control characters escaped, but for
        // a tab, the separator of `loaded_as` (paths in it are escaped).
        let _ = write!(s, "# leakprobe {key}: ");
        for c in value.chars() {
            let _ = match c {
                '\t' => s.write_char(c),
                c => crate::sys::escape::control(c, &mut s),
            };
        }
        s.push('\n');
    }
    for r in rows {
        let _ = write!(
            s,
            "{}: {} [{}: {}] @",
            r.live_count, r.live_bytes, r.alloc_count, r.alloc_bytes
        );
        for f in frames_of(r.stack) {
            // Lower-case hex: pprof silently truncates stacks at upper case.
            let _ = write!(s, " {f:#x}");
        }
        s.push('\n');
        // Ages of the row above (rows with live samples): oldest and mean, in seconds.
        if let Some(mean) = r.total_age.checked_div(r.live_count) {
            let _ = writeln!(s, "# leakprobe age: {} {mean}", r.oldest_age);
        }
        // The allocator's usable bytes for them (raw sampled, as live bytes).
        if let Some(usable) = r.usable() {
            let _ = writeln!(s, "# leakprobe usable: {usable}");
        }
    }
    s.push_str("\nMAPPED_LIBRARIES:\n");
    let mut out = s.into_bytes();
    out.extend_from_slice(maps);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_both_tools_format() {
        let rows = [
            Row {
                stack: 0,
                size: 1024,
                live_count: 3,
                live_bytes: 3072,
                alloc_count: 5,
                alloc_bytes: 5120,
                oldest_age: 9,
                total_age: 12,
                live_usable: 3 * 1032,
                usable_unknown: false,
            },
            Row {
                stack: 1,
                size: 48,
                live_count: 0,
                live_bytes: 0,
                alloc_count: 2,
                alloc_bytes: 96,
                ..Row::default()
            },
        ];
        let stacks: [&[usize]; 2] = [&[0xABC0, 0x401000], &[0x10]];
        let out = render(
            524288,
            &[("pid", "42".into())],
            &rows,
            |i| stacks[i as usize],
            b"maps\n",
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "heap profile: 3: 3072 [7: 5216] @ heap_v2/524288\n\
             # leakprobe pid: 42\n\
             3: 3072 [5: 5120] @ 0xabc0 0x401000\n\
             # leakprobe age: 9 4\n\
             # leakprobe usable: 3096\n\
             0: 0 [2: 96] @ 0x10\n\
             \nMAPPED_LIBRARIES:\nmaps\n"
        );
    }

    #[test]
    fn the_largest_rows_fit_the_reserved_size() {
        let row = Row {
            stack: 0,
            size: usize::MAX,
            live_count: u64::MAX / 64,
            live_bytes: u64::MAX / 64,
            alloc_count: u64::MAX / 64,
            alloc_bytes: u64::MAX / 64,
            oldest_age: u64::MAX,
            total_age: u64::MAX,
            live_usable: u64::MAX,
            usable_unknown: false,
        };
        let frames = [usize::MAX; 128];
        let meta = [("program", "x".repeat(300))];
        let out = render(1, &meta, &[row; 50], |_| &frames, &[b'm'; 5000]).unwrap();
        // Growing would have at least doubled the capacity.
        assert!(
            out.capacity() < out.len() * 3 / 2,
            "{} {}",
            out.capacity(),
            out.len()
        );
    }
}
