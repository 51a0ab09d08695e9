//! The objects the process has loaded, as a dump records them: the memory
//! map (with objects unloaded since), each object's build-id under the path
//! in that map, the program's path and the name it was started as.

use crate::sys::dl;
use crate::sys::escape::Escaped;
use std::os::unix::ffi::OsStrExt;

/// The memory map for symbolization: /proc/self/maps, or (after `chroot`,
/// without /proc) one line per executable segment from the dynamic linker;
/// then the objects unloaded since, where nothing else is mapped now.
pub fn memory_map() -> Vec<u8> {
    let mut map = match std::fs::read("/proc/self/maps") {
        Ok(maps) if !maps.is_empty() => maps,
        _ => loader_map().into_bytes(),
    };
    let retired = crate::profile::unloaded::retired_lines(&map);
    map.extend_from_slice(retired.as_bytes());
    map
}

fn loader_map() -> String {
    segments_where(|_| true)
        .into_iter()
        .map(|(_, _, line)| line)
        .collect()
}

/// (start, end, memory-map line) of the executable segments of every loaded
/// object whose load bias satisfies `wanted`, from the dynamic linker.
pub fn segments_where(wanted: impl Fn(u64) -> bool) -> Vec<(u64, u64, String)> {
    let mut found = Vec::new();
    dl::each_object(|o| {
        if !wanted(o.base) {
            return;
        }
        let name = object_name(o);
        for (lo, hi, offset) in o.code_segments() {
            let line = format!("{lo:x}-{hi:x} r-xp {offset:08x} 00:00 0 {name}\n");
            found.push((lo, hi, line));
        }
    });
    found
}

/// One `build_id` fact per loaded object that has one (its NT_GNU_BUILD_ID
/// note in memory: lets a reader tell whether the file now on disk is the one
/// that was mapped), keyed by the object's path in `map`, the dump's memory
/// map: the loader's name for it can differ (`libz.so.1` for
/// `/usr/lib/x86_64-linux-gnu/libz.so.1.2.13`), and is then kept in a
/// `loaded_as` fact, `<map path>\t<loader's name>`.
pub fn object_facts(map: &[u8]) -> Vec<(&'static str, String)> {
    let mut facts = Vec::new();
    for (id, address, loaded_as) in build_ids() {
        match mapped_path(map, address) {
            Some(path) if path != loaded_as => {
                facts.push(("build_id", format!("{id} {path}")));
                facts.push(("loaded_as", format!("{path}\t{loaded_as}")));
            }
            // Not in the map: loaded since it was read, or the map is the
            // loader's (no /proc), which already uses the loader's names.
            _ => facts.push(("build_id", format!("{id} {loaded_as}"))),
        }
    }
    facts
}

/// (build-id, address of its note, loader's name) of every loaded object
/// that has one.
fn build_ids() -> Vec<(String, u64, String)> {
    let mut out = Vec::new();
    dl::each_object(|o| {
        for h in o.headers.iter().filter(|h| h.p_type == libc::PT_NOTE) {
            let address = o.base.wrapping_add(h.p_vaddr);
            // SAFETY: a loaded object's PT_NOTE segment is mapped, at its
            // address, `p_memsz` bytes.
            let notes =
                unsafe { core::slice::from_raw_parts(address as *const u8, h.p_memsz as usize) };
            if let Some(id) = gnu_build_id(notes) {
                out.push((id, address, object_name(o)));
                break;
            }
        }
    });
    out
}

/// The path of the memory-map line that holds `address` (without the
/// kernel's " (deleted)" mark: the map line itself still says so). Lossy, as
/// the script matches `build_id` and `loaded_as` paths (a line's control
/// characters are escaped when the dump is rendered).
fn mapped_path(map: &[u8], address: u64) -> Option<String> {
    String::from_utf8_lossy(map).lines().find_map(|line| {
        let mut fields = line.splitn(6, ' ');
        let (lo, hi) = fields.next()?.split_once('-')?;
        let (lo, hi) = (
            u64::from_str_radix(lo, 16).ok()?,
            u64::from_str_radix(hi, 16).ok()?,
        );
        let path = fields.nth(4)?.trim_start();
        (lo <= address && address < hi && !path.is_empty())
            .then(|| path.strip_suffix(" (deleted)").unwrap_or(path).to_string())
    })
}

/// The program's file, read when the library loads (a later chroot may
/// hide /proc).
fn program_file() -> &'static std::path::Path {
    static PROGRAM: once_cell::sync::OnceCell<std::path::PathBuf> =
        once_cell::sync::OnceCell::new();
    PROGRAM.get_or_init(|| std::fs::read_link("/proc/self/exe").unwrap_or_default())
}

/// The program's path as lines and the `program:` fact show it: escaped
/// (`Escaped`: its bytes kept, control characters and bytes that are not
/// UTF-8 as `\xNN`; the script decodes it).
pub fn program_path() -> &'static str {
    static SHOWN: once_cell::sync::OnceCell<String> = once_cell::sync::OnceCell::new();
    SHOWN.get_or_init(|| Escaped(program_file().as_os_str().as_bytes()).to_string())
}

/// The name the program was started as (`argv[0]`: a symlink's name, such
/// as `redis-server` for `redis-check-rdb`), read when the library loads,
/// before the program can rewrite its arguments; the path `execve` was given
/// without /proc. Escaped as the program's path.
pub fn argv0() -> &'static str {
    static ARGV0: once_cell::sync::OnceCell<String> = once_cell::sync::OnceCell::new();
    ARGV0.get_or_init(|| match std::fs::read("/proc/self/cmdline") {
        Ok(args) if !args.is_empty() => {
            let first = args.split(|&b| b == 0).next().unwrap_or_default();
            Escaped(first).to_string()
        }
        _ => crate::sys::process::exec_path()
            .map(|p| Escaped(p.to_bytes()).to_string())
            .unwrap_or_default(),
    })
}

/// The object's path, lossy as `mapped_path` (see there); the main program
/// has an empty name in the loader.
fn object_name(o: &dl::LoadedObject) -> String {
    if o.name.is_empty() {
        program_file().to_string_lossy().into_owned()
    } else {
        o.name.to_string_lossy().into_owned()
    }
}

/// The hex build-id in a sequence of ELF notes, if there is one.
fn gnu_build_id(mut notes: &[u8]) -> Option<String> {
    const NT_GNU_BUILD_ID: u32 = 3;
    let word = |b: &[u8]| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
    while notes.len() >= 12 {
        let (namesz, descsz, kind) = (
            word(notes) as usize,
            word(&notes[4..]) as usize,
            word(&notes[8..]),
        );
        let name_end = 12 + namesz.next_multiple_of(4);
        let desc_end = name_end + descsz.next_multiple_of(4);
        if desc_end > notes.len() {
            return None;
        }
        if kind == NT_GNU_BUILD_ID && &notes[12..12 + namesz] == b"GNU\0" {
            return Some(
                notes[name_end..name_end + descsz]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect(),
            );
        }
        notes = &notes[desc_end..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_mapped_path_of_an_address() {
        let map = b"00400000-00401000 r--p 00000000 fe:00 12   /usr/bin/a b\n\
            7f0000001000-7f0000002000 r-xp 00001000 fe:00 13      /lib/libz.so.1.2 (deleted)\n\
            7f0000002000-7f0000003000 rw-p 00000000 00:00 0 \n";
        assert_eq!(mapped_path(map, 0x400010).as_deref(), Some("/usr/bin/a b"));
        assert_eq!(
            mapped_path(map, 0x7f0000001fff).as_deref(),
            Some("/lib/libz.so.1.2")
        );
        assert_eq!(mapped_path(map, 0x7f0000002000), None);
        assert_eq!(mapped_path(map, 0x10), None);
    }

    #[test]
    fn finds_the_gnu_build_id_note() {
        let mut notes = Vec::new();
        for (name, kind, desc) in [
            (&b"XYZ\0"[..], 1u32, &[9u8; 5][..]),
            (b"GNU\0", 3, &[0xab, 0xcd, 0x01]),
        ] {
            notes.extend((name.len() as u32).to_ne_bytes());
            notes.extend((desc.len() as u32).to_ne_bytes());
            notes.extend(kind.to_ne_bytes());
            notes.extend(name);
            notes.extend(desc);
            notes.resize(notes.len().next_multiple_of(4), 0);
        }
        assert_eq!(gnu_build_id(&notes).as_deref(), Some("abcd01"));
        assert_eq!(gnu_build_id(&notes[..20]), None);
    }
}
