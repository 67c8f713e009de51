//! The Verilator-compiled model of `hw/rtl/samos_mine.v` as a [`Device`]: the same register
//! and stream traffic a board sees, clocked cycle by cycle in this process.

use std::ffi::c_void;
use std::ptr::NonNull;

use super::device::{Device, DeviceError};

unsafe extern "C" {
    fn samos_sim_new() -> *mut c_void;
    fn samos_sim_free(sim: *mut c_void);
    fn samos_sim_cycles(sim: *mut c_void) -> u64;
    fn samos_sim_write(sim: *mut c_void, addr: u32, data: u32, limit: u64) -> i32;
    fn samos_sim_read(sim: *mut c_void, addr: u32, data: *mut u32, limit: u64) -> i32;
    fn samos_sim_stream(
        sim: *mut c_void,
        input: *const u32,
        n_in: usize,
        out: *mut u32,
        n_out: usize,
        limit: u64,
    ) -> i32;
    fn samos_sim_wait_irq(sim: *mut c_void, limit: u64) -> i32;
}

/// Cycles an AXI4-Lite access may take before the model counts as hung.
const REG_LIMIT: u64 = 1_000;

/// One instance of the model, reset when created.
pub struct SimDevice {
    sim: NonNull<c_void>,
}

// The model is plain C++ state used by one thread at a time (the driver holds it in a mutex).
unsafe impl Send for SimDevice {}

impl SimDevice {
    pub fn new() -> Result<SimDevice, DeviceError> {
        // SAFETY: samos_sim_new allocates and resets a model; it returns null only if the
        // allocation failed.
        let sim = NonNull::new(unsafe { samos_sim_new() })
            .ok_or_else(|| DeviceError::Unavailable("cannot create the Verilator model".into()))?;
        Ok(SimDevice { sim })
    }

    /// Clock cycles simulated since reset.
    pub fn cycles(&self) -> u64 {
        // SAFETY: `sim` is a live model owned by self.
        unsafe { samos_sim_cycles(self.sim.as_ptr()) }
    }
}

impl Drop for SimDevice {
    fn drop(&mut self) {
        // SAFETY: `sim` came from samos_sim_new and is freed once, here.
        unsafe { samos_sim_free(self.sim.as_ptr()) }
    }
}

impl Device for SimDevice {
    fn describe(&self) -> String {
        "Verilator model of hw/rtl/samos_mine.v".to_string()
    }

    fn read_reg(&mut self, offset: u32) -> Result<u32, DeviceError> {
        let mut value = 0u32;
        // SAFETY: `sim` is live; `value` outlives the call.
        let rc = unsafe { samos_sim_read(self.sim.as_ptr(), offset, &mut value, REG_LIMIT) };
        if rc != 0 {
            return Err(DeviceError::Timeout("AXI4-Lite read"));
        }
        Ok(value)
    }

    fn write_reg(&mut self, offset: u32, value: u32) -> Result<(), DeviceError> {
        // SAFETY: `sim` is live.
        let rc = unsafe { samos_sim_write(self.sim.as_ptr(), offset, value, REG_LIMIT) };
        if rc != 0 {
            return Err(DeviceError::Timeout("AXI4-Lite write"));
        }
        Ok(())
    }

    fn stream(&mut self, input: &[u32], output_words: usize) -> Result<Vec<u32>, DeviceError> {
        let mut out = vec![0u32; output_words];
        // A word each way per cycle, plus slack for the kernel's own stalls.
        let limit = 16 * (input.len() + output_words) as u64 + 100_000;
        // SAFETY: `sim` is live; the slices are valid for the lengths passed.
        let rc = unsafe {
            samos_sim_stream(
                self.sim.as_ptr(),
                input.as_ptr(),
                input.len(),
                out.as_mut_ptr(),
                out.len(),
                limit,
            )
        };
        if rc != 0 {
            return Err(DeviceError::Timeout("the streams"));
        }
        Ok(out)
    }

    fn wait_done(&mut self, cycles: u64) -> Result<(), DeviceError> {
        let limit = cycles.saturating_mul(2).saturating_add(1_000_000);
        // SAFETY: `sim` is live.
        let rc = unsafe { samos_sim_wait_irq(self.sim.as_ptr(), limit) };
        if rc != 0 {
            return Err(DeviceError::Timeout("the kernel's operation"));
        }
        Ok(())
    }
}
