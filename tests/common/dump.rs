//! Reads a dump (the heap profile text: header, `# leakprobe` facts, rows,
//! memory map), and checks on every read that the header's totals are the
//! sums of the rows: a dump that contradicts itself fails the test reading it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The sequence number of a `leakprobe.<pid>.<seq>.heap` file.
pub fn seq_of(file: &Path) -> u64 {
    file.file_name()
        .unwrap()
        .to_string_lossy()
        .split('.')
        .nth(2)
        .unwrap()
        .parse()
        .unwrap()
}

/// `leakprobe.<pid>.<seq>.heap` files in `dir`, ordered by sequence number.
pub fn dump_files_of(dir: &Path, pid: i32) -> Vec<PathBuf> {
    let prefix = format!("leakprobe.{pid}.");
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let seq = name
                        .strip_prefix(&prefix)?
                        .strip_suffix(".heap")?
                        .parse()
                        .ok()?;
                    Some((seq, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

#[derive(Debug, Clone)]
pub struct Row {
    pub live_count: u64,
    pub live_bytes: u64,
    pub alloc_count: u64,
    pub alloc_bytes: u64,
    pub frames: Vec<u64>,
    /// The `# leakprobe usable:` line after the row, if any.
    pub usable: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    pub path: String,
}

/// A parsed dump.
#[derive(Debug)]
pub struct Dump {
    pub path: PathBuf,
    pub period: u64,
    pub meta: HashMap<String, String>,
    pub rows: Vec<Row>,
    pub maps: Vec<Mapping>,
}

impl Dump {
    pub fn read(path: &Path) -> Dump {
        Dump::try_read(path).unwrap_or_else(|| panic!("cannot read {}", path.display()))
    }

    /// None if the file is gone (a dump beyond `LEAKPROBE_MAX_DUMPS` is
    /// removed as the next is written).
    pub fn try_read(path: &Path) -> Option<Dump> {
        // The memory map is the kernel's bytes: a path there may not be UTF-8.
        let text = String::from_utf8_lossy(&std::fs::read(path).ok()?).into_owned();
        let mut lines = text.lines();
        let header = lines.next().unwrap();
        let (totals, period) = header
            .strip_prefix("heap profile: ")
            .and_then(|h| h.split_once(" @ heap_v2/"))
            .unwrap_or_else(|| panic!("bad header {header:?}"));
        let totals = parse_counts(totals);
        let period = period.trim().parse().unwrap();
        let mut meta = HashMap::new();
        let mut rows = Vec::new();
        for line in lines.by_ref() {
            if line == "MAPPED_LIBRARIES:" {
                break;
            }
            if let Some(kv) = line.strip_prefix("# leakprobe ") {
                let (k, v) = kv.split_once(": ").unwrap();
                if k == "usable" {
                    let row: &mut Row = rows.last_mut().expect("usable line before any row");
                    row.usable = Some(v.parse().unwrap());
                }
                meta.insert(k.to_string(), v.to_string());
            } else if !line.is_empty() {
                rows.push(parse_row(line));
            }
        }
        let maps = lines.filter_map(parse_mapping).collect();
        let sums = rows.iter().fold([0u64; 4], |s, r| {
            [
                s[0] + r.live_count,
                s[1] + r.live_bytes,
                s[2] + r.alloc_count,
                s[3] + r.alloc_bytes,
            ]
        });
        assert_eq!(
            totals,
            sums,
            "{}: the header's totals (live n, live bytes, allocated n, allocated bytes) are not the rows' sums",
            path.display()
        );
        Some(Dump {
            path: path.to_owned(),
            period,
            meta,
            rows,
            maps,
        })
    }

    /// Every value of a fact that may repeat (`blind`, `build_id`).
    pub fn meta_all(&self, key: &str) -> Vec<String> {
        let prefix = format!("# leakprobe {key}: ");
        std::fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
            .collect()
    }

    pub fn meta_u64(&self, key: &str) -> u64 {
        self.meta
            .get(key)
            .unwrap_or_else(|| panic!("no {key} in dump"))
            .parse()
            .unwrap()
    }

    pub fn mapping_of(&self, addr: u64) -> Option<&Mapping> {
        self.maps.iter().find(|m| m.start <= addr && addr < m.end)
    }
}

fn parse_row(line: &str) -> Row {
    let (counts, stack) = line
        .split_once(" @ ")
        .unwrap_or_else(|| panic!("bad row {line:?}"));
    let nums = parse_counts(counts);
    let frames = stack
        .split_whitespace()
        .map(|f| {
            let hex = f
                .strip_prefix("0x")
                .unwrap_or_else(|| panic!("bad frame {f:?}"));
            assert_eq!(hex, hex.to_lowercase(), "upper-case hex in {f:?}");
            u64::from_str_radix(hex, 16).unwrap()
        })
        .collect();
    Row {
        live_count: nums[0],
        live_bytes: nums[1],
        alloc_count: nums[2],
        alloc_bytes: nums[3],
        frames,
        usable: None,
    }
}

/// `L: LB [A: AB]`, as in rows and in the header.
fn parse_counts(text: &str) -> [u64; 4] {
    let nums: Vec<u64> = text
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    nums.try_into()
        .unwrap_or_else(|n| panic!("bad counts {text:?}: {n:?}"))
}

fn parse_mapping(line: &str) -> Option<Mapping> {
    let mut parts = line.split_whitespace();
    let (lo, hi) = parts.next()?.split_once('-')?;
    let _perms = parts.next()?;
    let offset = u64::from_str_radix(parts.next()?, 16).ok()?;
    let path = parts.nth(2).unwrap_or("").to_string();
    Some(Mapping {
        start: u64::from_str_radix(lo, 16).ok()?,
        end: u64::from_str_radix(hi, 16).ok()?,
        offset,
        path,
    })
}
