//! Defect regions of one frame: the 8-connected components of the anomaly-map
//! patches whose score is above the threshold, as boxes in frame pixels.
//!
//! A patch is above the threshold under the same rule as the verdict
//! (`score > threshold`), and the image score is the maximum patch score. So
//! a frame has regions exactly when its verdict is NG.
//!
//! The model resizes the whole frame to its square input without cropping,
//! so patch column `c` of a `map_width`-wide grid covers the frame pixels
//! from `c · W / map_width` to `(c + 1) · W / map_width` for a frame `W`
//! pixels wide (rows likewise). A box is the smallest pixel rectangle that
//! covers all patches of its component: its left and top edges round down and
//! its right and bottom edges round up. Boxes of neighbouring components can
//! therefore share a pixel row or column when the frame size is not a
//! multiple of the grid size.

use std::fmt;

/// Maximum number of regions kept per frame. Regions beyond it, those with
/// the lowest peak scores, are only counted.
pub const MAX_REGIONS: usize = 16;

/// One defect region: a box in frame pixels and the scores inside it.
///
/// The layout is C's `GstFunadRegion` of `funadmeta.h`.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct FunadRegion {
    /// Left edge in pixels, from 0 at the left of the frame.
    pub x: u32,
    /// Top edge in pixels, from 0 at the top of the frame.
    pub y: u32,
    /// Width in pixels, at least 1.
    pub width: u32,
    /// Height in pixels, at least 1.
    pub height: u32,
    /// Maximum patch score inside the region, above the threshold.
    pub peak_score: f32,
    /// Number of anomaly-map patches in the region.
    pub patch_count: u32,
}

/// Regions of one frame, strongest first, and the number left out.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Regions {
    /// At most the requested maximum, ordered by peak score (highest first),
    /// then patch count (largest first), then position (top, then left).
    pub regions: Vec<FunadRegion>,
    /// Components found beyond the maximum, which `regions` leaves out.
    pub dropped: u32,
}

/// Invalid input of [`find_regions`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegionError {
    /// The map does not have `map_width × map_height` values.
    MapSize {
        values: usize,
        map_width: u32,
        map_height: u32,
    },
    /// The frame has no pixels, so no box can be placed in it.
    EmptyFrame { width: u32, height: u32 },
}

impl fmt::Display for RegionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegionError::MapSize {
                values,
                map_width,
                map_height,
            } => write!(
                f,
                "anomaly map has {values} values, expected {map_width} × {map_height}"
            ),
            RegionError::EmptyFrame { width, height } => {
                write!(f, "frame size {width} × {height} has no pixels")
            }
        }
    }
}

impl std::error::Error for RegionError {}

/// Patch extent of one component while it is being labelled.
struct Component {
    first_column: u32,
    last_column: u32,
    first_row: u32,
    last_row: u32,
    peak_score: f32,
    patch_count: u32,
}

/// Finds the defect regions of a row-major `map_width × map_height` anomaly
/// map for a `frame_width × frame_height` frame, keeping at most
/// `max_regions` of them.
pub fn find_regions(
    map: &[f32],
    map_width: u32,
    map_height: u32,
    threshold: f32,
    frame_width: u32,
    frame_height: u32,
    max_regions: usize,
) -> Result<Regions, RegionError> {
    let cells = map_width as usize * map_height as usize;
    if map.len() != cells {
        return Err(RegionError::MapSize {
            values: map.len(),
            map_width,
            map_height,
        });
    }
    if cells == 0 {
        return Ok(Regions::default());
    }
    if frame_width == 0 || frame_height == 0 {
        return Err(RegionError::EmptyFrame {
            width: frame_width,
            height: frame_height,
        });
    }

    let mut components = label_components(map, map_width, map_height, threshold);
    components.sort_by(|a, b| {
        b.peak_score
            .total_cmp(&a.peak_score)
            .then(b.patch_count.cmp(&a.patch_count))
            .then(a.first_row.cmp(&b.first_row))
            .then(a.first_column.cmp(&b.first_column))
    });
    let dropped = components.len().saturating_sub(max_regions);
    components.truncate(max_regions);

    let regions = components
        .iter()
        .map(|c| {
            let (x, width) = patch_span(c.first_column, c.last_column, map_width, frame_width);
            let (y, height) = patch_span(c.first_row, c.last_row, map_height, frame_height);
            FunadRegion {
                x,
                y,
                width,
                height,
                peak_score: c.peak_score,
                patch_count: c.patch_count,
            }
        })
        .collect();
    Ok(Regions {
        regions,
        dropped: u32::try_from(dropped).unwrap_or(u32::MAX),
    })
}

/// Labels the 8-connected components of the patches above `threshold` with a
/// depth-first flood fill, in row-major order of their first patch.
fn label_components(
    map: &[f32],
    map_width: u32,
    map_height: u32,
    threshold: f32,
) -> Vec<Component> {
    let (width, height) = (map_width as usize, map_height as usize);
    let above: Vec<bool> = map.iter().map(|&v| v > threshold).collect();
    let mut visited = vec![false; map.len()];
    let mut components = Vec::new();
    let mut stack = Vec::new();

    for start in 0..map.len() {
        if !above[start] || visited[start] {
            continue;
        }
        visited[start] = true;
        stack.push(start);
        let mut component = Component {
            first_column: (start % width) as u32,
            last_column: (start % width) as u32,
            first_row: (start / width) as u32,
            last_row: (start / width) as u32,
            peak_score: map[start],
            patch_count: 0,
        };

        while let Some(cell) = stack.pop() {
            let (column, row) = (cell % width, cell / width);
            component.first_column = component.first_column.min(column as u32);
            component.last_column = component.last_column.max(column as u32);
            component.first_row = component.first_row.min(row as u32);
            component.last_row = component.last_row.max(row as u32);
            component.peak_score = component.peak_score.max(map[cell]);
            component.patch_count += 1;

            // The eight neighbours, clipped at the grid edges.
            for neighbour_row in row.saturating_sub(1)..=(row + 1).min(height - 1) {
                for neighbour_column in column.saturating_sub(1)..=(column + 1).min(width - 1) {
                    let neighbour = neighbour_row * width + neighbour_column;
                    if above[neighbour] && !visited[neighbour] {
                        visited[neighbour] = true;
                        stack.push(neighbour);
                    }
                }
            }
        }
        components.push(component);
    }
    components
}

/// Pixel start and length covering patches `first..=last` of a grid of
/// `cells` patches laid over `pixels` pixels.
fn patch_span(first: u32, last: u32, cells: u32, pixels: u32) -> (u32, u32) {
    let (cells, pixels) = (cells as u64, pixels as u64);
    let start = first as u64 * pixels / cells;
    let end = ((last as u64 + 1) * pixels).div_ceil(cells).min(pixels);
    (start as u32, (end - start).max(1) as u32)
}

/// Scales a box from a `from_width × from_height` frame to a `to_width ×
/// to_height` frame, rounding outward so it still covers the same area.
/// Returns the box unchanged when either size has no pixels.
pub fn scale_region(
    region: &FunadRegion,
    (from_width, from_height): (u32, u32),
    (to_width, to_height): (u32, u32),
) -> FunadRegion {
    if from_width == 0 || from_height == 0 || to_width == 0 || to_height == 0 {
        return *region;
    }
    let scale = |start: u32, length: u32, from: u32, to: u32| -> (u32, u32) {
        let (from, to) = (from as u64, to as u64);
        let new_start = (start as u64 * to / from).min(to - 1);
        let end = ((start as u64 + length as u64) * to).div_ceil(from).min(to);
        (
            new_start as u32,
            end.saturating_sub(new_start).max(1) as u32,
        )
    };
    let (x, width) = scale(region.x, region.width, from_width, to_width);
    let (y, height) = scale(region.y, region.height, from_height, to_height);
    FunadRegion {
        x,
        y,
        width,
        height,
        ..*region
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a map from rows of text: `.` is 0.1, a digit d is 0.5 + d / 20.
    fn map_of(rows: &[&str]) -> (Vec<f32>, u32, u32) {
        let width = rows[0].len() as u32;
        let values = rows
            .iter()
            .flat_map(|row| row.chars())
            .map(|c| match c {
                '.' => 0.1,
                d => 0.5 + d.to_digit(10).expect("digit or dot") as f32 / 20.0,
            })
            .collect();
        (values, width, rows.len() as u32)
    }

    /// Regions of a text map at threshold 0.5 on a frame of the map's size × `scale`.
    fn regions_of(rows: &[&str], scale: u32) -> Regions {
        let (map, width, height) = map_of(rows);
        find_regions(
            &map,
            width,
            height,
            0.5,
            width * scale,
            height * scale,
            MAX_REGIONS,
        )
        .expect("valid map")
    }

    fn boxes(regions: &Regions) -> Vec<(u32, u32, u32, u32)> {
        regions
            .regions
            .iter()
            .map(|r| (r.x, r.y, r.width, r.height))
            .collect()
    }

    #[test]
    fn separate_blobs_give_two_boxes() {
        let regions = regions_of(&["11....", "11....", "....9.", "....99"], 10);
        assert_eq!(boxes(&regions), [(40, 20, 20, 20), (0, 0, 20, 20)]);
        assert_eq!(regions.regions[0].patch_count, 3);
        assert_eq!(regions.regions[1].patch_count, 4);
        assert_eq!(regions.regions[0].peak_score, 0.5 + 9.0 / 20.0);
        assert_eq!(regions.dropped, 0);
    }

    #[test]
    fn diagonal_neighbours_join() {
        // Under 4-connectivity these would be four regions.
        let regions = regions_of(&["1...", ".1..", "..1.", "...1"], 1);
        assert_eq!(boxes(&regions), [(0, 0, 4, 4)]);
        assert_eq!(regions.regions[0].patch_count, 4);
    }

    #[test]
    fn branches_merge_into_one_region() {
        // A single pass that labels each row against the one above would
        // give the two arms separate labels before the bottom row joins them.
        let regions = regions_of(&["1...1", "1...1", "11111"], 2);
        assert_eq!(boxes(&regions), [(0, 0, 10, 6)]);
        assert_eq!(regions.regions[0].patch_count, 9);
    }

    #[test]
    fn threshold_is_exclusive() {
        let map = [0.5, 0.6, 0.4, 0.5];
        let regions = find_regions(&map, 4, 1, 0.5, 40, 10, MAX_REGIONS).unwrap();
        assert_eq!(boxes(&regions), [(10, 0, 10, 10)]);
        assert_eq!(regions.regions[0].peak_score, 0.6);
    }

    #[test]
    fn nothing_above_threshold_gives_no_regions() {
        let regions = regions_of(&["....", "...."], 4);
        assert!(regions.regions.is_empty());
        assert_eq!(regions.dropped, 0);
    }

    #[test]
    fn boxes_scale_to_frame_pixels() {
        // A 16 × 16 grid over 640 × 480: patches of 40 × 30 pixels.
        let mut map = vec![0.0f32; 256];
        map[2 * 16 + 3] = 0.9;
        let regions = find_regions(&map, 16, 16, 0.5, 640, 480, MAX_REGIONS).unwrap();
        assert_eq!(boxes(&regions), [(120, 60, 40, 30)]);

        // The last patch reaches the right and bottom frame edges.
        map[255] = 0.8;
        let regions = find_regions(&map, 16, 16, 0.5, 641, 479, MAX_REGIONS).unwrap();
        let last = regions.regions[1];
        assert_eq!(last.x + last.width, 641);
        assert_eq!(last.y + last.height, 479);
    }

    #[test]
    fn uneven_sizes_round_outward() {
        // Three patches over 10 pixels: patch 1 covers 3.33 to 6.67.
        let map = [0.0, 0.9, 0.0];
        let regions = find_regions(&map, 3, 1, 0.5, 10, 7, MAX_REGIONS).unwrap();
        assert_eq!(boxes(&regions), [(3, 0, 4, 7)]);
    }

    #[test]
    fn frame_smaller_than_grid_keeps_boxes_inside() {
        let mut map = vec![0.0f32; 16];
        map[15] = 0.9;
        let regions = find_regions(&map, 16, 1, 0.5, 5, 1, MAX_REGIONS).unwrap();
        let region = regions.regions[0];
        assert!(region.width >= 1);
        assert!(
            region.x + region.width <= 5,
            "box {region:?} leaves the frame"
        );
    }

    #[test]
    fn cap_keeps_highest_peaks() {
        // 25 isolated patches on a 9 × 9 grid, every other cell, with
        // peaks rising in row-major order.
        let mut map = vec![0.0f32; 81];
        let mut peaks = Vec::new();
        for row in (0..9).step_by(2) {
            for column in (0..9).step_by(2) {
                let peak = 0.6 + 0.01 * peaks.len() as f32;
                map[row * 9 + column] = peak;
                peaks.push(peak);
            }
        }
        let regions = find_regions(&map, 9, 9, 0.5, 90, 90, MAX_REGIONS).unwrap();
        assert_eq!(regions.regions.len(), MAX_REGIONS);
        assert_eq!(regions.dropped, 25 - MAX_REGIONS as u32);
        let kept: Vec<f32> = regions.regions.iter().map(|r| r.peak_score).collect();
        let mut expected = peaks.clone();
        expected.sort_by(|a, b| b.total_cmp(a));
        expected.truncate(MAX_REGIONS);
        assert_eq!(kept, expected);
    }

    #[test]
    fn equal_peaks_order_by_size_then_position() {
        let regions = regions_of(&["1.1.11", "......", "1....."], 1);
        assert_eq!(
            boxes(&regions),
            [(4, 0, 2, 1), (0, 0, 1, 1), (2, 0, 1, 1), (0, 2, 1, 1)]
        );
    }

    #[test]
    fn wrong_map_length_is_rejected() {
        let error = find_regions(&[0.9; 5], 2, 2, 0.5, 10, 10, MAX_REGIONS).unwrap_err();
        assert_eq!(
            error,
            RegionError::MapSize {
                values: 5,
                map_width: 2,
                map_height: 2
            }
        );
        assert!(error.to_string().contains("5 values, expected 2 × 2"));
    }

    #[test]
    fn empty_frame_is_rejected() {
        let error = find_regions(&[0.9; 4], 2, 2, 0.5, 0, 10, MAX_REGIONS).unwrap_err();
        assert_eq!(
            error,
            RegionError::EmptyFrame {
                width: 0,
                height: 10
            }
        );
    }

    #[test]
    fn empty_map_gives_no_regions() {
        let regions = find_regions(&[], 0, 0, 0.5, 10, 10, MAX_REGIONS).unwrap();
        assert_eq!(regions, Regions::default());
    }

    #[test]
    fn scaling_halves_and_rounds_outward() {
        let region = FunadRegion {
            x: 120,
            y: 61,
            width: 40,
            height: 31,
            peak_score: 0.9,
            patch_count: 1,
        };
        let half = scale_region(&region, (640, 480), (320, 240));
        assert_eq!((half.x, half.y, half.width, half.height), (60, 30, 20, 16));
        assert_eq!(half.peak_score, 0.9);

        let tiny = scale_region(&region, (640, 480), (3, 2));
        assert!(tiny.x + tiny.width <= 3, "{tiny:?} leaves a 3 × 2 frame");
        assert!(tiny.y + tiny.height <= 2, "{tiny:?} leaves a 3 × 2 frame");
        assert!(tiny.width >= 1, "{tiny:?} has no width");
        assert!(tiny.height >= 1, "{tiny:?} has no height");

        assert_eq!(scale_region(&region, (0, 0), (320, 240)), region);
    }
}
