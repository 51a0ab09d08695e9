//! C++ operator new and delete in all forms (plain, array, nothrow, aligned,
//! sized): exact counts with LEAKPROBE_SAMPLE=1, the operator frame dropped
//! by both jeprof and pprof, and C++ semantics intact (bad_alloc propagates,
//! new_handler runs, nothrow returns null); with libstdc++'s operators and
//! with those of jemalloc and tcmalloc, which reach the library's entry
//! points for some forms and not for others.

mod common;
use common::*;
use std::time::Duration;

const TRUTH: &[Truth] = &[
    ("site_new", 40, 40 * 800, 40, 40 * 800),
    ("site_new_scalar", 30, 30, 30, 30),
    ("site_new_nothrow", 20, 20 * 333, 20, 20 * 333),
    ("site_new_aligned", 10, 10 * 192, 10, 10 * 192),
    ("site_new_aligned_array", 10, 10 * 576, 10, 10 * 576),
    ("site_deleted", 0, 0, 150, 50 * (192 + 80 + 5)),
];

#[test]
fn every_operator_new_and_delete_is_exact() {
    every_operator_is_exact(None);
}

#[test]
fn every_operator_of_jemalloc_is_exact() {
    every_operator_is_exact(Some("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"));
}

#[test]
fn every_operator_of_tcmalloc_is_exact() {
    every_operator_is_exact(Some("/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4"));
}

/// The Debian package of an allocator the tests preload.
fn package_of(allocator: &str) -> &'static str {
    if allocator.contains("jemalloc") {
        "libjemalloc2"
    } else {
        "libgoogle-perftools4"
    }
}

/// The harness with the library and, after it, `allocator` if given.
fn every_operator_is_exact(allocator: Option<&str>) {
    let preload = match allocator {
        Some(a) => format!("{} {}", library().display(), installed(a, package_of(a))),
        None => library().display().to_string(),
    };
    let exe = harness("cxx_new");
    let name = allocator.map_or("libstdc++", |a| a.rsplit('/').next().unwrap_or(a));
    let dir = scratch_dir(&format!("cxx-{name}"));
    let env = [("LEAKPROBE_SAMPLE", "1"), ("LD_PRELOAD", &preload)];
    let mut p = Probe::start(&exe, &[], &dir, &env);
    let semantics = p.expect_line("BAD_ALLOC", Duration::from_secs(30));
    assert_eq!(semantics, "BAD_ALLOC ok HANDLER 1 NOTHROW null");
    let (dump, _stderr) = p.dump_at_ready();

    assert_sites_exact(&dump, &exe, "cxx_new.cc", TRUTH);
    assert_tools_show(&exe, &dump, "cxx_new.cc", TRUTH);
}

/// The library's functions that count an allocation, and those that check a
/// block on its way out (the filter load): entry points, and the `counted`
/// operators (names starting so) used where the allocator's own do not reach
/// them.
const COUNTING: (&[&str], &str) = (
    &[
        "malloc",
        "calloc",
        "realloc",
        "reallocarray",
        "aligned_alloc",
        "memalign",
        "posix_memalign",
        "valloc",
        "pvalloc",
        "mallocx",
        "rallocx",
    ],
    "leakprobe::hook::cxx::counted::_Zn",
);
const CHECKING: (&[&str], &str) = (
    &[
        "free",
        "realloc",
        "reallocarray",
        "dallocx",
        "sdallocx",
        "rallocx",
    ],
    "leakprobe::hook::cxx::counted::_Zd",
);

/// Calls into the library's counting and checking functions on the main
/// thread of `cxx_checks n`, under callgrind (tail jumps are calls there).
fn counts_and_checks(preload: &str, n: u32) -> (u64, u64) {
    let exe = harness("cxx_checks");
    let dir = scratch_dir(&format!("cxx-checks-{n}"));
    let out = dir.join("callgrind.out");
    let status = std::process::Command::new("valgrind")
        .args(["--tool=callgrind", "--separate-threads=yes"])
        .args(["--compress-strings=no", "--compress-pos=no"])
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(&exe)
        .arg(n.to_string())
        .env("LD_PRELOAD", preload)
        .env("LEAKPROBE_DIR", &dir)
        // Nothing sampled: the library makes no calls of its own.
        .env("LEAKPROBE_SAMPLE", "1099511627776")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "valgrind: {status}");
    let text = std::fs::read_to_string(dir.join("callgrind.out-01")).unwrap();
    // Each call arc names its callee (`cfn=`), in the caller's object unless
    // `cob=` says otherwise, then `calls=N`.
    let (mut object, mut callee_object, mut callee) = ("", None, "");
    let (mut counts, mut checks) = (0, 0);
    for line in text.lines() {
        if let Some(o) = line.strip_prefix("ob=") {
            object = o;
        } else if let Some(o) = line.strip_prefix("cob=") {
            callee_object = Some(o);
        } else if let Some(f) = line.strip_prefix("cfn=") {
            callee = f;
        } else if let Some(c) = line.strip_prefix("calls=") {
            let calls: u64 = c.split_whitespace().next().unwrap().parse().unwrap();
            if callee_object
                .take()
                .unwrap_or(object)
                .ends_with("libleakprobe.so")
            {
                let is = |(names, counted): (&[&str], &str)| {
                    names.contains(&callee) || callee.starts_with(counted)
                };
                counts += u64::from(is(COUNTING)) * calls;
                checks += u64::from(is(CHECKING)) * calls;
            }
        } else if line.starts_with("fn=") {
            callee_object = None;
        }
    }
    (counts, checks)
}

/// Every form of new counts once, and every form of delete checks once,
/// whichever allocator's operators the library forwards to and however they
/// are built (jemalloc's unsized deletes call `free`, its aligned news
/// `aligned_alloc`; tcmalloc's reach neither; libstdc++'s reach both).
#[test]
fn every_new_counts_once_and_every_delete_checks_once() {
    assert!(
        std::process::Command::new("valgrind")
            .arg("--version")
            .output()
            .is_ok(),
        "valgrind is missing: `make deps` (scripts/install-deps) installs it"
    );
    let lib = library().display().to_string();
    for allocator in [
        None,
        Some("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"),
        Some("/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4"),
    ] {
        let preload = match allocator {
            Some(a) => format!("{lib} {}", installed(a, package_of(a))),
            None => lib.clone(),
        };
        let none = counts_and_checks(&preload, 0);
        let some = counts_and_checks(&preload, 100);
        // 100 pairs in each of the 12 forms of delete.
        assert_eq!(
            (some.0 - none.0, some.1 - none.1),
            (1200, 1200),
            "(counts, checks) added by 1,200 new+delete pairs with {preload}"
        );
    }
}
