/* Reads the GstFunadMeta of each frame through funadmeta.h alone.
 *
 * Usage: meta-reader PLUGIN_FILE [MODEL_FILE JPEG_FILE...]
 *
 * Loads the plugin file, runs frames through funadscore, checks every meta
 * field on fakesink's sink pad and compares it with the funad-result bus
 * message of the same frame. Without MODEL_FILE the element runs in
 * cold-start mode on three 64x64 GRAY8 test frames, and every frame must read
 * as not scored. With MODEL_FILE (written by `funad train`) each JPEG file is
 * one frame, and every frame must be scored. The scored frames cycle through
 * three thresholds: the model's own, 0 and 1. At 0 every patch is above the
 * threshold, so one region covers the frame, and at 1 none is. So both
 * verdicts and the regions are checked whatever the model decides. Exits 0
 * when all checks pass.
 */

#include <string.h>

#include <gst/gst.h>
#include <gst/video/video.h>
#include <gst/funad/funadmeta.h>

#define N_TEST_FRAMES 3
#define MAX_FRAMES 64

/* Thresholds that the scored frames cycle through; negative selects the model's. */
static const gfloat frame_thresholds[] = { -1.0f, 0.0f, 1.0f };

/* The fields of one result, as read from the meta or from the message. */
typedef struct {
  gboolean present;
  guint64 sequence;
  gfloat score;
  gfloat threshold;
  gint verdict;
  gchar *model_id;
  guint64 model_version;
  guint map_width;
  guint map_height;
  gchar result_id[GST_FUNAD_RESULT_ID_SIZE];
  guint64 creation_time_ns;
  guint64 processing_time_ns;
  guint frame_width;
  guint frame_height;
  guint n_regions;
  GstFunadRegion regions[GST_FUNAD_MAX_REGIONS];
  guint regions_dropped;
} FrameRecord;

typedef struct {
  gboolean scored;
  GstElement *score;
  guint n_frames;
  guint n_inputs;
  guint n_buffers;
  guint n_failures;
  /* Wall-clock bounds of the run, in ns since the Unix epoch. */
  guint64 run_start_ns;
  FrameRecord from_meta[MAX_FRAMES];
  FrameRecord from_message[MAX_FRAMES];
} ProbeState;

static void
check (ProbeState * state, gboolean ok, const gchar * what, guint frame)
{
  if (!ok) {
    g_printerr ("frame %u: check failed: %s\n", frame, what);
    state->n_failures++;
  }
}

/* Returns whether text is a version 4 UUID in lower-case text form. */
static gboolean
is_uuid_v4 (const gchar * text)
{
  guint i;

  if (strlen (text) != 36)
    return FALSE;
  for (i = 0; i < 36; i++) {
    gboolean dash = i == 8 || i == 13 || i == 18 || i == 23;

    if (dash ? text[i] != '-' : !g_ascii_isxdigit (text[i])
        || g_ascii_isupper (text[i]))
      return FALSE;
  }
  return text[14] == '4' && strchr ("89ab", text[19]) != NULL;
}

/* Checks the fields of a frame that passed through without a model. */
static void
check_not_scored (ProbeState * state, const GstFunadMeta * meta, guint frame)
{
  const gfloat *map;
  gsize n_values = 99;
  guint n_regions = 99;

  check (state,
      gst_funad_meta_get_verdict (meta) == GST_FUNAD_VERDICT_NO_MODEL,
      "verdict is GST_FUNAD_VERDICT_NO_MODEL", frame);
  check (state, g_strcmp0 (gst_funad_verdict_to_string
          (gst_funad_meta_get_verdict (meta)), "no-model") == 0,
      "verdict string is \"no-model\"", frame);
  check (state, gst_funad_meta_get_score (meta) == -1.0f,
      "score is -1 when not scored", frame);
  check (state, gst_funad_meta_get_threshold (meta) == -1.0f,
      "threshold is -1 when not scored", frame);
  check (state, meta->model_id != NULL, "model_id is not NULL", frame);
  check (state, g_strcmp0 (gst_funad_meta_get_model_id (meta), "") == 0,
      "model id is empty when not scored", frame);
  check (state, gst_funad_meta_get_model_version (meta) == 0,
      "model version is 0 when not scored", frame);
  check (state, gst_funad_meta_get_map_width (meta) == 0,
      "map width is 0 when not scored", frame);
  check (state, gst_funad_meta_get_map_height (meta) == 0,
      "map height is 0 when not scored", frame);

  map = gst_funad_meta_get_map (meta, &n_values);
  check (state, map == NULL, "map is NULL when not scored", frame);
  check (state, n_values == 0, "map has 0 values when not scored", frame);
  check (state, gst_funad_meta_get_regions (meta, &n_regions) == NULL,
      "regions are NULL when not scored", frame);
  check (state, n_regions == 0, "no regions when not scored", frame);
  check (state, gst_funad_meta_get_regions_dropped (meta) == 0,
      "no regions dropped when not scored", frame);
}

/* Checks the regions of a scored frame against its map, score and size. */
static void
check_regions (ProbeState * state, const GstFunadMeta * meta, guint frame)
{
  guint n_regions = 0;
  const GstFunadRegion *regions = gst_funad_meta_get_regions (meta,
      &n_regions);
  gboolean ng = gst_funad_meta_get_verdict (meta) == GST_FUNAD_VERDICT_NG;
  gfloat threshold = gst_funad_meta_get_threshold (meta);
  guint width = gst_funad_meta_get_frame_width (meta);
  guint height = gst_funad_meta_get_frame_height (meta);
  const gfloat *map;
  gsize n_values = 0;
  gsize i;
  guint patches = 0;
  guint above = 0;

  check (state, n_regions <= GST_FUNAD_MAX_REGIONS,
      "at most GST_FUNAD_MAX_REGIONS regions", frame);
  check (state, (n_regions > 0) == ng, "regions are present exactly for NG",
      frame);
  check (state, (regions != NULL) == (n_regions > 0),
      "regions are NULL exactly when there are none", frame);
  for (i = 0; regions != NULL && i < n_regions; i++) {
    const GstFunadRegion *r = &regions[i];

    check (state, r->width >= 1 && r->height >= 1, "region is not empty",
        frame);
    check (state, r->x + r->width <= width, "region ends inside the frame width",
        frame);
    check (state, r->y + r->height <= height,
        "region ends inside the frame height", frame);
    check (state, r->peak_score > threshold,
        "region peak is above the threshold", frame);
    check (state, i == 0 || r->peak_score <= regions[i - 1].peak_score,
        "regions are ordered by peak score", frame);
    patches += r->patch_count;
  }
  if (n_regions > 0)
    check (state, regions[0].peak_score == gst_funad_meta_get_score (meta),
        "strongest region peaks at the image score", frame);

  map = gst_funad_meta_get_map (meta, &n_values);
  for (i = 0; map != NULL && i < n_values; i++)
    above += map[i] > threshold;
  if (gst_funad_meta_get_regions_dropped (meta) == 0)
    check (state, patches == above,
        "regions hold every patch above the threshold", frame);
  else
    check (state, patches < above, "dropped regions held patches", frame);
}

/* Checks the fields of a frame that a model scored. */
static void
check_scored (ProbeState * state, const GstFunadMeta * meta, guint frame)
{
  GstFunadVerdict verdict = gst_funad_meta_get_verdict (meta);
  gfloat score = gst_funad_meta_get_score (meta);
  gfloat threshold = gst_funad_meta_get_threshold (meta);
  GstFunadVerdict expected = score > threshold ?
      GST_FUNAD_VERDICT_NG : GST_FUNAD_VERDICT_OK;
  const gfloat *map;
  gsize n_values = 0;
  gsize i;
  gfloat map_max = -1.0f;
  gfloat requested;

  check (state, verdict != GST_FUNAD_VERDICT_NO_MODEL,
      "verdict is OK or NG with a model", frame);
  check (state, score >= 0.0f && score <= 1.0f, "score is in [0, 1]", frame);
  check (state, threshold >= 0.0f && threshold <= 1.0f,
      "threshold is in [0, 1]", frame);
  check (state, verdict == expected,
      "verdict is NG exactly when score > threshold", frame);
  check (state, gst_funad_meta_get_model_id (meta)[0] != '\0',
      "model id is not empty", frame);
  check (state, gst_funad_meta_get_model_version (meta) >= 1,
      "model version is at least 1", frame);
  check (state, gst_funad_meta_get_map_width (meta) > 0,
      "map width is positive", frame);
  check (state, gst_funad_meta_get_map_height (meta) > 0,
      "map height is positive", frame);

  map = gst_funad_meta_get_map (meta, &n_values);
  check (state, map != NULL, "map is not NULL", frame);
  check (state, n_values == (gsize) gst_funad_meta_get_map_width (meta) *
      gst_funad_meta_get_map_height (meta),
      "map has map_width * map_height values", frame);
  for (i = 0; map != NULL && i < n_values; i++) {
    check (state, map[i] >= 0.0f && map[i] <= 1.0f,
        "map value is in [0, 1]", frame);
    map_max = MAX (map_max, map[i]);
  }
  check (state, map_max == score, "score is the maximum map value", frame);
  check_regions (state, meta, frame);

  requested = frame_thresholds[frame % G_N_ELEMENTS (frame_thresholds)];
  if (requested >= 0.0f)
    check (state, threshold == requested,
        "threshold is the one set for the frame", frame);
  if (requested == 0.0f) {
    guint n_regions = 0;
    const GstFunadRegion *r = gst_funad_meta_get_regions (meta, &n_regions);

    check (state, n_regions == 1 && r != NULL,
        "one region at threshold 0", frame);
    if (n_regions == 1 && r != NULL) {
      check (state, r->x == 0 && r->y == 0
          && r->width == gst_funad_meta_get_frame_width (meta)
          && r->height == gst_funad_meta_get_frame_height (meta),
          "the region at threshold 0 covers the frame", frame);
      check (state, r->patch_count == n_values,
          "the region at threshold 0 holds every patch", frame);
    }
  }
}

/* Sets the threshold for the next frame before funadscore reads it. */
static GstPadProbeReturn
on_input (GstPad * pad, GstPadProbeInfo * info, gpointer user_data)
{
  ProbeState *state = user_data;
  guint frame = state->n_inputs++;

  (void) pad;
  (void) info;
  g_object_set (state->score, "threshold",
      frame_thresholds[frame % G_N_ELEMENTS (frame_thresholds)], NULL);
  return GST_PAD_PROBE_OK;
}

/* Copies the fields of meta into record. */
static void
record_meta (FrameRecord * record, const GstFunadMeta * meta)
{
  guint n_regions = 0;
  const GstFunadRegion *regions = gst_funad_meta_get_regions (meta,
      &n_regions);

  record->present = TRUE;
  record->sequence = gst_funad_meta_get_sequence (meta);
  record->score = gst_funad_meta_get_score (meta);
  record->threshold = gst_funad_meta_get_threshold (meta);
  record->verdict = gst_funad_meta_get_verdict (meta);
  record->model_id = g_strdup (gst_funad_meta_get_model_id (meta));
  record->model_version = gst_funad_meta_get_model_version (meta);
  record->map_width = gst_funad_meta_get_map_width (meta);
  record->map_height = gst_funad_meta_get_map_height (meta);
  g_strlcpy (record->result_id, gst_funad_meta_get_result_id (meta),
      sizeof record->result_id);
  record->creation_time_ns = gst_funad_meta_get_creation_time_ns (meta);
  record->processing_time_ns = gst_funad_meta_get_processing_time_ns (meta);
  record->frame_width = gst_funad_meta_get_frame_width (meta);
  record->frame_height = gst_funad_meta_get_frame_height (meta);
  record->n_regions = MIN (n_regions, GST_FUNAD_MAX_REGIONS);
  if (regions != NULL)
    memcpy (record->regions, regions,
        record->n_regions * sizeof (GstFunadRegion));
  record->regions_dropped = gst_funad_meta_get_regions_dropped (meta);
}

/* Checks the meta of each buffer that reaches fakesink. */
static GstPadProbeReturn
on_buffer (GstPad * pad, GstPadProbeInfo * info, gpointer user_data)
{
  ProbeState *state = user_data;
  GstBuffer *buffer = GST_PAD_PROBE_INFO_BUFFER (info);
  const GstFunadMeta *meta = gst_buffer_get_funad_meta (buffer);
  guint frame = state->n_buffers++;
  GstCaps *caps = gst_pad_get_current_caps (pad);
  GstVideoInfo video_info;
  guint64 now_ns = (guint64) g_get_real_time () * 1000;

  check (state, meta != NULL, "buffer has a GstFunadMeta", frame);
  if (meta == NULL || frame >= MAX_FRAMES) {
    gst_clear_caps (&caps);
    return GST_PAD_PROBE_OK;
  }

  check (state, meta->meta.info->api == GST_FUNAD_META_API_TYPE,
      "meta API type is GstFunadMetaAPI", frame);
  check (state, gst_funad_meta_get_sequence (meta) == frame,
      "sequence equals the frame number", frame);
  check (state, is_uuid_v4 (gst_funad_meta_get_result_id (meta)),
      "result id is a version 4 UUID", frame);
  /* The clocks count microseconds here, so the bounds are widened by 1 us. */
  check (state, gst_funad_meta_get_creation_time_ns (meta) + 1000 >=
      state->run_start_ns && gst_funad_meta_get_creation_time_ns (meta) <=
      now_ns + 1000, "creation time lies within the run", frame);
  check (state, gst_funad_meta_get_processing_time_ns (meta) > 0,
      "processing time is positive", frame);
  check (state, caps != NULL && gst_video_info_from_caps (&video_info, caps),
      "buffer has video caps", frame);
  if (caps != NULL) {
    check (state, gst_funad_meta_get_frame_width (meta) ==
        (guint) GST_VIDEO_INFO_WIDTH (&video_info),
        "frame width equals the caps width", frame);
    check (state, gst_funad_meta_get_frame_height (meta) ==
        (guint) GST_VIDEO_INFO_HEIGHT (&video_info),
        "frame height equals the caps height", frame);
  }
  gst_clear_caps (&caps);

  if (state->scored)
    check_scored (state, meta, frame);
  else
    check_not_scored (state, meta, frame);
  record_meta (&state->from_meta[frame], meta);

  g_print ("frame %u: sequence=%" G_GUINT64_FORMAT " result_id=%s verdict=%s "
      "score=%g threshold=%g model_id=\"%s\" model_version=%" G_GUINT64_FORMAT
      " map=%ux%u frame=%ux%u regions=%u dropped=%u processing_time=%"
      G_GUINT64_FORMAT " ns\n", frame, gst_funad_meta_get_sequence (meta),
      gst_funad_meta_get_result_id (meta),
      gst_funad_verdict_to_string (gst_funad_meta_get_verdict (meta)),
      gst_funad_meta_get_score (meta), gst_funad_meta_get_threshold (meta),
      gst_funad_meta_get_model_id (meta),
      gst_funad_meta_get_model_version (meta),
      gst_funad_meta_get_map_width (meta),
      gst_funad_meta_get_map_height (meta),
      gst_funad_meta_get_frame_width (meta),
      gst_funad_meta_get_frame_height (meta), meta->n_regions,
      gst_funad_meta_get_regions_dropped (meta),
      gst_funad_meta_get_processing_time_ns (meta));
  return GST_PAD_PROBE_OK;
}

/* Reads one funad-region structure of the regions array into region. */
static gboolean
read_region (const GValue * value, GstFunadRegion * region)
{
  const GstStructure *s;

  if (!GST_VALUE_HOLDS_STRUCTURE (value))
    return FALSE;
  s = gst_value_get_structure (value);
  return gst_structure_has_name (s, "funad-region")
      && gst_structure_get_uint (s, "x", &region->x)
      && gst_structure_get_uint (s, "y", &region->y)
      && gst_structure_get_uint (s, "width", &region->width)
      && gst_structure_get_uint (s, "height", &region->height)
      && gst_structure_get (s, "peak-score", G_TYPE_FLOAT, &region->peak_score,
      NULL)
      && gst_structure_get_uint (s, "patch-count", &region->patch_count);
}

/* Reads one funad-result message into its frame's record and checks the
 * field types. Returns the sequence field, or G_MAXUINT64 when it has none. */
static guint64
read_result_message (ProbeState * state, const GstStructure * s, guint index)
{
  FrameRecord record = { 0 };
  const gchar *verdict = gst_structure_get_string (s, "verdict");
  const gchar *model_id = gst_structure_get_string (s, "model-id");
  const gchar *result_id = gst_structure_get_string (s, "result-id");
  const GValue *regions = gst_structure_get_value (s, "regions");
  guint i;

  record.present = TRUE;
  record.sequence = G_MAXUINT64;
  check (state, gst_structure_get_uint64 (s, "sequence", &record.sequence),
      "message has a guint64 sequence", index);
  check (state, gst_structure_get (s, "score", G_TYPE_FLOAT, &record.score,
          "threshold", G_TYPE_FLOAT, &record.threshold, NULL),
      "message has gfloat score and threshold", index);
  check (state, verdict != NULL, "message has a verdict string", index);
  record.verdict = g_strcmp0 (verdict, "OK") == 0 ? GST_FUNAD_VERDICT_OK :
      g_strcmp0 (verdict, "NG") == 0 ? GST_FUNAD_VERDICT_NG :
      GST_FUNAD_VERDICT_NO_MODEL;
  if (state->scored)
    check (state, g_strcmp0 (verdict, "no-model") != 0,
        "message verdict is not \"no-model\" with a model", index);
  else
    check (state, g_strcmp0 (verdict, "no-model") == 0,
        "message verdict is \"no-model\"", index);
  check (state, model_id != NULL, "message has a model-id string", index);
  record.model_id = g_strdup (model_id);
  check (state, gst_structure_get_uint64 (s, "model-version",
          &record.model_version), "message has a guint64 model-version", index);
  check (state, gst_structure_get_uint (s, "map-width", &record.map_width)
      && gst_structure_get_uint (s, "map-height", &record.map_height),
      "message has guint map-width and map-height", index);
  check (state, result_id != NULL, "message has a result-id string", index);
  if (result_id != NULL)
    g_strlcpy (record.result_id, result_id, sizeof record.result_id);
  check (state, gst_structure_get_uint64 (s, "creation-time",
          &record.creation_time_ns), "message has a guint64 creation-time",
      index);
  check (state, gst_structure_get_uint64 (s, "processing-time",
          &record.processing_time_ns),
      "message has a guint64 processing-time", index);
  check (state, gst_structure_get_uint (s, "frame-width", &record.frame_width)
      && gst_structure_get_uint (s, "frame-height", &record.frame_height),
      "message has guint frame-width and frame-height", index);
  check (state, gst_structure_get_uint (s, "regions-dropped",
          &record.regions_dropped), "message has a guint regions-dropped",
      index);

  check (state, regions != NULL && GST_VALUE_HOLDS_ARRAY (regions),
      "message has a regions array", index);
  if (regions != NULL && GST_VALUE_HOLDS_ARRAY (regions)) {
    record.n_regions = gst_value_array_get_size (regions);
    check (state, record.n_regions <= GST_FUNAD_MAX_REGIONS,
        "message has at most GST_FUNAD_MAX_REGIONS regions", index);
    record.n_regions = MIN (record.n_regions, GST_FUNAD_MAX_REGIONS);
    for (i = 0; i < record.n_regions; i++)
      check (state, read_region (gst_value_array_get_value (regions, i),
              &record.regions[i]), "region is a complete funad-region", index);
  }

  if (record.sequence < MAX_FRAMES)
    state->from_message[record.sequence] = record;
  else
    g_free (record.model_id);
  return record.sequence;
}

/* Checks that the meta and the message of one frame hold the same result. */
static void
compare_records (ProbeState * state, const FrameRecord * meta,
    const FrameRecord * message, guint frame)
{
  guint i;

  check (state, meta->present, "frame has a meta", frame);
  check (state, message->present, "frame has a message", frame);
  if (!meta->present || !message->present)
    return;
  check (state, message->sequence == meta->sequence,
      "message sequence equals meta sequence", frame);
  check (state, message->score == meta->score,
      "message score equals meta score", frame);
  check (state, message->threshold == meta->threshold,
      "message threshold equals meta threshold", frame);
  check (state, message->verdict == meta->verdict,
      "message verdict equals meta verdict", frame);
  check (state, g_strcmp0 (message->model_id, meta->model_id) == 0,
      "message model-id equals meta model id", frame);
  check (state, message->model_version == meta->model_version,
      "message model-version equals meta model version", frame);
  check (state, message->map_width == meta->map_width
      && message->map_height == meta->map_height,
      "message map size equals meta map size", frame);
  check (state, strcmp (message->result_id, meta->result_id) == 0,
      "message result-id equals meta result id", frame);
  check (state, message->creation_time_ns == meta->creation_time_ns,
      "message creation-time equals meta creation time", frame);
  check (state, message->processing_time_ns == meta->processing_time_ns,
      "message processing-time equals meta processing time", frame);
  check (state, message->frame_width == meta->frame_width
      && message->frame_height == meta->frame_height,
      "message frame size equals meta frame size", frame);
  check (state, message->regions_dropped == meta->regions_dropped,
      "message regions-dropped equals meta regions dropped", frame);
  check (state, message->n_regions == meta->n_regions,
      "message region count equals meta region count", frame);
  for (i = 0; i < MIN (message->n_regions, meta->n_regions); i++) {
    const GstFunadRegion *a = &message->regions[i];
    const GstFunadRegion *b = &meta->regions[i];

    check (state, a->x == b->x && a->y == b->y && a->width == b->width
        && a->height == b->height, "message region box equals meta box",
        frame);
    check (state, a->peak_score == b->peak_score,
        "message region peak equals meta peak", frame);
    check (state, a->patch_count == b->patch_count,
        "message region patch count equals meta patch count", frame);
  }
}

/* Builds the pipeline description: test frames without a model, or one
 * frame per JPEG file joined by concat with a model. */
static gchar *
pipeline_description (gint n_images, gchar ** images)
{
  GString *launch;
  gint i;

  if (n_images == 0)
    return g_strdup_printf ("videotestsrc num-buffers=%d "
        "! video/x-raw,format=GRAY8,width=64,height=64 "
        "! funadscore name=score ! fakesink name=sink", N_TEST_FRAMES);

  launch = g_string_new ("concat name=join ! videoconvert "
      "! video/x-raw,format=GRAY8 ! funadscore name=score "
      "! fakesink name=sink");
  for (i = 0; i < n_images; i++) {
    gchar *quoted = g_strescape (images[i], NULL);

    g_string_append_printf (launch,
        " filesrc location=\"%s\" ! jpegdec ! join.", quoted);
    g_free (quoted);
  }
  return g_string_free (launch, FALSE);
}

int
main (int argc, char **argv)
{
  ProbeState state = { 0 };
  gchar *launch;
  guint i;
  GError *error = NULL;
  GstPlugin *plugin;
  const GstMetaInfo *info;
  GstElement *pipeline;
  GstElement *sink;
  GstPad *pad;
  GstBus *bus;
  gboolean done = FALSE;
  guint n_messages = 0;

  gst_init (&argc, &argv);
  if (argc == 3 || argc - 3 > MAX_FRAMES) {
    g_printerr ("usage: %s PLUGIN_FILE [MODEL_FILE JPEG_FILE...]\n"
        "A model needs at least one JPEG file and takes at most %d.\n",
        argv[0], MAX_FRAMES);
    return 2;
  }
  if (argc < 2) {
    g_printerr ("usage: %s PLUGIN_FILE [MODEL_FILE JPEG_FILE...]\n", argv[0]);
    return 2;
  }
  state.scored = argc >= 4;
  state.n_frames = state.scored ? (guint) (argc - 3) : N_TEST_FRAMES;

  plugin = gst_plugin_load_file (argv[1], &error);
  if (plugin == NULL) {
    g_printerr ("failed to load plugin %s: %s\n", argv[1], error->message);
    return 1;
  }
  gst_object_unref (plugin);

  if (gst_funad_meta_api_get_type () == 0) {
    g_printerr ("meta API type %s is not registered after loading %s\n",
        GST_FUNAD_META_API_NAME, argv[1]);
    return 1;
  }
  info = gst_meta_get_info (GST_FUNAD_META_INFO_NAME);
  if (info == NULL) {
    g_printerr ("meta %s is not registered\n", GST_FUNAD_META_INFO_NAME);
    return 1;
  }
  /* A size mismatch means the header no longer matches the plugin's layout. */
  if (info->size != sizeof (GstFunadMeta)) {
    g_printerr ("GstFunadMeta size: plugin registered %" G_GSIZE_FORMAT
        " bytes, header layout %d has %" G_GSIZE_FORMAT " bytes\n",
        info->size, FUNAD_META_LAYOUT_VERSION, sizeof (GstFunadMeta));
    return 1;
  }

  launch = pipeline_description (state.scored ? argc - 3 : 0, argv + 3);
  pipeline = gst_parse_launch (launch, &error);
  g_free (launch);
  if (pipeline == NULL) {
    g_printerr ("failed to build pipeline: %s\n", error->message);
    return 1;
  }

  state.score = gst_bin_get_by_name (GST_BIN (pipeline), "score");
  /* An empty model property selects cold-start mode. */
  g_object_set (state.score, "model", state.scored ? argv[2] : "", NULL);
  if (state.scored) {
    pad = gst_element_get_static_pad (state.score, "sink");
    gst_pad_add_probe (pad, GST_PAD_PROBE_TYPE_BUFFER, on_input, &state, NULL);
    gst_object_unref (pad);
  }

  sink = gst_bin_get_by_name (GST_BIN (pipeline), "sink");
  pad = gst_element_get_static_pad (sink, "sink");
  gst_pad_add_probe (pad, GST_PAD_PROBE_TYPE_BUFFER, on_buffer, &state, NULL);
  gst_object_unref (pad);
  gst_object_unref (sink);

  state.run_start_ns = (guint64) g_get_real_time () * 1000;
  if (gst_element_set_state (pipeline, GST_STATE_PLAYING) ==
      GST_STATE_CHANGE_FAILURE) {
    g_printerr ("failed to set the pipeline to PLAYING\n");
    return 1;
  }

  bus = gst_element_get_bus (pipeline);
  while (!done) {
    GstMessage *message = gst_bus_timed_pop_filtered (bus, 60 * GST_SECOND,
        GST_MESSAGE_EOS | GST_MESSAGE_ERROR | GST_MESSAGE_ELEMENT);
    const GstStructure *s;

    if (message == NULL) {
      g_printerr ("timed out after 60 s waiting for EOS\n");
      return 1;
    }
    switch (GST_MESSAGE_TYPE (message)) {
      case GST_MESSAGE_EOS:
        done = TRUE;
        break;
      case GST_MESSAGE_ERROR:{
        gchar *debug = NULL;

        gst_message_parse_error (message, &error, &debug);
        g_printerr ("pipeline error: %s (%s)\n", error->message,
            debug != NULL ? debug : "no debug info");
        return 1;
      }
      case GST_MESSAGE_ELEMENT:
        s = gst_message_get_structure (message);
        if (gst_structure_has_name (s, "funad-result")) {
          guint64 sequence = read_result_message (&state, s, n_messages);

          check (&state, sequence == n_messages,
              "message sequence equals the message index", n_messages);
          n_messages++;
        }
        break;
      default:
        break;
    }
    gst_message_unref (message);
  }
  gst_object_unref (bus);
  gst_element_set_state (pipeline, GST_STATE_NULL);
  gst_object_unref (state.score);
  gst_object_unref (pipeline);

  if (state.n_buffers != state.n_frames) {
    g_printerr ("fakesink received %u buffers, expected %u\n",
        state.n_buffers, state.n_frames);
    return 1;
  }
  if (n_messages != state.n_frames) {
    g_printerr ("bus carried %u funad-result messages, expected %u\n",
        n_messages, state.n_frames);
    return 1;
  }
  for (i = 0; i < state.n_frames; i++) {
    guint j;

    compare_records (&state, &state.from_meta[i], &state.from_message[i], i);
    for (j = 0; j < i; j++)
      check (&state, strcmp (state.from_meta[i].result_id,
              state.from_meta[j].result_id) != 0, "result ids are unique", i);
    g_free (state.from_meta[i].model_id);
    g_free (state.from_message[i].model_id);
  }
  if (state.n_failures > 0) {
    g_printerr ("%u checks failed\n", state.n_failures);
    return 1;
  }
  g_print ("all checks passed on %u frames\n", state.n_frames);
  return 0;
}
