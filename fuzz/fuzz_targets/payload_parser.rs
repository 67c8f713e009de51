//! Untrusted payloads into the control grammar and the reading check: never panics, and an
//! accepted numeric reading lies within the declared range.
#![no_main]

use libfuzzer_sys::fuzz_target;
use samos_schemas::payload::{SensorSpec, Value, check_reading, parse_control};

fuzz_target!(|data: &[u8]| {
    let _ = parse_control(data);
    for (ty, min, max) in [("float", "0", "70"), ("int", "-40", "85"), ("bool", "0", "1"), ("string", "a", "z")] {
        let spec = SensorSpec {
            name: "s".into(),
            part: "p".into(),
            data_type: ty.into(),
            units: "u".into(),
            min: min.into(),
            max: max.into(),
        };
        if let Ok(v @ (Value::Float(_) | Value::Int(_))) = check_reading(&spec, data) {
            let x = v.as_f64().unwrap();
            let (lo, hi) = spec.numeric_range().unwrap();
            assert!((lo..=hi).contains(&x));
        }
    }
});
