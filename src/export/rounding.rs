//! Weights as they will be printed into a config: optionally with small
//! weights zeroed (`--min-weight`) and rounded to D decimals (`--round`) by
//! the largest-remainder method, so the printed numbers still sum to exactly
//! 1 (in decimal: the integer units sum to 10^D).
//!
//! Each weight keeps its printed text beside its value; exporters print the
//! text, so what a config says is exactly what was rounded.

use crate::error::{Error, Result};
use crate::mixture::Mixture;

/// The largest `--round`: 10^12 units still fit comfortably in u64 and the
/// scaled f64 keeps every unit exact.
pub const MAX_DECIMALS: u32 = 12;

/// A mixture ready to print. Invariant: `domains`, `values` and `text` have the
/// same length; `text[i]` parses to `values[i]` (exactly without rounding; as
/// the nearest f64 to the printed decimal with it); the values sum to 1.
#[derive(Debug, Clone, PartialEq)]
pub struct Weights {
    pub domains: Vec<String>,
    pub values: Vec<f64>,
    pub text: Vec<String>,
}

/// How to turn a mixture into printed weights.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RoundingSpec {
    /// Weights strictly below this are zeroed before renormalizing.
    pub min_weight: Option<f64>,
    /// Decimals to round to (1..=MAX_DECIMALS).
    pub decimals: Option<u32>,
}

impl RoundingSpec {
    /// Validate the flags once, before any file is read.
    pub fn check(&self) -> Result<()> {
        if let Some(w) = self.min_weight {
            if !(w.is_finite() && (0.0..1.0).contains(&w)) {
                return Err(Error::invalid(format!(
                    "--min-weight {w}: must be a number in [0, 1)"
                )));
            }
        }
        if let Some(d) = self.decimals {
            if !(1..=MAX_DECIMALS).contains(&d) {
                return Err(Error::invalid(format!(
                    "--round {d}: decimals must be between 1 and {MAX_DECIMALS}"
                )));
            }
        }
        Ok(())
    }

    /// Apply to one mixture.
    pub fn apply(&self, m: &Mixture) -> Result<Weights> {
        self.check()?;
        let domains = m.domains().to_vec();
        let mut values = m.weights().to_vec();
        if let Some(min) = self.min_weight {
            for v in values.iter_mut() {
                if *v < min {
                    *v = 0.0;
                }
            }
            let sum: f64 = values.iter().sum();
            if sum <= 0.0 {
                return Err(Error::invalid(format!(
                    "--min-weight {min} zeroes every domain (largest weight {:.6})",
                    m.weights().iter().cloned().fold(0.0, f64::max)
                )));
            }
            for v in values.iter_mut() {
                *v /= sum;
            }
        }
        match self.decimals {
            None => {
                let text = values.iter().map(|v| plain(*v)).collect();
                Ok(Weights {
                    domains,
                    values,
                    text,
                })
            }
            Some(d) => {
                let units = largest_remainder(&values, 10u64.pow(d));
                let text: Vec<String> = units.iter().map(|&u| decimal(u, d)).collect();
                let values = text.iter().map(|t| t.parse().unwrap_or(0.0)).collect();
                Ok(Weights {
                    domains,
                    values,
                    text,
                })
            }
        }
    }
}

/// Shortest text that parses back to exactly `v` (Rust's `Display` for f64
/// never uses an exponent, so it is valid JSON, YAML, TOML and Python).
pub fn plain(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else {
        format!("{v}")
    }
}

/// Hamilton / largest-remainder apportionment of `total` units to shares
/// proportional to `values` (which sum to 1). Ties go to the earlier domain.
pub fn largest_remainder(values: &[f64], total: u64) -> Vec<u64> {
    let scaled: Vec<f64> = values.iter().map(|v| v * total as f64).collect();
    let mut units: Vec<u64> = scaled.iter().map(|s| s.floor() as u64).collect();
    let assigned: u64 = units.iter().sum();
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&i, &j| {
        let (ri, rj) = (scaled[i] - scaled[i].floor(), scaled[j] - scaled[j].floor());
        rj.total_cmp(&ri).then(i.cmp(&j))
    });
    if assigned <= total {
        for &i in order.iter().take((total - assigned) as usize) {
            units[i] += 1;
        }
    } else {
        // Only reachable through float error on inputs that sum to just over 1:
        // take units back from the smallest remainders that have any.
        let mut excess = assigned - total;
        for &i in order.iter().rev() {
            if excess == 0 {
                break;
            }
            if units[i] > 0 {
                units[i] -= 1;
                excess -= 1;
            }
        }
    }
    units
}

/// `units / 10^decimals` as exact decimal text, trailing zeros trimmed
/// (`250, 3` → `0.25`; `1000, 3` → `1`; `0, 3` → `0`).
pub fn decimal(units: u64, decimals: u32) -> String {
    let scale = 10u64.pow(decimals);
    let (whole, frac) = (units / scale, units % scale);
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:0width$}", width = decimals as usize);
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mix(spec: &str) -> Mixture {
        Mixture::parse_spec(spec).unwrap()
    }

    #[test]
    fn rounded_weights_sum_to_exactly_one() {
        // Thirds at 2 decimals: 33 + 33 + 33 = 99 units; the unit left over
        // goes to the largest remainder (c's 0.33333334).
        let m = mix("a=0.3333333333,b=0.3333333333,c=0.3333333334");
        let w = RoundingSpec {
            min_weight: None,
            decimals: Some(2),
        }
        .apply(&m)
        .unwrap();
        assert_eq!(w.text, ["0.33", "0.33", "0.34"]);
        let m = mix("a=0.125,b=0.125,c=0.75");
        let w = RoundingSpec {
            min_weight: None,
            decimals: Some(2),
        }
        .apply(&m)
        .unwrap();
        // 12.5 / 12.5 / 75: one unit left, tie between a and b → a.
        assert_eq!(w.text, ["0.13", "0.12", "0.75"]);
    }

    #[test]
    fn largest_remainder_matches_hand_apportionment() {
        // Shares 0.4537, 0.3263, 0.2200 of 100 seats: floors 45, 32, 22 (99);
        // the largest remainder (0.63) gets the last seat.
        assert_eq!(
            largest_remainder(&[0.4537, 0.3263, 0.2200], 100),
            [45, 33, 22]
        );
    }

    #[test]
    fn min_weight_zeroes_and_renormalizes() {
        let m = mix("a=0.005,b=0.495,c=0.5");
        let w = RoundingSpec {
            min_weight: Some(0.01),
            decimals: None,
        }
        .apply(&m)
        .unwrap();
        assert_eq!(w.values[0], 0.0);
        assert!((w.values.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        assert!(RoundingSpec {
            min_weight: Some(0.9),
            decimals: None
        }
        .apply(&m)
        .is_err());
    }

    #[test]
    fn bad_flags_are_rejected() {
        for spec in [
            RoundingSpec {
                min_weight: Some(-0.1),
                decimals: None,
            },
            RoundingSpec {
                min_weight: Some(1.0),
                decimals: None,
            },
            RoundingSpec {
                min_weight: None,
                decimals: Some(0),
            },
            RoundingSpec {
                min_weight: None,
                decimals: Some(13),
            },
        ] {
            assert!(spec.check().is_err(), "{spec:?}");
        }
    }

    #[test]
    fn decimal_text() {
        assert_eq!(decimal(250, 3), "0.25");
        assert_eq!(decimal(1000, 3), "1");
        assert_eq!(decimal(0, 3), "0");
        assert_eq!(decimal(7, 4), "0.0007");
        assert_eq!(plain(0.1), "0.1");
    }
}
