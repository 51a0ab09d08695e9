//! The dynamic loader's look-ups, one idiom each: a name's address in a
//! scope (`lookup`: the next definition, or the program's view), once per
//! slot for the functions the library interposes (`Next`, typed, and its
//! untyped view `NextSymbol`; `function` makes an address callable), in the
//! library's own object (`Own`); the object that holds an address, and the
//! symbol entry there; an open handle's load bias.
//!
//! `dlsym`, `dladdr` and `dlopen` take the loader's lock and may allocate:
//! nothing that may run inside the allocator's own critical section calls
//! them (`find_object` is the lock-free look-up).

use core::ffi::{c_int, c_void, CStr};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

/// Where `lookup` looks for a name.
#[derive(Clone, Copy)]
pub enum Scope {
    /// The objects after this library in the lookup order (`RTLD_NEXT`):
    /// the definition the program's call would reach without the library.
    Next,
    /// Every object in the lookup order, as the program sees it
    /// (`RTLD_DEFAULT`).
    Global,
}

/// Set when the library was loaded into a running program (`dlopen`, by
/// `scripts/leakprobe attach`) rather than preloaded: it is then not in the
/// program's lookup order at all, and the next definition of a name is the
/// program's own (`RTLD_DEFAULT`), which its GOT entries held.
static LOADED_LATE: AtomicBool = AtomicBool::new(false);

/// Whether the library was loaded late (see `LOADED_LATE`): decided once, by
/// the constructor, before any next symbol is resolved.
pub fn loaded_late() -> bool {
    LOADED_LATE.load(Ordering::Acquire)
}

/// Notes whether the library was loaded late. Preloaded (`LD_PRELOAD`,
/// `/etc/ld.so.preload`), the loader maps it before the program's own
/// dependencies, libc among them; `dlopen`ed into a running program, after
/// them: the loader's list of objects says which, whatever defines `malloc`
/// first (a program's own, an allocator preloaded ahead of the library,
/// whose profiles say they are blind: `profile::blind`). Without libc in
/// the list, preloaded.
pub fn detect_late_load() -> bool {
    let own = is_own as *const () as usize as u64;
    let (mut libc_seen, mut late, mut found) = (false, false, false);
    each_object(|o| {
        if found {
            return;
        }
        if o.code_segments().any(|(lo, hi, _)| (lo..hi).contains(&own)) {
            found = true;
            late = libc_seen;
        } else if o
            .name
            .to_bytes()
            .rsplit(|&b| b == b'/')
            .next()
            .is_some_and(|base| base.starts_with(b"libc.so"))
        {
            libc_seen = true;
        }
    });
    LOADED_LATE.store(late, Ordering::Release);
    late
}

/// The address of `name` in `scope`; null if nothing there defines it.
pub fn lookup(scope: Scope, name: &CStr) -> *mut c_void {
    let handle = match scope {
        Scope::Next if !loaded_late() => libc::RTLD_NEXT,
        Scope::Next | Scope::Global => libc::RTLD_DEFAULT,
    };
    // SAFETY: dlsym with a pseudo-handle and a NUL-terminated name; RTLD_NEXT
    // is relative to the calling object, this library wherever it is inlined.
    let f = unsafe { libc::dlsym(handle, name.as_ptr()) };
    if !matches!(scope, Scope::Next) || !loaded_late() || f.is_null() {
        return f;
    }
    // Loaded late, the library's own scope follows the program's: a name
    // only it defines has no next definition.
    if is_own(f) {
        return core::ptr::null_mut();
    }
    // A non-PIE program's canonical PLT entry (taken for the address of a
    // function) jumps through its GOT entry, which the attach rewrites: the
    // definition is in the first object after the program that has one.
    if is_canonical_plt(f) {
        return definition_after_program(name);
    }
    f
}

/// Whether `f` is the program's canonical PLT entry for a function defined
/// elsewhere (its symbol there is undefined, with the entry's address).
fn is_canonical_plt(f: *mut c_void) -> bool {
    let Some((info, sym)) = symbol_at(f) else {
        return false;
    };
    let program = info.dli_fname.is_null()
        // SAFETY: the loader's NUL-terminated name of a loaded object.
        || unsafe { *info.dli_fname } == 0
        || object_of(f.cast()) == object_of(program_marker());
    program
        && sym.st_shndx == 0 // SHN_UNDEF
        && info.dli_saddr == f
}

/// An address inside the main program (its first loaded segment).
fn program_marker() -> *mut () {
    let mut at = 0usize;
    each_object(|o| {
        if at == 0 && o.name.is_empty() {
            at = o
                .headers
                .iter()
                .find(|h| h.p_type == libc::PT_LOAD)
                .map_or(0, |h| o.base.wrapping_add(h.p_vaddr) as usize);
        }
    });
    at as *mut ()
}

/// The first definition of `name` in the objects after the program, in
/// load order (the program's lookup order for the objects it started with).
fn definition_after_program(name: &CStr) -> *mut c_void {
    let mut names: Vec<std::ffi::CString> = Vec::new();
    each_object(|o| {
        if !o.name.is_empty() {
            names.push(o.name.to_owned());
        }
    });
    for object in names {
        // SAFETY: the loader's name of a loaded object; RTLD_NOLOAD only
        // returns a handle to it, closed below.
        let handle = unsafe { libc::dlopen(object.as_ptr(), libc::RTLD_NOLOAD | libc::RTLD_LAZY) };
        if handle.is_null() {
            continue;
        }
        // SAFETY: an open handle and a NUL-terminated name.
        let f = unsafe { libc::dlsym(handle, name.as_ptr()) };
        // SAFETY: the handle just opened, closed once.
        unsafe { libc::dlclose(handle) };
        if f.is_null() || is_own(f) || is_canonical_plt(f) {
            continue;
        }
        // The object's own definition, not one of its dependencies'.
        let defined_here = info_of(f.cast()).is_some_and(|i| {
            !i.dli_fname.is_null()
                // SAFETY: the loader's NUL-terminated name of a loaded object.
                && unsafe { CStr::from_ptr(i.dli_fname) } == object.as_c_str()
        });
        if defined_here {
            return f;
        }
    }
    core::ptr::null_mut()
}

/// Whether `f` is inside this library's object.
pub fn is_own(f: *mut c_void) -> bool {
    let own = object_of(is_own as *mut ());
    own != 0 && object_of(f.cast()) == own
}

/// Where the next definition of one interposed function lives: its name
/// and its address, looked up at first use (`address`) or stored (the
/// allocator's start at a trampoline, `next::resolve` fills them; a GOT
/// rewriter may store what an entry held). The untyped view, for tables.
/// `repr(C)`: assembly jumps through `addr` (`SLOT_ADDRESS_AT`).
#[repr(C)]
pub struct NextSymbol {
    name: &'static CStr,
    addr: AtomicPtr<c_void>,
}

impl NextSymbol {
    /// Looked up at first use.
    pub const fn new(name: &'static CStr) -> NextSymbol {
        NextSymbol::starting_at(name, core::ptr::null_mut())
    }

    /// Starts at `first` (a trampoline that fills it, or a stand-in).
    pub const fn starting_at(name: &'static CStr, first: *mut c_void) -> NextSymbol {
        NextSymbol {
            name,
            addr: AtomicPtr::new(first),
        }
    }

    pub fn name(&self) -> &'static CStr {
        self.name
    }

    /// The next definition, looked up once (the program called a function
    /// that does not exist if nothing defines it: said, then abort).
    #[inline(always)]
    pub fn address(&self) -> *mut c_void {
        let f = self.addr.load(Ordering::Acquire);
        if f.is_null() {
            return self.look_up();
        }
        f
    }

    /// The next definition looked up now, and stored (whatever the slot
    /// held: a trampoline it started at, for one).
    #[cold]
    pub fn look_up(&self) -> *mut c_void {
        let f = lookup(Scope::Next, self.name);
        if f.is_null() {
            missing(self.name);
        }
        self.addr.store(f, Ordering::Release);
        f
    }

    /// What the slot holds now (null before a look-up).
    #[inline(always)]
    pub fn load(&self) -> *mut c_void {
        self.addr.load(Ordering::Relaxed)
    }

    /// `load`, as a plain read: the compiler folds it into a call or tail
    /// call through memory (`jmp qword ptr [rip + slot]`), an atomic load
    /// never.
    ///
    /// # Safety
    /// No store to the slot races with the read: every store happened
    /// before this thread could call (for the allocator's, `next::resolve`
    /// at the loader's first allocation or the library's initialisation,
    /// before the program starts a thread, or `next::divert` in a one-thread
    /// copy; for one looked up at first use, this thread has seen it set).
    #[inline(always)]
    pub unsafe fn read(&self) -> *mut c_void {
        // SAFETY: no racing store (the contract).
        unsafe { *self.addr.as_ptr() }
    }

    /// Points the slot at `f`, a function of the symbol's C type.
    pub fn store(&self, f: *mut c_void) {
        self.addr.store(f, Ordering::Release);
    }
}

/// The next definition of one interposed function, of C type `F` (an
/// `unsafe extern "C" fn`): the one idiom for calling it, `slot.get()(...)`.
#[repr(C)]
pub struct Next<F> {
    /// First: a `Next` starts with its `NextSymbol` (`SLOT_ADDRESS_AT`).
    symbol: NextSymbol,
    of_type: core::marker::PhantomData<F>,
}

/// Where in a slot (`Next`, of any type) its function's address lies, for
/// a jump through it in assembly (`jmp qword ptr [rip + slot + AT]`): the
/// same plain read as `Next::loaded`, under its contract.
pub const SLOT_ADDRESS_AT: usize =
    core::mem::offset_of!(Next<()>, symbol) + core::mem::offset_of!(NextSymbol, addr);

impl<F: Copy> Next<F> {
    /// Looked up at first use.
    ///
    /// # Safety
    /// `F` is the C type of the function `name`.
    pub const unsafe fn new(name: &'static CStr) -> Next<F> {
        Next {
            symbol: NextSymbol::new(name),
            of_type: core::marker::PhantomData,
        }
    }

    /// Starts at `first`, a function of type `F`.
    ///
    /// # Safety
    /// `F` is the C type of the function `name`, and `first`'s type.
    pub const unsafe fn starting_at(name: &'static CStr, first: *mut c_void) -> Next<F> {
        Next {
            symbol: NextSymbol::starting_at(name, first),
            of_type: core::marker::PhantomData,
        }
    }

    /// The next definition, looked up at first use.
    #[inline(always)]
    pub fn get(&self) -> F {
        // SAFETY: the slot holds a function of type `F` (`new`'s contract),
        // never null once `address` returns.
        unsafe { function(self.symbol.address()) }
    }

    /// The function the slot holds, without a look-up: one plain load (the
    /// allocator's, on the hot path), which a one-argument tail call folds
    /// into its jump.
    ///
    /// # Safety
    /// The slot is not null: it started at a function (`starting_at`), or
    /// `get` ran; and no store to it races with the read (`NextSymbol::read`).
    #[inline(always)]
    pub unsafe fn loaded(&self) -> F {
        // SAFETY: a function of type `F`, not null, no racing store (the
        // contract).
        unsafe { function(self.symbol.read()) }
    }

    /// The untyped view: name and slot.
    pub const fn symbol(&self) -> &NextSymbol {
        &self.symbol
    }

    /// The untyped view, for a table that pairs the slot with `hook`, the
    /// library's definition: a hook of another type fails the build.
    pub const fn hooked_by(&self, hook: F) -> &NextSymbol {
        let _ = hook;
        &self.symbol
    }
}

/// A function pointer of type `F` from its address: the one place the
/// library turns an address into something it calls.
///
/// # Safety
/// `f` is the address of a function of type `F` (an `extern "C" fn` or
/// `fn` pointer), not null.
#[inline(always)]
pub unsafe fn function<F: Copy>(f: *mut c_void) -> F {
    const { assert!(core::mem::size_of::<F>() == core::mem::size_of::<*mut c_void>()) };
    // SAFETY: same size (checked above); a function's address (the contract).
    unsafe { core::mem::transmute_copy(&f) }
}

/// A symbol name from a `concat!(..., "\0")` literal, for a `const`: a name
/// with a NUL elsewhere fails the build, not a call.
pub const fn c_name(bytes: &[u8]) -> &CStr {
    match CStr::from_bytes_with_nul(bytes) {
        Ok(name) => name,
        Err(_) => panic!("a symbol name must end in its only NUL"),
    }
}

#[cold]
#[inline(never)]
pub fn missing(name: &CStr) -> ! {
    crate::sys::log::log!("no next definition of {name:?}; cannot continue");
    // The program called a function that does not exist.
    crate::sys::process::abort()
}

/// Load address of the object that defines `f` (0 if unknown).
pub fn object_of(f: *mut ()) -> usize {
    // The same start as dladdr's (the object's `l_map_start`), without its
    // search of the symbol tables (90,000 instructions in libc's).
    if let Some(o) = find_object(f as usize) {
        return o.start;
    }
    info_of(f).map_or(0, |i| i.dli_fbase as usize)
}

pub fn info_of(f: *mut ()) -> Option<libc::Dl_info> {
    // SAFETY: dladdr fills `info` and only reads the address.
    unsafe {
        let mut info: libc::Dl_info = core::mem::zeroed();
        (libc::dladdr(f.cast(), &mut info) != 0).then_some(info)
    }
}

/// This library's own object, as the loader describes it.
fn own_info() -> Option<libc::Dl_info> {
    info_of(own_info as *mut ()).filter(|i| !i.dli_fname.is_null())
}

/// This library's file name, as the loader mapped it.
pub fn own_file() -> Option<&'static CStr> {
    // SAFETY: the loader's NUL-terminated name of this library's object,
    // kept while the library is loaded, i.e. while this code runs.
    own_info().map(|i| unsafe { CStr::from_ptr(i.dli_fname) })
}

/// This library opened again by its file name (`RTLD_NOLOAD`: it is loaded),
/// for look-ups that search only it and its dependencies, never the program
/// (so never a program's canonical PLT entry). Closed when dropped.
pub struct Own {
    handle: *mut c_void,
    base: usize,
}

impl Own {
    pub fn open() -> Option<Own> {
        let info = own_info()?;
        // SAFETY: the loader's name of a loaded object; RTLD_NOLOAD only
        // returns a handle to it (one more reference, dropped in `drop`).
        let handle = unsafe { libc::dlopen(info.dli_fname, libc::RTLD_NOLOAD | libc::RTLD_LAZY) };
        (!handle.is_null()).then_some(Own {
            handle,
            base: info.dli_fbase as usize,
        })
    }

    /// The library's own definition of `name`: none for a dependency's.
    pub fn definition(&self, name: &CStr) -> Option<usize> {
        // SAFETY: an open handle and a NUL-terminated name.
        let f = unsafe { libc::dlsym(self.handle, name.as_ptr()) };
        (!f.is_null() && object_of(f.cast()) == self.base).then_some(f as usize)
    }
}

impl Drop for Own {
    fn drop(&mut self) {
        // SAFETY: the handle `open` got, closed once.
        unsafe { libc::dlclose(self.handle) };
    }
}

/// The load bias (`l_addr`) of the object behind `handle`.
///
/// # Safety
/// `handle` is a handle `dlopen` returned, not yet closed.
pub unsafe fn load_bias(handle: *mut c_void) -> Option<u64> {
    let mut map: *mut c_void = core::ptr::null_mut();
    // SAFETY: an open handle (the contract); RTLD_DI_LINKMAP stores one
    // pointer into `map`.
    let rc = unsafe {
        libc::dlinfo(
            handle,
            libc::RTLD_DI_LINKMAP,
            (&mut map as *mut *mut c_void).cast(),
        )
    };
    if rc != 0 || map.is_null() {
        return None;
    }
    // SAFETY: the loader's struct link_map of an open object, which starts
    // with l_addr (the load bias).
    Some(unsafe { *(map as *const u64) })
}

/// The object, nearest symbol and that symbol's ELF entry at `addr`
/// (dladdr1's RTLD_DL_SYMENT): the entry tells a definition from a non-PIE
/// program's canonical PLT entry, and gives the function's size.
pub fn symbol_at(addr: *const c_void) -> Option<(libc::Dl_info, &'static libc::Elf64_Sym)> {
    extern "C" {
        fn dladdr1(
            addr: *const c_void,
            info: *mut libc::Dl_info,
            extra: *mut *mut c_void,
            flags: c_int,
        ) -> c_int;
    }
    const RTLD_DL_SYMENT: c_int = 1;
    // SAFETY: dladdr1 fills `info` and points `sym` at an entry of the
    // object's symbol table, which stays while the object is loaded (the
    // callers look at objects that are not unloaded: libstdc++, the program).
    unsafe {
        let mut info: libc::Dl_info = core::mem::zeroed();
        let mut sym: *mut c_void = core::ptr::null_mut();
        if addr.is_null() || dladdr1(addr, &mut info, &mut sym, RTLD_DL_SYMENT) == 0 {
            return None;
        }
        Some((info, (sym as *const libc::Elf64_Sym).as_ref()?))
    }
}

/// glibc's `struct dl_find_object` (2.35).
#[repr(C)]
struct DlFindObject {
    flags: u64,
    map_start: usize,
    map_end: usize,
    link_map: usize,
    eh_frame: usize,
    reserved: [u64; 7],
}

type FindObjectFn = unsafe extern "C" fn(usize, *mut DlFindObject) -> c_int;

/// `_dl_find_object` (glibc >= 2.35), or 0: looked up once at load
/// (`init_find_object`), since `dlsym` may take the loader's lock.
static FIND_OBJECT: AtomicUsize = AtomicUsize::new(0);

/// A loaded object: where it is mapped and its `.eh_frame_hdr`.
pub struct FoundObject {
    pub start: usize,
    pub end: usize,
    pub eh_frame_hdr: usize,
}

/// Looks up `_dl_find_object` once, when the library loads.
pub fn init_find_object() {
    let f = lookup(Scope::Global, c"_dl_find_object");
    FIND_OBJECT.store(f as usize, Ordering::Release);
}

/// Whether `find_object` can answer (glibc >= 2.35).
pub fn can_find_objects() -> bool {
    FIND_OBJECT.load(Ordering::Acquire) != 0
}

/// The loaded object that maps `at`: lock-free and async-signal-safe.
pub fn find_object(at: usize) -> Option<FoundObject> {
    let find = FIND_OBJECT.load(Ordering::Acquire);
    if find == 0 {
        return None;
    }
    // SAFETY: the only non-zero value stored is `_dl_find_object`'s address,
    // which has this type.
    let find: FindObjectFn = unsafe { function(find as *mut c_void) };
    let mut object = DlFindObject {
        flags: 0,
        map_start: 0,
        map_end: 0,
        link_map: 0,
        eh_frame: 0,
        reserved: [0; 7],
    };
    // SAFETY: _dl_find_object only fills the struct it is given.
    (unsafe { find(at, &mut object) } == 0).then_some(FoundObject {
        start: object.map_start,
        end: object.map_end,
        eh_frame_hdr: object.eh_frame,
    })
}

/// A loaded object, as the loader describes it to `dl_iterate_phdr`.
pub struct LoadedObject<'a> {
    /// Load bias: segment addresses are `base + p_vaddr`.
    pub base: u64,
    /// The loader's name: empty for the main program.
    pub name: &'a CStr,
    pub headers: &'a [libc::Elf64_Phdr],
}

impl LoadedObject<'_> {
    /// (start, end, file offset) of each executable segment. Headers of
    /// objects not ours: wrapping sums, never a panic.
    pub fn code_segments(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        self.headers
            .iter()
            .filter(|h| h.p_type == libc::PT_LOAD && h.p_flags & libc::PF_X != 0)
            .map(|h| {
                let lo = self.base.wrapping_add(h.p_vaddr);
                (lo, lo.wrapping_add(h.p_memsz), h.p_offset)
            })
    }
}

/// Calls `f` for every loaded object (`dl_iterate_phdr`, which holds the
/// loader's lock meanwhile: not for the sampled path).
pub fn each_object(mut f: impl FnMut(&LoadedObject)) {
    unsafe extern "C" fn each(info: *mut libc::dl_phdr_info, _: usize, data: *mut c_void) -> c_int {
        // SAFETY: `data` is the closure `each_object` passes, not otherwise
        // borrowed while dl_iterate_phdr runs.
        let f = unsafe { &mut *(data as *mut &mut dyn FnMut(&LoadedObject)) };
        // SAFETY: the loader passes a valid info, for the callback's run.
        let info = unsafe { &*info };
        let headers = if info.dlpi_phdr.is_null() {
            &[][..]
        } else {
            // SAFETY: the loader's program headers, `dlpi_phnum` of them.
            unsafe { core::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) }
        };
        let name = if info.dlpi_name.is_null() {
            c""
        } else {
            // SAFETY: the loader's NUL-terminated name.
            unsafe { CStr::from_ptr(info.dlpi_name) }
        };
        f(&LoadedObject {
            base: info.dlpi_addr,
            name,
            headers,
        });
        0
    }
    let mut f: &mut dyn FnMut(&LoadedObject) = &mut f;
    // SAFETY: `each` only calls `f`, which outlives the call.
    unsafe {
        libc::dl_iterate_phdr(
            Some(each),
            (&mut f as *mut &mut dyn FnMut(&LoadedObject)).cast(),
        )
    };
}
