/* The one translation unit that compiles stb_image, limited to the formats
   dermal decodes with it (JPEG goes to libjpeg-turbo), and stb_image_write
   for PNG. Internal to the library (static functions, wrapped in stb_codecs.h). */
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_STATIC
#define STBI_NO_STDIO
#define STBI_ONLY_PNG
#define STBI_ONLY_BMP
#include <stb_image.h>

#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#define STBI_WRITE_NO_STDIO
#include <stb_image_write.h>

#include <string.h>

#include "image/stb_codecs.h"

unsigned char* stbd_load_rgb(const unsigned char* data, int size, int* width, int* height) {
  int channels = 0;
  stbi__g_failure_reason = NULL; /* some failures (a bad deflate block type) set no reason */
  return stbi_load_from_memory(data, size, width, height, &channels, 3);
}

/* Never NULL, and never a reason left over from an earlier call on this thread
   or from stb's PNG signature test, which runs before its BMP decoder (some
   of whose failures set no reason of their own). */
const char* stbd_failure_reason(void) {
  const char* reason = stbi_failure_reason();
  return reason == NULL || strcmp(reason, "bad png sig") == 0 ? "corrupt data" : reason;
}

void stbd_free(void* pixels) { stbi_image_free(pixels); }

int stbw_write_png(stbw_sink* sink, void* context, int width, int height, const unsigned char* rgb) {
  return stbi_write_png_to_func(sink, context, width, height, 3, rgb, width * 3);
}
