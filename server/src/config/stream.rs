//! `[[stream_profile]]`: sensors whose left matrix profile the server keeps up to date as their
//! readings arrive, and when a window counts as a discord (see `crate::protocol::discords`).

use serde::Deserialize;

/// One streamed sensor (or every numeric sensor, `sensor = "*"`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StreamProfileConfig {
    /// The sensor's name as nodes declare it, or `*` for every numeric sensor; the first entry
    /// that names a sensor decides for it.
    pub sensor: String,
    /// Readings per window (m), at least 3.
    #[serde(default = "default_window")]
    pub window: usize,
    /// How many earlier windows each new one is compared with (beyond the exclusion zone
    /// ⌈window/4⌉); memory per series is 48 bytes per window of history.
    #[serde(default = "default_history")]
    pub history: usize,
    /// A window is a discord when its distance to the nearest earlier window, divided by
    /// √window, reaches this: 0 is the same shape, √2 ≈ 1.41 no correlation, 2 the mirror image.
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// Windows a series must have seen before a discord is raised for it (after a start or
    /// restart the profile is empty, and early windows have little to be compared with).
    /// Unset: `history`.
    pub warmup: Option<u64>,
}

fn default_window() -> usize {
    32
}

fn default_history() -> usize {
    1000
}

fn default_threshold() -> f64 {
    1.0
}

/// The largest history accepted: 48 MB per series.
pub const MAX_HISTORY: usize = 1_000_000;

/// Refuses entries that cannot work.
pub fn check(streams: &[StreamProfileConfig]) -> Result<(), String> {
    for s in streams {
        let name = format!("stream_profile {:?}", s.sensor);
        if s.sensor.is_empty() {
            return Err("stream_profile: sensor must not be empty (\"*\" for every sensor)".into());
        }
        if s.window < 3 {
            return Err(format!(
                "{name}: window must be at least 3, not {}",
                s.window
            ));
        }
        let zone = s.window.div_ceil(4);
        if s.history <= zone || s.history > MAX_HISTORY {
            return Err(format!(
                "{name}: history must be above the exclusion zone {zone} and at most {MAX_HISTORY}, not {}",
                s.history
            ));
        }
        if !(s.threshold > 0.0 && s.threshold <= 2.0) {
            return Err(format!(
                "{name}: threshold is a distance per √window in (0, 2], not {}",
                s.threshold
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<(), String> {
        #[derive(Deserialize)]
        struct File {
            stream_profile: Vec<StreamProfileConfig>,
        }
        let f: File = toml::from_str(text).map_err(|e| e.to_string())?;
        check(&f.stream_profile)
    }

    #[test]
    fn defaults_work_and_impossible_profiles_are_refused() {
        parse("[[stream_profile]]\nsensor = \"t\"\n").unwrap();
        for (bad, says) in [
            ("sensor = \"\"", "must not be empty"),
            ("sensor = \"t\"\nwindow = 2", "at least 3"),
            (
                "sensor = \"t\"\nwindow = 16\nhistory = 4",
                "exclusion zone 4",
            ),
            ("sensor = \"t\"\nhistory = 2000000", "at most"),
            ("sensor = \"t\"\nthreshold = 0", "(0, 2]"),
            ("sensor = \"t\"\nthreshold = 2.5", "(0, 2]"),
        ] {
            let err = parse(&format!("[[stream_profile]]\n{bad}\n")).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
        assert!(parse("[[stream_profile]]\nsensor = \"t\"\nwindows = 3\n").is_err());
    }
}
