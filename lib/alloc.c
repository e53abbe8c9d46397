/* lib/alloc.c: the allocator hook (weft/alloc.h). */
#include "config.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <weft/alloc.h>
#include <weft/error.h>

#include "abi-internal.h"
#include "alloc-internal.h"

static void *std_malloc(size_t size, void *user_data) {
  (void)user_data;
  return malloc(size);
}
static void std_free(void *ptr, void *user_data) {
  (void)user_data;
  free(ptr);
}
static void *std_calloc(size_t count, size_t size, void *user_data) {
  (void)user_data;
  return calloc(count, size);
}
static void *std_realloc(void *ptr, size_t size, void *user_data) {
  (void)user_data;
  return realloc(ptr, size);
}

static weft_allocator current = {
    sizeof(weft_allocator), std_malloc, std_free, std_calloc, std_realloc, NULL};
static atomic_long outstanding;

int weft_set_allocator(const weft_allocator *allocator) {
  static const weft_allocator std = {
      sizeof(weft_allocator), std_malloc, std_free, std_calloc, std_realloc, NULL};
  if (allocator &&
      (!allocator->malloc || !allocator->free || !allocator->calloc || !allocator->realloc))
    return WEFT_EINVAL;
  if (atomic_load(&outstanding) != 0)
    return WEFT_EBUSY;
  if (!allocator) {
    current = std;
  } else { /* the size rule: copy what this version knows of the caller's struct */
    weft_allocator copy = {0};
    memcpy(&copy, allocator, WEFT__KNOWN_SIZE(allocator, weft_allocator));
    copy.size = sizeof copy;
    current = copy;
  }
  return WEFT_OK;
}

long weft_allocations_outstanding(void) {
  return atomic_load(&outstanding);
}

void *weft__malloc(size_t size) {
  void *p = current.malloc(size ? size : 1, current.user_data);
  if (p)
    atomic_fetch_add_explicit(&outstanding, 1, memory_order_relaxed);
  return p;
}

void *weft__calloc(size_t count, size_t size) {
  void *p = current.calloc(count ? count : 1, size ? size : 1, current.user_data);
  if (p)
    atomic_fetch_add_explicit(&outstanding, 1, memory_order_relaxed);
  return p;
}

void *weft__realloc(void *ptr, size_t size) {
  if (!ptr)
    return weft__malloc(size);
  return current.realloc(ptr, size ? size : 1, current.user_data);
}

void weft__free(void *ptr) {
  if (!ptr)
    return;
  atomic_fetch_sub_explicit(&outstanding, 1, memory_order_relaxed);
  current.free(ptr, current.user_data);
}

char *weft__strdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *copy = weft__malloc(n);
  if (copy)
    memcpy(copy, s, n);
  return copy;
}
