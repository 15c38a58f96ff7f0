/* Reads the GstFunadMeta of each frame through funadmeta.h alone.
 *
 * Usage: meta-reader PLUGIN_FILE
 *
 * Loads the plugin file, runs three 64x64 GRAY8 frames through funadscore
 * without a model (cold start) and checks every meta field on fakesink's
 * sink pad, plus the funad-result bus messages. Exits 0 when all checks pass.
 */

#include <gst/gst.h>
#include <gst/video/video.h>
#include <gst/funad/funadmeta.h>

#define N_FRAMES 3

typedef struct {
  guint n_buffers;
  guint n_failures;
} ProbeState;

static void
check (ProbeState * state, gboolean ok, const gchar * what, guint frame)
{
  if (!ok) {
    g_printerr ("frame %u: check failed: %s\n", frame, what);
    state->n_failures++;
  }
}

/* Checks the meta of each buffer that reaches fakesink. */
static GstPadProbeReturn
on_buffer (GstPad * pad, GstPadProbeInfo * info, gpointer user_data)
{
  ProbeState *state = user_data;
  GstBuffer *buffer = GST_PAD_PROBE_INFO_BUFFER (info);
  const GstFunadMeta *meta = gst_buffer_get_funad_meta (buffer);
  guint frame = state->n_buffers++;
  const gfloat *map;
  gsize n_values = 99;

  (void) pad;
  check (state, meta != NULL, "buffer has a GstFunadMeta", frame);
  if (meta == NULL)
    return GST_PAD_PROBE_OK;

  check (state, meta->meta.info->api == GST_FUNAD_META_API_TYPE,
      "meta API type is GstFunadMetaAPI", frame);
  check (state, gst_funad_meta_get_sequence (meta) == frame,
      "sequence equals the frame number", frame);
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

  check (state, g_strcmp0 (gst_structure_get_string (s, "verdict"),
          "no-model") == 0, "message verdict is \"no-model\"", index);
  check (state, gst_structure_get_uint64 (s, "sequence", &sequence),
      "message has a guint64 sequence", index);
  return sequence;
}

int
main (int argc, char **argv)
{
  ProbeState state = { 0, 0 };
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
  if (argc != 2) {
    g_printerr ("usage: %s PLUGIN_FILE\n", argv[0]);
    return 2;
  }

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

  pipeline = gst_parse_launch ("videotestsrc num-buffers=3 "
      "! video/x-raw,format=GRAY8,width=64,height=64 "
      "! funadscore model=\"\" ! fakesink name=sink", &error);
  if (pipeline == NULL) {
    g_printerr ("failed to build pipeline: %s\n", error->message);
    return 1;
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
  if (state.n_failures > 0) {
    g_printerr ("%u checks failed\n", state.n_failures);
    return 1;
  }
  g_print ("all checks passed on %d frames\n", N_FRAMES);
  return 0;
}
