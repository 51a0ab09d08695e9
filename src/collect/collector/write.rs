//! Writing a dump: the live snapshot un-sampled into rows, the facts, the
//! text, and the file (numbered in the dump directory, the peak profile, or
//! a path a caller of `leakprobe_dump` named).

use super::{Collector, LOST};
use crate::collect::mode;
use crate::collect::request::REQUESTS;
use crate::collect::ring;
use crate::collect::sink::{self, Dump, Kind, Sink};
use crate::next::{self, global_alloc};
use crate::profile::accounting;
use crate::profile::dump::{self, Row};
use crate::profile::dumpdir::DumpDir;
use crate::profile::objects;
use crate::sample::live;
use crate::sample::sampling;
use crate::settings;
use crate::sys::clock;
use crate::sys::word_hash::WordMap;
use crate::unwind::stack;
use core::sync::atomic::Ordering;

/// An automatic dump on disk, for `LEAKPROBE_KEEP`: whose, which, and the
/// file written (device, inode), the only one its removal may take.
pub(super) struct AutomaticDump {
    pid: libc::pid_t,
    number: u64,
    written: (u64, u64),
}

impl Collector {
    /// Writes a numbered dump, or the one a caller of `leakprobe_dump` asked
    /// for; true if written.
    pub(super) fn dump(&mut self) -> bool {
        self.write_dump(Kind::Asked)
    }

    /// Writes an automatic dump (numbered as the others).
    pub(super) fn dump_automatic(&mut self) {
        self.write_dump(Kind::Automatic);
    }

    /// Writes `leakprobe.<pid>.peak.heap`, the live profile at a new peak
    /// (replaced at each higher one; outside the numbering and the cap).
    pub(super) fn dump_peak(&mut self) {
        self.write_dump(Kind::Peak);
    }

    fn write_dump(&mut self, kind: Kind) -> bool {
        let at_peak = kind == Kind::Peak;
        let refusals = global_alloc::refusals();
        let period = sampling::period();
        let Some((rows, unresolved)) = self.rows() else {
            return self.fail_for_memory(at_peak);
        };
        let (live_n, live_b) = rows
            .iter()
            .map(|r| sampling::unsample(r.live_count, r.live_bytes, period))
            .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
        let map = objects::memory_map();
        let mut meta = self.facts(&rows, period, (live_n, live_b), unresolved, at_peak);
        meta.extend(objects::object_facts(&map));
        // How long the memory map after `MAPPED_LIBRARIES:` is: a dump cut
        // at a line boundary inside it is known as cut (the script says so).
        meta.push(("maps_bytes", map.len().to_string()));
        let stacks = &self.stacks;
        // The heap rows' stacks and every mapped sample's.
        let mapped = self.mapped_allocated.keys().map(|k| k.1);
        let seen: Vec<&[usize]> = rows
            .iter()
            .map(|r| r.stack)
            .chain(mapped)
            .map(|id| &*stacks[id as usize])
            .collect();
        meta.extend(crate::unwind::frames::frame_lines(&seen));
        let text = dump::render(period, &meta, &rows, |id| &stacks[id as usize], &map);
        let text = match text {
            Ok(text) if global_alloc::refusals() == refusals => text,
            _ => return self.fail_for_memory(at_peak),
        };
        let dump = Dump { text: &text, kind };
        let result = DumpDirectory(self).write(&dump);
        let written = result.is_ok();
        match result {
            Ok(path) => {
                // Written: the directory serves (again).
                crate::profile::published::refuse(crate::profile::published::Refusal::Dir, None);
                crate::sys::log::log!(
                    "wrote {path} ({} live samples, ~{:.1} MiB estimated live)",
                    self.snapshot.len(),
                    live_b / 1048576.0
                );
            }
            Err(why) => crate::sys::log::log!("cannot write dump {why}"),
        }
        self.dir.release_reopened();
        if !at_peak {
            REQUESTS.finished(written);
        }
        sink::hand_on(&mut self.sinks, &dump);
        written
    }

    /// The live table's snapshot as rows, one per (stack, requested size),
    /// with the cumulative totals, largest first; and how many live samples
    /// have no stack. None if the memory for them cannot be had: the big
    /// buffers are reserved first, so that a process out of memory costs a
    /// failed dump early on (see `global_alloc`), with room for samples
    /// taken meanwhile.
    fn rows(&mut self) -> Option<(Vec<Row>, u64)> {
        let live = live::count();
        self.snapshot.clear();
        self.snapshot.try_reserve(live + live / 8 + 64).ok()?;
        live::snapshot(&mut self.snapshot);
        let mut rows: WordMap<(u32, usize), Row> = WordMap::default();
        rows.try_reserve(self.snapshot.len() + self.allocated.len())
            .ok()?;
        let mut unresolved = 0u64;
        let now = clock::monotonic().as_secs() as u32;
        for e in &self.snapshot {
            if e.stack >= LOST {
                unresolved += 1;
                continue;
            }
            let age = u64::from(now.saturating_sub(e.born));
            let r = rows.entry((e.stack, e.size)).or_default();
            r.live_count += 1;
            r.live_bytes += e.size as u64;
            r.oldest_age = r.oldest_age.max(age);
            r.total_age += age;
            r.live_usable += e.usable as u64;
            r.usable_unknown |= e.usable == 0;
        }
        for (&(stack, size), &(n, b)) in &self.allocated {
            let r = rows.entry((stack, size)).or_default();
            r.alloc_count = n;
            r.alloc_bytes = b;
        }
        let mut sorted = Vec::new();
        sorted.try_reserve_exact(rows.len()).ok()?;
        sorted.extend(
            rows.into_iter()
                .map(|((stack, size), r)| Row { stack, size, ..r }),
        );
        sorted.sort_unstable_by(|a, b| {
            b.live_bytes
                .cmp(&a.live_bytes)
                .then(b.alloc_bytes.cmp(&a.alloc_bytes))
        });
        Some((sorted, unresolved))
    }

    /// The dump's facts (`# leakprobe <key>: <value>` lines), but for the
    /// objects loaded and the Java frames.
    fn facts(
        &self,
        rows: &[Row],
        period: usize,
        (live_n, live_b): (f64, f64),
        unresolved: u64,
        at_peak: bool,
    ) -> Vec<(&'static str, String)> {
        // Each row's estimate scaled by its usable/requested ratio; unknown
        // if the allocator did not give the usable size of every sample.
        let live_usable: Option<f64> = rows
            .iter()
            .filter(|r| r.live_count > 0)
            .map(|r| {
                let estimate = sampling::unsample(r.live_count, r.live_bytes, period).1;
                r.usable()
                    .map(|u| estimate * u as f64 / r.live_bytes.max(1) as f64)
            })
            .sum();
        let (dropped, dropped_bytes) = ring::dropped();
        let (wall, mono) = (clock::wall(), clock::monotonic());
        let mut meta = vec![
            ("version", env!("CARGO_PKG_VERSION").to_string()),
            ("arch", std::env::consts::ARCH.to_string()),
            ("pid", crate::sys::raw::process_id().to_string()),
            ("program", objects::program_path().to_string()),
            ("argv0", objects::argv0().to_string()),
            ("sample_period", period.to_string()),
            (
                "time_unix",
                format!("{}.{:03}", wall.as_secs(), wall.subsec_millis()),
            ),
            (
                "time_monotonic",
                format!("{}.{:03}", mono.as_secs(), mono.subsec_millis()),
            ),
            (
                "allocator",
                crate::profile::blind::malloc_served_by()
                    .unwrap_or_else(|| next::allocator_name().to_string()),
            ),
            ("live_samples", self.snapshot.len().to_string()),
            ("estimated_live_objects", format!("{live_n:.0}")),
            ("estimated_live_bytes", format!("{live_b:.0}")),
            ("samples_dropped", dropped.to_string()),
            ("bytes_dropped", dropped_bytes.to_string()),
            ("samples_unresolved", unresolved.to_string()),
            (
                "max_frames",
                settings::get().map_or(0, |c| c.max_frames).to_string(),
            ),
            (
                "signal",
                settings::get().map_or(String::new(), |c| settings::signal_name(c.signal)),
            ),
        ];
        // Who took the request: the collector thread, or (`single`) a
        // snapshot of a single-threaded program (or its caller: `dump_here`),
        // or nobody (`NO_THREAD`: the caller); and snapshots that failed.
        let collector = if mode::active() {
            "single-threaded"
        } else if super::NO_THREAD.load(Ordering::Relaxed) {
            "none"
        } else {
            "thread"
        };
        meta.push(("collector", collector.to_string()));
        meta.extend(crate::profile::attached::fact());
        let failed = super::SNAPSHOTS_FAILED.load(Ordering::Relaxed);
        if failed > 0 {
            meta.push(("snapshots_failed", failed.to_string()));
        }
        if !self.answering.is_empty() && !at_peak {
            let tokens: Vec<String> = self.answering.iter().map(|t| format!("{t:08x}")).collect();
            meta.push(("requests_answered", tokens.join(" ")));
        }
        // As an integer: an empty f64 sum is -0.0, which would print "-0".
        meta.extend(live_usable.map(|u| {
            (
                "estimated_live_usable_bytes",
                (u.round() as u64).to_string(),
            )
        }));
        meta.extend(
            crate::profile::blind::reasons()
                .iter()
                .map(|r| ("blind", r.clone())),
        );
        let (_, peak, peak_time) = live::estimate();
        meta.push(("peak_estimated_live_bytes", peak.to_string()));
        meta.push(("peak_time_unix", peak_time.to_string()));
        meta.push(("overhead_bytes", self.overhead_bytes().to_string()));
        let (fast, libgcc, cut_short) = stack::unwound();
        meta.push(("stacks_unwound_fast", fast.to_string()));
        meta.push(("stacks_unwound_libgcc", libgcc.to_string()));
        meta.push(("stacks_cut_short", cut_short.to_string()));
        meta.extend(accounting::process());
        meta.extend(accounting::allocator());
        meta.extend(self.mapped_facts(period));
        meta.push((
            "dumps_failed_out_of_memory",
            super::FAILED_FOR_MEMORY.load(Ordering::Relaxed).to_string(),
        ));
        meta.extend(crate::unwind::frames::facts());
        meta
    }

    /// Writes the dump: to the path a caller of `leakprobe_dump` named, as
    /// the peak profile, or numbered in the dump directory. Its path, or
    /// why not.
    fn write_file(&mut self, text: &[u8], kind: Kind) -> Result<String, String> {
        let at_peak = kind == Kind::Peak;
        let pid = crate::sys::raw::process_id();
        let target = if at_peak {
            None
        } else {
            REQUESTS.take_target()
        };
        match &target {
            Some(path) => {
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
                DumpDir::open(parent.unwrap_or(".".as_ref()).as_os_str(), false)
                    .write_replacing(&name, text)
                    .map_err(|why| {
                        use std::os::unix::ffi::OsStrExt;
                        let shown = crate::sys::escape::Escaped(path.as_os_str().as_bytes());
                        format!("{shown}: {why}")
                    })
            }
            None if at_peak => self
                .dir
                .write_replacing(&format!("leakprobe.{pid}.peak.heap"), text)
                .map_err(|why| {
                    format!("leakprobe.{pid}.peak.heap in {}: {why}", self.dir.display())
                }),
            None => {
                let first = format!("leakprobe.{pid}.{}.heap", self.next_number);
                self.dir
                    .write_numbered(
                        &mut self.next_number,
                        |n| format!("leakprobe.{pid}.{n}.heap"),
                        text,
                    )
                    .map(|(_, path, written)| {
                        let number = self.next_number - 1;
                        self.keep_at_most(number, pid);
                        if kind == Kind::Automatic {
                            self.keep_automatic(AutomaticDump {
                                pid,
                                number,
                                written,
                            });
                        }
                        path
                    })
                    .map_err(|why| format!("{first} in {}: {why}", self.dir.display()))
            }
        }
    }
}

/// The dump directory, the first sink (`collect::sink`): numbered dumps
/// under `LEAKPROBE_MAX_DUMPS` (automatic ones also under `LEAKPROBE_KEEP`),
/// the peak profile, or the path a caller of `leakprobe_dump` named.
struct DumpDirectory<'a>(&'a mut Collector);

impl Sink for DumpDirectory<'_> {
    fn name(&self) -> &str {
        "the dump directory"
    }

    fn write(&mut self, dump: &Dump) -> Result<String, String> {
        self.0.write_file(dump.text, dump.kind)
    }
}

impl Collector {
    /// A dump abandoned for lack of memory: one line, counted; what it took
    /// is given back. False: not written.
    pub(super) fn fail_for_memory(&mut self, at_peak: bool) -> bool {
        self.snapshot = Vec::new();
        let failed = super::FAILED_FOR_MEMORY.fetch_add(1, Ordering::Relaxed) + 1;
        crate::sys::log::log!(
            "cannot write {} dump: out of memory (the allocator refused the library's \
             allocations; {failed} so far); the program goes on",
            if at_peak { "the peak" } else { "a" }
        );
        if !at_peak {
            REQUESTS.take_target();
            REQUESTS.finished(false);
        }
        false
    }

    /// Records a dump written to the dump directory and removes the oldest
    /// beyond `LEAKPROBE_MAX_DUMPS`.
    pub(super) fn keep_at_most(&mut self, number: u64, pid: libc::pid_t) {
        self.keep(number, true);
        while let Some(old) = self.beyond_cap() {
            self.dir.remove(&format!("leakprobe.{pid}.{old}.heap"));
        }
    }

    /// Records an automatic dump and removes the oldest automatic ones beyond
    /// `LEAKPROBE_KEEP` (dumps asked for, the exit dump and the peak profile
    /// are not counted): only files this process wrote, each checked to be
    /// still the file written.
    fn keep_automatic(&mut self, new: AutomaticDump) {
        let cap = settings::get().map_or(0, |c| c.keep_automatic);
        if cap == 0 {
            return;
        }
        // In a forked child, the parent's dumps are not this process's.
        self.automatic_kept.retain(|a| a.pid == new.pid);
        self.automatic_kept.push_back(new);
        while self.automatic_kept.len() > cap {
            let Some(old) = self.automatic_kept.pop_front() else {
                break;
            };
            let name = format!("leakprobe.{}.{}.heap", old.pid, old.number);
            self.dir.remove_written(&name, old.written);
            self.kept.retain(|&n| n != old.number);
        }
    }

    /// Adds dump `number` to those kept. Without `may_allocate` (on the
    /// helper of `single`), only while the room reserved in `new` lasts:
    /// beyond it a dump is not counted, so never removed.
    pub(super) fn keep(&mut self, number: u64, may_allocate: bool) {
        if may_allocate || self.kept.len() < self.kept.capacity() {
            self.kept.push_back(number);
        }
    }

    /// The oldest dump kept beyond the cap, taken off the list.
    pub(super) fn beyond_cap(&mut self) -> Option<u64> {
        let cap = settings::get().map_or(100, |c| c.max_dumps);
        if self.kept.len() > cap {
            self.kept.pop_front()
        } else {
            None
        }
    }
}
