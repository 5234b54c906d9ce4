//! Puts the memory map where the linker (running cortex-m-rt's `link.x`) can find it. The map is
//! core/cortex-m-test's (QEMU mps2-an386), shared so that every image is linked the same way.

use std::env;
use std::fs;
use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR for build scripts"));
    fs::write(
        out.join("memory.x"),
        include_bytes!("../../core/cortex-m-test/memory.x"),
    )
    .expect("write memory.x to OUT_DIR");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=../../core/cortex-m-test/memory.x");
    println!("cargo:rerun-if-changed=build.rs");
}
