//! Typed hyperparameters: one system for the mixing laws (`fit --param`) and
//! the online policies (`online --param`, `train --schedule … --param`).
//!
//! linfa's pattern: each law or policy has a parameter struct whose `Default`
//! holds the documented defaults; `--param KEY=VALUE` overrides are laid over
//! it (a key the struct does not have is an error listing the known ones) and
//! deserialized by serde into the typed fields; then linfa's
//! [`ParamGuard::check`] validates the values once. Only checked parameters
//! reach a fit or a policy: the law and policy constructors take the
//! [`Hyperparams`] value that `check` returned.

use crate::error::{Error, Result};
pub use linfa::ParamGuard;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

/// Parameter overrides by name, as given on the command line or stored in a
/// law.json (`hyper`) or an online state: numbers, booleans, `null`, strings.
pub type Overrides = Map<String, Value>;

/// A law's or a policy's hyperparameters.
pub trait Hyperparams: Default + Serialize + DeserializeOwned {
    /// Who the parameters belong to, as errors name it: `law gbdt`, `odm`.
    const OWNER: &'static str;

    /// The ranges the values must lie in. Called through [`ParamGuard`]
    /// (`Unchecked::check`), which is the only way callers get parameters.
    fn validate(&self) -> Result<()>;

    /// The defaults with `overrides` laid over them, not yet checked.
    fn with_overrides(overrides: &Overrides) -> Result<Unchecked<Self>> {
        let mut base = as_object(&Self::default(), Self::OWNER)?;
        for (k, v) in overrides {
            let Some(default) = base.get(k) else {
                return Err(Error::invalid(format!(
                    "{}: unknown parameter {k:?} (known: {})",
                    Self::OWNER,
                    base.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            };
            let v = whole_as_integer(default, v);
            base.insert(k.clone(), v);
        }
        let p = serde_json::from_value(Value::Object(base))
            .map_err(|e| Error::invalid(format!("{}: --param {e}", Self::OWNER)))?;
        Ok(Unchecked(p))
    }

    /// The defaults with `overrides` laid over them, checked.
    fn from_overrides(overrides: &Overrides) -> Result<Self> {
        Self::with_overrides(overrides)?.check()
    }

    /// These parameters as overrides (every field), e.g. to re-check the
    /// parameters of a state read back from disk.
    fn to_overrides(&self) -> Result<Overrides> {
        as_object(self, Self::OWNER)
    }
}

/// Parameters as given (defaults plus overrides) before [`ParamGuard::check`].
#[derive(Debug, Clone, PartialEq)]
pub struct Unchecked<P>(P);

impl<P: Hyperparams> Unchecked<P> {
    pub fn new(p: P) -> Self {
        Unchecked(p)
    }
}

impl<P: Hyperparams> ParamGuard for Unchecked<P> {
    type Checked = P;
    type Error = Error;

    fn check_ref(&self) -> Result<&P> {
        self.0.validate()?;
        Ok(&self.0)
    }

    fn check(self) -> Result<P> {
        self.check_ref()?;
        Ok(self.0)
    }
}

fn as_object<P: Serialize>(p: &P, owner: &str) -> Result<Overrides> {
    match serde_json::to_value(p) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(Error::invalid(format!("{owner}: parameters not an object"))),
    }
}

/// A whole-number float given for an integer parameter (`rounds=1000.0`, as
/// older law.json files store every value) becomes that integer; anything
/// else is left for serde to accept or reject by the field's type.
fn whole_as_integer(default: &Value, v: &Value) -> Value {
    let integer_field = default.is_u64() || default.is_i64();
    match v.as_f64() {
        Some(x) if integer_field && !v.is_u64() && !v.is_i64() && x.fract() == 0.0 => {
            if (0.0..=u64::MAX as f64).contains(&x) {
                Value::from(x as u64)
            } else if (i64::MIN as f64..0.0).contains(&x) {
                Value::from(x as i64)
            } else {
                v.clone()
            }
        }
        _ => v.clone(),
    }
}

/// Parse `--param KEY=VALUE` strings: a value that reads as a JSON number,
/// boolean or `null` is that; anything else is a string.
pub fn parse(args: &[String]) -> Result<Overrides> {
    let mut out = Overrides::new();
    for a in args {
        let (k, v) = a
            .split_once('=')
            .ok_or_else(|| Error::invalid(format!("--param {a:?}: expected KEY=VALUE")))?;
        let v = v.trim();
        let value = serde_json::from_str::<Value>(v)
            .ok()
            .filter(|x| !x.is_object() && !x.is_array())
            .unwrap_or_else(|| Value::String(v.to_string()));
        out.insert(k.trim().to_string(), value);
    }
    Ok(out)
}

/// `Err` naming `owner` and `what` unless `ok`.
pub(crate) fn ensure(ok: bool, owner: &str, what: impl std::fmt::Display) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!("{owner}: {what}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct P {
        rate: f64,
        rounds: usize,
        ema: Option<f64>,
    }

    impl Default for P {
        fn default() -> Self {
            P {
                rate: 0.5,
                rounds: 10,
                ema: None,
            }
        }
    }

    impl Hyperparams for P {
        const OWNER: &'static str = "law test";
        fn validate(&self) -> Result<()> {
            ensure(self.rate > 0.0, Self::OWNER, "rate must be > 0")
        }
    }

    fn o(args: &[&str]) -> Overrides {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn overrides_are_typed_and_checked() {
        let p = P::from_overrides(&o(&["rate=0.25", "rounds=1000", "ema=0.1"])).unwrap();
        assert_eq!(
            p,
            P {
                rate: 0.25,
                rounds: 1000,
                ema: Some(0.1)
            }
        );
        // A stored whole-number float is accepted for an integer field.
        let stored: Overrides = [("rounds".to_string(), serde_json::json!(7.0))]
            .into_iter()
            .collect();
        assert_eq!(P::from_overrides(&stored).unwrap().rounds, 7);
        let e = P::from_overrides(&o(&["rounds=1.5"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("law test") && e.contains("1.5"), "{e}");
        let e = P::from_overrides(&o(&["rate=-1"])).unwrap_err().to_string();
        assert!(e.contains("rate must be > 0"), "{e}");
        let e = P::from_overrides(&o(&["depth=3"])).unwrap_err().to_string();
        assert!(
            e.contains("\"depth\"") && e.contains("known: ") && e.contains("rounds"),
            "{e}"
        );
        let e = P::from_overrides(&o(&["rate=abc"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("abc"), "{e}");
        // Unchecked parameters are checked by linfa's ParamGuard.
        let bad = Unchecked::new(P {
            rate: 0.0,
            ..P::default()
        });
        assert!(bad.check_ref().is_err());
        assert!(parse(&["rate".to_string()]).is_err());
        let round = P::from_overrides(&p.to_overrides().unwrap()).unwrap();
        assert_eq!(round, p);
    }
}
