//! Sensor models of the virtual devices: plausible, slowly changing values
//! that depend only on the fleet seed and the device index, so a run's values
//! can be reproduced (its timestamps cannot: they are wall-clock times).
//!
//! ```text
//! kind (index % 4)  name          unit  value
//! 0 Temperature     temperature   Cel   mean-reverting walk around 21 ± 1.5 °C, 0.01 steps
//! 1 Humidity        humidity      %RH   mean-reverting walk in 30..=70 %, 0.1 steps
//! 2 Battery         battery       V     drains from ~3.3 V, about 10 µV a reading, 1 mV noise
//! 3 Door            door          -     bool (vb), flips with probability 1 % a reading
//! ```

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use telemetry::senml::Value;

/// Which physical quantity a device measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SensorKind {
    Temperature,
    Humidity,
    Battery,
    Door,
}

impl SensorKind {
    /// Every kind, in the order devices cycle through them.
    pub const ALL: [SensorKind; 4] = [
        SensorKind::Temperature,
        SensorKind::Humidity,
        SensorKind::Battery,
        SensorKind::Door,
    ];

    /// The kind of device `index`: `index % 4` into [`SensorKind::ALL`].
    pub fn for_device(index: usize) -> SensorKind {
        SensorKind::ALL[index % SensorKind::ALL.len()]
    }

    /// The SenML record name (`n`) of this measurement.
    pub fn name(self) -> &'static str {
        match self {
            SensorKind::Temperature => "temperature",
            SensorKind::Humidity => "humidity",
            SensorKind::Battery => "battery",
            SensorKind::Door => "door",
        }
    }

    /// The SenML unit (`u`, RFC 8428 §12.1); a switch has none.
    pub fn unit(self) -> Option<&'static str> {
        match self {
            SensorKind::Temperature => Some("Cel"),
            SensorKind::Humidity => Some("%RH"),
            SensorKind::Battery => Some("V"),
            SensorKind::Door => None,
        }
    }
}

/// Sensor limits, also the bounds the tests check.
pub mod limits {
    /// Operating range of a typical digital thermometer (°C).
    pub const TEMPERATURE: (f64, f64) = (-40.0, 85.0);
    /// Indoor relative humidity the model keeps to (%RH).
    pub const HUMIDITY: (f64, f64) = (30.0, 70.0);
    /// A flat cell still reports 2.0 V; a fresh one at most 3.35 V.
    pub const BATTERY: (f64, f64) = (2.0, 3.35);
}

/// One device's sensor: its kind, its random source and the physical state
/// its readings wander around.
#[derive(Debug, Clone)]
pub struct Sensor {
    kind: SensorKind,
    rng: StdRng,
    /// Centre the value reverts to (temperature, humidity).
    mean: f64,
    /// Current true value: temperature, humidity or cell voltage.
    level: f64,
    /// Current state of the door switch (`true` = open).
    open: bool,
}

impl Sensor {
    /// A sensor whose readings depend only on `kind` and `seed`.
    pub fn new(kind: SensorKind, seed: u64) -> Sensor {
        let mut rng = StdRng::seed_from_u64(seed);
        let (mean, level, open) = match kind {
            SensorKind::Temperature => {
                let mean = 21.0 + rng.random_range(-1.5..=1.5);
                (mean, mean + rng.random_range(-0.5..=0.5), false)
            }
            SensorKind::Humidity => {
                let mean = rng.random_range(40.0..=60.0);
                (mean, mean + rng.random_range(-3.0..=3.0), false)
            }
            SensorKind::Battery => (0.0, 3.3 - rng.random_range(0.0..=0.05), false),
            SensorKind::Door => (0.0, 0.0, rng.random_bool(0.1)),
        };
        Sensor {
            kind,
            rng,
            mean,
            level,
            open,
        }
    }

    /// The sensor of device `index` in a fleet seeded with `fleet_seed`.
    pub fn for_device(fleet_seed: u64, index: usize) -> Sensor {
        Sensor::new(
            SensorKind::for_device(index),
            device_seed(fleet_seed, index),
        )
    }

    pub fn kind(&self) -> SensorKind {
        self.kind
    }

    /// Takes the next reading.
    pub fn sample(&mut self) -> Value {
        match self.kind {
            SensorKind::Temperature => {
                self.level += 0.02 * (self.mean - self.level) + self.rng.random_range(-0.08..=0.08);
                Value::Float(round_to(clamp(self.level, limits::TEMPERATURE), 100.0))
            }
            SensorKind::Humidity => {
                self.level += 0.02 * (self.mean - self.level) + self.rng.random_range(-0.4..=0.4);
                self.level = clamp(self.level, limits::HUMIDITY);
                Value::Float(round_to(self.level, 10.0))
            }
            SensorKind::Battery => {
                self.level = clamp(
                    self.level - self.rng.random_range(0.0..=2e-5),
                    limits::BATTERY,
                );
                let noisy = self.level + self.rng.random_range(-0.001..=0.001);
                Value::Float(round_to(clamp(noisy, limits::BATTERY), 1000.0))
            }
            SensorKind::Door => {
                if self.rng.random_bool(0.01) {
                    self.open = !self.open;
                }
                Value::Bool(self.open)
            }
        }
    }
}

/// Seed of device `index`: the fleet seed and the index mixed (splitmix64),
/// so neighbouring devices do not get correlated streams.
pub fn device_seed(fleet_seed: u64, index: usize) -> u64 {
    splitmix64(fleet_seed ^ splitmix64(index as u64))
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn clamp(x: f64, (lo, hi): (f64, f64)) -> f64 {
    x.clamp(lo, hi)
}

/// Rounds to the sensor's resolution (`per_unit` steps per unit).
fn round_to(x: f64, per_unit: f64) -> f64 {
    (x * per_unit).round() / per_unit
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floats(sensor: &mut Sensor, n: usize) -> Vec<f64> {
        (0..n)
            .map(|_| match sensor.sample() {
                Value::Float(v) => v,
                other => panic!("expected a float, got {other:?}"),
            })
            .collect()
    }

    #[test]
    fn devices_cycle_through_the_kinds() {
        let kinds: Vec<_> = (0..8).map(SensorKind::for_device).collect();
        assert_eq!(&kinds[..4], &SensorKind::ALL);
        assert_eq!(&kinds[4..], &SensorKind::ALL);
        assert_eq!(Sensor::for_device(9, 6).kind(), SensorKind::Battery);
    }

    #[test]
    fn same_seed_same_readings_other_seed_other_readings() {
        for kind in SensorKind::ALL {
            let run = |seed| {
                let mut s = Sensor::new(kind, seed);
                (0..2000).map(|_| s.sample()).collect::<Vec<_>>()
            };
            assert_eq!(run(7), run(7), "{kind:?}");
            assert_ne!(run(7), run(8), "{kind:?}");
        }
        assert_ne!(device_seed(1, 0), device_seed(1, 1));
        assert_ne!(device_seed(1, 0), device_seed(2, 0));
    }

    #[test]
    fn temperature_walks_around_21_celsius() {
        for seed in 0..20 {
            let values = floats(&mut Sensor::new(SensorKind::Temperature, seed), 20_000);
            assert!(
                values.iter().all(|v| (15.0..=27.0).contains(v)),
                "seed {seed}"
            );
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            assert!((mean - 21.0).abs() < 2.0, "seed {seed}: mean {mean}");
            // A random walk, not white noise: consecutive readings are close.
            assert!(values.windows(2).all(|w| (w[0] - w[1]).abs() < 0.5));
            assert!(values.windows(2).any(|w| w[0] != w[1]), "it moves");
        }
    }

    #[test]
    fn humidity_stays_between_30_and_70_percent() {
        for seed in 0..20 {
            let values = floats(&mut Sensor::new(SensorKind::Humidity, seed), 20_000);
            assert!(
                values.iter().all(|v| (30.0..=70.0).contains(v)),
                "seed {seed}"
            );
            assert!(values
                .iter()
                .all(|v| (v * 10.0 - (v * 10.0).round()).abs() < 1e-6));
        }
    }

    #[test]
    fn battery_drains_slowly_from_3_3_volts() {
        for seed in 0..20 {
            let values = floats(&mut Sensor::new(SensorKind::Battery, seed), 20_000);
            assert!(
                values.iter().all(|v| (2.0..=3.35).contains(v)),
                "seed {seed}"
            );
            assert!(
                (3.24..=3.31).contains(&values[0]),
                "starts near 3.3 V: {}",
                values[0]
            );
            let first: f64 = values[..100].iter().sum::<f64>() / 100.0;
            let last: f64 = values[values.len() - 100..].iter().sum::<f64>() / 100.0;
            let drop = first - last;
            assert!(
                (0.1..0.3).contains(&drop),
                "seed {seed}: drained {drop} V in 20k readings"
            );
        }
    }

    #[test]
    fn door_is_a_rarely_flipping_switch() {
        let mut door = Sensor::new(SensorKind::Door, 3);
        let states: Vec<bool> = (0..20_000)
            .map(|_| match door.sample() {
                Value::Bool(b) => b,
                other => panic!("expected a bool, got {other:?}"),
            })
            .collect();
        let flips = states.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(
            (100..=300).contains(&flips),
            "{flips} flips in 20k readings"
        );
    }

    #[test]
    fn names_and_units() {
        let pairs: Vec<_> = SensorKind::ALL
            .iter()
            .map(|k| (k.name(), k.unit()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("temperature", Some("Cel")),
                ("humidity", Some("%RH")),
                ("battery", Some("V")),
                ("door", None)
            ]
        );
    }
}
