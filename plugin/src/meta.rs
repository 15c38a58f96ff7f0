//! `GstFunadMeta`: the result of `funadscore` for one frame, attached to its buffer.
//!
//! The meta has C layout, so C code can read it with
//! `gst_buffer_get_meta (buffer, g_type_from_name ("GstFunadMetaAPI"))` once
//! the plugin is loaded. Rust code uses [`FunadMeta::add`] and
//! `buffer.meta::<FunadMeta>()`.
//!
//! The meta API has no tags, so elements that keep untagged metas (the
//! `GstBaseTransform` default, videoconvert, videoscale) pass it on. Full
//! buffer copies copy it unchanged, and so does videoscale (GStreamer 1.22),
//! which copies untagged metas without a scale transform. The region boxes
//! then still refer to the scored frame, whose size the meta stores. A scale
//! transform (`GstVideoMetaTransform`), which an element may request, copies
//! the meta with the frame size and the boxes scaled to the output frame and
//! the anomaly map unchanged, because the map is at patch resolution. Partial
//! (region) copies and other transforms drop the meta.

use std::ffi::{c_char, CStr};
use std::fmt;
use std::ptr;
use std::sync::LazyLock;

use glib::translate::{from_glib, IntoGlib};
use gst::glib;
use gst::meta::{MetaAPI, MetaAPIExt, MetaTransform};

use crate::regions::{scale_region, FunadRegion};

/// Name of the meta API type, registered with `gst_meta_api_type_register`.
pub const META_API_NAME: &CStr = c"GstFunadMetaAPI";

/// Name of the meta implementation, registered with `gst_meta_register`.
pub const META_IMPL_NAME: &CStr = c"GstFunadMeta";

/// Version of the C layout of [`FunadMeta`], `FUNAD_META_LAYOUT_VERSION` in
/// `funadmeta.h`. Layout 2 appended the fields from `creation_time_ns` on.
pub const META_LAYOUT_VERSION: u32 = 2;

/// Bytes of the C string field `result_id`: 36 characters of a UUID and a NUL.
const RESULT_ID_BYTES: usize = 37;

/// OK/NG decision on one frame, stored in the meta as a C `gint`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum FunadVerdict {
    /// Image score at or below the threshold.
    Ok = 0,
    /// Image score above the threshold.
    Ng = 1,
    /// Not scored, because the element has no model (the `model` property is empty).
    NoModel = 2,
}

impl FunadVerdict {
    /// Converts the C value; unknown values read as [`FunadVerdict::NoModel`].
    pub fn from_raw(value: i32) -> Self {
        match value {
            0 => FunadVerdict::Ok,
            1 => FunadVerdict::Ng,
            _ => FunadVerdict::NoModel,
        }
    }

    /// Returns the verdict string of the `funad-result` message: `OK`, `NG` or `no-model`.
    pub fn as_str(self) -> &'static str {
        match self {
            FunadVerdict::Ok => "OK",
            FunadVerdict::Ng => "NG",
            FunadVerdict::NoModel => "no-model",
        }
    }

    /// Parses a verdict string of the `funad-result` message.
    pub fn from_str_name(name: &str) -> Option<Self> {
        match name {
            "OK" => Some(FunadVerdict::Ok),
            "NG" => Some(FunadVerdict::Ng),
            "no-model" => Some(FunadVerdict::NoModel),
            _ => None,
        }
    }
}

impl From<funad::Verdict> for FunadVerdict {
    fn from(verdict: funad::Verdict) -> Self {
        match verdict {
            funad::Verdict::Ok => FunadVerdict::Ok,
            funad::Verdict::Ng => FunadVerdict::Ng,
        }
    }
}

impl fmt::Display for FunadVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Result of scoring one frame, as stored in [`FunadMeta`] and sent in the
/// `funad-result` message.
#[derive(Clone, Debug, PartialEq)]
pub struct FunadResult {
    /// Image score (the maximum patch score), in [0, 1]; -1 when not scored.
    pub score: f32,
    pub verdict: FunadVerdict,
    /// Threshold that the score was compared with; -1 when not scored.
    pub threshold: f32,
    /// Model id (short content hash of the weights); empty when not scored.
    pub model_id: String,
    /// Model version, raised by each retraining; 0 when not scored.
    pub model_version: u64,
    /// Frame number, counted by the element from 0 at each start.
    pub sequence: u64,
    /// Anomaly map width in patches; 0 when not scored.
    pub map_width: u32,
    /// Anomaly map height in patches; 0 when not scored.
    pub map_height: u32,
    /// Patch scores, row-major, `map_width × map_height` values in [0, 1].
    pub map: Vec<f32>,
    /// Result id, a random UUID (version 4) that funadscore creates for each
    /// frame; the nil UUID until funadscore sets it.
    pub result_id: uuid::Uuid,
    /// UTC time at which funadscore created the result, in nanoseconds since
    /// the Unix epoch; 0 until set.
    pub creation_time_ns: u64,
    /// Nanoseconds that funadscore spent on the frame, from entering its
    /// transform to the finished result (overlay included); 0 until set.
    pub processing_time_ns: u64,
    /// Width in pixels of the frame that the region boxes refer to.
    pub frame_width: u32,
    /// Height in pixels of the frame that the region boxes refer to.
    pub frame_height: u32,
    /// Defect regions, strongest first, at most [`crate::regions::MAX_REGIONS`];
    /// empty unless the verdict is NG.
    pub regions: Vec<FunadRegion>,
    /// Regions found beyond the maximum and left out of `regions`.
    pub regions_dropped: u32,
}

impl FunadResult {
    /// Result of a frame that passed through without a model. Id, times and
    /// frame size are unset (nil and 0).
    pub fn not_scored(sequence: u64) -> Self {
        FunadResult {
            score: -1.0,
            verdict: FunadVerdict::NoModel,
            threshold: -1.0,
            model_id: String::new(),
            model_version: 0,
            sequence,
            map_width: 0,
            map_height: 0,
            map: Vec::new(),
            result_id: uuid::Uuid::nil(),
            creation_time_ns: 0,
            processing_time_ns: 0,
            frame_width: 0,
            frame_height: 0,
            regions: Vec::new(),
            regions_dropped: 0,
        }
    }
}

/// The per-buffer meta. Field order and types are the C layout:
///
/// ```c
/// typedef struct {
///   GstMeta meta;
///   gfloat score;
///   gfloat threshold;
///   gint verdict;        /* 0 = OK, 1 = NG, 2 = no model */
///   guint map_width;
///   guint map_height;
///   guint64 model_version;
///   guint64 sequence;
///   gchar *model_id;     /* never NULL, "" when not scored */
///   gfloat *map;         /* map_width * map_height values, NULL when empty */
///   /* layout version 2 */
///   guint64 creation_time_ns;
///   guint64 processing_time_ns;
///   gchar result_id[37]; /* UUID text and NUL */
///   guint frame_width;
///   guint frame_height;
///   guint n_regions;
///   guint regions_dropped;
///   GstFunadRegion *regions; /* n_regions boxes, NULL when none */
/// } GstFunadMeta;
/// ```
#[repr(C)]
pub struct FunadMeta {
    parent: gst::ffi::GstMeta,
    score: f32,
    threshold: f32,
    verdict: i32,
    map_width: u32,
    map_height: u32,
    model_version: u64,
    sequence: u64,
    model_id: *mut c_char,
    map: *mut f32,
    creation_time_ns: u64,
    processing_time_ns: u64,
    result_id: [c_char; RESULT_ID_BYTES],
    frame_width: u32,
    frame_height: u32,
    n_regions: u32,
    regions_dropped: u32,
    regions: *mut FunadRegion,
}

// SAFETY: the three pointers are owned by the meta, allocated in `meta_init`
// and freed in `meta_free`. Nothing writes through them after init, so
// shared reads from several threads are sound.
unsafe impl Send for FunadMeta {}
unsafe impl Sync for FunadMeta {}

impl FunadMeta {
    /// Adds a meta holding `result` to `buffer`.
    pub fn add<'a>(
        buffer: &'a mut gst::BufferRef,
        result: &FunadResult,
    ) -> gst::MetaRefMut<'a, Self, gst::meta::Standalone> {
        unsafe {
            let meta = gst::ffi::gst_buffer_add_meta(
                buffer.as_mut_ptr(),
                meta_info(),
                result as *const FunadResult as glib::ffi::gpointer,
            ) as *mut FunadMeta;
            Self::from_mut_ptr(buffer, meta)
        }
    }

    pub fn score(&self) -> f32 {
        self.score
    }

    pub fn verdict(&self) -> FunadVerdict {
        FunadVerdict::from_raw(self.verdict)
    }

    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// Model id; empty when not scored or when the stored id is not UTF-8.
    pub fn model_id(&self) -> &str {
        if self.model_id.is_null() {
            return "";
        }
        unsafe { CStr::from_ptr(self.model_id) }
            .to_str()
            .unwrap_or("")
    }

    pub fn model_version(&self) -> u64 {
        self.model_version
    }

    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    pub fn map_width(&self) -> u32 {
        self.map_width
    }

    pub fn map_height(&self) -> u32 {
        self.map_height
    }

    /// Patch scores, row-major, `map_width × map_height` values.
    pub fn map(&self) -> &[f32] {
        if self.map.is_null() {
            return &[];
        }
        let len = self.map_width as usize * self.map_height as usize;
        unsafe { std::slice::from_raw_parts(self.map, len) }
    }

    /// Result id; the nil UUID when the stored text is not a UUID.
    pub fn result_id(&self) -> uuid::Uuid {
        // SAFETY: meta_init always writes a NUL inside the array.
        let text = unsafe { CStr::from_ptr(self.result_id.as_ptr()) };
        text.to_str()
            .ok()
            .and_then(|t| uuid::Uuid::parse_str(t).ok())
            .unwrap_or_else(uuid::Uuid::nil)
    }

    pub fn creation_time_ns(&self) -> u64 {
        self.creation_time_ns
    }

    pub fn processing_time_ns(&self) -> u64 {
        self.processing_time_ns
    }

    pub fn frame_width(&self) -> u32 {
        self.frame_width
    }

    pub fn frame_height(&self) -> u32 {
        self.frame_height
    }

    /// Defect regions, strongest first.
    pub fn regions(&self) -> &[FunadRegion] {
        if self.regions.is_null() {
            return &[];
        }
        unsafe { std::slice::from_raw_parts(self.regions, self.n_regions as usize) }
    }

    pub fn regions_dropped(&self) -> u32 {
        self.regions_dropped
    }

    /// Copies the meta's fields into an owned result.
    pub fn result(&self) -> FunadResult {
        FunadResult {
            score: self.score,
            verdict: self.verdict(),
            threshold: self.threshold,
            model_id: self.model_id().to_string(),
            model_version: self.model_version,
            sequence: self.sequence,
            map_width: self.map_width,
            map_height: self.map_height,
            map: self.map().to_vec(),
            result_id: self.result_id(),
            creation_time_ns: self.creation_time_ns,
            processing_time_ns: self.processing_time_ns,
            frame_width: self.frame_width,
            frame_height: self.frame_height,
            regions: self.regions().to_vec(),
            regions_dropped: self.regions_dropped,
        }
    }
}

unsafe impl MetaAPI for FunadMeta {
    type GstType = FunadMeta;

    fn meta_api() -> glib::Type {
        meta_api_type()
    }
}

impl fmt::Debug for FunadMeta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FunadMeta")
            .field("score", &self.score)
            .field("verdict", &self.verdict())
            .field("threshold", &self.threshold)
            .field("model_id", &self.model_id())
            .field("model_version", &self.model_version)
            .field("sequence", &self.sequence)
            .field("map_width", &self.map_width)
            .field("map_height", &self.map_height)
            .field("result_id", &self.result_id())
            .field("creation_time_ns", &self.creation_time_ns)
            .field("processing_time_ns", &self.processing_time_ns)
            .field("frame_width", &self.frame_width)
            .field("frame_height", &self.frame_height)
            .field("regions", &self.regions())
            .field("regions_dropped", &self.regions_dropped)
            .finish()
    }
}

/// Registers the meta API type `GstFunadMetaAPI` on first use and returns it.
pub fn meta_api_type() -> glib::Type {
    static TYPE: LazyLock<glib::Type> = LazyLock::new(|| unsafe {
        // No tags: the meta describes the frame's content as a whole.
        let mut tags: [*const c_char; 1] = [ptr::null()];
        from_glib(gst::ffi::gst_meta_api_type_register(
            META_API_NAME.as_ptr(),
            tags.as_mut_ptr(),
        ))
    });
    *TYPE
}

struct MetaInfo(ptr::NonNull<gst::ffi::GstMetaInfo>);

// SAFETY: GStreamer keeps registered meta infos for the life of the process
// and never changes them.
unsafe impl Send for MetaInfo {}
unsafe impl Sync for MetaInfo {}

/// Registers the meta implementation `GstFunadMeta` on first use and returns it.
pub fn meta_info() -> *const gst::ffi::GstMetaInfo {
    static INFO: LazyLock<MetaInfo> = LazyLock::new(|| unsafe {
        let info = gst::ffi::gst_meta_register(
            meta_api_type().into_glib(),
            META_IMPL_NAME.as_ptr(),
            std::mem::size_of::<FunadMeta>(),
            Some(meta_init),
            Some(meta_free),
            Some(meta_transform),
        );
        MetaInfo(ptr::NonNull::new(info as *mut _).expect("gst_meta_register failed"))
    });
    INFO.0.as_ptr()
}

/// Fills a new meta from a `FunadResult` passed as `params`, or with the
/// not-scored values when `params` is NULL (a meta added from C).
unsafe extern "C" fn meta_init(
    meta: *mut gst::ffi::GstMeta,
    params: glib::ffi::gpointer,
    _buffer: *mut gst::ffi::GstBuffer,
) -> glib::ffi::gboolean {
    let meta = &mut *(meta as *mut FunadMeta);
    let empty = FunadResult::not_scored(0);
    let result = if params.is_null() {
        &empty
    } else {
        &*(params as *const FunadResult)
    };

    meta.score = result.score;
    meta.threshold = result.threshold;
    meta.verdict = result.verdict as i32;
    meta.model_version = result.model_version;
    meta.sequence = result.sequence;
    // g_strndup stops at an interior NUL, so a malformed id is cut, not rejected.
    meta.model_id = glib::ffi::g_strndup(
        result.model_id.as_ptr() as *const c_char,
        result.model_id.len(),
    );

    let len = result.map_width as usize * result.map_height as usize;
    if len == 0 || result.map.len() != len {
        meta.map_width = 0;
        meta.map_height = 0;
        meta.map = ptr::null_mut();
    } else {
        meta.map_width = result.map_width;
        meta.map_height = result.map_height;
        let bytes = std::mem::size_of_val(result.map.as_slice());
        meta.map = glib::ffi::g_malloc(bytes) as *mut f32;
        ptr::copy_nonoverlapping(result.map.as_ptr(), meta.map, len);
    }

    meta.creation_time_ns = result.creation_time_ns;
    meta.processing_time_ns = result.processing_time_ns;
    let id = result.result_id.hyphenated().to_string();
    meta.result_id = [0; RESULT_ID_BYTES];
    for (dest, byte) in meta
        .result_id
        .iter_mut()
        .zip(id.bytes().take(RESULT_ID_BYTES - 1))
    {
        *dest = byte as c_char;
    }
    meta.frame_width = result.frame_width;
    meta.frame_height = result.frame_height;
    meta.regions_dropped = result.regions_dropped;
    if result.regions.is_empty() {
        meta.n_regions = 0;
        meta.regions = ptr::null_mut();
    } else {
        meta.n_regions = result.regions.len() as u32;
        let bytes = std::mem::size_of_val(result.regions.as_slice());
        meta.regions = glib::ffi::g_malloc(bytes) as *mut FunadRegion;
        ptr::copy_nonoverlapping(result.regions.as_ptr(), meta.regions, result.regions.len());
    }
    glib::ffi::GTRUE
}

unsafe extern "C" fn meta_free(meta: *mut gst::ffi::GstMeta, _buffer: *mut gst::ffi::GstBuffer) {
    let meta = &mut *(meta as *mut FunadMeta);
    glib::ffi::g_free(meta.model_id as glib::ffi::gpointer);
    glib::ffi::g_free(meta.map as glib::ffi::gpointer);
    glib::ffi::g_free(meta.regions as glib::ffi::gpointer);
    meta.model_id = ptr::null_mut();
    meta.map = ptr::null_mut();
    meta.regions = ptr::null_mut();
    meta.n_regions = 0;
}

/// Copies the meta to `dest` on full buffer copies, and on video scaling with
/// the frame size and region boxes scaled to the output frame.
unsafe extern "C" fn meta_transform(
    dest: *mut gst::ffi::GstBuffer,
    meta: *mut gst::ffi::GstMeta,
    _src: *mut gst::ffi::GstBuffer,
    type_: glib::ffi::GQuark,
    data: glib::ffi::gpointer,
) -> glib::ffi::gboolean {
    let kind: glib::Quark = from_glib(type_);
    let mut result = (*(meta as *const FunadMeta)).result();
    if kind == gst::meta::MetaTransformCopy::quark() {
        let copy = &*(data as *const gst::ffi::GstMetaTransformCopy);
        if copy.region != glib::ffi::GFALSE {
            return glib::ffi::GFALSE;
        }
    } else if kind == gst_video::video_meta::VideoMetaTransformScale::quark() {
        let scale = &*(data as *const gst_video::ffi::GstVideoMetaTransform);
        if scale.out_info.is_null() {
            return glib::ffi::GFALSE;
        }
        let out_info = &*scale.out_info;
        scale_result(&mut result, out_info.width as u32, out_info.height as u32);
    } else {
        return glib::ffi::GFALSE;
    }

    let added = gst::ffi::gst_buffer_add_meta(
        dest,
        meta_info(),
        &result as *const FunadResult as glib::ffi::gpointer,
    );
    (!added.is_null()).into_glib()
}

/// Moves the region boxes of `result` to a `width × height` frame.
fn scale_result(result: &mut FunadResult, width: u32, height: u32) {
    let from = (result.frame_width, result.frame_height);
    if from.0 == 0 || from.1 == 0 || width == 0 || height == 0 {
        return;
    }
    for region in &mut result.regions {
        *region = scale_region(region, from, (width, height));
    }
    result.frame_width = width;
    result.frame_height = height;
}
