//! Copies between packed video frames and 8-bit pixel tensors `[H, W, C]` in RGB order.

use anyhow::{bail, Result};
use gst_video::prelude::*;
use tch::Tensor;

/// Video formats that funadscore and funadtrain read (and funadscore draws into): 8-bit grey and packed 8-bit RGB.
pub const FORMATS: [gst_video::VideoFormat; 11] = [
    gst_video::VideoFormat::Gray8,
    gst_video::VideoFormat::Rgb,
    gst_video::VideoFormat::Bgr,
    gst_video::VideoFormat::Rgbx,
    gst_video::VideoFormat::Bgrx,
    gst_video::VideoFormat::Rgba,
    gst_video::VideoFormat::Bgra,
    gst_video::VideoFormat::Xrgb,
    gst_video::VideoFormat::Xbgr,
    gst_video::VideoFormat::Argb,
    gst_video::VideoFormat::Abgr,
];

/// Byte positions of the colour components inside one pixel of plane 0.
struct PixelLayout {
    /// Bytes per pixel.
    pixel_stride: usize,
    /// Byte offsets of R, G and B, or of the luma component for GRAY8.
    offsets: Vec<usize>,
}

impl PixelLayout {
    fn of(info: &gst_video::VideoFormatInfo) -> Result<Self> {
        let components = if info.is_gray() { 1 } else { 3 };
        if !(info.is_gray() || info.is_rgb()) || (info.n_components() as usize) < components {
            bail!("video format {} is not grey or RGB", info.name());
        }
        if info.plane()[..components].iter().any(|&p| p != 0) || info.bits() != 8 {
            bail!("video format {} is not packed 8-bit", info.name());
        }
        let pixel_stride = info.pixel_stride()[0];
        if pixel_stride <= 0 {
            bail!("video format {} has no fixed pixel stride", info.name());
        }
        Ok(PixelLayout {
            pixel_stride: pixel_stride as usize,
            offsets: info.poffset()[..components]
                .iter()
                .map(|&o| o as usize)
                .collect(),
        })
    }

    /// Checks that a plane of `len` bytes with rows `stride` bytes apart contains
    /// `width`×`height` pixels, so that indexing it cannot go out of bounds.
    fn check_plane(&self, len: usize, stride: i32, width: usize, height: usize) -> Result<usize> {
        let row_bytes = width * self.pixel_stride;
        let Ok(stride) = usize::try_from(stride) else {
            bail!("negative plane stride {stride}");
        };
        if height > 0 && (stride < row_bytes || len < (height - 1) * stride + row_bytes) {
            bail!("plane of {len} bytes with stride {stride} is too small for {width}×{height} pixels");
        }
        Ok(stride)
    }
}

/// Checks that `format` is a packed 8-bit grey or RGB-family format that
/// [`frame_to_pixels`] and [`pixels_to_frame`] handle.
pub fn check_format(format: gst_video::VideoFormat) -> Result<()> {
    PixelLayout::of(&gst_video::VideoFormatInfo::from_format(format)).map(|_| ())
}

/// Copies a frame into pixels `[H, W, C]`: C = 1 for GRAY8, else 3 in RGB
/// order, with alpha and padding bytes left out.
pub fn frame_to_pixels<T>(frame: &gst_video::VideoFrameRef<T>) -> Result<Tensor> {
    let layout = PixelLayout::of(&frame.format_info())?;
    let (width, height) = (frame.width() as usize, frame.height() as usize);
    let data = frame.plane_data(0)?;
    let stride = layout.check_plane(data.len(), frame.plane_stride()[0], width, height)?;
    let channels = layout.offsets.len();

    let mut pixels = Vec::with_capacity(width * height * channels);
    for y in 0..height {
        let row = &data[y * stride..];
        for x in 0..width {
            let pixel = &row[x * layout.pixel_stride..];
            pixels.extend(layout.offsets.iter().map(|&o| pixel[o]));
        }
    }
    Ok(Tensor::from_slice(&pixels).view([height as i64, width as i64, channels as i64]))
}

/// Writes pixels `[H, W, C]` (as returned by [`frame_to_pixels`]) back into
/// the frame, leaving alpha and padding bytes as they are.
pub fn pixels_to_frame(
    pixels: &Tensor,
    frame: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>,
) -> Result<()> {
    let layout = PixelLayout::of(&frame.format_info())?;
    let (width, height) = (frame.width() as usize, frame.height() as usize);
    let channels = layout.offsets.len();
    let expected = [height as i64, width as i64, channels as i64];
    if pixels.size() != expected {
        bail!(
            "pixels have shape {:?}, the frame needs {expected:?}",
            pixels.size()
        );
    }
    let values: Vec<u8> = Vec::try_from(pixels.contiguous().view([-1]))?;
    let stride = frame.plane_stride()[0];
    let data = frame.plane_data_mut(0)?;
    let stride = layout.check_plane(data.len(), stride, width, height)?;

    for (y, source_row) in values.chunks_exact(width * channels).enumerate() {
        let row = &mut data[y * stride..];
        for (x, source) in source_row.chunks_exact(channels).enumerate() {
            let pixel = &mut row[x * layout.pixel_stride..];
            for (&offset, &value) in layout.offsets.iter().zip(source) {
                pixel[offset] = value;
            }
        }
    }
    Ok(())
}
