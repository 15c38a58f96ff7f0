//! Detection and localisation metrics.

/// Area under the ROC curve of `scores` against binary `labels` (true = anomalous).
///
/// Tied scores count one half, as in the Mann–Whitney U statistic. Returns
/// `None` when either class is empty, because the AUROC is then undefined.
pub fn auroc(scores: &[f32], labels: &[bool]) -> Option<f64> {
    assert_eq!(scores.len(), labels.len(), "one label per score");
    let positives = labels.iter().filter(|&&l| l).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_unstable_by(|&a, &b| scores[a].total_cmp(&scores[b]));

    // Sum of the ranks of the positives, with tied groups sharing their mean rank.
    let mut rank_sum = 0.0f64;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let mean_rank = (i + j) as f64 / 2.0 + 1.0;
        let tied_pos = order[i..=j].iter().filter(|&&k| labels[k]).count();
        rank_sum += mean_rank * tied_pos as f64;
        i = j + 1;
    }
    let p = positives as f64;
    let u = rank_sum - p * (p + 1.0) / 2.0;
    Some(u / (p * negatives as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auroc_known_values() {
        assert_eq!(
            auroc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]),
            Some(0.75)
        );
        assert_eq!(auroc(&[0.1, 0.2, 0.3], &[false, false, true]), Some(1.0));
        assert_eq!(auroc(&[0.3, 0.2, 0.1], &[false, false, true]), Some(0.0));
        // All tied: one half.
        assert_eq!(
            auroc(&[0.5, 0.5, 0.5, 0.5], &[false, true, false, true]),
            Some(0.5)
        );
        // One tie across classes: pairs (p=0.5 vs n=0.5) count one half.
        assert_eq!(auroc(&[0.5, 0.5, 0.9], &[false, true, true]), Some(0.75));
        assert_eq!(auroc(&[0.5, 0.6], &[true, true]), None);
    }
}
