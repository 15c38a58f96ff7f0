//! `GstFunadMeta`: the result of `funadscore` for one frame, attached to its buffer.
//!
//! The meta has C layout, so C code can read it with
//! `gst_buffer_get_meta (buffer, g_type_from_name ("GstFunadMetaAPI"))` once
//! the plugin is loaded. Rust code uses [`FunadMeta::add`] and
//! `buffer.meta::<FunadMeta>()`.
//!
//! The meta API has no tags, so elements that keep untagged metas (the
//! `GstBaseTransform` default, videoconvert, videoscale) pass it on. Full
//! buffer copies and video scaling copy it unchanged, because the anomaly map
//! is at patch resolution and does not depend on the frame size. Partial
//! (region) copies and other transforms drop it.

use std::ffi::{c_char, CStr};
use std::fmt;
use std::ptr;
use std::sync::LazyLock;

use glib::translate::{from_glib, IntoGlib};
use gst::glib;
use gst::meta::{MetaAPI, MetaAPIExt, MetaTransform};

/// Name of the meta API type, registered with `gst_meta_api_type_register`.
pub const META_API_NAME: &CStr = c"GstFunadMetaAPI";

/// Name of the meta implementation, registered with `gst_meta_register`.
pub const META_IMPL_NAME: &CStr = c"GstFunadMeta";

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
}

impl FunadResult {
    /// Result of a frame that passed through without a model.
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
}

// SAFETY: the two pointers are owned by the meta, allocated in `meta_init`
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
    glib::ffi::GTRUE
}

unsafe extern "C" fn meta_free(meta: *mut gst::ffi::GstMeta, _buffer: *mut gst::ffi::GstBuffer) {
    let meta = &mut *(meta as *mut FunadMeta);
    glib::ffi::g_free(meta.model_id as glib::ffi::gpointer);
    glib::ffi::g_free(meta.map as glib::ffi::gpointer);
    meta.model_id = ptr::null_mut();
    meta.map = ptr::null_mut();
}

/// Copies the meta to `dest` on full buffer copies and on video scaling.
unsafe extern "C" fn meta_transform(
    dest: *mut gst::ffi::GstBuffer,
    meta: *mut gst::ffi::GstMeta,
    _src: *mut gst::ffi::GstBuffer,
    type_: glib::ffi::GQuark,
    data: glib::ffi::gpointer,
) -> glib::ffi::gboolean {
    let kind: glib::Quark = from_glib(type_);
    let keep = if kind == gst::meta::MetaTransformCopy::quark() {
        let copy = &*(data as *const gst::ffi::GstMetaTransformCopy);
        copy.region == glib::ffi::GFALSE
    } else {
        kind == gst_video::video_meta::VideoMetaTransformScale::quark()
    };
    if !keep {
        return glib::ffi::GFALSE;
    }

    let result = (*(meta as *const FunadMeta)).result();
    let added = gst::ffi::gst_buffer_add_meta(
        dest,
        meta_info(),
        &result as *const FunadResult as glib::ffi::gpointer,
    );
    (!added.is_null()).into_glib()
}
