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
 * model_id and map with the buffer.
 */

#ifndef __GST_FUNAD_META_H__
#define __GST_FUNAD_META_H__

#include <gst/gst.h>

G_BEGIN_DECLS

/* Version of the GstFunadMeta struct layout below. The plugin stores no
 * version in the meta itself, so this macro only marks the layout that this
 * header describes. Raise it whenever a field is added, removed or retyped.
 * To detect a mismatch at run time, compare sizeof (GstFunadMeta) with
 * gst_meta_get_info (GST_FUNAD_META_INFO_NAME)->size, which catches size
 * changes but not a reordering of fields of equal size. */
#define FUNAD_META_LAYOUT_VERSION 1

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

G_END_DECLS

#endif /* __GST_FUNAD_META_H__ */
