//! Replays the checked-in fuzz corpus (`fuzz/corpus/<target>/`) through the same entry
//! points the cargo-fuzz targets call, on stable Rust, so every curated input and every
//! regression input stays checked by an ordinary `cargo test`.

use std::path::Path;

fn replay(target: &str, entry: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut inputs = 0;
    for file in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = file.unwrap().path();
        if path.is_file() {
            entry(&std::fs::read(&path).unwrap());
            inputs += 1;
        }
    }
    assert!(inputs > 0, "no corpus inputs in {}", dir.display());
}

#[test]
fn frame_decoder_corpus() {
    replay("frame_decoder", txsock_core::fuzzing::frame_decoder);
}

#[test]
fn messages_corpus() {
    replay("messages", txsock_core::fuzzing::messages);
}

#[test]
fn server_session_corpus() {
    replay("server_session", txsock_core::fuzzing::server_session);
}

#[test]
fn client_session_corpus() {
    replay("client_session", txsock_core::fuzzing::client_session);
}
