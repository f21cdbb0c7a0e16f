//! Layer tarballs (plain, gzip or zstd by the first byte) unpacked into a fresh root.
//! The oracle beyond "no panic": nothing appears beside the root.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("a/b/root");
    std::fs::create_dir_all(&root).expect("root");
    let _ = image_service::fuzzing::layer(&root, data);
    for (dir, only) in [(tmp.path().to_path_buf(), "a"), (tmp.path().join("a"), "b"), (tmp.path().join("a/b"), "root")] {
        let names: Vec<_> = std::fs::read_dir(&dir)
            .expect("read")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(only)], "written outside the root in {}", dir.display());
    }
});
