//! `hook::entry_points` is the one list of the functions the library
//! interposes, from which a GOT rewriter works: it must name every function
//! the library exports (but its own C API, `leakprobe_*`) and nothing else.
//! The build checks each entry's types; this checks the list is whole.

mod common;
use common::*;
use std::collections::BTreeSet;
use std::process::Command;

/// The functions the built library defines and exports.
fn exported_functions() -> BTreeSet<String> {
    let out = run(Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(library()));
    out.lines()
        .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            [_, "T" | "W" | "i", name] => Some(name.to_string()),
            _ => None,
        })
        .collect()
}

/// The `module::function` entries of the table's source.
fn listed() -> BTreeSet<String> {
    let src = std::fs::read_to_string(root().join("src/hook/entry_points.rs")).unwrap();
    let table = &src[src.find("\nentry_points! {").expect("the table")..];
    table
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("//"))
        .filter_map(|l| l.strip_suffix(','))
        .filter_map(|l| l.split(" =>").next()?.split_once("::"))
        .map(|(_, name)| name.to_string())
        .collect()
}

#[test]
fn the_table_lists_every_exported_function_and_nothing_else() {
    let exported: BTreeSet<String> = exported_functions()
        .into_iter()
        // The C API, and the JVMTI agent's entry (attach into a JVM).
        .filter(|name| !name.starts_with("leakprobe_") && name != "Agent_OnAttach")
        .collect();
    let listed = listed();
    assert!(
        exported.contains("malloc") && listed.contains("malloc"),
        "nothing read: exported {exported:?}, listed {listed:?}"
    );
    let missing: Vec<_> = exported.difference(&listed).collect();
    let extra: Vec<_> = listed.difference(&exported).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "exported but not in hook::entry_points: {missing:?}; listed but not exported: {extra:?}"
    );
}
