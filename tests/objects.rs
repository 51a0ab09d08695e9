//! Each loaded object's build-id is recorded under its path in the dump's
//! memory map, so a reader can check the file it symbolizes against it; the
//! name the loader used, when it differs, is kept beside it. The program is
//! recorded as its file and as the name it was started as.

mod common;
use common::*;
use std::collections::HashMap;
use std::process::Command;

/// The build-id note of an ELF file, as readelf prints it.
fn file_build_id(path: &str) -> String {
    let out = run(Command::new("readelf").arg("-n").arg(path));
    out.lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .unwrap_or_else(|| panic!("no build-id in {path}"))
        .to_string()
}

#[test]
fn objects_are_named_as_mapped_and_the_program_as_started() {
    let exe = harness("versioned_user");
    let dir = scratch_dir("objects");
    // Started through a symlink, as redis-server is (-> redis-check-rdb).
    let link = dir.with_extension("started-as");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&exe, &link).unwrap();
    let p = Probe::start(&link, &[], &dir, &[("LEAKPROBE_SAMPLE", "1")]);
    let (dump, _) = p.dump_at_ready();
    assert_eq!(dump.meta["argv0"], link.display().to_string());
    assert_eq!(
        dump.meta["program"],
        std::fs::canonicalize(&exe).unwrap().display().to_string()
    );
    let text = std::fs::read_to_string(&dump.path).unwrap();
    let facts = |key: &str| -> Vec<String> {
        let prefix = format!("# leakprobe {key}: ");
        text.lines()
            .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
            .collect()
    };
    let build_ids: HashMap<String, String> = facts("build_id")
        .iter()
        .map(|v| {
            let (id, path) = v.split_once(' ').unwrap();
            (path.to_string(), id.to_string())
        })
        .collect();
    let loaded_as: HashMap<String, String> = facts("loaded_as")
        .iter()
        .map(|v| {
            let (path, name) = v.split_once('\t').unwrap();
            (path.to_string(), name.to_string())
        })
        .collect();

    // Every object is named as in the map, and its build-id is its file's.
    for (path, id) in &build_ids {
        assert!(
            dump.maps.iter().any(|m| &m.path == path),
            "build_id for {path}, which is not in the memory map"
        );
        if path.starts_with('/') {
            assert_eq!(id, &file_build_id(path), "build-id of {path}");
        }
    }
    for path in loaded_as.keys() {
        assert!(build_ids.contains_key(path), "loaded_as for {path} alone");
    }

    // The versioned library: mapped as its file, loaded as its soname link.
    let harness_dir = std::fs::canonicalize(exe.parent().unwrap()).unwrap();
    let real = harness_dir
        .join("libversioned.so.1.0")
        .display()
        .to_string();
    assert!(build_ids.contains_key(&real), "no build_id for {real}");
    let loader_name = loaded_as
        .get(&real)
        .unwrap_or_else(|| panic!("no loaded_as for {real}"));
    assert!(
        loader_name.ends_with("/libversioned.so.1"),
        "loaded as {loader_name}"
    );

    // libc: Debian's loader finds it as /lib/..., mapped from /usr/lib/...
    let libc = dump
        .maps
        .iter()
        .map(|m| m.path.as_str())
        .find(|p| p.ends_with("/libc.so.6"))
        .expect("libc in the map");
    assert!(build_ids.contains_key(libc), "no build_id for {libc}");
    if let Some(name) = loaded_as.get(libc) {
        assert_ne!(name, libc);
        assert!(name.ends_with("/libc.so.6"), "libc loaded as {name}");
    }
}
