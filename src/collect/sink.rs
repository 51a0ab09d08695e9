//! Where a rendered dump goes. Every destination is a `Sink`: the dump
//! directory (`collector::write`'s `DumpDirectory`: numbered, the peak
//! profile, or the path a caller of `leakprobe_dump` named) is the first,
//! and its result is the dump's (said in the log, answered to whoever asked).
//! The others (`others`) get the same text after it, on the collector's
//! thread (or in a single-threaded program's process copy); one that fails
//! is said in one line and changes nothing else.
//!
//! To plug in a destination: implement `Sink`, and construct it in `others`.

use crate::settings::Settings;

/// Which dump is written: asked for (a signal, the C API, the exit dump),
/// automatic (`LEAKPROBE_DUMP_SECONDS`, `LEAKPROBE_INTERVAL`: also under
/// `LEAKPROBE_KEEP`), or the peak profile (replaced at each higher peak).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Asked,
    Automatic,
    Peak,
}

/// One rendered dump, as every sink gets it.
pub struct Dump<'a> {
    /// The heap text (`profile::dump`).
    pub text: &'a [u8],
    pub kind: Kind,
}

/// A destination for dumps.
pub trait Sink {
    /// Its name, for the line that says it failed.
    fn name(&self) -> &str;
    /// Takes one dump: where it went (a path, for the log), or why not.
    fn write(&mut self, dump: &Dump) -> Result<String, String>;
}

/// The destinations beyond the dump directory, made once when the collector
/// starts. None today.
pub fn others(_cfg: &Settings) -> Vec<Box<dyn Sink + Send>> {
    Vec::new()
}

/// Hands `dump` to each of `sinks` after the first, saying in one line each
/// one that fails.
pub fn hand_on(sinks: &mut [Box<dyn Sink + Send>], dump: &Dump) {
    for sink in sinks {
        if let Err(why) = sink.write(dump) {
            crate::sys::log::log!("cannot hand the dump to {}: {why}", sink.name());
        }
    }
}
