/** @file
 * weft/alloc.h: the allocator weft uses for its own memory.
 *
 * Every object weft allocates (reactors, delayed calls, listeners, connectors, transports,
 * certificate options, dispatch and reconnecting factories, and their strings) comes from the
 * allocator set here; the default is the C library's malloc family. The hook exists so that
 * an application can account for or pool weft's memory, and so that tests can make the Nth
 * allocation fail and check that every failure is reported as WEFT_ENOMEM, never as a crash or
 * a leak (tests/check_alloc.c does this over the whole connection set-up and teardown path).
 *
 * What it does not cover: memory that libevent and OpenSSL allocate for themselves (install
 * their own hooks, event_set_mem_functions and CRYPTO_set_mem_functions, before their first
 * use if you need them), and the PEM text returned by weft_key_to_pem and weft_cert_to_pem,
 * which is documented to be released with free() and so always comes from malloc.
 */
#ifndef WEFT_ALLOC_H
#define WEFT_ALLOC_H

#include <weft/common.h>

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/** An allocator, in the style of nghttp2's nghttp2_mem. Each function gets user_data as its
 * last argument. The functions follow the C library's contracts: malloc and calloc return
 * NULL on failure, realloc returns NULL and leaves PTR untouched on failure, free(NULL) does
 * nothing. They may be called from any thread that calls weft (weft_reactor_call_from_thread
 * allocates in the calling thread), so they must be thread-safe.
 * It follows the size rule of weft's ABI (see "API and ABI stability" in the guide): SIZE 0,
 * what a designated initializer leaves, means the 1.0 layout; members are only ever appended,
 * and the library reads one added after 1.0 only when SIZE (set it to sizeof the struct to use
 * them) covers it. A SIZE larger than the library knows (a program built against newer headers
 * running with an older library) is accepted and the tail ignored; one smaller than the 1.0
 * layout is read as 0. */
typedef struct weft_allocator {
  size_t size; /**< 0 (the 1.0 layout) or sizeof(weft_allocator) */
  void *(*malloc)(size_t size, void *user_data);               /**< like malloc(3) */
  void (*free)(void *ptr, void *user_data);                    /**< like free(3) */
  void *(*calloc)(size_t count, size_t size, void *user_data); /**< like calloc(3) */
  void *(*realloc)(void *ptr, size_t size, void *user_data);   /**< like realloc(3) */
  void *user_data; /**< passed to each function as its last argument */
} weft_allocator;

/** Makes ALLOCATOR (copied; NULL restores the C library's allocator) the one weft uses from
 * now on. Allowed only while no memory allocated by weft is outstanding, that is before the
 * first weft object is created or after the last one is released; otherwise memory would be
 * released by an allocator that did not allocate it.
 *
 * Errors: WEFT_EINVAL if ALLOCATOR lacks one of its four functions; WEFT_EBUSY if memory that
 * weft allocated is still outstanding (nothing changes).
 * Thread: any, but not concurrently with any other weft call. */
WEFT_EXTERN int weft_set_allocator(const weft_allocator *allocator);

/** How many blocks weft has allocated and not yet released (all threads). A diagnostic: 0
 * once every weft object is released. Thread: any. */
WEFT_EXTERN long weft_allocations_outstanding(void);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_ALLOC_H */
