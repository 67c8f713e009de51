//! Builds the co-simulation model of the FPGA kernel: Verilator turns hw/rtl/samos_mine.v
//! into C++, which is compiled with a small C shim (src/fpga/sim.cpp) and linked into the
//! crate. Without Verilator (or without the crate's `fpga-sim` feature) the crate still builds,
//! the `fpga-sim` device is left out and asking for it fails with a message that says how to
//! install Verilator.

use std::path::{Path, PathBuf};
use std::process::Command;

const RTL: &str = "../hw/rtl/samos_mine.v";
const SHIM: &str = "src/fpga/sim.cpp";
/// Card memory of the simulated board: 2^17 words per memory (samples, window tables, profile).
const SIM_MEM_AW: u32 = 17;

fn main() {
    println!("cargo:rerun-if-changed={RTL}");
    println!("cargo:rerun-if-changed={SHIM}");
    println!("cargo:rerun-if-env-changed=SAMOS_NO_VERILATOR");
    println!("cargo:rustc-check-cfg=cfg(samos_fpga_sim)");
    println!("cargo:rustc-env=SAMOS_SIM_MEM_AW={SIM_MEM_AW}");
    if std::env::var_os("SAMOS_NO_VERILATOR").is_some()
        || std::env::var_os("CARGO_FEATURE_FPGA_SIM").is_none()
    {
        return;
    }
    let root = match Command::new("verilator")
        .arg("--getenv")
        .arg("VERILATOR_ROOT")
        .output()
    {
        Ok(out) if out.status.success() => {
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string())
        }
        _ => {
            println!(
                "cargo:warning=verilator not found: the fpga-sim backend is left out \
                 (bash scripts/setup.sh installs verilator)"
            );
            // Where Debian installs it: the next build after installing it builds the model.
            println!("cargo:rerun-if-changed=/usr/bin/verilator");
            return;
        }
    };
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let mdir = out.join("verilated");
    let _ = std::fs::remove_dir_all(&mdir);
    let status = Command::new("verilator")
        .args([
            "--cc",
            "-O3",
            "--x-assign",
            "fast",
            "--x-initial",
            "fast",
            "--noassert",
        ])
        .args(["--top-module", "samos_mine"])
        .arg(format!("-GMEM_AW={SIM_MEM_AW}"))
        .arg("--Mdir")
        .arg(&mdir)
        .arg(RTL)
        .status()
        .expect("run verilator");
    assert!(status.success(), "verilator failed on {RTL}");

    let include = root.join("include");
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        // The model runs millions of cycles per join: optimise it even in debug builds.
        .opt_level(2)
        .debug(false)
        .warnings(false)
        .include(&mdir)
        .include(&include)
        .include(include.join("vltstd"))
        .define("VM_COVERAGE", "0")
        .define("VM_SC", "0")
        .define("VM_TRACE", "0")
        .define("VM_TRACE_FST", "0")
        .define("VM_TRACE_VCD", "0")
        .file(SHIM)
        .file(include.join("verilated.cpp"))
        .file(include.join("verilated_threads.cpp"));
    for file in generated_sources(&mdir) {
        build.file(file);
    }
    build.compile("samos_fpga_sim");
    println!("cargo:rustc-link-lib=pthread");
    println!("cargo:rustc-cfg=samos_fpga_sim");
}

/// The C++ files Verilator wrote for the model.
fn generated_sources(mdir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(mdir)
        .expect("read the verilator output")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cpp"))
        .collect();
    files.sort();
    files
}
