/* The C ABI used from C99, through the public header only: a prediction with
 * Grad-CAM on the tiny model, and each misuse giving its status and a message.
 * usage: test_c_abi MODELS_DIR */
#include <dermal/dermal.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;

#define CHECK(condition)                                                   \
  do {                                                                     \
    if (!(condition)) {                                                    \
      fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #condition); \
      ++failures;                                                          \
    }                                                                      \
  } while (0)

/* Checks that a call returned the expected status with a non-empty message. */
#define CHECK_STATUS(call, expected)                                                              \
  do {                                                                                            \
    dermal_status status_ = (call);                                                               \
    if (status_ != (expected) || (status_ != DERMAL_OK && dermal_last_error()[0] == '\0')) {       \
      fprintf(stderr, "%s:%d: %s gave %s (\"%s\"), expected %s\n", __FILE__, __LINE__, #call,       \
              dermal_status_name(status_), dermal_last_error(), dermal_status_name(expected));    \
      ++failures;                                                                                 \
    }                                                                                             \
  } while (0)

static unsigned char* read_file(const char* path, size_t* size) {
  FILE* file = fopen(path, "rb");
  unsigned char* bytes;
  long length;
  if (file == NULL) return NULL;
  fseek(file, 0, SEEK_END);
  length = ftell(file);
  fseek(file, 0, SEEK_SET);
  bytes = (unsigned char*)malloc((size_t)length);
  *size = fread(bytes, 1, (size_t)length, file);
  fclose(file);
  return bytes;
}

static void test_library_queries(void) {
  uint64_t current = 0, peak = 0;
  CHECK(dermal_abi_version() == DERMAL_ABI_VERSION);
  CHECK(strlen(dermal_version_string()) > 0);
  CHECK(strcmp(dermal_status_name(DERMAL_INVALID_IMAGE), "invalid_image") == 0);
  CHECK(strcmp(dermal_status_name(DERMAL_BUSY), "busy") == 0);
  CHECK(strcmp(dermal_status_name(DERMAL_NUMERICS_MISMATCH), "numerics_mismatch") == 0);
  CHECK(strcmp(dermal_status_name((dermal_status)99), "unknown") == 0);
  CHECK_STATUS(dermal_memory_status(&current, &peak), DERMAL_OK);
  CHECK(current > 0 && peak >= current);
  CHECK_STATUS(dermal_memory_status(NULL, &peak), DERMAL_INVALID_ARGUMENT);
}

static void test_prediction(dermal_model* model, const unsigned char* photo, size_t photo_size) {
  dermal_predict_options* options = NULL;
  dermal_result* result = NULL;
  const char* label = NULL;
  const char* method = NULL;
  const float* values = NULL;
  const float* probabilities = NULL;
  const uint8_t* overlay = NULL;
  size_t count = 0, label_count = 0, overlay_size = 0, i;
  int index = -1, top_index = -1, width = 0, height = 0, flat = 1, loaded = 0;
  float probability = 0, sum = 0;

  CHECK_STATUS(dermal_predict_options_create(&options), DERMAL_OK);
  CHECK_STATUS(dermal_predict_options_set_explain(options, 1), DERMAL_OK);
  CHECK_STATUS(dermal_predict_options_set_full_heatmap(options, 1), DERMAL_OK);
  CHECK_STATUS(dermal_predict_options_set_top_k(options, 2), DERMAL_OK);
  CHECK_STATUS(dermal_predict_options_set_overlay_format(options, "png"), DERMAL_OK);
  CHECK_STATUS(dermal_model_predict(model, photo, photo_size, options, &result), DERMAL_OK);
  CHECK(result != NULL);

  CHECK_STATUS(dermal_result_top_count(result, &count), DERMAL_OK);
  CHECK(count == 2);
  CHECK_STATUS(dermal_result_top(result, 0, &label, &top_index, &probability), DERMAL_OK);
  CHECK(label != NULL && strlen(label) > 0 && probability > 0 && probability <= 1);
  CHECK_STATUS(dermal_model_label_count(model, &label_count), DERMAL_OK);
  CHECK(label_count == 5);
  CHECK_STATUS(dermal_result_probabilities(result, &probabilities, &count), DERMAL_OK);
  CHECK(count == label_count);
  for (i = 0; i < count; ++i) sum += probabilities[i];
  CHECK(sum > 0.999f && sum < 1.001f);
  CHECK(probabilities[top_index] == probability);

  CHECK_STATUS(dermal_result_explanation_count(result, &count), DERMAL_OK);
  CHECK(count == 1);
  CHECK_STATUS(dermal_result_explanation_class(result, 0, &label, &index), DERMAL_OK);
  CHECK(index == top_index);
  CHECK_STATUS(dermal_result_explanation_cam_method(result, 0, &method), DERMAL_OK);
  CHECK(strcmp(method, "gradcam") == 0);
  CHECK_STATUS(dermal_result_explanation_flat(result, 0, &flat), DERMAL_OK);
  CHECK(flat == 0);
  CHECK_STATUS(dermal_result_explanation_heatmap(result, 0, &width, &height, &values), DERMAL_OK);
  CHECK(width > 0 && height > 0 && width < 40 && values != NULL);
  CHECK_STATUS(dermal_result_explanation_full_heatmap(result, 0, &width, &height, &values), DERMAL_OK);
  CHECK(width == 40 && height == 32);
  {
    float low = 1, high = 0; /* renormalised after stretching: exactly [0, 1] */
    for (i = 0; i < (size_t)(width * height); ++i) {
      low = values[i] < low ? values[i] : low;
      high = values[i] > high ? values[i] : high;
    }
    CHECK(low == 0.0f && high == 1.0f);
  }
  CHECK_STATUS(dermal_result_explanation_overlay(result, 0, &overlay, &overlay_size), DERMAL_OK);
  CHECK(overlay_size > 8 && memcmp(overlay, "\x89PNG", 4) == 0);

  /* Indexes past the end and NULL out-pointers. */
  CHECK_STATUS(dermal_result_top(result, 2, &label, &index, &probability), DERMAL_INVALID_ARGUMENT);
  CHECK_STATUS(dermal_result_explanation_heatmap(result, 1, &width, &height, &values), DERMAL_INVALID_ARGUMENT);
  CHECK_STATUS(dermal_result_top(result, 0, NULL, &index, &probability), DERMAL_INVALID_ARGUMENT);
  CHECK_STATUS(dermal_result_top_count(result, NULL), DERMAL_INVALID_ARGUMENT);
  CHECK_STATUS(dermal_model_label(model, label_count, &label), DERMAL_INVALID_ARGUMENT);
  dermal_result_free(result);

  /* Without the map at the photo's size (the default): no map, the same overlay. */
  {
    const uint8_t* overlay_without = NULL;
    size_t overlay_without_size = 0;
    dermal_result* without = NULL;
    CHECK_STATUS(dermal_model_predict(model, photo, photo_size, options, &result), DERMAL_OK);
    CHECK_STATUS(dermal_predict_options_set_full_heatmap(options, 0), DERMAL_OK);
    CHECK_STATUS(dermal_model_predict(model, photo, photo_size, options, &without), DERMAL_OK);
    CHECK_STATUS(dermal_result_explanation_full_heatmap(without, 0, &width, &height, &values), DERMAL_OK);
    CHECK(width == 0 && height == 0 && values == NULL);
    CHECK_STATUS(dermal_result_explanation_overlay(result, 0, &overlay, &overlay_size), DERMAL_OK);
    CHECK_STATUS(dermal_result_explanation_overlay(without, 0, &overlay_without, &overlay_without_size), DERMAL_OK);
    CHECK(overlay_size > 0 && overlay_size == overlay_without_size &&
          memcmp(overlay, overlay_without, overlay_size) == 0);
    CHECK_STATUS(dermal_predict_options_set_full_heatmap(options, 1), DERMAL_OK);
    dermal_result_free(without);
    dermal_result_free(result);
  }

  /* Without an overlay: heatmaps only. */
  CHECK_STATUS(dermal_predict_options_set_overlay(options, 0), DERMAL_OK);
  CHECK_STATUS(dermal_model_predict(model, photo, photo_size, options, &result), DERMAL_OK);
  CHECK_STATUS(dermal_result_explanation_overlay(result, 0, &overlay, &overlay_size), DERMAL_OK);
  CHECK(overlay == NULL && overlay_size == 0);
  dermal_result_free(result);

  /* Faithfulness figures: absent unless asked; then four ROAD figures, all probability changes. */
  {
    int present = -1;
    float change = 2.0f, road[4] = {2.0f, 2.0f, 2.0f, 2.0f};
    CHECK_STATUS(dermal_model_predict(model, photo, photo_size, options, &result), DERMAL_OK);
    CHECK_STATUS(dermal_result_explanation_faithfulness(result, 0, &present, &change, road), DERMAL_OK);
    CHECK(present == 0 && change == 2.0f);
    dermal_result_free(result);
    CHECK_STATUS(dermal_predict_options_set_faithfulness(options, 1), DERMAL_OK);
    CHECK_STATUS(dermal_model_predict(model, photo, photo_size, options, &result), DERMAL_OK);
    CHECK_STATUS(dermal_result_explanation_faithfulness(result, 0, &present, &change, road), DERMAL_OK);
    CHECK(present == 1 && change >= -1.0f && change <= 1.0f);
    for (i = 0; i < 4; ++i) CHECK(road[i] >= -1.0f && road[i] <= 1.0f);
    CHECK_STATUS(dermal_result_explanation_faithfulness(result, 0, &present, &change, NULL), DERMAL_INVALID_ARGUMENT);
    CHECK_STATUS(dermal_result_explanation_faithfulness(result, 1, &present, &change, road), DERMAL_INVALID_ARGUMENT);
    CHECK_STATUS(dermal_predict_options_set_faithfulness(options, 0), DERMAL_OK);
    dermal_result_free(result);
  }

  /* aug_smooth: the mean map of six augmented copies, not the photo's own map. */
  {
    const float *plain_values = NULL, *smoothed_values = NULL;
    int plain_width = 0, plain_height = 0, smoothed_width = 0, smoothed_height = 0, differs = 0;
    dermal_result* smoothed = NULL;
    CHECK_STATUS(dermal_model_predict(model, photo, photo_size, options, &result), DERMAL_OK);
    CHECK_STATUS(dermal_predict_options_set_aug_smooth(options, 1), DERMAL_OK);
    CHECK_STATUS(dermal_model_predict(model, photo, photo_size, options, &smoothed), DERMAL_OK);
    CHECK_STATUS(dermal_result_explanation_heatmap(result, 0, &plain_width, &plain_height, &plain_values), DERMAL_OK);
    CHECK_STATUS(dermal_result_explanation_heatmap(smoothed, 0, &smoothed_width, &smoothed_height, &smoothed_values),
                 DERMAL_OK);
    CHECK(plain_width == smoothed_width && plain_height == smoothed_height);
    for (i = 0; i < (size_t)plain_width * (size_t)plain_height; ++i) differs |= plain_values[i] != smoothed_values[i];
    CHECK(differs);
    CHECK_STATUS(dermal_predict_options_set_aug_smooth(options, 0), DERMAL_OK);
    CHECK_STATUS(dermal_predict_options_set_aug_smooth(NULL, 1), DERMAL_INVALID_ARGUMENT);
    dermal_result_free(smoothed);
    dermal_result_free(result);
  }

  /* Raw RGB: an 8x8 picture, packed and with padded rows. */
  {
    unsigned char rgb[8 * 8 * 3];
    unsigned char padded[8 * (8 * 3 + 5)];
    dermal_result* from_padded = NULL;
    const float* padded_probabilities = NULL;
    size_t padded_count = 0;
    for (i = 0; i < 8 * 8 * 3; ++i) rgb[i] = (unsigned char)(i * 7 % 251);
    memset(padded, 255, sizeof padded); /* padding that must not be read as pixels */
    for (i = 0; i < 8; ++i) memcpy(padded + i * (8 * 3 + 5), rgb + i * 8 * 3, 8 * 3);
    CHECK_STATUS(dermal_model_predict_rgb(model, rgb, 8, 8, 8 * 3, NULL, &result), DERMAL_OK);
    CHECK_STATUS(dermal_result_top_count(result, &count), DERMAL_OK);
    CHECK(count == 3);
    CHECK_STATUS(dermal_model_predict_rgb(model, padded, 8, 8, 8 * 3 + 5, NULL, &from_padded), DERMAL_OK);
    CHECK_STATUS(dermal_result_probabilities(result, &probabilities, &count), DERMAL_OK);
    CHECK_STATUS(dermal_result_probabilities(from_padded, &padded_probabilities, &padded_count), DERMAL_OK);
    CHECK(count == padded_count && memcmp(probabilities, padded_probabilities, count * sizeof(float)) == 0);
    dermal_result_free(from_padded);
    dermal_result_free(result);
    CHECK_STATUS(dermal_model_predict_rgb(model, rgb, 0, 8, 8 * 3, NULL, &result), DERMAL_INVALID_ARGUMENT);
    CHECK(result == NULL);
    CHECK_STATUS(dermal_model_predict_rgb(model, NULL, 8, 8, 8 * 3, NULL, &result), DERMAL_INVALID_ARGUMENT);
    CHECK_STATUS(dermal_model_predict_rgb(model, rgb, 8, 8, 8 * 3 - 1, NULL, &result), DERMAL_INVALID_ARGUMENT);
    CHECK(strstr(dermal_last_error(), "row_stride") != NULL);
  }

  /* Unload twice, then a prediction loads the model again. */
  CHECK_STATUS(dermal_model_unload(model), DERMAL_OK);
  CHECK_STATUS(dermal_model_unload(model), DERMAL_OK);
  CHECK_STATUS(dermal_model_is_loaded(model, &loaded), DERMAL_OK);
  CHECK(loaded == 0);
  CHECK_STATUS(dermal_model_label(model, 0, &label), DERMAL_OK);
  CHECK_STATUS(dermal_model_predict(model, photo, photo_size, NULL, &result), DERMAL_OK);
  CHECK_STATUS(dermal_model_is_loaded(model, &loaded), DERMAL_OK);
  CHECK(loaded == 1);
  dermal_result_free(result);
  dermal_predict_options_free(options);
}

static void test_bad_arguments(dermal_model* model, const unsigned char* photo, size_t photo_size) {
  dermal_predict_options* options = NULL;
  dermal_result* result = (dermal_result*)&result; /* not NULL: a failure must clear it */
  int loaded = 0;
  uint64_t bytes = 0;

  /* NULL handles and out-pointers. */
  CHECK_STATUS(dermal_model_predict(NULL, photo, photo_size, NULL, &result), DERMAL_INVALID_ARGUMENT);
  CHECK(result == NULL);
  CHECK(strstr(dermal_last_error(), "model") != NULL);
  CHECK_STATUS(dermal_model_predict(model, photo, photo_size, NULL, NULL), DERMAL_INVALID_ARGUMENT);
  CHECK_STATUS(dermal_model_is_loaded(NULL, &loaded), DERMAL_INVALID_ARGUMENT);
  CHECK_STATUS(dermal_model_is_loaded(model, NULL), DERMAL_INVALID_ARGUMENT);
  CHECK_STATUS(dermal_model_weight_bytes(model, NULL), DERMAL_INVALID_ARGUMENT);
  CHECK_STATUS(dermal_model_weight_bytes(model, &bytes), DERMAL_OK);
  CHECK(bytes > 0);
  CHECK_STATUS(dermal_model_unload(NULL), DERMAL_INVALID_ARGUMENT);
  CHECK_STATUS(dermal_result_top_count(NULL, NULL), DERMAL_INVALID_ARGUMENT);
  CHECK_STATUS(dermal_load_options_create(NULL), DERMAL_INVALID_ARGUMENT);
  CHECK_STATUS(dermal_load_options_set_threads(NULL, 2), DERMAL_INVALID_ARGUMENT);
  CHECK_STATUS(dermal_load_options_set_release_memory_after_predict(NULL, 0), DERMAL_INVALID_ARGUMENT);
  CHECK_STATUS(dermal_predict_options_set_top_k(NULL, 2), DERMAL_INVALID_ARGUMENT);

  /* Image data: empty, NULL with a size, corrupt. */
  CHECK_STATUS(dermal_model_predict(model, photo, 0, NULL, &result), DERMAL_INVALID_IMAGE);
  CHECK_STATUS(dermal_model_predict(model, NULL, 10, NULL, &result), DERMAL_INVALID_ARGUMENT);
  CHECK_STATUS(dermal_model_predict(model, (const uint8_t*)"not an image at all", 19, NULL, &result),
               DERMAL_INVALID_IMAGE);

  /* Option values: names refused by the setters, numbers by the prediction. */
  CHECK_STATUS(dermal_predict_options_create(&options), DERMAL_OK);
  CHECK_STATUS(dermal_predict_options_set_cam_method(options, "gradcam+++"), DERMAL_INVALID_ARGUMENT);
  CHECK(strstr(dermal_last_error(), "gradcam+++") != NULL);
  CHECK_STATUS(dermal_predict_options_set_cam_method(options, NULL), DERMAL_INVALID_ARGUMENT);
  CHECK_STATUS(dermal_predict_options_set_colormap(options, "rainbow"), DERMAL_INVALID_ARGUMENT);
  CHECK_STATUS(dermal_predict_options_set_overlay_format(options, "gif"), DERMAL_INVALID_ARGUMENT);
  CHECK_STATUS(dermal_predict_options_set_overlay_alpha(options, 1.5f), DERMAL_OK);
  CHECK_STATUS(dermal_model_predict(model, photo, photo_size, options, &result), DERMAL_INVALID_ARGUMENT);
  CHECK(strstr(dermal_last_error(), "alpha") != NULL);
  CHECK_STATUS(dermal_predict_options_set_overlay_alpha(options, 0.5f), DERMAL_OK);
  CHECK_STATUS(dermal_predict_options_set_top_k(options, 0), DERMAL_OK);
  CHECK_STATUS(dermal_model_predict(model, photo, photo_size, options, &result), DERMAL_INVALID_ARGUMENT);
  CHECK_STATUS(dermal_predict_options_set_top_k(options, 3), DERMAL_OK);
  CHECK_STATUS(dermal_predict_options_set_explain(options, 1), DERMAL_OK);
  CHECK_STATUS(dermal_predict_options_set_cam_class(options, "no-such-class"), DERMAL_OK);
  CHECK_STATUS(dermal_model_predict(model, photo, photo_size, options, &result), DERMAL_UNKNOWN_CLASS);
  CHECK(strstr(dermal_last_error(), "no-such-class") != NULL);
  dermal_predict_options_free(options);

  /* A success clears the message. */
  CHECK_STATUS(dermal_model_is_loaded(model, &loaded), DERMAL_OK);
  CHECK(dermal_last_error()[0] == '\0');
}

static void test_loading(const char* models) {
  char path[4096];
  dermal_model* model = (dermal_model*)&model; /* not NULL: a failure must clear it */
  dermal_load_options* options = NULL;
  dermal_predict_options* predict_options = NULL;
  dermal_result* result = NULL;
  unsigned char rgb[4 * 4 * 3] = {0};
  int loaded = 1;

  snprintf(path, sizeof path, "%s/missing.pt", models);
  CHECK_STATUS(dermal_model_open(path, NULL, &model), DERMAL_IO);
  CHECK(model == NULL);
  CHECK(strstr(dermal_last_error(), "missing.pt") != NULL);
  snprintf(path, sizeof path, "%s/not_a_model.pt", models);
  CHECK_STATUS(dermal_model_open(path, NULL, &model), DERMAL_INVALID_MODEL);
  CHECK_STATUS(dermal_model_open(NULL, NULL, &model), DERMAL_INVALID_ARGUMENT);

  snprintf(path, sizeof path, "%s/tiny.pt", models);
  CHECK_STATUS(dermal_model_open(path, NULL, NULL), DERMAL_INVALID_ARGUMENT);
  CHECK_STATUS(dermal_load_options_create(&options), DERMAL_OK);
  CHECK_STATUS(dermal_load_options_set_threads(options, 0), DERMAL_OK);
  CHECK_STATUS(dermal_model_open(path, options, &model), DERMAL_INVALID_ARGUMENT);
  CHECK_STATUS(dermal_load_options_set_threads(options, 1), DERMAL_OK);
  CHECK_STATUS(dermal_load_options_set_max_concurrent(options, 0), DERMAL_OK);
  CHECK_STATUS(dermal_model_open(path, options, &model), DERMAL_INVALID_ARGUMENT);
  CHECK(strstr(dermal_last_error(), "max_concurrent") != NULL);
  CHECK_STATUS(dermal_load_options_set_max_concurrent(options, 2), DERMAL_OK);
  CHECK_STATUS(dermal_load_options_set_queue_timeout_ms(options, -1), DERMAL_OK);
  CHECK_STATUS(dermal_model_open(path, options, &model), DERMAL_INVALID_ARGUMENT);
  CHECK(strstr(dermal_last_error(), "queue_timeout_ms") != NULL);
  CHECK_STATUS(dermal_load_options_set_queue_timeout_ms(options, 1000), DERMAL_OK);
  CHECK_STATUS(dermal_load_options_set_cam_layer(options, "features.9"), DERMAL_OK);
  CHECK_STATUS(dermal_model_open(path, options, &model), DERMAL_UNKNOWN_LAYER);
  CHECK_STATUS(dermal_load_options_set_cam_layer(options, NULL), DERMAL_OK);

  /* Lazy, explain off, at most 16 pixels, freed memory kept. */
  CHECK_STATUS(dermal_load_options_set_release_memory_after_predict(options, 0), DERMAL_OK);
  CHECK_STATUS(dermal_load_options_set_preload(options, 0), DERMAL_OK);
  CHECK_STATUS(dermal_load_options_set_explain(options, 0), DERMAL_OK);
  CHECK_STATUS(dermal_load_options_set_max_pixels(options, 16), DERMAL_OK);
  CHECK_STATUS(dermal_model_open(path, options, &model), DERMAL_OK);
  dermal_load_options_free(options);
  CHECK_STATUS(dermal_model_is_loaded(model, &loaded), DERMAL_OK);
  CHECK(loaded == 0);
  CHECK_STATUS(dermal_model_predict_rgb(model, rgb, 5, 4, 5 * 3, NULL, &result), DERMAL_IMAGE_TOO_LARGE);
  CHECK_STATUS(dermal_predict_options_create(&predict_options), DERMAL_OK);
  CHECK_STATUS(dermal_predict_options_set_explain(predict_options, 1), DERMAL_OK);
  CHECK_STATUS(dermal_model_predict_rgb(model, rgb, 4, 4, 4 * 3, predict_options, &result), DERMAL_EXPLAIN_DISABLED);
  dermal_predict_options_free(predict_options);
  CHECK_STATUS(dermal_model_predict_rgb(model, rgb, 4, 4, 4 * 3, NULL, &result), DERMAL_OK);
  CHECK_STATUS(dermal_model_load(model), DERMAL_OK);
  dermal_result_free(result);
  dermal_model_free(model);
}

/* The probe a model file carries (tools/dermal_probe.py), checked at load. */
static void test_probe(const char* models) {
  char path[4096];
  dermal_model* model = NULL;
  const char* probe_result = NULL;
  dermal_load_options* options = NULL;

  snprintf(path, sizeof path, "%s/probe.pt", models);
  CHECK_STATUS(dermal_model_open(path, NULL, &model), DERMAL_OK);
  CHECK_STATUS(dermal_model_probe_result(model, NULL), DERMAL_INVALID_ARGUMENT);
  CHECK_STATUS(dermal_model_probe_result(model, &probe_result), DERMAL_OK);
  /* frozen_fallback where oneDNN's tensor ops crash (tests/test_network.cpp tests which) */
  CHECK(probe_result != NULL && (strcmp(probe_result, "passed") == 0 || strcmp(probe_result, "frozen_fallback") == 0));
  CHECK_STATUS(dermal_model_unload(model), DERMAL_OK);
  CHECK_STATUS(dermal_model_probe_result(model, &probe_result), DERMAL_OK);
  CHECK(probe_result != NULL && strcmp(probe_result, "none") == 0);
  dermal_model_free(model);

  /* Optimisation off: the frozen graphs, which compute the probe. */
  CHECK_STATUS(dermal_load_options_create(&options), DERMAL_OK);
  CHECK_STATUS(dermal_load_options_set_optimise(NULL, 0), DERMAL_INVALID_ARGUMENT);
  CHECK_STATUS(dermal_load_options_set_optimise(options, 0), DERMAL_OK);
  CHECK_STATUS(dermal_model_open(path, options, &model), DERMAL_OK);
  dermal_load_options_free(options);
  CHECK_STATUS(dermal_model_probe_result(model, &probe_result), DERMAL_OK);
  CHECK(probe_result != NULL && strcmp(probe_result, "passed") == 0);
  dermal_model_free(model);

  snprintf(path, sizeof path, "%s/probe_wrong_logits.pt", models);
  CHECK_STATUS(dermal_model_open(path, NULL, &model), DERMAL_NUMERICS_MISMATCH);
  CHECK(model == NULL);
  CHECK(strstr(dermal_last_error(), "largest difference") != NULL);
  CHECK(strstr(dermal_last_error(), "ONEDNN_MAX_CPU_ISA=AVX2") != NULL);
}

int main(int argc, char** argv) {
  char path[4096];
  unsigned char* photo;
  size_t photo_size = 0;
  dermal_model* model = NULL;
  if (argc != 2) {
    fprintf(stderr, "usage: test_c_abi MODELS_DIR\n");
    return 2;
  }
  snprintf(path, sizeof path, "%s/tiny_input.png", argv[1]);
  photo = read_file(path, &photo_size);
  if (photo == NULL) {
    fprintf(stderr, "cannot read %s\n", path);
    return 2;
  }

  test_library_queries();
  snprintf(path, sizeof path, "%s/tiny.pt", argv[1]);
  CHECK_STATUS(dermal_model_open(path, NULL, &model), DERMAL_OK);
  if (model != NULL) {
    test_prediction(model, photo, photo_size);
    test_bad_arguments(model, photo, photo_size);
  }
  test_loading(argv[1]);
  test_probe(argv[1]);

  /* Every free accepts NULL. */
  dermal_model_free(NULL);
  dermal_result_free(NULL);
  dermal_load_options_free(NULL);
  dermal_predict_options_free(NULL);
  dermal_model_free(model);
  free(photo);

  if (failures != 0) fprintf(stderr, "%d check(s) failed\n", failures);
  else printf("all C ABI checks passed\n");
  return failures == 0 ? 0 : 1;
}
