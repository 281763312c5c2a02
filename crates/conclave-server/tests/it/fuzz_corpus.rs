//! Replays the saved fuzz corpus (`fuzz/corpus/multipart_first_part/`) through the body the
//! `cargo fuzz` target runs, so `cargo test` covers it without nightly.

use std::path::Path;

use conclave_server::fuzzing;

#[test]
fn multipart_first_part_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/multipart_first_part");
    let (mut accepted, mut rejected) = (0, 0);
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        match std::panic::catch_unwind(|| fuzzing::multipart_first_part(&data)) {
            Ok(true) => accepted += 1,
            Ok(false) => rejected += 1,
            Err(_) => panic!("the fuzz body panicked on {}", path.display()),
        }
    }
    assert!(accepted >= 5 && rejected >= 3, "{accepted} accepted, {rejected} rejected");
}
