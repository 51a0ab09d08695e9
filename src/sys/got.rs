//! Rewriting the GOT entries of the loaded objects, for a library loaded
//! into a running program (`scripts/leakprobe attach`): symbol interposition
//! no longer applies, so each object's `JUMP_SLOT` and `GLOB_DAT` entries for
//! a name the library defines are pointed at the library's definition, and
//! every entry rewritten is remembered to be restored exactly (`restore`).
//!
//! Only objects the loader has finished relocating are touched (those
//! `_dl_find_object` knows: it learns of an object after its relocation and
//! RELRO protection), never this library nor the loader. An entry is taken
//! only if it holds the program's definition of the name (`RTLD_DEFAULT`) or
//! an address inside its own object (a lazy-binding PLT stub): an entry bound
//! elsewhere (a symbol version, `-Bsymbolic`) was not interposable either.

use crate::sys::dl::{each_object, find_object, is_own, lookup, LoadedObject, Scope};
use core::ffi::{c_char, c_void, CStr};
use core::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

const DT_NULL: i64 = 0;
const DT_PLTRELSZ: i64 = 2;
const DT_STRTAB: i64 = 5;
const DT_SYMTAB: i64 = 6;
const DT_RELA: i64 = 7;
const DT_RELASZ: i64 = 8;
const DT_JMPREL: i64 = 23;
const PT_GNU_RELRO: u32 = 0x6474_e552;
const R_X86_64_GLOB_DAT: u32 = 6;
const R_X86_64_JUMP_SLOT: u32 = 7;

/// One rewritten entry: where, what it held, what it holds now.
#[derive(Clone, Copy)]
struct Entry {
    got: usize,
    original: usize,
    replacement: usize,
}

/// Every entry rewritten and not yet restored; also serialises rewriting
/// (the attach call, a `dlopen` seen later, `restore`).
static REWRITTEN: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
/// Entries found changed by someone else when restoring (left as they are).
static CHANGED: AtomicUsize = AtomicUsize::new(0);

/// Points every entry of every relocated object (but this library and the
/// loader) whose symbol `replacement` names at the replacement. `translate`
/// maps an entry's value to the one it stands for (the attach stubs' own
/// entries stand for the entry they replaced). Returns how many entries
/// were rewritten in this call.
pub fn rewrite(
    replacement: &dyn Fn(&CStr) -> Option<usize>,
    translate: &dyn Fn(usize) -> usize,
) -> usize {
    let mut saved = REWRITTEN.lock().unwrap_or_else(|e| e.into_inner());
    let loader = crate::sys::process::aux(libc::AT_BASE) as u64;
    let mut count = 0;
    each_object(|o| {
        if o.base == loader && loader != 0 {
            return;
        }
        let Some(first) = o.headers.iter().find(|h| h.p_type == libc::PT_LOAD) else {
            return;
        };
        let start = o.base.wrapping_add(first.p_vaddr) as usize;
        // Not relocated yet (being loaded by another thread), or this library.
        if find_object(start).is_none() || is_own(start as *mut c_void) {
            return;
        }
        for (got, name) in slots(o) {
            let Some(ours) = replacement(name) else {
                continue;
            };
            // SAFETY: a GOT entry of a relocated object: aligned, mapped.
            let now = unsafe { (*(got as *const AtomicUsize)).load(Ordering::Relaxed) };
            if now == ours {
                continue;
            }
            let original = translate(now);
            let program = lookup(Scope::Next, name) as usize;
            let lazy = find_object(original).is_some_and(|f| f.start == start);
            if original != program && !lazy {
                continue;
            }
            if write(o, got, ours) {
                count += 1;
                // Rewritten again (a lazy-binding resolution under way
                // wrote the definition over it): the first original stays.
                if !saved.iter().any(|e| e.got == got) {
                    saved.push(Entry {
                        got,
                        original,
                        replacement: ours,
                    });
                }
            }
        }
    });
    count
}

/// Puts every rewritten entry back to what it held, unless something else
/// changed it since. Returns (restored, found changed).
pub fn restore() -> (usize, usize) {
    let mut saved = REWRITTEN.lock().unwrap_or_else(|e| e.into_inner());
    let mut restored = 0;
    for e in saved.drain(..).rev() {
        // The object may have been unloaded since: only entries still mapped
        // in a loaded object are read.
        let Some(object) = find_object(e.got) else {
            continue;
        };
        // SAFETY: inside a loaded object's mapping, aligned (a GOT entry).
        let now = unsafe { (*(e.got as *const AtomicUsize)).load(Ordering::Relaxed) };
        if now != e.replacement {
            CHANGED.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let mut done = false;
        each_object(|o| {
            let start = o
                .headers
                .iter()
                .find(|h| h.p_type == libc::PT_LOAD)
                .map(|h| o.base.wrapping_add(h.p_vaddr) as usize);
            if !done && start == Some(object.start) {
                done = write(o, e.got, e.original);
            }
        });
        restored += usize::from(done);
    }
    (restored, CHANGED.load(Ordering::Relaxed))
}

/// The (address, symbol name) of each `JUMP_SLOT` and `GLOB_DAT` entry of
/// `o`. The dynamic section's pointers are relocated in place by glibc's
/// loader on this architecture (the main program's need no relocation);
/// one below the load bias is taken as not relocated.
fn slots<'a>(o: &'a LoadedObject) -> impl Iterator<Item = (usize, &'a CStr)> + 'a {
    let base = o.base as usize;
    let at = move |v: u64| {
        let v = v as usize;
        if v < base {
            base.wrapping_add(v)
        } else {
            v
        }
    };
    let (mut strtab, mut symtab, mut rela, mut relasz, mut jmprel, mut pltsz) = (0, 0, 0, 0, 0, 0);
    if let Some(dynamic) = o.headers.iter().find(|h| h.p_type == libc::PT_DYNAMIC) {
        // Elf64_Dyn: a tag and a value.
        let mut d = base.wrapping_add(dynamic.p_vaddr as usize) as *const [u64; 2];
        loop {
            // SAFETY: the loader's dynamic section of a loaded object, ended
            // by DT_NULL.
            let [tag, val] = unsafe { *d };
            let tag = tag as i64;
            match tag {
                DT_NULL => break,
                DT_STRTAB => strtab = at(val),
                DT_SYMTAB => symtab = at(val),
                DT_RELA => rela = at(val),
                DT_RELASZ => relasz = val as usize,
                DT_JMPREL => jmprel = at(val),
                DT_PLTRELSZ => pltsz = val as usize,
                _ => {}
            }
            d = d.wrapping_add(1);
        }
    }
    let table = |start: usize, bytes: usize| -> &'a [libc::Elf64_Rela] {
        if start == 0 || strtab == 0 || symtab == 0 {
            return &[];
        }
        // SAFETY: a relocation table of a loaded object, as its dynamic
        // section describes it.
        unsafe {
            core::slice::from_raw_parts(
                start as *const libc::Elf64_Rela,
                bytes / core::mem::size_of::<libc::Elf64_Rela>(),
            )
        }
    };
    let relocs = table(jmprel, pltsz).iter().chain(table(rela, relasz));
    relocs.filter_map(move |r| {
        let kind = (r.r_info & 0xffff_ffff) as u32;
        let sym = (r.r_info >> 32) as usize;
        if (kind != R_X86_64_JUMP_SLOT && kind != R_X86_64_GLOB_DAT) || sym == 0 {
            return None;
        }
        // SAFETY: a symbol index of this object's relocation, into its symbol
        // table, whose name is an offset into its string table.
        let name = unsafe {
            let s = (symtab as *const libc::Elf64_Sym).wrapping_add(sym);
            CStr::from_ptr((strtab as *const c_char).wrapping_add((*s).st_name as usize))
        };
        Some((base.wrapping_add(r.r_offset as usize), name))
    })
}

/// Stores `value` at `got`, an entry of `o`, making its page writable for
/// the store if it is in the object's RELRO segment (read-only since
/// relocation), and read-only again after. False if it cannot.
fn write(o: &LoadedObject, got: usize, value: usize) -> bool {
    let page = crate::sys::process::page_size();
    let relro = o
        .headers
        .iter()
        .find(|h| h.p_type == PT_GNU_RELRO)
        .map(|h| {
            // The loader protects whole pages only: start and end rounded down.
            let lo = o.base.wrapping_add(h.p_vaddr) as usize;
            let hi = lo.wrapping_add(h.p_memsz as usize);
            (lo & !(page - 1), hi & !(page - 1))
        });
    let at = got & !(page - 1);
    let protected = relro.is_some_and(|(lo, hi)| at >= lo && at < hi);
    if protected && !crate::sys::raw::protect(at, page, libc::PROT_READ | libc::PROT_WRITE) {
        return false;
    }
    // SAFETY: a GOT entry of a loaded object, writable now; an aligned word
    // store, so a thread calling through it sees the old or the new value.
    unsafe { (*(got as *const AtomicUsize)).store(value, Ordering::Release) };
    if protected {
        crate::sys::raw::protect(at, page, libc::PROT_READ);
    }
    true
}
