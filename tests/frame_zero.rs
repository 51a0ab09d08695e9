//! Frame 0 of every sample lies in the library's own `malloc`, whatever the
//! program's shape: jeprof names frame 0 as it is (it only moves callers back
//! one byte), so an address in a program's `malloc@plt` stub made it name the
//! stub's neighbour (`_init`, `PyFile_SetOpenCodeHook`) for the whole heap.
//! Both tools must put the leaking function at the top.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The function on the first line of `jeprof --text` or `pprof -text`
/// output (five number columns, then the name).
fn top_function(output: &str) -> String {
    output
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 5 && f[1].ends_with('%'))
        .map(|f| f[5..].join(" "))
        .unwrap_or_else(|| panic!("no rows in:\n{output}"))
}

fn tools_top(exe: &Path, dump: &Path) -> (String, String) {
    let jeprof = run(Command::new("jeprof").arg("--text").arg(exe).arg(dump));
    let pprof = run(Command::new("go")
        .args(["tool", "pprof", "-text"])
        .arg(exe)
        .arg(dump));
    (top_function(&jeprof), top_function(&pprof))
}

/// Runs `exe` to its end, every allocation sampled, and returns its exit dump.
fn exit_dump(exe: &Path, name: &str) -> std::path::PathBuf {
    let dir = scratch_dir(name);
    let p = Probe::start(
        exe,
        &[],
        &dir,
        &[("LEAKPROBE_SAMPLE", "1"), ("LEAKPROBE_DUMP_AT_EXIT", "1")],
    );
    let pid = p.pid();
    let (status, stderr) = p.finish(Duration::from_secs(60));
    assert!(status.success(), "{name}: {status}\n{stderr}");
    let dumps = dump_files_of(&dir, pid);
    assert_eq!(dumps.len(), 1, "{name}: dumps {dumps:?}\n{stderr}");
    dumps[0].clone()
}

#[test]
fn both_tools_name_the_leaking_function_in_every_program_shape() {
    // Go 1.19's pprof rebases a non-PIE program's code mapping to 0x400000
    // and then takes its first, read-only segment for it: it names nothing in
    // such a program (binutils' default layout), and shows it as "[name]".
    let pprof_blind = ["shape_nopie_pointer", "shape_nopie_direct"];
    for shape in [
        "shape_nopie_pointer",
        "shape_nopie_direct",
        "shape_nopie_pointer_onesegment",
        "shape_pie_pointer",
        "shape_pie_direct",
        "shape_noplt_direct",
    ] {
        let exe = harness(shape);
        let dump = Dump::read(&exit_dump(&exe, shape));
        let leak = dump
            .rows
            .iter()
            .find(|r| r.live_count == 1000)
            .unwrap_or_else(|| panic!("{shape}: no row of 1000 live blocks"));
        assert_eq!(leak.live_bytes, 1000 * 4096, "{shape}");
        let own = dump.mapping_of(leak.frames[0]).map(|m| m.path.as_str());
        assert!(
            own.is_some_and(|p| p.ends_with("/libleakprobe.so")),
            "{shape}: frame 0 {:#x} is in {own:?}, not in the library",
            leak.frames[0]
        );

        let (jeprof, pprof) = tools_top(&exe, &dump.path);
        assert_eq!(jeprof, "leak_here", "{shape}: jeprof's top function");
        if pprof_blind.contains(&shape) {
            assert!(
                pprof == "leak_here" || pprof == format!("[{shape}]"),
                "{shape}: pprof's top function is {pprof}"
            );
        } else {
            assert_eq!(pprof, "leak_here", "{shape}: pprof's top function");
        }
    }
}

/// Debian's python3.11 is a non-PIE program with a canonical PLT entry for
/// malloc (its allocator table holds malloc's address).
#[test]
fn jeprof_names_a_python_function_in_debians_python() {
    let python = Path::new("/usr/bin/python3.11");
    let header = std::fs::read(python).unwrap_or_default();
    // ELF type 2 (ET_EXEC) at offset 16: not a PIE.
    if header.get(16) != Some(&2) {
        skip(
            "jeprof_names_a_python_function_in_debians_python",
            "no non-PIE /usr/bin/python3.11 (Debian 12's python3)",
        );
        return;
    }
    let dir = scratch_dir("python_frame_zero");
    let code = "import sys\nkeep = [bytearray(4096) for i in range(2000)]\n\
                print('READY', flush=True)\nsys.stdin.read()\n";
    let p = Probe::start(python, &["-c", code], &dir, &[("LEAKPROBE_SAMPLE", "1")]);
    let (dump, _) = p.dump_at_ready();
    let jeprof = run(Command::new("jeprof")
        .arg("--text")
        .arg(python)
        .arg(&dump.path));
    let top = top_function(&jeprof);
    let exported = run(Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(python));
    assert!(
        !["_init", "PyFile_SetOpenCodeHook"].contains(&top.as_str())
            && exported.lines().any(|l| l.ends_with(&format!(" {top}"))),
        "jeprof's top function for python3.11 is {top}:\n{jeprof}"
    );
}
