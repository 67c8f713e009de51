//! Builds the co-simulation models of the FPGA kernel: Verilator turns hw/rtl/samos_mine.v
//! into C++ once per JOIN lane count in [`SIM_LANES`], and the models are compiled with a
//! small C shim (src/fpga/sim.cpp) and linked into the crate. Without Verilator (or without
//! the crate's `fpga-sim` feature) the crate still builds, the `fpga-sim` device is left out
//! and asking for it fails with a message that says how to install Verilator.

use std::path::{Path, PathBuf};
use std::process::Command;

const RTL: &str = "../hw/rtl/samos_mine.v";
const SHIM: &str = "src/fpga/sim.cpp";
/// Card memory of the simulated board: 2^17 words per memory (samples, window tables, profile).
const SIM_MEM_AW: u32 = 17;
/// The lane counts modelled: one lane, four (what an LFE5U-45F holds) and nine, the most an
/// ECP5 holds (the LFE5U-85F's 156 18×18 multipliers; hw/synth/report.md). The last is
/// `fpga-sim`'s default.
const SIM_LANES: [u32; 3] = [1, 4, 9];

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
    let mut models = String::new();
    let mut list = String::from("#define SAMOS_SIM_MODELS(X)");
    let mut mdirs = Vec::new();
    for lanes in SIM_LANES {
        let class = format!("Vsamos_mine_l{lanes}");
        let mdir = out.join(format!("verilated-{lanes}"));
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
            .args(["--top-module", "samos_mine", "--prefix", &class])
            .arg(format!("-GMEM_AW={SIM_MEM_AW}"))
            .arg(format!("-GLANES={lanes}"))
            .arg("--Mdir")
            .arg(&mdir)
            .arg(RTL)
            .status()
            .expect("run verilator");
        assert!(status.success(), "verilator failed on {RTL}");
        models.push_str(&format!("#include \"{class}.h\"\n"));
        list.push_str(&format!(" X({lanes}, {class})"));
        mdirs.push(mdir);
    }
    std::fs::write(out.join("sim_models.h"), format!("{models}{list}\n"))
        .expect("write sim_models.h");

    let include = root.join("include");
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        // The model runs millions of cycles per join: optimise it even in debug builds.
        .opt_level(2)
        .debug(false)
        .warnings(false)
        .include(&out)
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
    for mdir in &mdirs {
        build.include(mdir);
        for file in generated_sources(mdir) {
            build.file(file);
        }
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
