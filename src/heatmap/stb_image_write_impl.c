/* The one translation unit that compiles stb_image_write. Internal to the
   library (static functions, wrapped in stb_write.h). */
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#define STBI_WRITE_NO_STDIO
#include <stb_image_write.h>

#include "heatmap/stb_write.h"

int stbw_write_png(stbw_sink* sink, void* context, int width, int height, const unsigned char* rgb) {
  return stbi_write_png_to_func(sink, context, width, height, 3, rgb, width * 3);
}
