/* Thin wrappers over the library's private copy of stb_image_write. */
#pragma once
#ifdef __cplusplus
extern "C" {
#endif

/* Receives the encoded bytes, possibly over several calls, in order. */
typedef void stbw_sink(void* context, void* data, int size);

/* Encodes width * height packed RGB pixels as PNG; 1 on success, 0 on failure. */
int stbw_write_png(stbw_sink* sink, void* context, int width, int height, const unsigned char* rgb);

#ifdef __cplusplus
}
#endif
