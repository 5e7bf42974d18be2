/* Thin wrappers over the library's private copies of stb_image (PNG and BMP
 * decoding) and stb_image_write (PNG encoding). */
#pragma once
#ifdef __cplusplus
extern "C" {
#endif

/* Decodes to 8-bit RGB (gray, alpha, palette and 16-bit converted); NULL on failure. */
unsigned char* stbd_load_rgb(const unsigned char* data, int size, int* width, int* height);
/* Why the last stbd_load_rgb on this thread failed; never NULL. */
const char* stbd_failure_reason(void);
void stbd_free(void* pixels);

/* Receives the encoded bytes, possibly over several calls, in order. */
typedef void stbw_sink(void* context, void* data, int size);

/* Encodes width * height packed RGB pixels as PNG; 1 on success, 0 on failure. */
int stbw_write_png(stbw_sink* sink, void* context, int width, int height, const unsigned char* rgb);

#ifdef __cplusplus
}
#endif
