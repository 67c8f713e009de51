//! How the driver reaches a card: registers, the two streams and completion. Two
//! implementations: the Verilator model of the RTL (`SimDevice`, co-simulation) and XDMA-style
//! Linux character devices for real boards (`XdmaDevice`).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::regs;

/// Why the card could not be reached or did not answer.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{0} did not complete in time")]
    Timeout(&'static str),
    #[error("{0}")]
    Unavailable(String),
}

/// One card: an AXI4-Lite register window, a host-to-card and a card-to-host AXI4-Stream, and
/// a completion signal.
pub trait Device: Send {
    /// What the card is, e.g. the device-file prefix or "Verilator model".
    fn describe(&self) -> String;

    fn read_reg(&mut self, offset: u32) -> Result<u32, DeviceError>;

    fn write_reg(&mut self, offset: u32, value: u32) -> Result<(), DeviceError>;

    /// Sends `input` to the card while receiving `output_words` words from it (both streams
    /// run at once: the card may need its results taken before it accepts more).
    fn stream(&mut self, input: &[u32], output_words: usize) -> Result<Vec<u32>, DeviceError>;

    /// Waits for the running operation to raise DONE. `cycles` is what the operation should
    /// take at one word or one pair per clock, so an implementation can bound the wait.
    fn wait_done(&mut self, cycles: u64) -> Result<(), DeviceError>;
}

/// A card behind Xilinx's XDMA driver (or one with the same interface): the kernel's registers
/// in the user BAR (`{prefix}_user`, read and written with pread/pwrite at the register offset),
/// the host-to-card stream `{prefix}_h2c_0` and the card-to-host stream `{prefix}_c2h_0`
/// (AXI4-Stream mode: one write is one packet, TLAST on its last beat). Completion is polled
/// in STATUS; the interrupt line reaches user space as `{prefix}_events_0` where the bitstream
/// wires it to user interrupt 0, which this driver does not need.
pub struct XdmaDevice {
    prefix: String,
    user: File,
    h2c: File,
    c2h: File,
}

/// The kernel clock a card's completion timeout assumes (below the 60 MHz of the synthesis
/// report, so the wait errs long).
const ASSUMED_CLOCK_HZ: f64 = 25e6;

impl XdmaDevice {
    /// Opens `{prefix}_user`, `{prefix}_h2c_0` and `{prefix}_c2h_0`, e.g. prefix `/dev/xdma0`.
    pub fn open(prefix: &str) -> Result<XdmaDevice, DeviceError> {
        let open = |suffix: &str, write: bool| {
            let path = PathBuf::from(format!("{prefix}{suffix}"));
            OpenOptions::new()
                .read(true)
                .write(write)
                .open(&path)
                .map_err(|source| DeviceError::Open { path, source })
        };
        Ok(XdmaDevice {
            prefix: prefix.to_string(),
            user: open("_user", true)?,
            h2c: open("_h2c_0", true)?,
            c2h: open("_c2h_0", false)?,
        })
    }
}

impl Device for XdmaDevice {
    fn describe(&self) -> String {
        format!("XDMA card at {}", self.prefix)
    }

    fn read_reg(&mut self, offset: u32) -> Result<u32, DeviceError> {
        let mut word = [0u8; 4];
        self.user
            .read_exact_at(&mut word, u64::from(offset))
            .map_err(|source| DeviceError::Io {
                what: "register read",
                source,
            })?;
        Ok(u32::from_le_bytes(word))
    }

    fn write_reg(&mut self, offset: u32, value: u32) -> Result<(), DeviceError> {
        self.user
            .write_all_at(&value.to_le_bytes(), u64::from(offset))
            .map_err(|source| DeviceError::Io {
                what: "register write",
                source,
            })
    }

    fn stream(&mut self, input: &[u32], output_words: usize) -> Result<Vec<u32>, DeviceError> {
        let bytes: Vec<u8> = input.iter().flat_map(|w| w.to_le_bytes()).collect();
        let (h2c, c2h) = (&mut self.h2c, &mut self.c2h);
        std::thread::scope(|scope| {
            let sender = scope.spawn(move || {
                if bytes.is_empty() {
                    return Ok(());
                }
                h2c.write_all(&bytes).map_err(|source| DeviceError::Io {
                    what: "host-to-card stream",
                    source,
                })
            });
            let mut out = vec![0u8; output_words * 4];
            let received = c2h.read_exact(&mut out).map_err(|source| DeviceError::Io {
                what: "card-to-host stream",
                source,
            });
            sender
                .join()
                .map_err(|_| DeviceError::Unavailable("the stream thread panicked".into()))??;
            received?;
            Ok(out
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect())
        })
    }

    fn wait_done(&mut self, cycles: u64) -> Result<(), DeviceError> {
        // Ten times the operation's time at the assumed clock, and at least a second.
        let budget = Duration::from_secs_f64(10.0 * cycles as f64 / ASSUMED_CLOCK_HZ + 1.0);
        let started = Instant::now();
        let mut pause = Duration::from_micros(20);
        loop {
            if self.read_reg(regs::STATUS)? & regs::STATUS_DONE != 0 {
                return Ok(());
            }
            if started.elapsed() > budget {
                return Err(DeviceError::Timeout("the card's operation"));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(5));
        }
    }
}

#[cfg(samos_fpga_sim)]
pub use super::sim::SimDevice;

/// The Verilator model is not in this build (Verilator was missing when it was compiled):
/// [`SimDevice::new`] says so, and nothing else can make one.
#[cfg(not(samos_fpga_sim))]
pub struct SimDevice(());

#[cfg(not(samos_fpga_sim))]
impl SimDevice {
    pub fn new() -> Result<SimDevice, DeviceError> {
        Err(DeviceError::Unavailable(
            "this build has no Verilator model of the FPGA kernel: install verilator \
             (bash scripts/setup.sh) and rebuild"
                .into(),
        ))
    }

    pub fn with_lanes(_: u32) -> Result<SimDevice, DeviceError> {
        SimDevice::new()
    }

    pub fn lane_counts() -> Vec<u32> {
        Vec::new()
    }
}

#[cfg(not(samos_fpga_sim))]
impl Device for SimDevice {
    fn describe(&self) -> String {
        unreachable!("SimDevice::new fails in this build")
    }
    fn read_reg(&mut self, _: u32) -> Result<u32, DeviceError> {
        unreachable!("SimDevice::new fails in this build")
    }
    fn write_reg(&mut self, _: u32, _: u32) -> Result<(), DeviceError> {
        unreachable!("SimDevice::new fails in this build")
    }
    fn stream(&mut self, _: &[u32], _: usize) -> Result<Vec<u32>, DeviceError> {
        unreachable!("SimDevice::new fails in this build")
    }
    fn wait_done(&mut self, _: u64) -> Result<(), DeviceError> {
        unreachable!("SimDevice::new fails in this build")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain files in place of the XDMA character devices: registers land at their byte
    /// offsets in `_user`, the input stream in `_h2c_0`, and results come from `_c2h_0`.
    fn fake_card(dir: &std::path::Path, results: &[u32]) -> String {
        let prefix = dir.join("xdma0").to_str().unwrap().to_string();
        std::fs::write(format!("{prefix}_user"), [0u8; 0x58]).unwrap();
        std::fs::write(format!("{prefix}_h2c_0"), []).unwrap();
        let bytes: Vec<u8> = results.iter().flat_map(|w| w.to_le_bytes()).collect();
        std::fs::write(format!("{prefix}_c2h_0"), bytes).unwrap();
        prefix
    }

    #[test]
    fn xdma_registers_and_streams_use_the_documented_layout() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = fake_card(dir.path(), &[7, 8, 9]);
        let mut card = XdmaDevice::open(&prefix).unwrap();
        card.write_reg(regs::WINDOW, 0x0102_0304).unwrap();
        assert_eq!(card.read_reg(regs::WINDOW).unwrap(), 0x0102_0304);
        let user = std::fs::read(format!("{prefix}_user")).unwrap();
        assert_eq!(
            &user[0x18..0x1C],
            &[4, 3, 2, 1],
            "little-endian at the register offset"
        );
        assert_eq!(card.stream(&[0xAABB_CCDD, 1], 3).unwrap(), vec![7, 8, 9]);
        let h2c = std::fs::read(format!("{prefix}_h2c_0")).unwrap();
        assert_eq!(h2c, [0xDD, 0xCC, 0xBB, 0xAA, 1, 0, 0, 0]);
        card.write_reg(regs::STATUS, regs::STATUS_DONE).unwrap();
        card.wait_done(1000).unwrap();
    }

    #[test]
    fn xdma_reports_missing_files_and_silent_cards() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nothing").to_str().unwrap().to_string();
        let err = XdmaDevice::open(&missing).err().unwrap().to_string();
        assert!(err.contains("nothing_user"), "{err}");
        let prefix = fake_card(dir.path(), &[]);
        let mut card = XdmaDevice::open(&prefix).unwrap();
        let err = card.wait_done(0).unwrap_err().to_string();
        assert!(err.contains("did not complete in time"), "{err}");
        let err = card.stream(&[], 1).unwrap_err().to_string();
        assert!(err.contains("card-to-host stream"), "{err}");
    }
}
