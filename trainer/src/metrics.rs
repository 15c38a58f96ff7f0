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

/// Per-pixel ground truth for [`aupro`]: every defect pixel carries the
/// reciprocal of its connected region's size, every normal pixel 0.
#[derive(Debug, Default)]
pub struct RegionLabels {
    weights: Vec<f32>,
    regions: usize,
    normals: usize,
}

impl RegionLabels {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one image's mask (row-major, `width` pixels a row). Defect regions
    /// are its 8-connected components, as in the MVTec AD evaluation code.
    pub fn push_mask(&mut self, mask: &[bool], width: usize) -> Result<(), String> {
        if width == 0 || mask.len() % width != 0 {
            return Err(format!(
                "mask of {} pixels is not a whole number of rows of width {width}",
                mask.len()
            ));
        }
        let (region_of, sizes) = connected_regions(mask, width);
        let offset = self.weights.len();
        self.weights.resize(offset + mask.len(), 0.0);
        for (i, region) in region_of.iter().enumerate() {
            match region {
                Some(r) => self.weights[offset + i] = 1.0 / sizes[*r] as f32,
                None => self.normals += 1,
            }
        }
        self.regions += sizes.len();
        Ok(())
    }

    /// Pixels pushed so far.
    pub fn len(&self) -> usize {
        self.weights.len()
    }

    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// Connected defect regions pushed so far.
    pub fn regions(&self) -> usize {
        self.regions
    }
}

/// 8-connected components of a row-major mask: the region index of every
/// pixel (`None` for background) and the size of every region.
pub fn connected_regions(mask: &[bool], width: usize) -> (Vec<Option<usize>>, Vec<usize>) {
    let height = mask.len() / width.max(1);
    let mut region_of: Vec<Option<usize>> = vec![None; mask.len()];
    let mut sizes = Vec::new();
    let mut stack = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || region_of[start].is_some() {
            continue;
        }
        let id = sizes.len();
        let mut size = 0;
        region_of[start] = Some(id);
        stack.push(start);
        while let Some(p) = stack.pop() {
            size += 1;
            let (y, x) = ((p / width) as i64, (p % width) as i64);
            for dy in -1..=1 {
                for dx in -1..=1 {
                    let (ny, nx) = (y + dy, x + dx);
                    if ny < 0 || nx < 0 || ny >= height as i64 || nx >= width as i64 {
                        continue;
                    }
                    let q = ny as usize * width + nx as usize;
                    if mask[q] && region_of[q].is_none() {
                        region_of[q] = Some(id);
                        stack.push(q);
                    }
                }
            }
        }
        sizes.push(size);
    }
    (region_of, sizes)
}

/// Pixel-level metrics of one set of anomaly maps, from one sort of the pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PixelMetrics {
    /// Pixel AUROC (ties count one half); `None` without defect or normal pixels.
    pub auroc: Option<f64>,
    /// [`aupro`] at the `max_fpr` given to [`pixel_metrics`].
    pub aupro: Option<f64>,
}

/// Area under the per-region-overlap (PRO) curve up to a false-positive rate
/// of `max_fpr`, divided by `max_fpr` (the MVTec AD definition, usually with
/// `max_fpr` = 0.3).
///
/// At each threshold, PRO is the mean over all defect regions of the share of
/// the region's pixels at or above the threshold, and the false-positive rate
/// is the share of all normal pixels at or above it. The curve is integrated
/// with the trapezoid rule and interpolated linearly at `max_fpr`. Returns
/// `None` when there are no regions or no normal pixels.
pub fn aupro(scores: &[f32], labels: &RegionLabels, max_fpr: f64) -> Option<f64> {
    pixel_metrics(scores, labels, max_fpr).aupro
}

/// Pixel indices sorted by descending score, each packed below its score's
/// order key (upper 32 bits), so that one sort of plain integers does the work
/// and ties share the upper half. The key orders like [`f32::total_cmp`].
fn descending_order(scores: &[f32]) -> Vec<u64> {
    assert!(scores.len() <= u32::MAX as usize, "at most 2³² pixels");
    let mut order: Vec<u64> = scores
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let bits = s.to_bits();
            // Flip negatives entirely and set the sign bit of positives, so the
            // unsigned order is the float order; then invert it for descending.
            let ascending = if bits >> 31 == 1 {
                !bits
            } else {
                bits | 0x8000_0000
            };
            (u64::from(!ascending) << 32) | i as u64
        })
        .collect();
    order.sort_unstable();
    order
}

/// Pixel AUROC and [`aupro`] of pixel `scores` against `labels`, sharing one
/// descending sort of the pixels.
pub fn pixel_metrics(scores: &[f32], labels: &RegionLabels, max_fpr: f64) -> PixelMetrics {
    assert_eq!(
        scores.len(),
        labels.len(),
        "one region label per pixel score"
    );
    assert!(
        max_fpr > 0.0 && max_fpr <= 1.0,
        "max_fpr = {max_fpr} must lie in (0, 1]"
    );
    let positives = labels.len() - labels.normals;
    if positives == 0 || labels.normals == 0 {
        return PixelMetrics {
            auroc: None,
            aupro: None,
        };
    }
    let order = descending_order(scores);

    let normals = labels.normals as f64;
    let regions = labels.regions as f64;
    let (mut false_positives, mut true_positives) = (0usize, 0usize);
    // Pairs (defect pixel, normal pixel) ranked correctly, ties counting one half.
    let mut ordered_pairs = 0.0f64;
    let mut overlap_sum = 0.0f64;
    let (mut last_fpr, mut last_pro) = (0.0f64, 0.0f64);
    let mut area = 0.0;
    let mut aupro = None;
    let mut i = 0;
    while i < order.len() {
        // One threshold per distinct score: take the whole group of ties.
        let key = order[i] >> 32;
        let (mut group_normals, mut group_defects) = (0usize, 0usize);
        while i < order.len() && order[i] >> 32 == key {
            let w = labels.weights[(order[i] & 0xFFFF_FFFF) as usize];
            if w > 0.0 {
                overlap_sum += w as f64;
                group_defects += 1;
            } else {
                group_normals += 1;
            }
            i += 1;
        }
        ordered_pairs +=
            group_normals as f64 * (true_positives as f64 + group_defects as f64 / 2.0);
        true_positives += group_defects;
        false_positives += group_normals;
        if aupro.is_some() {
            continue;
        }
        let fpr = false_positives as f64 / normals;
        let pro = overlap_sum / regions;
        if fpr >= max_fpr {
            // Interpolate the segment's PRO at max_fpr and stop integrating there.
            let t = if fpr > last_fpr {
                (max_fpr - last_fpr) / (fpr - last_fpr)
            } else {
                1.0
            };
            let pro_at_max = last_pro + t * (pro - last_pro);
            area += (max_fpr - last_fpr) * (last_pro + pro_at_max) / 2.0;
            aupro = Some(area / max_fpr);
            continue;
        }
        area += (fpr - last_fpr) * (last_pro + pro) / 2.0;
        last_fpr = fpr;
        last_pro = pro;
    }
    PixelMetrics {
        auroc: Some(ordered_pairs / (positives as f64 * normals)),
        // Regions exist whenever defect pixels do, and the last group brings
        // the FPR to 1, so `aupro` is set by now.
        aupro,
    }
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

    fn labels_of(masks: &[(&[bool], usize)]) -> RegionLabels {
        let mut labels = RegionLabels::new();
        for (mask, width) in masks {
            labels.push_mask(mask, *width).unwrap();
        }
        labels
    }

    #[test]
    fn regions_use_eight_connectivity() {
        // 1 1 0
        // 0 0 1   the right pixel touches (0, 1) diagonally: one region of 3.
        let (region_of, sizes) = connected_regions(&[true, true, false, false, false, true], 3);
        assert_eq!(sizes, vec![3]);
        assert_eq!(region_of[5], Some(0));
        assert_eq!(region_of[2], None);
        // 1 0 0
        // 0 0 1   no contact: two regions of 1.
        let (_, sizes) = connected_regions(&[true, false, false, false, false, true], 3);
        assert_eq!(sizes, vec![1, 1]);
    }

    #[test]
    fn aupro_single_region_known_values() {
        // Pixels (score, defect): (0.9, y) (0.2, y) (0.5, n) (0.1, n).
        // Curve (FPR, PRO): (0, 0) (0, 0.5) (0.5, 0.5) (0.5, 1) (1, 1).
        let labels = labels_of(&[(&[true, true, false, false], 4)]);
        let scores = [0.9, 0.2, 0.5, 0.1];
        // Up to FPR 1: 0.5·0.5 + 0.5·1 = 0.75.
        assert!((aupro(&scores, &labels, 1.0).unwrap() - 0.75).abs() < 1e-12);
        // Up to FPR 0.3: PRO is 0.5 over [0, 0.3], so the normalised area is 0.5.
        assert!((aupro(&scores, &labels, 0.3).unwrap() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn aupro_averages_regions_not_pixels() {
        // Regions {0} (size 1) and {2, 3, 4} (size 3); normals 1 and 5.
        // Scores 0.9 (pixel 2) and 0.8 (pixel 0) lead: at FPR 0 the PRO is
        // (1 + 1/3) / 2 = 2/3, whereas the pixel TPR would be 2/4.
        let mask = [true, false, true, true, true, false];
        let labels = labels_of(&[(&mask, 6)]);
        assert_eq!(labels.regions(), 2);
        let scores = [0.8, 0.6, 0.9, 0.1, 0.1, 0.3];
        let expected = 2.0 / 3.0;
        assert!((aupro(&scores, &labels, 0.3).unwrap() - expected).abs() < 1e-6);
        assert!((aupro(&scores, &labels, 1.0).unwrap() - expected).abs() < 1e-6);
    }

    #[test]
    fn aupro_ties_and_several_images() {
        // All scores tied: the curve is the straight line from (0, 0) to (1, 1),
        // so the area up to 0.3 is 0.3² / 2 = 0.045, normalised 0.15.
        let labels = labels_of(&[(&[true, false], 2), (&[false, false, false], 3)]);
        let scores = [0.5; 5];
        assert!((aupro(&scores, &labels, 0.3).unwrap() - 0.15).abs() < 1e-12);
        // The defect pixel ranks first, the FPR then rises in steps of 1/4
        // through the normal pixels of both images with PRO 1: area 1.
        let scores = [0.9, 0.1, 0.2, 0.3, 0.4];
        assert!((aupro(&scores, &labels, 0.3).unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn pixel_auroc_matches_rank_auroc() {
        let mask = [true, false, true, true, false, false, true, false];
        let labels = labels_of(&[(&mask[..4], 2), (&mask[4..], 2)]);
        let scores = [0.5, 0.5, 0.9, 0.1, 0.3, 0.5, 0.2, 0.0];
        let got = pixel_metrics(&scores, &labels, 0.3).auroc.unwrap();
        // Positives 0.5, 0.9, 0.1, 0.2 against negatives 0.5, 0.3, 0.5, 0.0:
        // 3 + 4 + 1 + 1 = 9 of 16 pairs (0.5 against 0.5 counts one half).
        assert!((got - 9.0 / 16.0).abs() < 1e-12);
        assert_eq!(Some(got), auroc(&scores, &mask));
    }

    #[test]
    fn descending_order_handles_signs_and_ties() {
        let order: Vec<u64> = descending_order(&[-1.0, 2.0, 0.0, -3.5, 2.0])
            .iter()
            .map(|k| k & 0xFFFF_FFFF)
            .collect();
        assert_eq!(order, vec![1, 4, 2, 0, 3]);
    }

    #[test]
    fn aupro_undefined_without_regions() {
        let labels = labels_of(&[(&[false, false], 2)]);
        assert_eq!(aupro(&[0.1, 0.2], &labels, 0.3), None);
        let mut labels = RegionLabels::new();
        assert!(labels.push_mask(&[true, false, true], 2).is_err());
    }
}
