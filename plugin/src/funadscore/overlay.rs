//! Drawing of the anomaly overlay: heat map, outline of regions above the
//! threshold, and the OK/NG mark in the top-left corner.

use tch::{Device, Kind, Tensor};

/// Drawing options, set from the `overlay` and `overlay-opacity` properties.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OverlayStyle {
    pub heatmap: bool,
    pub outline: bool,
    /// Weight of the heat map colour in the blend, from 0 to 1.
    pub opacity: f64,
}

/// A colour in RGB and the grey level used instead on GRAY8 frames, where a
/// colour's luma alone would not separate OK from NG.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Paint {
    pub rgb: [u8; 3],
    pub grey: u8,
}

/// Outline colour: magenta, a colour the heat map never uses.
pub const OUTLINE_PAINT: Paint = Paint {
    rgb: [255, 0, 255],
    grey: 255,
};

/// OK mark: green on colour frames, white on grey ones, with a black border.
pub const OK_PAINT: Paint = Paint {
    rgb: [0, 200, 0],
    grey: 255,
};
pub const OK_BORDER: Paint = Paint {
    rgb: [0, 0, 0],
    grey: 0,
};

/// NG mark: red on colour frames, black on grey ones, with a white border.
pub const NG_PAINT: Paint = Paint {
    rgb: [230, 0, 0],
    grey: 0,
};
pub const NG_BORDER: Paint = Paint {
    rgb: [255, 255, 255],
    grey: 255,
};

/// BT.601 luma weights, used to blend the heat map into GRAY8 frames.
const LUMA: [f64; 3] = [0.299, 0.587, 0.114];

/// Maps anomaly values in [0, 1] to colour levels in [0, 1], piecewise
/// linearly so that the threshold sits in the middle: [0, t] onto [0, 0.5]
/// and [t, 1] onto [0.5, 1]. The threshold is clamped into (0, 1) first.
pub fn heat_level(map: &Tensor, threshold: f32) -> Tensor {
    let t = (threshold as f64).clamp(1e-6, 1.0 - 1e-6);
    let below = map * (0.5 / t);
    let above = (map - t) * (0.5 / (1.0 - t)) + 0.5;
    above.where_self(&map.gt(t), &below).clamp(0.0, 1.0)
}

/// Jet colour scale `[H, W, 3]` in [0, 255] of levels `[H, W]` in [0, 1]:
/// blue at 0, green-yellow at 0.5, red at 1.
pub fn jet(level: &Tensor) -> Tensor {
    let channel =
        |centre: f64| -> Tensor { ((level * 4.0 - centre).abs() * -1.0 + 1.5).clamp(0.0, 1.0) };
    Tensor::stack(&[channel(3.0), channel(2.0), channel(1.0)], -1) * 255.0
}

/// Pixels `[H, W]` on the inner border, `radius` pixels wide, of the regions
/// where `mask` is true. Outside the frame counts as outside every region, so
/// a region that touches the frame edge is outlined along it too.
pub fn outline(mask: &Tensor, radius: i64) -> Tensor {
    let (h, w) = mask.size2().expect("mask is [H, W]");
    let m = mask.to_kind(Kind::Float).view([1, 1, h, w]);
    let k = 2 * radius + 1;
    // Erosion as a min-pool over the zero-padded mask.
    let padded = m.constant_pad_nd([radius, radius, radius, radius]);
    let eroded = -(-padded).max_pool2d([k, k], [1, 1], [0, 0], [1, 1], false);
    m.gt_tensor(&eroded).view([h, w])
}

fn paint_tensor(paint: Paint, channels: i64) -> Tensor {
    let values: Vec<f32> = if channels == 1 {
        vec![paint.grey as f32]
    } else {
        paint.rgb.iter().map(|&v| v as f32).collect()
    };
    Tensor::from_slice(&values)
}

/// Side of the OK/NG mark in pixels: an eighth of the shorter frame side,
/// from 8 to 64, and never more than the frame.
pub fn mark_size(width: i64, height: i64) -> i64 {
    let side = width.min(height);
    (side / 8).clamp(8, 64).min(side)
}

/// Pixels `[height, width]` of the patches whose score is above `threshold`,
/// each patch drawn as its full rectangle (nearest-neighbour upsampling).
///
/// The outline uses these patch rectangles rather than the blurred anomaly
/// map, whose peaks are lower than the patch scores. So a frame is NG
/// exactly when at least one rectangle exists, and each NG frame shows an outline.
pub fn patches_above(patch_scores: &Tensor, threshold: f32, width: i64, height: i64) -> Tensor {
    let (gh, gw) = patch_scores.size2().expect("patch scores are [gh, gw]");
    patch_scores
        .to_device(Device::Cpu)
        .gt(threshold as f64)
        .to_kind(Kind::Float)
        .view([1, 1, gh, gw])
        .upsample_nearest2d([height, width], None, None)
        .view([height, width])
        .gt(0.5)
}

/// Draws the overlay onto pixels `[H, W, C]` (C = 1 or 3) and returns the new
/// pixels. The heat map shows the anomaly map of `patch_scores` (upsampled
/// and blurred by `funad::map::anomaly_map` for a model input of `input_size`
/// pixels). The outline surrounds the patches above `threshold`. The OK/NG
/// mark is drawn for every `style`.
pub fn render(
    pixels: &Tensor,
    patch_scores: &Tensor,
    input_size: i64,
    threshold: f32,
    ng: bool,
    style: OverlayStyle,
) -> Tensor {
    let _guard = tch::no_grad_guard();
    let (h, w, c) = pixels.size3().expect("pixels are [H, W, C]");
    let mut image = pixels.to_kind(Kind::Float);

    if style.heatmap && style.opacity > 0.0 {
        let map = funad::map::anomaly_map(&patch_scores.to_device(Device::Cpu), w, h, input_size);
        let mut colour = jet(&heat_level(&map, threshold));
        if c == 1 {
            let luma = Tensor::from_slice(&LUMA).to_kind(Kind::Float);
            colour = colour.matmul(&luma).unsqueeze(-1);
        }
        let alpha = style.opacity.clamp(0.0, 1.0);
        image = image * (1.0 - alpha) + colour * alpha;
    }

    if style.outline {
        let radius = (h.min(w) / 160).max(1);
        let regions = patches_above(patch_scores, threshold, w, h);
        let edge = outline(&regions, radius).unsqueeze(-1);
        image = paint_tensor(OUTLINE_PAINT, c)
            .expand_as(&image)
            .where_self(&edge, &image);
    }

    let (fill, border) = if ng {
        (NG_PAINT, NG_BORDER)
    } else {
        (OK_PAINT, OK_BORDER)
    };
    let side = mark_size(w, h);
    let border_width = (side / 8).max(1);
    image
        .narrow(0, 0, side)
        .narrow(1, 0, side)
        .copy_(&paint_tensor(border, c));
    if side > 2 * border_width {
        let inner = side - 2 * border_width;
        image
            .narrow(0, border_width, inner)
            .narrow(1, border_width, inner)
            .copy_(&paint_tensor(fill, c));
    }

    image
        .round()
        .clamp(0.0, 255.0)
        .to_kind(Kind::Uint8)
        .contiguous()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(t: &Tensor) -> Vec<f32> {
        Vec::try_from(t.to_kind(Kind::Float).flatten(0, -1)).unwrap()
    }

    #[test]
    fn heat_level_puts_threshold_in_middle() {
        let map = Tensor::from_slice(&[0.0f32, 0.1, 0.2, 0.6, 1.0]);
        let level = values(&heat_level(&map, 0.2));
        let expected = [0.0, 0.25, 0.5, 0.75, 1.0];
        for (got, want) in level.iter().zip(expected) {
            assert!((got - want).abs() < 1e-5, "levels {level:?}");
        }
    }

    #[test]
    fn jet_ends_blue_and_red() {
        let colours = values(&jet(&Tensor::from_slice(&[0.0f32, 1.0])));
        assert_eq!(colours[..3], [0.0, 0.0, 127.5]);
        assert_eq!(colours[3..], [127.5, 0.0, 0.0]);
    }

    #[test]
    fn outline_is_inner_border_of_square() {
        let mask = Tensor::zeros([7, 7], (Kind::Bool, Device::Cpu));
        let _ = mask.narrow(0, 1, 5).narrow(1, 1, 5).fill_(1);
        let edge = outline(&mask, 1);
        let count = i64::try_from(edge.sum(Kind::Int64)).unwrap();
        // A 5×5 square has 16 border pixels; its 3×3 inside is not outline.
        assert_eq!(count, 16);
        assert!(!bool::try_from(edge.get(3).get(3)).unwrap());
        assert!(bool::try_from(edge.get(1).get(1)).unwrap());
    }

    #[test]
    fn single_hot_patch_is_outlined() {
        // One patch just above the threshold, whose peak the blurred map would
        // lower below it.
        let patch_scores = Tensor::zeros([4, 4], (Kind::Float, Device::Cpu));
        let _ = patch_scores.get(2).get(1).fill_(0.6);
        let pixels = Tensor::full([64, 64, 3], 100, (Kind::Uint8, Device::Cpu));
        let style = OverlayStyle {
            heatmap: false,
            outline: true,
            opacity: 0.5,
        };
        let out = render(&pixels, &patch_scores, 224, 0.55, true, style);
        let magenta = Tensor::from_slice(&OUTLINE_PAINT.rgb);
        let outlined =
            i64::try_from(out.eq_tensor(&magenta).all_dim(-1, false).sum(Kind::Int64)).unwrap();
        assert!(outlined > 0, "no outline around the hot patch");
    }

    #[test]
    fn outline_closes_region_at_frame_edge() {
        let mask = Tensor::ones([5, 5], (Kind::Bool, Device::Cpu));
        let edge = outline(&mask, 1);
        let count = i64::try_from(edge.sum(Kind::Int64)).unwrap();
        assert_eq!(count, 16);
        assert!(bool::try_from(edge.get(0).get(2)).unwrap());
        assert!(!bool::try_from(edge.get(2).get(2)).unwrap());
    }

    #[test]
    fn mark_only_changes_corner() {
        let pixels = Tensor::full([40, 50, 3], 100, (Kind::Uint8, Device::Cpu));
        let patch_scores = Tensor::zeros([4, 4], (Kind::Float, Device::Cpu));
        let style = OverlayStyle {
            heatmap: false,
            outline: false,
            opacity: 0.5,
        };
        let out = render(&pixels, &patch_scores, 224, 0.5, true, style);
        let side = mark_size(50, 40);
        assert_eq!(side, 8);
        let centre: Vec<u8> = Vec::try_from(out.get(4).get(4)).unwrap();
        assert_eq!(centre, NG_PAINT.rgb);
        let corner: Vec<u8> = Vec::try_from(out.get(0).get(0)).unwrap();
        assert_eq!(corner, NG_BORDER.rgb);
        let changed = i64::try_from(out.ne_tensor(&pixels).any_dim(-1, false).sum(Kind::Int64));
        assert_eq!(changed.unwrap(), side * side);
    }

    #[test]
    fn grey_mark_uses_grey_levels() {
        let pixels = Tensor::full([32, 32, 1], 100, (Kind::Uint8, Device::Cpu));
        let patch_scores = Tensor::zeros([4, 4], (Kind::Float, Device::Cpu));
        let style = OverlayStyle {
            heatmap: true,
            outline: true,
            opacity: 0.0,
        };
        let out = render(&pixels, &patch_scores, 224, 0.5, false, style);
        assert_eq!(
            u8::try_from(out.get(4).get(4).get(0)).unwrap(),
            OK_PAINT.grey
        );
        assert_eq!(
            u8::try_from(out.get(0).get(0).get(0)).unwrap(),
            OK_BORDER.grey
        );
        // Opacity 0 and no region above the threshold leave the rest untouched.
        assert_eq!(u8::try_from(out.get(20).get(20).get(0)).unwrap(), 100);
    }
}
