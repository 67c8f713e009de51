//! Untrusted node-configuration documents into admission (XSD validation with libxml2, then
//! the reading of the sensors): never panics, and an admitted configuration's sensors all
//! have a parseable, ordered range where they are numeric.
#![no_main]

use libfuzzer_sys::fuzz_target;
use samos_schemas::node_config::validate;

fuzz_target!(|data: &[u8]| {
    let Ok(document) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = validate(document) {
        for sensor in &config.sensors {
            if let Some((lo, hi)) = sensor.numeric_range() {
                assert!(lo <= hi, "admitted a range {lo} > {hi}");
            }
        }
    }
});
