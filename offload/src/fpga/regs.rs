//! Register map version 1.1 of the mining kernel (byte offsets in the AXI4-Lite window);
//! `hw/README.md` is the specification and `hw/rtl/samos_mine.v` the implementation.

pub const ID: u32 = 0x00;
pub const VERSION: u32 = 0x04;
/// 7:0 sample bits, 15:8 MEM_AW, 23:16 log2 of the longest JOIN window, 31:24 JOIN lanes
/// (since 1.1; 0 on a 1.0 kernel, which has one).
pub const CAPS: u32 = 0x08;
pub const CTRL: u32 = 0x0C;
pub const STATUS: u32 = 0x10;
pub const IRQ_ENABLE: u32 = 0x14;
pub const WINDOW: u32 = 0x18;
pub const ADDR: u32 = 0x1C;
pub const LEN: u32 = 0x20;
pub const Q_BASE: u32 = 0x24;
pub const Q_WINDOWS: u32 = 0x28;
pub const T_BASE: u32 = 0x2C;
pub const T_WINDOWS: u32 = 0x30;
pub const DIAG_FIRST: u32 = 0x34;
pub const DIAG_END: u32 = 0x38;
pub const SKIP_LO: u32 = 0x3C;
pub const SKIP_HI: u32 = 0x40;
pub const FLAGS: u32 = 0x44;
pub const CYCLES_LO: u32 = 0x48;
pub const CYCLES_HI: u32 = 0x4C;
pub const PAIRS_LO: u32 = 0x50;
pub const PAIRS_HI: u32 = 0x54;

/// `ID` reads "SAMO".
pub const ID_VALUE: u32 = 0x5341_4D4F;
/// The major version this driver speaks; a minor version only adds registers.
pub const VERSION_MAJOR: u32 = 1;

/// `CTRL` bit 0 starts the operation in bits 7:4.
pub const CTRL_START: u32 = 1;
pub const OP_LOAD: u32 = 1;
pub const OP_READ: u32 = 2;
pub const OP_STATS: u32 = 3;
pub const OP_JOIN: u32 = 4;

pub const STATUS_BUSY: u32 = 1 << 0;
pub const STATUS_DONE: u32 = 1 << 1;
pub const STATUS_ERROR: u32 = 1 << 2;
/// Writing this to `STATUS` clears DONE and ERROR.
pub const STATUS_CLEAR: u32 = STATUS_DONE | STATUS_ERROR;

/// `IRQ_ENABLE`: raise the interrupt on DONE (bit 0) and on ERROR (bit 1).
pub const IRQ_ALL: u32 = 0b11;

/// `FLAGS` bit 0: a JOIN keeps the best-so-far of earlier JOINs instead of clearing it.
pub const FLAG_ACCUMULATE: u32 = 1;

/// Card memories, selected by bits 31:28 of `ADDR`.
pub const REGION_SAMPLES: u32 = 0;
pub const REGION_SUMS: u32 = 1;
pub const REGION_NORMS: u32 = 2;
pub const REGION_PROFILE: u32 = 3;

/// Words a STATS operation returns per window.
pub const STATS_WORDS: usize = 9;
/// A profile entry with no neighbour.
pub const NO_INDEX: u32 = u32::MAX;

/// The error code in `STATUS` bits 15:8, in words.
pub fn error_name(code: u32) -> &'static str {
    match code {
        0 => "none",
        1 => "unknown operation",
        2 => "address range outside card memory",
        3 => "window out of range",
        4 => "START while busy",
        _ => "unknown error code",
    }
}

/// The `ADDR` value of word `offset` of `region`.
pub fn addr(region: u32, offset: usize) -> u32 {
    (region << 28) | offset as u32
}
