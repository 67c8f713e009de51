//! The paper's severity logic, shared by the server (which runs it on each node's readings as a
//! cross-check of the mode the node reports) and the node simulator (which plants readings
//! that must trip it): the linear-regression slope of the last five temperature samples
//! (°C per minute), thresholds of 28 / 35 °C and 0.06 / 0.1 °C per minute, and a flame
//! reading below 150 meaning fire.

use std::collections::VecDeque;

use crate::payload::Severity;

/// Samples in the regression.
pub const WINDOW: usize = 5;
pub const WARNING_TEMPERATURE: f64 = 28.0;
pub const DANGER_TEMPERATURE: f64 = 35.0;
pub const WARNING_SLOPE: f64 = 0.06;
pub const DANGER_SLOPE: f64 = 0.1;
pub const FIRE_BELOW: f64 = 150.0;

/// What kind of sensor a declared `dataName` is, for the severity logic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SensorKind {
    Temperature,
    Flame,
    Other,
}

impl SensorKind {
    pub fn of(name: &str) -> SensorKind {
        let n = name.to_ascii_lowercase();
        if n.contains("temperature") {
            SensorKind::Temperature
        } else if n.contains("flame") {
            SensorKind::Flame
        } else {
            SensorKind::Other
        }
    }
}

/// A node's recent temperature samples and last flame reading.
#[derive(Debug, Default, Clone)]
pub struct Window {
    /// (minutes since an arbitrary origin, °C)
    temperature: VecDeque<(f64, f64)>,
    flame: Option<f64>,
    /// The highest level already alerted on, so an alert is raised once per escalation.
    pub alerted: Option<Severity>,
    /// Node time in minutes, advanced by the sampling interval of the node's mode.
    clock: f64,
}

impl Window {
    pub fn push(&mut self, kind: SensorKind, minutes: f64, value: f64) {
        match kind {
            SensorKind::Temperature => {
                if self.temperature.len() == WINDOW {
                    self.temperature.pop_front();
                }
                self.temperature.push_back((minutes, value));
            }
            SensorKind::Flame => self.flame = Some(value),
            SensorKind::Other => {}
        }
    }

    /// Adds a sample taken one sampling interval (of `mode`) after the previous one. Node time,
    /// not arrival time: the paper's nodes sample on a fixed cadence, and arrival times are
    /// bent by network delays, retries and simulated time compression.
    pub fn push_sample(&mut self, kind: SensorKind, mode: Severity, value: f64) {
        if kind == SensorKind::Temperature {
            self.clock += mode.sampling_interval_secs() as f64 / 60.0;
        }
        self.push(kind, self.clock, value);
    }

    /// Least-squares slope of the temperature window, °C per minute (needs two samples at
    /// distinct times).
    pub fn slope(&self) -> Option<f64> {
        slope(self.temperature.iter().copied())
    }

    /// The server's assessment.
    pub fn assess(&self) -> Severity {
        let mut s = Severity::Normal;
        if let Some(&(_, t)) = self.temperature.back() {
            if t >= DANGER_TEMPERATURE {
                s = s.max(Severity::Danger);
            } else if t >= WARNING_TEMPERATURE {
                s = s.max(Severity::Warning);
            }
        }
        if self.temperature.len() == WINDOW
            && let Some(k) = self.slope()
        {
            if k >= DANGER_SLOPE {
                s = s.max(Severity::Danger);
            } else if k >= WARNING_SLOPE {
                s = s.max(Severity::Warning);
            }
        }
        if self.flame.is_some_and(|f| f < FIRE_BELOW) {
            s = Severity::Danger;
        }
        s
    }
}

/// Least-squares slope of `(x, y)` points; `None` with fewer than two distinct x.
pub fn slope(points: impl Iterator<Item = (f64, f64)> + Clone) -> Option<f64> {
    let n = points.clone().count() as f64;
    if n < 2.0 {
        return None;
    }
    let (sx, sy) = points
        .clone()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.fold((0.0, 0.0), |(num, den), (x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    (den > 0.0).then(|| num / den)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_and_slope() {
        let mut w = Window::default();
        for i in 0..5 {
            w.push(SensorKind::Temperature, f64::from(i), 22.0);
        }
        assert_eq!(w.assess(), Severity::Normal);
        let mut ramp = Window::default();
        for i in 0..5 {
            ramp.push(
                SensorKind::Temperature,
                f64::from(i),
                22.0 + 0.07 * f64::from(i),
            );
        }
        assert!((ramp.slope().unwrap() - 0.07).abs() < 1e-12);
        assert_eq!(ramp.assess(), Severity::Warning);
        ramp.push(SensorKind::Temperature, 5.0, 36.0);
        assert_eq!(ramp.assess(), Severity::Danger);
        let mut hot = Window::default();
        hot.push(SensorKind::Temperature, 0.0, 29.0);
        assert_eq!(hot.assess(), Severity::Warning);
        hot.push(SensorKind::Flame, 0.0, 120.0);
        assert_eq!(hot.assess(), Severity::Danger);
    }

    #[test]
    fn node_time_follows_the_mode_cadence() {
        let mut w = Window::default();
        for i in 0..5 {
            // 0.065 °C per 60 s sample in normal mode: 0.065 °C per minute.
            w.push_sample(
                SensorKind::Temperature,
                Severity::Normal,
                22.0 + 0.065 * f64::from(i),
            );
        }
        assert!((w.slope().unwrap() - 0.065).abs() < 1e-9);
        assert_eq!(w.assess(), Severity::Warning);
    }

    #[test]
    fn sensor_kinds() {
        assert_eq!(
            SensorKind::of("indoorTemperatureSensor"),
            SensorKind::Temperature
        );
        assert_eq!(SensorKind::of("flameDetectionSensor"), SensorKind::Flame);
        assert_eq!(SensorKind::of("indoorHumiditySensor"), SensorKind::Other);
    }
}
