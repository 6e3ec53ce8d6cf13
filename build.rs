//! Builds the XDP program (bpf/steer.c) with clang when it is installed. Without clang
//! the crate still builds (the socket backend works everywhere); the XDP backend then
//! reports at run time that the program is missing and which package provides it.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=bpf/steer.c");
    println!("cargo::rerun-if-env-changed=SEKISHO_CLANG");
    println!("cargo::rustc-check-cfg=cfg(sekisho_bpf)");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let obj = out.join("steer.o");
    let clang = std::env::var("SEKISHO_CLANG").unwrap_or_else(|_| "clang".into());
    let arch_include = format!("/usr/include/{}-linux-gnu", std::env::consts::ARCH);
    let result = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I{arch_include}"))
        .args(["-c", "bpf/steer.c", "-o"])
        .arg(&obj)
        .output();
    match result {
        Ok(o) if o.status.success() => println!("cargo::rustc-cfg=sekisho_bpf"),
        Ok(o) => {
            // A broken program is a bug, not a missing package: fail loudly.
            panic!(
                "clang failed to build bpf/steer.c:\n{}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        Err(_) => {
            println!(
                "cargo::warning=clang not found: the XDP program is not built and io = \"xdp\" \
                 will be unavailable (apt-get install clang linux-libc-dev)"
            );
            std::fs::write(&obj, b"").expect("write placeholder");
        }
    }
}
