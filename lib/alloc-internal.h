/* lib/alloc-internal.h: weft's own allocation functions, routed through weft_set_allocator. */
#ifndef WEFT_ALLOC_INTERNAL_H
#define WEFT_ALLOC_INTERNAL_H

#include <stddef.h>

void *weft__malloc(size_t size);
void *weft__calloc(size_t count, size_t size);
void *weft__realloc(void *ptr, size_t size);
void weft__free(void *ptr);
char *weft__strdup(const char *s);

#endif /* WEFT_ALLOC_INTERNAL_H */
