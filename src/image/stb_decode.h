/* Thin wrappers over the library's private copy of stb_image. */
#pragma once
#ifdef __cplusplus
extern "C" {
#endif

/* Decodes to 8-bit RGB (gray, alpha, palette and 16-bit converted); NULL on failure. */
unsigned char* stbd_load_rgb(const unsigned char* data, int size, int* width, int* height);
/* Why the last stbd_load_rgb on this thread failed; never NULL. */
const char* stbd_failure_reason(void);
void stbd_free(void* pixels);

#ifdef __cplusplus
}
#endif
