//! Pattern mining over stored series on CPU, GPU and FPGA backends (issues 7 and 8).
