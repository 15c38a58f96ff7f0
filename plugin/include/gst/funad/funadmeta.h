/* funadmeta.h: read the GstFunadMeta that the funadscore element attaches
 * to each buffer, from C, without linking any library beyond GStreamer.
 *
 * Everything here is static inline. The meta API type "GstFunadMetaAPI" and
 * the meta implementation "GstFunadMeta" are registered by the funad plugin
 * (libgstfunad.so) when it is loaded, so the plugin must be loaded before
 * these functions can find any meta. A pipeline that contains funadscore
 * has loaded it. Otherwise load it with gst_plugin_load_by_name ("funad")
 * or gst_plugin_load_file (). Until then gst_funad_meta_api_get_type ()
 * returns 0 and gst_buffer_get_funad_meta () returns NULL.
 *
 * The meta is read-only for C code: funadscore fills it, and the plugin frees
 * model_id, map and regions with the buffer.
 */

#ifndef __GST_FUNAD_META_H__
#define __GST_FUNAD_META_H__

#include <gst/gst.h>

G_BEGIN_DECLS

/* Version of the GstFunadMeta struct layout below. The plugin stores no
 * version in the meta itself, so this macro only marks the layout that this
 * header describes. Raise it whenever a field is added, removed or retyped.
 * New fields go at the end, so code built against an older header still
 * reads the fields of its own layout. To detect a mismatch at run time, compare
 * sizeof (GstFunadMeta) with gst_meta_get_info (GST_FUNAD_META_INFO_NAME)->size,
 * which catches size changes but not a reordering of fields of equal size.
 *
 * Layout 1: score to map. Layout 2 appends creation_time_ns to regions. */
#define FUNAD_META_LAYOUT_VERSION 2

/* Maximum number of regions in GstFunadMeta.regions. */
#define GST_FUNAD_MAX_REGIONS 16

/* Bytes of GstFunadMeta.result_id: a UUID in its 36-character text form and a NUL. */
#define GST_FUNAD_RESULT_ID_SIZE 37

/* Name of the meta API type, for g_type_from_name (). */
#define GST_FUNAD_META_API_NAME "GstFunadMetaAPI"
/* Name of the meta implementation, for gst_meta_get_info (). */
#define GST_FUNAD_META_INFO_NAME "GstFunadMeta"

/* OK/NG decision on one frame, stored in GstFunadMeta.verdict. */
typedef enum {
  /* Image score at or below the threshold. */
  GST_FUNAD_VERDICT_OK = 0,
  /* Image score above the threshold. */
  GST_FUNAD_VERDICT_NG = 1,
  /* Not scored, because the element has no model (its model property is empty). */
  GST_FUNAD_VERDICT_NO_MODEL = 2,
} GstFunadVerdict;

/* One defect region: an 8-connected component of the anomaly-map patches
 * whose score is above the threshold, as the smallest pixel box that covers
 * its patches. The layout matches the #[repr(C)] struct FunadRegion in the
 * plugin (plugin/src/regions.rs). */
typedef struct {
  /* Left and top edges in pixels of a frame_width x frame_height frame. */
  guint x;
  guint y;
  /* Size in pixels, each at least 1. */
  guint width;
  guint height;
  /* Maximum patch score inside the region, above the threshold. */
  gfloat peak_score;
  /* Number of anomaly-map patches in the region. */
  guint patch_count;
} GstFunadRegion;

/* Result of scoring one frame. The field order and types match the #[repr(C)]
 * struct FunadMeta in the plugin (plugin/src/meta.rs). */
typedef struct {
  GstMeta meta;
  /* Image score (the maximum patch score), in [0, 1]; -1 when not scored. */
  gfloat score;
  /* Threshold that the score was compared with; -1 when not scored. */
  gfloat threshold;
  /* A GstFunadVerdict value: 0 = OK, 1 = NG, 2 = no model. */
  gint verdict;
  /* Anomaly map width in patches; 0 when not scored. */
  guint map_width;
  /* Anomaly map height in patches; 0 when not scored. */
  guint map_height;
  /* Model version, raised by each retraining; 0 when not scored. */
  guint64 model_version;
  /* Frame number, counted by the element from 0 at each start. */
  guint64 sequence;
  /* Model id (short content hash of the weights). Never NULL; "" when not scored. */
  gchar *model_id;
  /* Patch scores in [0, 1], row-major, map_width * map_height values; NULL when empty. */
  gfloat *map;

  /* Fields of layout version 2. */

  /* UTC time at which funadscore created the result, in ns since the Unix epoch. */
  guint64 creation_time_ns;
  /* ns that funadscore spent on the frame, from entering its transform to the result. */
  guint64 processing_time_ns;
  /* Result id: a random UUID (version 4) in text form, NUL-terminated. The
   * funad-result message and the funadjson line carry the same id. */
  gchar result_id[GST_FUNAD_RESULT_ID_SIZE];
  /* Size in pixels of the frame that the regions refer to: the frame that
   * funadscore scored. videoscale (GStreamer 1.22) copies the meta unchanged,
   * so after it the regions still refer to this size, not the buffer's. */
  guint frame_width;
  guint frame_height;
  /* Number of entries in regions, at most GST_FUNAD_MAX_REGIONS; 0 unless NG. */
  guint n_regions;
  /* Regions found beyond GST_FUNAD_MAX_REGIONS and left out of regions. */
  guint regions_dropped;
  /* Defect regions, highest peak score first; NULL when n_regions is 0. */
  GstFunadRegion *regions;
} GstFunadMeta;

/* Returns the GType of "GstFunadMetaAPI", or 0 while the plugin is not loaded. */
static inline GType
gst_funad_meta_api_get_type (void)
{
  return g_type_from_name (GST_FUNAD_META_API_NAME);
}

#define GST_FUNAD_META_API_TYPE (gst_funad_meta_api_get_type ())

/* Returns the GstFunadMeta of buffer, or NULL when the buffer has none or the
 * plugin is not loaded. The meta is owned by the buffer. */
static inline const GstFunadMeta *
gst_buffer_get_funad_meta (GstBuffer * buffer)
{
  GType api = gst_funad_meta_api_get_type ();

  if (api == 0)
    return NULL;
  return (const GstFunadMeta *) gst_buffer_get_meta (buffer, api);
}

static inline gfloat
gst_funad_meta_get_score (const GstFunadMeta * meta)
{
  return meta->score;
}

static inline gfloat
gst_funad_meta_get_threshold (const GstFunadMeta * meta)
{
  return meta->threshold;
}

/* Returns the verdict. Values other than OK and NG read as NO_MODEL, as the
 * plugin's own reader does. */
static inline GstFunadVerdict
gst_funad_meta_get_verdict (const GstFunadMeta * meta)
{
  switch (meta->verdict) {
    case GST_FUNAD_VERDICT_OK:
      return GST_FUNAD_VERDICT_OK;
    case GST_FUNAD_VERDICT_NG:
      return GST_FUNAD_VERDICT_NG;
    default:
      return GST_FUNAD_VERDICT_NO_MODEL;
  }
}

/* Returns the verdict string of the funad-result message: "OK", "NG" or "no-model". */
static inline const gchar *
gst_funad_verdict_to_string (GstFunadVerdict verdict)
{
  switch (verdict) {
    case GST_FUNAD_VERDICT_OK:
      return "OK";
    case GST_FUNAD_VERDICT_NG:
      return "NG";
    default:
      return "no-model";
  }
}

static inline guint
gst_funad_meta_get_map_width (const GstFunadMeta * meta)
{
  return meta->map_width;
}

static inline guint
gst_funad_meta_get_map_height (const GstFunadMeta * meta)
{
  return meta->map_height;
}

static inline guint64
gst_funad_meta_get_model_version (const GstFunadMeta * meta)
{
  return meta->model_version;
}

static inline guint64
gst_funad_meta_get_sequence (const GstFunadMeta * meta)
{
  return meta->sequence;
}

/* Returns the model id, owned by the meta; "" when not scored or when NULL. */
static inline const gchar *
gst_funad_meta_get_model_id (const GstFunadMeta * meta)
{
  return meta->model_id != NULL ? meta->model_id : "";
}

/* Returns the patch scores, owned by the meta, and stores their count
 * (map_width * map_height) in n_values when it is not NULL. Returns NULL with
 * a count of 0 when the meta has no map. */
static inline const gfloat *
gst_funad_meta_get_map (const GstFunadMeta * meta, gsize * n_values)
{
  gsize count = meta->map != NULL ?
      (gsize) meta->map_width * (gsize) meta->map_height : 0;

  if (n_values != NULL)
    *n_values = count;
  return count > 0 ? meta->map : NULL;
}

/* Returns the result id, owned by the meta: 36 characters of a UUID. */
static inline const gchar *
gst_funad_meta_get_result_id (const GstFunadMeta * meta)
{
  return meta->result_id;
}

static inline guint64
gst_funad_meta_get_creation_time_ns (const GstFunadMeta * meta)
{
  return meta->creation_time_ns;
}

static inline guint64
gst_funad_meta_get_processing_time_ns (const GstFunadMeta * meta)
{
  return meta->processing_time_ns;
}

static inline guint
gst_funad_meta_get_frame_width (const GstFunadMeta * meta)
{
  return meta->frame_width;
}

static inline guint
gst_funad_meta_get_frame_height (const GstFunadMeta * meta)
{
  return meta->frame_height;
}

/* Returns the regions, owned by the meta, and stores their count in
 * n_regions when it is not NULL. Returns NULL with a count of 0 when the
 * meta has no regions. */
static inline const GstFunadRegion *
gst_funad_meta_get_regions (const GstFunadMeta * meta, guint * n_regions)
{
  guint count = meta->regions != NULL ? meta->n_regions : 0;

  if (n_regions != NULL)
    *n_regions = count;
  return count > 0 ? meta->regions : NULL;
}

static inline guint
gst_funad_meta_get_regions_dropped (const GstFunadMeta * meta)
{
  return meta->regions_dropped;
}

G_END_DECLS

#endif /* __GST_FUNAD_META_H__ */
