/** @file
 * weft/producer.h: streaming a file or generated data into a transport with back-pressure
 * (Twisted's producers and FileSender).
 *
 * A producer keeps the transport's pending output between two marks: it writes until pending
 * output passes the high mark, then waits until it falls to the low mark (default 64 KiB and
 * 256 KiB), so memory stays bounded however slowly the peer reads. It watches the transport's
 * output buffer itself: the protocol's write_drained and its low-water mark stay the
 * protocol's. A file goes out with sendfile(2) on a plain TCP transport (libevent file
 * segments: no copy through user space) and in bounded chunks passed by reference
 * (weft_transport_write_reference) on TLS. Optionally the producer pauses reading while output
 * is above the high mark (a request-pipelining peer then waits in TCP flow control).
 *
 * Lifecycle: DONE(ARG, STATUS) is called exactly once, from the reactor loop (never from
 * inside a weft call): STATUS 0 once everything was handed to the transport (it may still be
 * in flight: lose_connection flushes it), a WEFT_E* code when it stopped (WEFT_EIO: the file
 * could not be read; the generator's error; the connection's reason code, or WEFT_ECLOSED, when
 * the connection ended or started closing first: then DONE runs right before connection_lost).
 * The producer is freed after DONE returns. One producer per transport at a time.
 * All functions: reactor thread.
 */
#ifndef WEFT_PRODUCER_H
#define WEFT_PRODUCER_H

#include <stddef.h>
#include <stdint.h>

#include <weft/transport.h>

#include <weft/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/** A producer (opaque, owned by the library until DONE returns). */
typedef struct weft_producer weft_producer;

/** The end of a producer: STATUS 0 or a WEFT_E* code (see above). */
typedef void (*weft_producer_done_fn)(void *arg, int status);

/** A generator: called whenever the transport has room; writes some bytes on TRANSPORT (any
 * weft_transport_write* call) and returns 1 to be called again, 0 when it has written its
 * last bytes, or a negative WEFT_E* code to stop with that status. */
typedef int (*weft_produce_fn)(void *arg, weft_transport *transport);

/** Streams LENGTH bytes (-1: up to the end of the file) of the file FD from OFFSET into
 * TRANSPORT. FD stays the caller's: keep it open until DONE, close it after. Errors (DONE is
 * then not called): WEFT_EINVAL (NULL, FD < 0, OFFSET < 0, LENGTH < -1, FD not a regular file),
 * WEFT_EBUSY (a producer runs already), WEFT_ECLOSED, WEFT_ENOMEM, WEFT_EIO (fstat failed). */
WEFT_EXTERN int weft_producer_start_file(weft_transport *transport, int fd, int64_t offset,
                                         int64_t length, weft_producer_done_fn done, void *arg,
                                         weft_producer **out);

/** Streams what PRODUCE(ARG, TRANSPORT) writes into TRANSPORT. The first call is from the loop.
 * Errors as weft_producer_start_file (WEFT_EINVAL for a NULL PRODUCE). */
WEFT_EXTERN int weft_producer_start(weft_transport *transport, weft_produce_fn produce,
                                    weft_producer_done_fn done, void *arg, weft_producer **out);

/** Sets the marks (LOW < HIGH, HIGH >= 1). Errors: WEFT_EINVAL. */
WEFT_EXTERN int weft_producer_set_marks(weft_producer *producer, size_t low, size_t high);

/** ON non-zero: pause reading while pending output is above the high mark, resume when it is
 * back at the low mark and when the producer ends. The producer owns the transport's
 * pause/resume while it runs with this on. Errors: WEFT_EINVAL. */
WEFT_EXTERN int weft_producer_set_pause_reading(weft_producer *producer, int on);

/** Stops the producer: DONE runs from the loop with WEFT_ECANCELED; bytes already written
 * stay queued. Errors: WEFT_EINVAL. Calling it again does nothing. */
WEFT_EXTERN int weft_producer_stop(weft_producer *producer);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_PRODUCER_H */
