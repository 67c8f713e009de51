//! The PROXY protocol preamble of a load-balanced listener: framing a connection's first bytes
//! exactly as the listener does never panics, never asks past the largest header or past the
//! bytes it framed, and parsing the framed header never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use samos_mqtt::proxy::{MAX_HEADER, Needed, needed, parse};

fuzz_target!(|data: &[u8]| {
    let mut read = 0;
    loop {
        match needed(&data[..read]) {
            Ok(Needed::Complete(n)) => {
                assert!(n <= read && n <= MAX_HEADER);
                let _ = parse(&data[..n]);
                return;
            }
            Ok(Needed::More(more)) => {
                assert!(more > 0);
                read += more;
                assert!(read <= MAX_HEADER);
                if read > data.len() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
});
