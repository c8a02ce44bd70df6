//! Floats as text, for persisted policy state: exact (de)serialization.
//!
//! serde_json (without its `float_roundtrip` feature, which this crate does not
//! enable) parses floats on a best-effort basis and can be off by one ulp. A
//! restarted `mixopt online` must answer bit-for-bit as the one that stopped, so
//! state vectors are stored as strings in Rust's shortest round-trip notation
//! and parsed back with `str::parse::<f64>`, which is correctly rounded.

use serde::{Deserialize, Deserializer, Serializer};

fn enc(x: f64) -> String {
    format!("{x:?}")
}

fn dec<E: serde::de::Error>(s: &str) -> Result<f64, E> {
    s.parse::<f64>()
        .map_err(|_| E::custom(format!("not a number: {s:?}")))
}

/// `Vec<f64>` as `["0.1", "0.30000000000000004", …]`.
pub mod vec {
    use super::*;

    pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|&x| enc(x)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        let raw: Vec<String> = Vec::deserialize(d)?;
        raw.iter().map(|s| dec(s)).collect()
    }
}

/// `Option<Vec<f64>>`, `null` for `None`.
pub mod opt_vec {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<Vec<f64>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.collect_seq(v.iter().map(|&x| enc(x))),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<f64>>, D::Error> {
        let raw: Option<Vec<String>> = Option::deserialize(d)?;
        raw.map(|v| v.iter().map(|s| dec(s)).collect()).transpose()
    }
}

/// `Vec<Vec<f64>>` (ragged allowed).
pub mod vec_vec {
    use super::*;

    pub fn serialize<S: Serializer>(v: &[Vec<f64>], s: S) -> Result<S::Ok, S::Error> {
        let rows: Vec<Vec<String>> = v
            .iter()
            .map(|r| r.iter().map(|&x| enc(x)).collect())
            .collect();
        s.collect_seq(rows)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<f64>>, D::Error> {
        let raw: Vec<Vec<String>> = Vec::deserialize(d)?;
        raw.iter()
            .map(|r| r.iter().map(|s| dec(s)).collect())
            .collect()
    }
}

/// One `f64`.
pub mod one {
    use super::*;

    pub fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&enc(*x))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        let raw = String::deserialize(d)?;
        dec::<D::Error>(&raw)
    }
}

#[cfg(test)]
mod tests {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct S {
        #[serde(with = "super::vec")]
        v: Vec<f64>,
        #[serde(with = "super::one")]
        x: f64,
    }

    #[test]
    fn round_trips_bit_for_bit() {
        let v: Vec<f64> = (1..200)
            .map(|i| (i as f64).ln() / 7.0 + 1e-300 * i as f64)
            .collect();
        let s = S { v, x: 1.0 / 3.0 };
        let text = serde_json::to_string(&s).unwrap();
        let back: S = serde_json::from_str(&text).unwrap();
        for (a, b) in s.v.iter().zip(&back.v) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
        assert_eq!(s.x.to_bits(), back.x.to_bits());
    }
}
