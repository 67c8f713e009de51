//! Shared by the offload integration tests.

use std::path::Path;

/// NAB's machine temperature (datasets/nab): 22,695 readings 5 minutes apart, as (timestamps,
/// values).
pub fn nab() -> (Vec<String>, Vec<f64>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../datasets/nab/machine_temperature_system_failure.csv");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let (t, v) = l.split_once(',').unwrap();
            (t.to_string(), v.parse::<f64>().unwrap())
        })
        .unzip()
}
