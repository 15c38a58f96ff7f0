/* Reads the GstFunadMeta of each frame through funadmeta.h alone.
 *
 * Usage: meta-reader PLUGIN_FILE [MODEL_FILE]
 *
 * Loads the plugin file, runs three 64x64 GRAY8 frames through funadscore
 * and checks every meta field on fakesink's sink pad, plus the funad-result
 * bus messages. Without MODEL_FILE the element runs in cold-start mode and
 * every frame must read as not scored. With MODEL_FILE (written by
 * `funad train`) every frame must be scored. Exits 0 when all checks pass.
 */

#include <gst/gst.h>
#include <gst/video/video.h>
#include <gst/funad/funadmeta.h>

#define N_FRAMES 3

typedef struct {
  gboolean scored;
  guint n_buffers;
  guint n_failures;
  /* Score and verdict of each frame, from the meta and from the message. */
  gfloat meta_scores[N_FRAMES];
  gint meta_verdicts[N_FRAMES];
  gfloat message_scores[N_FRAMES];
  gint message_verdicts[N_FRAMES];
} ProbeState;

static void
check (ProbeState * state, gboolean ok, const gchar * what, guint frame)
{
  if (!ok) {
    g_printerr ("frame %u: check failed: %s\n", frame, what);
    state->n_failures++;
  }
}

/* Checks the fields of a frame that passed through without a model. */
static void
check_not_scored (ProbeState * state, const GstFunadMeta * meta, guint frame)
{
  const gfloat *map;
  gsize n_values = 99;

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
}

/* Checks the meta of each buffer that reaches fakesink. */
static GstPadProbeReturn
on_buffer (GstPad * pad, GstPadProbeInfo * info, gpointer user_data)
{
  ProbeState *state = user_data;
  GstBuffer *buffer = GST_PAD_PROBE_INFO_BUFFER (info);
  const GstFunadMeta *meta = gst_buffer_get_funad_meta (buffer);
  guint frame = state->n_buffers++;

  (void) pad;
  check (state, meta != NULL, "buffer has a GstFunadMeta", frame);
  if (meta == NULL)
    return GST_PAD_PROBE_OK;

  check (state, meta->meta.info->api == GST_FUNAD_META_API_TYPE,
      "meta API type is GstFunadMetaAPI", frame);
  check (state, gst_funad_meta_get_sequence (meta) == frame,
      "sequence equals the frame number", frame);
  if (state->scored)
    check_scored (state, meta, frame);
  else
    check_not_scored (state, meta, frame);
  if (frame < N_FRAMES) {
    state->meta_scores[frame] = gst_funad_meta_get_score (meta);
    state->meta_verdicts[frame] = gst_funad_meta_get_verdict (meta);
  }

  g_print ("frame %u: sequence=%" G_GUINT64_FORMAT " verdict=%s score=%g "
      "threshold=%g model_id=\"%s\" model_version=%" G_GUINT64_FORMAT
      " map=%ux%u\n", frame, gst_funad_meta_get_sequence (meta),
      gst_funad_verdict_to_string (gst_funad_meta_get_verdict (meta)),
      gst_funad_meta_get_score (meta), gst_funad_meta_get_threshold (meta),
      gst_funad_meta_get_model_id (meta),
      gst_funad_meta_get_model_version (meta),
      gst_funad_meta_get_map_width (meta),
      gst_funad_meta_get_map_height (meta));
  return GST_PAD_PROBE_OK;
}

/* Checks one funad-result message and returns its sequence field, or
 * G_MAXUINT64 when it has none. */
static guint64
check_result_message (ProbeState * state, const GstStructure * s, guint index)
{
  guint64 sequence = G_MAXUINT64;
  const gchar *verdict = gst_structure_get_string (s, "verdict");
  gfloat score = -2.0f;

  check (state, gst_structure_get_uint64 (s, "sequence", &sequence),
      "message has a guint64 sequence", index);
  check (state, gst_structure_get (s, "score", G_TYPE_FLOAT, &score, NULL),
      "message has a gfloat score", index);
  check (state, verdict != NULL, "message has a verdict string", index);
  if (state->scored)
    check (state, g_strcmp0 (verdict, "no-model") != 0,
        "message verdict is not \"no-model\" with a model", index);
  else
    check (state, g_strcmp0 (verdict, "no-model") == 0,
        "message verdict is \"no-model\"", index);

  if (sequence < N_FRAMES) {
    state->message_scores[sequence] = score;
    state->message_verdicts[sequence] = g_strcmp0 (verdict, "OK") == 0 ?
        GST_FUNAD_VERDICT_OK : g_strcmp0 (verdict, "NG") == 0 ?
        GST_FUNAD_VERDICT_NG : GST_FUNAD_VERDICT_NO_MODEL;
  }
  return sequence;
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
  if (argc != 2 && argc != 3) {
    g_printerr ("usage: %s PLUGIN_FILE [MODEL_FILE]\n", argv[0]);
    return 2;
  }
  state.scored = argc == 3;

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

  /* An empty model property selects cold-start mode. */
  launch = g_strdup_printf ("videotestsrc num-buffers=%d "
      "! video/x-raw,format=GRAY8,width=64,height=64 "
      "! funadscore name=score ! fakesink name=sink", N_FRAMES);
  pipeline = gst_parse_launch (launch, &error);
  g_free (launch);
  if (pipeline == NULL) {
    g_printerr ("failed to build pipeline: %s\n", error->message);
    return 1;
  }

  {
    GstElement *score = gst_bin_get_by_name (GST_BIN (pipeline), "score");

    g_object_set (score, "model", state.scored ? argv[2] : "", NULL);
    gst_object_unref (score);
  }

  sink = gst_bin_get_by_name (GST_BIN (pipeline), "sink");
  pad = gst_element_get_static_pad (sink, "sink");
  gst_pad_add_probe (pad, GST_PAD_PROBE_TYPE_BUFFER, on_buffer, &state, NULL);
  gst_object_unref (pad);
  gst_object_unref (sink);

  if (gst_element_set_state (pipeline, GST_STATE_PLAYING) ==
      GST_STATE_CHANGE_FAILURE) {
    g_printerr ("failed to set the pipeline to PLAYING\n");
    return 1;
  }

  bus = gst_element_get_bus (pipeline);
  while (!done) {
    GstMessage *message = gst_bus_timed_pop_filtered (bus, 30 * GST_SECOND,
        GST_MESSAGE_EOS | GST_MESSAGE_ERROR | GST_MESSAGE_ELEMENT);
    const GstStructure *s;

    if (message == NULL) {
      g_printerr ("timed out after 30 s waiting for EOS\n");
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
          guint64 sequence = check_result_message (&state, s, n_messages);

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
  gst_object_unref (pipeline);

  if (state.n_buffers != N_FRAMES) {
    g_printerr ("fakesink received %u buffers, expected %d\n",
        state.n_buffers, N_FRAMES);
    return 1;
  }
  if (n_messages != N_FRAMES) {
    g_printerr ("bus carried %u funad-result messages, expected %d\n",
        n_messages, N_FRAMES);
    return 1;
  }
  for (i = 0; i < N_FRAMES; i++) {
    check (&state, state.message_scores[i] == state.meta_scores[i],
        "message score equals meta score", i);
    check (&state, state.message_verdicts[i] == state.meta_verdicts[i],
        "message verdict equals meta verdict", i);
  }
  if (state.n_failures > 0) {
    g_printerr ("%u checks failed\n", state.n_failures);
    return 1;
  }
  g_print ("all checks passed on %d frames\n", N_FRAMES);
  return 0;
}
