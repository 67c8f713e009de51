//! The Verilator-compiled models of `hw/rtl/samos_mine.v` as a [`Device`]: the same register
//! and stream traffic a board sees, clocked cycle by cycle in this process. `offload/build.rs`
//! builds one model per JOIN lane count it lists.

use std::ffi::c_void;
use std::ptr::NonNull;

use super::device::{Device, DeviceError};

unsafe extern "C" {
    fn samos_sim_lane_counts(lanes: *mut u32, cap: usize) -> usize;
    fn samos_sim_new(lanes: u32) -> *mut c_void;
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
    /// The model with the most lanes.
    pub fn new() -> Result<SimDevice, DeviceError> {
        let most = Self::lane_counts().last().copied().unwrap_or(1);
        Self::with_lanes(most)
    }

    /// The model with `lanes` JOIN lanes, one of [`SimDevice::lane_counts`].
    pub fn with_lanes(lanes: u32) -> Result<SimDevice, DeviceError> {
        // SAFETY: samos_sim_new allocates and resets a model; it returns null for a lane
        // count no model was built for.
        let sim = NonNull::new(unsafe { samos_sim_new(lanes) }).ok_or_else(|| {
            DeviceError::Unavailable(format!(
                "no Verilator model with {lanes} lanes (built: {:?})",
                Self::lane_counts()
            ))
        })?;
        Ok(SimDevice { sim })
    }

    /// The lane counts of the models in this build, in increasing order.
    pub fn lane_counts() -> Vec<u32> {
        let mut lanes = [0u32; 16];
        // SAFETY: the buffer holds `lanes.len()` words; the call writes at most that many.
        let n = unsafe { samos_sim_lane_counts(lanes.as_mut_ptr(), lanes.len()) };
        lanes[..n.min(lanes.len())].to_vec()
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
