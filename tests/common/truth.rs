//! Known truth: each row named by the first frame in the harness program
//! (addr2line), summed per function, and compared with the counts the
//! harness program's source promises at its `SITE` markers.

use super::{root, run, Dump, Row};
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

impl Dump {
    /// Live (count, bytes) and cumulative (count, bytes) per function of
    /// `exe`, attributing each row to its first frame inside `exe`. Also the
    /// source line of each such frame.
    pub fn by_function(&self, exe: &Path) -> HashMap<String, Site> {
        let exe_name = std::fs::canonicalize(exe).unwrap().display().to_string();
        let first_in_exe = |r: &Row| {
            r.frames.iter().skip(1).copied().find_map(|a| {
                let m = self.mapping_of(a)?;
                (m.path == exe_name).then(|| a - 1 - m.start + m.offset)
            })
        };
        let addrs: Vec<u64> = self.rows.iter().filter_map(first_in_exe).collect();
        let names = symbolize(exe, &addrs);
        let mut sites: HashMap<String, Site> = HashMap::new();
        for r in &self.rows {
            let Some(a) = first_in_exe(r) else { continue };
            let (func, line) = names[&a].clone();
            let s = sites.entry(func).or_insert_with(|| Site {
                live_usable: Some(0),
                ..Site::default()
            });
            s.live_count += r.live_count;
            s.live_bytes += r.live_bytes;
            s.alloc_count += r.alloc_count;
            s.alloc_bytes += r.alloc_bytes;
            if r.live_count > 0 {
                s.lines.push(line);
                s.live_usable = s.live_usable.zip(r.usable).map(|(a, b)| a + b);
            }
        }
        sites
    }
}

#[derive(Debug, Default, Clone)]
pub struct Site {
    pub live_count: u64,
    pub live_bytes: u64,
    pub alloc_count: u64,
    pub alloc_bytes: u64,
    pub lines: Vec<u32>,
    /// Sum of the live rows' usable sizes; None if a row had none.
    pub live_usable: Option<u64>,
}

/// (function, line) for each address of `exe` (whose file offsets equal its
/// virtual addresses, as GNU ld lays out the harness), in one addr2line call.
pub fn symbolize(exe: &Path, addrs: &[u64]) -> HashMap<u64, (String, u32)> {
    let mut cmd = Command::new("addr2line");
    cmd.arg("-f").arg("-C").arg("-e").arg(exe);
    for a in addrs {
        cmd.arg(format!("{a:#x}"));
    }
    let out = cmd.output().expect("addr2line");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    addrs
        .iter()
        .enumerate()
        .map(|(i, &a)| {
            let func = lines[2 * i].to_string();
            let line = lines[2 * i + 1]
                .rsplit(':')
                .next()
                .and_then(|l| l.split_whitespace().next())
                .and_then(|l| l.parse().ok())
                .unwrap_or(0);
            (a, (func, line))
        })
        .collect()
}

/// Line numbers of the `SITE <name>` markers in a harness source file.
pub fn site_lines(source: &str) -> HashMap<String, u32> {
    let text = std::fs::read_to_string(root().join("c-harness").join(source)).unwrap();
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let name = l.split("SITE ").nth(1)?.split_whitespace().next()?;
            Some((name.to_string(), i as u32 + 1))
        })
        .collect()
}

/// (site, live count, live bytes, allocated count, allocated bytes)
pub type Truth = (&'static str, u64, u64, u64, u64);

/// Every site's counts equal the truth, and every live row of a site is at
/// the line of its `SITE` marker in `source`.
pub fn assert_sites_exact(dump: &Dump, exe: &Path, source: &str, truth: &[Truth]) {
    let sites = dump.by_function(exe);
    let lines = site_lines(source);
    for &(name, live_n, live_b, alloc_n, alloc_b) in truth {
        let got = sites.get(name).cloned().unwrap_or_default();
        assert_eq!(
            (
                got.live_count,
                got.live_bytes,
                got.alloc_count,
                got.alloc_bytes
            ),
            (live_n, live_b, alloc_n, alloc_b),
            "{name}: (live n, live bytes, allocated n, allocated bytes)"
        );
        assert!(
            got.lines.iter().all(|&l| l == lines[name]),
            "{name}: lines {:?}, want {}",
            got.lines,
            lines[name]
        );
    }
}

/// jeprof and pprof both drop the allocator's frames and show each live site
/// of at least 64-byte blocks with its object count at its `SITE` line.
/// (jeprof un-samples even period 1 by 1/(1-exp(-size)), exact only for
/// sizes well above 1 byte.)
pub fn assert_tools_show(exe: &Path, dump: &Dump, source: &str, truth: &[Truth]) {
    let lines = site_lines(source);
    let jeprof = run(Command::new("jeprof")
        .args(["--text", "--inuse_objects", "--lines"])
        .arg(exe)
        .arg(&dump.path));
    let pprof = run(Command::new("go")
        .args([
            "tool",
            "pprof",
            "-text",
            "-lines",
            "-sample_index=inuse_objects",
        ])
        .arg(exe)
        .arg(&dump.path));
    for (tool, out) in [("jeprof", &jeprof), ("pprof", &pprof)] {
        for &(name, live_n, live_b, ..) in truth.iter().filter(|t| t.1 > 0 && t.2 / t.1 >= 64) {
            let at = format!("{source}:{}", lines[name]);
            let found = out.lines().any(|l| {
                l.split_whitespace().next() == Some(&live_n.to_string())
                    && l.contains(&format!("{name} "))
                    && l.contains(&at)
            });
            assert!(
                found,
                "{tool} does not show {live_n} objects at {name} {at} ({live_b} bytes):\n{out}"
            );
        }
        // Both print five number columns, then the function (and its line).
        let allocators = [
            "operator new",
            "malloc",
            "calloc",
            "realloc",
            "posix_memalign",
            "memalign",
            "valloc",
        ];
        for l in out.lines() {
            let function = l.split_whitespace().skip(5).collect::<Vec<_>>().join(" ");
            let kept = allocators.iter().find(|a| {
                function == **a
                    || function.starts_with(&format!("{a} "))
                    || function.starts_with(&format!("{a}("))
            });
            assert!(kept.is_none(), "{tool} kept an allocator frame: {l}\n{out}");
        }
    }
}
