/* dermal C ABI: classify a skin-lesion photo with a dermal model and explain
 * the score with a class activation map. Pure C99; no LibTorch types.
 * The scores are a model's output, not a diagnosis.
 *
 *   dermal_model* model = NULL;
 *   dermal_result* result = NULL;
 *   if (dermal_model_open("demo-model.pt", NULL, &model) != DERMAL_OK ||
 *       dermal_model_predict(model, jpeg, jpeg_size, NULL, &result) != DERMAL_OK) {
 *     fprintf(stderr, "dermal: %s\n", dermal_last_error());
 *   } else {
 *     const char* label; int index; float probability;
 *     dermal_result_top(result, 0, &label, &index, &probability);
 *     printf("%s %.3f\n", label, probability);
 *   }
 *   dermal_result_free(result);
 *   dermal_model_free(model);
 *
 * Conventions
 * - Every function that can fail returns a dermal_status; on failure
 *   dermal_last_error() explains it (a message per thread). No C++ exception
 *   ever leaves the library.
 * - Out-pointers must not be NULL. A function that creates a handle sets
 *   *out to NULL when it fails.
 * - Every *_free accepts NULL. Getters take const handles.
 * - Pointers that getters return (labels, heatmaps, overlays, probabilities)
 *   are owned by the handle they came from and stay valid until it is freed.
 * - Threads: a dermal_model owns its inference threads (see
 *   dermal_load_options_set_max_concurrent) and may be shared by any number
 *   of host threads. An options object may be read by many threads at once
 *   (predict and open only read it) but not changed while it is read. A
 *   result belongs to one thread at a time.
 * - fork(): a model loaded before fork() serves in the children, which share
 *   its weights copy-on-write (a pre-forking server's workers). fork() waits
 *   until no prediction or load is running; each child starts its own
 *   inference threads at its first prediction.
 * - Names (CAM methods, colormaps, formats) and numbers are checked in one
 *   place: names by the setters, numbers by dermal_model_open and
 *   dermal_model_predict.
 */
#ifndef DERMAL_H
#define DERMAL_H

#include <stddef.h>
#include <stdint.h>

#ifdef DERMAL_SHARED
#  if defined(_WIN32) && !defined(__MINGW32__)
#    ifdef DERMAL_BUILD
#      define DERMAL_API __declspec(dllexport)
#    else
#      define DERMAL_API __declspec(dllimport)
#    endif
#  else
#    define DERMAL_API __attribute__((visibility("default")))
#  endif
#else
#  define DERMAL_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped whenever a signature, a name or an enum value changes; the Python
 * binding refuses a library whose dermal_abi_version() differs. */
#define DERMAL_ABI_VERSION 5

/* The numbers equal dermal::ErrorCode's; they never change, new ones go last. */
typedef enum dermal_status {
  DERMAL_OK = 0,
  DERMAL_INVALID_ARGUMENT = 1,   /* a wrong argument or option value */
  DERMAL_IO = 2,                 /* a file could not be read */
  DERMAL_INVALID_IMAGE = 3,      /* empty, truncated or corrupt image data */
  DERMAL_UNSUPPORTED_IMAGE = 4,  /* a format or pixel layout dermal does not decode */
  DERMAL_IMAGE_TOO_LARGE = 5,    /* more pixels than the model's max_pixels */
  DERMAL_INVALID_MODEL = 6,      /* not a dermal model, or its description is wrong */
  DERMAL_MODEL_NOT_LOADED = 7,   /* a model used after it was closed */
  DERMAL_UNKNOWN_LAYER = 8,      /* a CAM layer that is not a stage with spatial output */
  DERMAL_UNKNOWN_CLASS = 9,      /* a class label the model does not have */
  DERMAL_OUT_OF_MEMORY = 10,
  DERMAL_INTERNAL = 11,          /* an unexpected failure inside LibTorch or dermal */
  DERMAL_EXPLAIN_DISABLED = 12,  /* a heatmap was asked of a model opened with explain off */
  DERMAL_BUSY = 13,              /* no inference thread took the request within the queue timeout */
  DERMAL_NUMERICS_MISMATCH = 14  /* neither the optimised nor the frozen graphs compute the file's probe as its
                                    exporter did (the message names the difference and the remedy to try) */
} dermal_status;

typedef struct dermal_model dermal_model;
typedef struct dermal_load_options dermal_load_options;
typedef struct dermal_predict_options dermal_predict_options;
typedef struct dermal_result dermal_result;

/* ---- Library ---------------------------------------------------------- */

/* DERMAL_ABI_VERSION of the library actually loaded. */
DERMAL_API int dermal_abi_version(void);
/* The library's version, e.g. "0.2.0"; a static string. */
DERMAL_API const char* dermal_version_string(void);
/* The status's name, e.g. "invalid_image"; a static string ("unknown" for a
 * number that is not a dermal_status). */
DERMAL_API const char* dermal_status_name(dermal_status status);
/* Why the last failed call on this thread failed; "" after one that returned DERMAL_OK.
 * Valid until the next dermal call on this thread. */
DERMAL_API const char* dermal_last_error(void);
/* The process's resident set (VmRSS) and its peak (VmHWM), in bytes. */
DERMAL_API dermal_status dermal_memory_status(uint64_t* current_rss_bytes, uint64_t* peak_rss_bytes);

/* ---- Load options (defaults: preload, 1 LibTorch thread, explain on, the
 *      model's own CAM layer, 40 000 000 pixels at most, 1 inference
 *      thread, 30 000 ms queue timeout, allocator untouched) -------------- */

DERMAL_API dermal_status dermal_load_options_create(dermal_load_options** options);
DERMAL_API void dermal_load_options_free(dermal_load_options* options);
/* LibTorch intra-op threads on each of the model's inference threads, at least 1; the host's own
 * LibTorch settings are left alone. */
DERMAL_API dermal_status dermal_load_options_set_threads(dermal_load_options* options, int threads);
/* Non-zero: load at dermal_model_open; 0: at the first prediction. */
DERMAL_API dermal_status dermal_load_options_set_preload(dermal_load_options* options, int preload);
/* 0: predictions never compute heatmaps (every stage optimised, less memory). */
DERMAL_API dermal_status dermal_load_options_set_explain(dermal_load_options* options, int explain);
/* Non-zero (the default): graphs optimised for inference where the load's
 * checks pass (else frozen ones, and dermal_model_probe_result says
 * "frozen_fallback"); 0: frozen graphs only, slower on most machines. */
DERMAL_API dermal_status dermal_load_options_set_optimise(dermal_load_options* options, int optimise);
/* The stage whose output the heatmaps explain; NULL or "" for the model's own. */
DERMAL_API dermal_status dermal_load_options_set_cam_layer(dermal_load_options* options, const char* layer);
/* Photos with more pixels than this are refused before decoding. */
DERMAL_API dermal_status dermal_load_options_set_max_pixels(dermal_load_options* options, uint64_t max_pixels);
/* The model's own inference threads, at least 1: at most this many
 * predictions run at once, whatever the number of calling threads, and
 * per-thread scratch memory exists only on them. */
DERMAL_API dermal_status dermal_load_options_set_max_concurrent(dermal_load_options* options, int max_concurrent);
/* A prediction that no inference thread has taken within this many
 * milliseconds fails with DERMAL_BUSY; at least 0. */
DERMAL_API dermal_status dermal_load_options_set_queue_timeout_ms(dermal_load_options* options, int queue_timeout_ms);
/* Non-zero: process-wide, sets glibc's malloc thresholds (M_MMAP_THRESHOLD
 * 128 KiB while loading, then M_MMAP_THRESHOLD and M_TRIM_THRESHOLD 32 MiB):
 * a lower load peak (reference model 337 -> 320 MB), and requests that keep
 * their heap (with glibc's defaults Grad-CAM took 2.6-3.4x as long where
 * page faults are slow). See the README. */
DERMAL_API dermal_status dermal_load_options_set_tune_allocator(dermal_load_options* options, int tune_allocator);
/* Non-zero (the default): process-wide, after each prediction the heap
 * memory freed in the whole process goes back to the system (glibc's
 * malloc_trim). Zero keeps it for the next request: faster where page faults
 * are slow, with the resident set higher between requests. See the README. */
DERMAL_API dermal_status dermal_load_options_set_release_memory_after_predict(dermal_load_options* options,
                                                                              int release_memory_after_predict);

/* ---- Predict options (defaults: top 3, explain as opened, "gradcam" for
 *      the top class, a "jpeg" overlay at quality 90 in "jet" with alpha
 *      0.45, no map at the photo's size) ------------------------------------ */

DERMAL_API dermal_status dermal_predict_options_create(dermal_predict_options** options);
DERMAL_API void dermal_predict_options_free(dermal_predict_options* options);
/* How many classes the result lists, at least 1 (capped at the label count). */
DERMAL_API dermal_status dermal_predict_options_set_top_k(dermal_predict_options* options, int top_k);
/* Non-zero: compute heatmaps; 0: do not. Unset: as the load options say. */
DERMAL_API dermal_status dermal_predict_options_set_explain(dermal_predict_options* options, int explain);
/* "gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam",
   "gradcamelementwise", "eigengradcam", "finercam", "fem", "kpcacam",
   "ablationcam" or "scorecam". */
DERMAL_API dermal_status dermal_predict_options_set_cam_method(dermal_predict_options* options, const char* method);
/* Explain this label only; NULL: explain the top cam_top_k classes. */
DERMAL_API dermal_status dermal_predict_options_set_cam_class(dermal_predict_options* options, const char* label);
/* How many of the top classes to explain, at least 1. */
DERMAL_API dermal_status dermal_predict_options_set_cam_top_k(dermal_predict_options* options, int cam_top_k);
/* Non-zero: an encoded overlay (photo + heatmap) per explanation. */
DERMAL_API dermal_status dermal_predict_options_set_overlay(dermal_predict_options* options, int overlay);
/* Non-zero: also the map at the photo's size (4 bytes per photo pixel per
 * explained class); the overlay never needs it. */
DERMAL_API dermal_status dermal_predict_options_set_full_heatmap(dermal_predict_options* options, int full_heatmap);
/* "jet" or "viridis". */
DERMAL_API dermal_status dermal_predict_options_set_colormap(dermal_predict_options* options, const char* colormap);
/* "jpeg" or "png". */
DERMAL_API dermal_status dermal_predict_options_set_overlay_format(dermal_predict_options* options, const char* format);
/* The heatmap's weight in the overlay blend, 0..1. */
DERMAL_API dermal_status dermal_predict_options_set_overlay_alpha(dermal_predict_options* options, float alpha);
/* JPEG overlay quality, 1..100. */
DERMAL_API dermal_status dermal_predict_options_set_jpeg_quality(dermal_predict_options* options, int quality);
/* Non-zero: each explanation whose map is not flat also gets its faithfulness
 * figures (dermal_result_explanation_faithfulness): five more forwards of the
 * network and four sparse solves per explanation (docs/cam-methods.md). */
DERMAL_API dermal_status dermal_predict_options_set_faithfulness(dermal_predict_options* options, int faithfulness);
/* Non-zero: the map is the first principal component of the per-channel terms
 * it sums (pytorch-grad-cam's eigen_smooth; docs/cam-methods.md). */
DERMAL_API dermal_status dermal_predict_options_set_eigen_smooth(dermal_predict_options* options, int eigen_smooth);
/* Non-zero: the map is the mean of the method's maps for six copies of the
 * input (flipped or not x multiplied by 0.9, 1 or 1.1), each flipped back
 * (pytorch-grad-cam's aug_smooth): six passes, up to six times a request's time
 * (docs/cam-methods.md). */
DERMAL_API dermal_status dermal_predict_options_set_aug_smooth(dermal_predict_options* options, int aug_smooth);

/* ---- Model ------------------------------------------------------------ */

/* Opens a dermal model file (and with preload, loads it); options may be NULL. */
DERMAL_API dermal_status dermal_model_open(const char* path, const dermal_load_options* options, dermal_model** model);
/* Waits for predictions in flight, stops the inference threads, frees the model. */
DERMAL_API void dermal_model_free(dermal_model* model);
/* Classifies an encoded photo (JPEG, PNG or BMP); options may be NULL.
 * Loads the model first if it is not loaded. */
DERMAL_API dermal_status dermal_model_predict(dermal_model* model, const uint8_t* bytes, size_t size,
                                              const dermal_predict_options* options, dermal_result** result);
/* Classifies an upright 8-bit RGB picture: height rows of width * 3 bytes,
 * top to bottom, row_stride bytes apart (at least width * 3). */
DERMAL_API dermal_status dermal_model_predict_rgb(dermal_model* model, const uint8_t* rgb, int width, int height,
                                                  size_t row_stride, const dermal_predict_options* options,
                                                  dermal_result** result);
/* Loads the network now if it is not loaded; a no-op otherwise. */
DERMAL_API dermal_status dermal_model_load(dermal_model* model);
/* Frees the network and its weights (predictions in flight finish first);
 * a later prediction loads it again. Unloading an unloaded model is DERMAL_OK. */
DERMAL_API dermal_status dermal_model_unload(dermal_model* model);
DERMAL_API dermal_status dermal_model_is_loaded(const dermal_model* model, int* loaded);
/* Bytes of the loaded weights and buffers; 0 when unloaded. */
DERMAL_API dermal_status dermal_model_weight_bytes(const dermal_model* model, uint64_t* bytes);
/* The model's labels, in the order of dermal_result_probabilities. The first
 * call loads the model if it has never been loaded. */
DERMAL_API dermal_status dermal_model_label_count(const dermal_model* model, size_t* count);
DERMAL_API dermal_status dermal_model_label(const dermal_model* model, size_t index, const char** label);
/* What the load found when it ran the file's probe through the graphs (a
 * static string): "none" (not loaded, or a file without a probe),
 * "passed", or "frozen_fallback" (the optimised graphs disagreed with the
 * probe, or oneDNN's tensor ops crashed in the load's check, files without
 * a probe included: the frozen graphs are served, slower). */
DERMAL_API dermal_status dermal_model_probe_result(const dermal_model* model, const char** result);

/* ---- Result ----------------------------------------------------------- */

DERMAL_API void dermal_result_free(dermal_result* result);
/* How many classes the result lists (min(top_k, labels)). */
DERMAL_API dermal_status dermal_result_top_count(const dermal_result* result, size_t* count);
/* The class at rank (0: the most probable). */
DERMAL_API dermal_status dermal_result_top(const dermal_result* result, size_t rank, const char** label, int* index,
                                           float* probability);
/* One probability per label, in label order. */
DERMAL_API dermal_status dermal_result_probabilities(const dermal_result* result, const float** values, size_t* count);
/* How many explanations (heatmaps) the result holds (0 without explain). */
DERMAL_API dermal_status dermal_result_explanation_count(const dermal_result* result, size_t* count);
/* The class explanation i explains. */
DERMAL_API dermal_status dermal_result_explanation_class(const dermal_result* result, size_t i, const char** label,
                                                         int* index);
/* The CAM method's name, e.g. "gradcam". */
DERMAL_API dermal_status dermal_result_explanation_cam_method(const dermal_result* result, size_t i,
                                                              const char** method);
/* Non-zero when the map had no contrast (or was not finite) and is all zeros. */
DERMAL_API dermal_status dermal_result_explanation_flat(const dermal_result* result, size_t i, int* flat);
/* The heatmap at the CAM layer's resolution: width * height values in [0, 1], row-major. */
DERMAL_API dermal_status dermal_result_explanation_heatmap(const dermal_result* result, size_t i, int* width,
                                                           int* height, const float** values);
/* The heatmap at the photo's size, values in [0, 1]; 0 x 0 and NULL unless
 * asked (dermal_predict_options_set_full_heatmap). */
DERMAL_API dermal_status dermal_result_explanation_full_heatmap(const dermal_result* result, size_t i, int* width,
                                                                int* height, const float** values);
/* The encoded overlay (photo + heatmap); *size is 0 and *bytes NULL when
 * overlays were switched off. */
DERMAL_API dermal_status dermal_result_explanation_overlay(const dermal_result* result, size_t i,
                                                           const uint8_t** bytes, size_t* size);
/* The map's faithfulness figures: changes of the explained class's probability
 * (model scores about the map, not a diagnosis). *present is 1 and the figures
 * are set when they were asked and the map is not flat, else 0 (and the
 * figures are left alone). cam_mult_image_change: with the input multiplied by
 * the map; road: 4 floats, with the 10, 20, 50 and 80 % most important pixels
 * removed (ROAD). */
DERMAL_API dermal_status dermal_result_explanation_faithfulness(const dermal_result* result, size_t i, int* present,
                                                                float* cam_mult_image_change, float* road);

#ifdef __cplusplus
}
#endif

#endif /* DERMAL_H */
