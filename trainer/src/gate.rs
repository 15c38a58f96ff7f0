//! Acceptance gate for a retrained model, without labels.
//!
//! Before a retrained model replaces the one in service, both score the same
//! recent frames, which were held out of the new model's training. On an
//! inspection line most frames are good, so a model that suddenly calls many
//! of them NG, or whose scores do not vary at all, is more likely broken than
//! right. The gate rejects such a model; it cannot tell a good model from a
//! slightly worse one.

use serde::Serialize;

/// Limits of the gate.
#[derive(Clone, Debug)]
pub struct GateConfig {
    /// Held-out frames needed to judge a model at all.
    pub min_frames: usize,
    /// Largest share of held-out frames the new model may call NG.
    pub max_ng_share: f64,
    /// Largest rise of the NG share over the model in service.
    pub max_ng_increase: f64,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            min_frames: 10,
            max_ng_share: 0.3,
            max_ng_increase: 0.15,
        }
    }
}

/// Summary of one model's scores on the held-out frames.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScoreSummary {
    pub frames: usize,
    /// Share of frames above the model's threshold.
    pub ng_share: f64,
    pub median: f64,
    /// Interquartile range of the scores.
    pub spread: f64,
    pub threshold: f64,
}

impl ScoreSummary {
    /// Summarises image scores; non-finite scores count as NG.
    pub fn of(scores: &[f32], threshold: f32) -> Self {
        let mut sorted: Vec<f64> = scores
            .iter()
            .filter(|s| s.is_finite())
            .map(|&s| s as f64)
            .collect();
        sorted.sort_by(f64::total_cmp);
        let q = |p: f64| {
            if sorted.is_empty() {
                f64::NAN
            } else {
                sorted[((sorted.len() - 1) as f64 * p).round() as usize]
            }
        };
        let ng = scores
            .iter()
            .filter(|s| !s.is_finite() || **s > threshold)
            .count();
        ScoreSummary {
            frames: scores.len(),
            ng_share: if scores.is_empty() {
                0.0
            } else {
                ng as f64 / scores.len() as f64
            },
            median: q(0.5),
            spread: q(0.75) - q(0.25),
            threshold: threshold as f64,
        }
    }
}

/// The gate's decision.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GateReport {
    pub accepted: bool,
    /// Reason for the decision, in one sentence.
    pub reason: String,
    pub candidate: ScoreSummary,
    /// The model in service; `None` at cold start.
    pub current: Option<ScoreSummary>,
}

/// Judges a candidate model by its scores on held-out frames, against the
/// scores of the model in service when there is one.
pub fn evaluate(
    cfg: &GateConfig,
    candidate: &[f32],
    candidate_threshold: f32,
    current: Option<(&[f32], f32)>,
) -> GateReport {
    let cand = ScoreSummary::of(candidate, candidate_threshold);
    let cur = current.map(|(s, t)| ScoreSummary::of(s, t));
    let reject = |reason: String| (false, reason);
    let (accepted, reason) = if candidate.len() < cfg.min_frames {
        reject(format!(
            "only {} held-out frames, the gate needs {}",
            candidate.len(),
            cfg.min_frames
        ))
    } else if candidate.iter().any(|s| !s.is_finite()) {
        reject("the model gives non-finite scores".to_string())
    } else if cand.frames > 1 && candidate.iter().all(|&s| (s - candidate[0]).abs() <= 1e-6) {
        reject(format!(
            "all {} held-out frames score {:.4}: the model does not discriminate",
            cand.frames, candidate[0]
        ))
    } else if cand.ng_share > cfg.max_ng_share {
        reject(format!(
            "it calls {:.1}% of held-out frames NG, above the limit of {:.1}%",
            100.0 * cand.ng_share,
            100.0 * cfg.max_ng_share
        ))
    } else if let Some(cur) = cur
        .as_ref()
        .filter(|c| cand.ng_share > c.ng_share + cfg.max_ng_increase)
    {
        reject(format!(
            "it calls {:.1}% of held-out frames NG against {:.1}% for the model in service, \
             a rise above the limit of {:.1} points",
            100.0 * cand.ng_share,
            100.0 * cur.ng_share,
            100.0 * cfg.max_ng_increase
        ))
    } else {
        let against = cur.as_ref().map_or(String::new(), |c| {
            format!(" (model in service: {:.1}%)", 100.0 * c.ng_share)
        });
        (
            true,
            format!(
                "it calls {:.1}% of {} held-out frames NG{against}",
                100.0 * cand.ng_share,
                cand.frames
            ),
        )
    };
    GateReport {
        accepted,
        reason,
        candidate: cand,
        current: cur,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(ng: usize, ok: usize) -> Vec<f32> {
        (0..ok)
            .map(|i| 0.3 + 0.01 * (i % 10) as f32)
            .chain((0..ng).map(|i| 0.97 + 0.001 * i as f32))
            .collect()
    }

    #[test]
    fn accepts_a_model_that_flags_few_frames() {
        let r = evaluate(&GateConfig::default(), &scores(2, 38), 0.95, None);
        assert!(r.accepted, "{}", r.reason);
        assert!((r.candidate.ng_share - 0.05).abs() < 1e-9);
        assert!(r.reason.contains("5.0% of 40"), "{}", r.reason);
    }

    fn rejected(r: &GateReport, needle: &str) {
        assert!(!r.accepted, "{}", r.reason);
        assert!(r.reason.contains(needle), "{}", r.reason);
    }

    #[test]
    fn rejects_too_few_frames() {
        rejected(
            &evaluate(&GateConfig::default(), &scores(0, 5), 0.95, None),
            "only 5",
        );
    }

    #[test]
    fn rejects_flat_scores() {
        rejected(
            &evaluate(&GateConfig::default(), &[0.5; 20], 0.95, None),
            "does not discriminate",
        );
    }

    #[test]
    fn rejects_high_ng_share() {
        rejected(
            &evaluate(&GateConfig::default(), &scores(16, 24), 0.95, None),
            "40.0%",
        );
    }

    #[test]
    fn rejects_non_finite_scores() {
        let mut nan = scores(0, 20);
        nan[3] = f32::NAN;
        rejected(
            &evaluate(&GateConfig::default(), &nan, 0.95, None),
            "non-finite",
        );
    }

    #[test]
    fn compares_with_the_model_in_service() {
        let cfg = GateConfig::default();
        let current = scores(0, 40);
        // 20% NG is under the absolute limit but 20 points above the current model.
        let r = evaluate(&cfg, &scores(8, 32), 0.95, Some((&current, 0.95)));
        rejected(&r, "rise");
        assert_eq!(r.current.as_ref().unwrap().ng_share, 0.0);

        let current = scores(6, 34);
        let r = evaluate(&cfg, &scores(8, 32), 0.95, Some((&current, 0.95)));
        assert!(r.accepted, "{}", r.reason);
    }
}
