//! Multi-phase schedules from an online trajectory.
//!
//! A trajectory (`store::trajectory`: written by `mixopt online --trajectory` or
//! `mixopt train --trajectory`, one row per policy update; of rows at one step
//! the last counts) gives the mixture over steps. `--phases N` cuts the
//! trajectory's step range into N equal spans; a phase's mixture is the mean of the trajectory's mixtures in
//! its span (so a phase is what the online policy fed the model on average
//! there), and it starts at the span's first step. The first phase always
//! starts at step 0. `--total-steps S` rescales the steps to a run of S steps
//! (a trajectory from a short proxy run applied to a long one).

use crate::error::{Error, Result};
use crate::mixture::Mixture;
use crate::store::trajectory::{Trajectory, TrajectoryRow};

/// One phase of a schedule: from `start_step` on, train on `mixture`.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulePhase {
    pub start_step: u64,
    pub mixture: Mixture,
}

impl Trajectory {
    /// Cut into `n` phases (see the module docs). `total_steps` rescales steps.
    pub fn phases(&self, n: usize, total_steps: Option<u64>) -> Result<Vec<SchedulePhase>> {
        if n == 0 {
            return Err(Error::invalid("--phases must be at least 1"));
        }
        if total_steps == Some(0) {
            return Err(Error::invalid("--total-steps must be at least 1"));
        }
        let first = self.rows[0].step;
        let last = self.rows[self.rows.len() - 1].step;
        // In f64: `last - first + 1` overflows u64 for a trajectory spanning every step.
        let span = (last - first) as f64 + 1.0;
        // Each row goes to the phase its step falls in (clamped, so float rounding
        // of huge steps cannot drop a row).
        let mut members: Vec<Vec<&TrajectoryRow>> = vec![Vec::new(); n];
        for r in &self.rows {
            let p = (((r.step - first) as f64 / span) * n as f64) as usize;
            members[p.min(n - 1)].push(r);
        }
        let mut phases: Vec<SchedulePhase> = Vec::new();
        for (p, members) in members.iter().enumerate() {
            if members.is_empty() {
                // Fewer rows than phases in this span: merge into the previous phase.
                continue;
            }
            let mut mean = vec![0.0; self.domains.len()];
            for r in members {
                for (m, w) in mean.iter_mut().zip(&r.weights) {
                    *m += w / members.len() as f64;
                }
            }
            let start = if phases.is_empty() {
                0
            } else {
                let frac = p as f64 / n as f64;
                match total_steps {
                    Some(total) => (frac * total as f64).round() as u64,
                    None => (first as f64 + span * frac).ceil() as u64,
                }
            };
            if let Some(prev) = phases.last() {
                if start <= prev.start_step {
                    return Err(Error::invalid(format!(
                        "phase {} would start at step {start}, no later than phase {} \
                         (step {}): use fewer --phases or a larger --total-steps",
                        phases.len() + 1,
                        phases.len(),
                        prev.start_step
                    )));
                }
            }
            phases.push(SchedulePhase {
                start_step: start,
                mixture: Mixture::from_scores(self.domains.clone(), &mean)?,
            });
        }
        Ok(phases)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const T: &str = "step,w_a,w_b,loss_a,loss_b\n0,0.5,0.5,3.0,\n10,0.7,0.3,2.9,3.1\n20,0.1,0.9,,3.0\n30,0.3,0.7,2.7,2.8\n";

    #[test]
    fn phases_average_their_span() {
        let t = Trajectory::parse(Path::new("t.csv"), T).unwrap();
        let p = t.phases(2, None).unwrap();
        // Span 0..31 cut at 15.5: rows 0,10 then 20,30.
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].start_step, 0);
        assert_eq!(p[1].start_step, 16);
        assert!((p[0].mixture.weights()[0] - 0.6).abs() < 1e-12);
        assert!((p[1].mixture.weights()[0] - 0.2).abs() < 1e-12);
        let p = t.phases(2, Some(1000)).unwrap();
        assert_eq!(p[1].start_step, 500);
        // More phases than rows: empty spans merge away.
        assert_eq!(t.phases(40, None).unwrap().len(), 4);
        // Too few total steps for the phases: an error, not phases sharing a start.
        assert!(t.phases(3, Some(2)).is_err());
        assert!(t.phases(1, Some(0)).is_err());
    }

    #[test]
    fn huge_steps_neither_overflow_nor_drop_rows() {
        let t = Trajectory::parse(
            Path::new("t.csv"),
            "step,w_a,w_b\n0,0.5,0.5\n18446744073709551615,0.1,0.9\n",
        )
        .unwrap();
        let p = t.phases(2, None).unwrap();
        assert_eq!(p.len(), 2);
        assert!((p[1].mixture.weights()[0] - 0.1).abs() < 1e-12);
        let t = Trajectory::parse(
            Path::new("t.csv"),
            "step,w_a,w_b\n18446744073709551615,0.5,0.5\n",
        )
        .unwrap();
        assert_eq!(t.phases(3, None).unwrap().len(), 1);
    }
}
