//! The trajectory file of an online mixing run: one CSV row per policy
//! update, `step`, then `w_<domain>` for every domain, then `loss_<domain>`
//! (an empty cell where a domain's loss was not observed at that update).
//!
//! Written by `mixopt train --schedule …  --trajectory FILE`; read by
//! `mixopt export --trajectory` (multi-phase schedules) and `mixopt report`.
//! The one row type and the one reader and writer of the format live here.

use crate::error::{Error, Result};
use crate::mixture::Mixture;
use std::path::Path;

/// One policy update.
#[derive(Debug, Clone, PartialEq)]
pub struct TrajectoryRow {
    /// Optimizer steps completed when the update happened.
    pub step: u64,
    /// Sampling weights from this update on, in domain order.
    pub weights: Vec<f64>,
    /// Losses the policy saw, in domain order (`None`: not observed).
    pub losses: Vec<Option<f64>>,
}

impl TrajectoryRow {
    /// The row as one CSV line, newline included. Domain names hold no commas
    /// or quotes (`check_domain_name`) and numbers need no quoting, so the
    /// fields are written as they are.
    pub fn csv_line(&self) -> String {
        let mut text = self.step.to_string();
        for w in &self.weights {
            text += &format!(",{w}");
        }
        for l in &self.losses {
            match l {
                Some(l) => text += &format!(",{l}"),
                None => text.push(','),
            }
        }
        text.push('\n');
        text
    }
}

/// The header line (without newline) of a trajectory over `domains`.
pub fn header(domains: &[String]) -> String {
    let mut text = String::from("step");
    for d in domains {
        text += &format!(",w_{d}");
    }
    for d in domains {
        text += &format!(",loss_{d}");
    }
    text
}

/// A whole trajectory. Invariant (of one read by `load`/`parse`): rows sorted
/// by strictly increasing step (of rows at one step in the file, the last), each `weights` a valid mixture over `domains`,
/// `losses` one per domain.
#[derive(Debug, Clone, PartialEq)]
pub struct Trajectory {
    pub domains: Vec<String>,
    pub rows: Vec<TrajectoryRow>,
}

impl Trajectory {
    pub fn load(path: &Path) -> Result<Trajectory> {
        let text = crate::store::fsio::read_text(path)?;
        Self::parse(path, &text)
    }

    /// The file's text: the header, then one line per row.
    pub fn to_csv(&self) -> String {
        let mut text = header(&self.domains);
        text.push('\n');
        for r in &self.rows {
            text += &r.csv_line();
        }
        text
    }

    /// Write the file atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::mixture::write_atomic(path, self.to_csv().as_bytes())
    }

    /// Parse a trajectory read from `path` (named in errors, with the line).
    /// The CSV itself is read by the csv crate (`store::parse_table_checked`,
    /// as every other table mixopt reads).
    pub fn parse(path: &Path, text: &str) -> Result<Trajectory> {
        let (table, domains) = super::parse_table_checked(
            path,
            text.as_bytes(),
            |cols: &[String]| {
                if cols.first().map(String::as_str) != Some("step") {
                    return Err(Error::parse(
                        path,
                        1,
                        "the first column must be \"step\" (header: step,w_<domain>…,loss_<domain>…)",
                    ));
                }
                let domains: Vec<String> = cols[1..]
                    .iter()
                    .filter_map(|c| c.strip_prefix("w_"))
                    .map(str::to_string)
                    .collect();
                if domains.is_empty() {
                    return Err(Error::parse(path, 1, "no w_<domain> columns"));
                }
                Ok(domains)
            },
        )?;
        let cols = &table.header;
        let w_idx: Vec<usize> = domains
            .iter()
            .map(|d| table.column(path, &format!("w_{d}")))
            .collect::<Result<_>>()?;
        let l_idx: Vec<Option<usize>> = domains
            .iter()
            .map(|d| cols.iter().position(|c| *c == format!("loss_{d}")))
            .collect();
        let mut rows: Vec<TrajectoryRow> = Vec::new();
        for (lineno, cells) in &table.rows {
            let lineno = *lineno;
            let step: u64 = cells[0].parse().map_err(|_| {
                Error::parse(
                    path,
                    lineno,
                    format!(
                        "column {} (step): {:?} is not a non-negative integer",
                        table.file_col(0) + 1,
                        cells[0]
                    ),
                )
            })?;
            if let Some(prev) = rows.last() {
                if step < prev.step {
                    return Err(Error::parse(
                        path,
                        lineno,
                        format!("step {step} decreases (previous row: {})", prev.step),
                    ));
                }
            }
            let number = |j: usize| -> Result<f64> {
                cells[j].parse::<f64>().map_err(|_| {
                    Error::parse(
                        path,
                        lineno,
                        format!(
                            "column {} ({}): {:?} is not a number",
                            table.file_col(j) + 1,
                            cols[j],
                            cells[j]
                        ),
                    )
                })
            };
            let weights = w_idx
                .iter()
                .map(|&j| number(j))
                .collect::<Result<Vec<_>>>()?;
            let mixture = Mixture::new_in(
                domains.clone(),
                weights,
                &format!("{}:{lineno}", path.display()),
            )?;
            let losses = l_idx
                .iter()
                .map(|j| match j {
                    Some(j) if !cells[*j].is_empty() => number(*j).map(Some),
                    _ => Ok(None),
                })
                .collect::<Result<Vec<_>>>()?;
            // A repeated step (`mixopt online` may take several updates at
            // one trainer step): the later row holds the weights from then on.
            if rows.last().is_some_and(|p| p.step == step) {
                rows.pop();
            }
            rows.push(TrajectoryRow {
                step,
                weights: mixture.weights().to_vec(),
                losses,
            });
        }
        if rows.is_empty() {
            return Err(Error::parse(path, 0, "trajectory has a header but no rows"));
        }
        Ok(Trajectory { domains, rows })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "step,w_a,w_b,loss_a,loss_b\n0,0.5,0.5,3,\n10,0.7,0.3,2.9,3.1\n20,0.1,0.9,,3\n30,0.3,0.7,2.7,2.8\n";

    #[test]
    fn reads_rows_with_missing_losses_and_writes_them_back() {
        let t = Trajectory::parse(Path::new("t.csv"), T).unwrap();
        assert_eq!(t.domains, ["a", "b"]);
        assert_eq!(t.rows.len(), 4);
        assert_eq!(t.rows[0].losses, [Some(3.0), None]);
        assert_eq!(t.rows[2].losses, [None, Some(3.0)]);
        assert_eq!(t.to_csv(), T);
        // Blank lines, spaces around fields and a quoted field are CSV too.
        let loose = "step, w_a ,w_b\n\n0,\"0.5\", 0.5 \n\n";
        let t = Trajectory::parse(Path::new("t.csv"), loose).unwrap();
        assert_eq!(t.rows[0].weights, [0.5, 0.5]);
        assert_eq!(t.rows[0].losses, [None, None]);
    }

    #[test]
    fn a_repeated_step_keeps_the_later_row() {
        let t =
            Trajectory::parse(Path::new("t.csv"), "step,w_a,w_b\n5,0.5,0.5\n5,0.2,0.8\n").unwrap();
        assert_eq!(t.rows.len(), 1);
        assert_eq!(t.rows[0].weights, vec![0.2, 0.8]);
        let e = Trajectory::parse(Path::new("t.csv"), "step,w_a,w_b\n5,0.5,0.5\n4,0.5,0.5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.csv:3") && e.contains("decreases"), "{e}");
    }

    #[test]
    fn bad_rows_name_line_and_column() {
        let err = |text: &str| {
            Trajectory::parse(Path::new("t.csv"), text)
                .unwrap_err()
                .to_string()
        };
        let e = err("step,w_a,w_b\n0,0.5,x\n");
        assert!(e.contains("t.csv:2") && e.contains("w_b"), "{e}");
        // Line numbers count the blank lines before a row.
        let e = err("step,w_a,w_b\n\n\n-1,0.5,0.5\n");
        assert!(e.contains("t.csv:4") && e.contains("step"), "{e}");
        let e = err("steps,w_a\n");
        assert!(e.contains("t.csv:1"), "{e}");
        let e = err("step,loss_a\n");
        assert!(e.contains("t.csv:1") && e.contains("w_<domain>"), "{e}");
        let e = err("step,w_a,w_b\n0,0.9,0.5\n");
        assert!(e.contains("t.csv:2"), "{e}");
        let e = err("step,w_a,w_b\n0,0.5\n");
        assert!(e.contains("t.csv:2") && e.contains("2 fields"), "{e}");
        let e = err("step,w_a,w_b\n");
        assert!(e.contains("no rows"), "{e}");
    }
}
