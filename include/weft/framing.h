/** @file
 * weft/framing.h: cutting a byte stream into lines, length-prefixed frames or netstrings
 * (Twisted's LineReceiver, Int32StringReceiver and NetstringReceiver), for data_received.
 *
 * A framer is a small parser the protocol owns: it feeds every piece data_received gets into
 * weft_framer_feed, and the framer calls ON_FRAME once per complete frame, in order, whatever
 * way the stream was cut into pieces (one byte at a time included).
 *
 *  - Zero copies where possible: a frame that lies whole in the piece being fed is passed as a
 *    pointer into that piece. Only a frame split across pieces is gathered in the framer's own
 *    buffer.
 *  - Bounded memory: the buffer never holds more than the maximum frame length (plus the
 *    delimiter or the length header). A line or frame announced or found longer than the
 *    maximum stops the framer with WEFT_ETOOLONG before anything is allocated for it; a
 *    malformed netstring stops it with WEFT_EBADFRAME. The protocol then closes the connection.
 *  - Raw mode: weft_framer_set_raw_mode hands every byte not yet framed (what the framer holds,
 *    then the rest of the piece being fed, then every later piece) to an ON_RAW callback
 *    instead. It is the safe way to switch protocols in the middle of a stream: the bytes after
 *    the switching frame are handed over explicitly, never parsed under the old rules, never
 *    lost. A STARTTLS server switches to raw mode on its STARTTLS line: bytes that follow the
 *    command in the same read were sent in clear before the handshake (a plaintext-injection
 *    attempt, CVE-2011-0411): ON_RAW sees them and the protocol refuses them.
 *
 * Ownership: the framer belongs to the caller (free it with weft_framer_free, e.g. in
 * connection_lost). The pointers passed to the callbacks are valid only during the call.
 * Threading: a framer is not shared; use it from one thread (the reactor's). It does no I/O
 * and needs no reactor, so a protocol's parser is testable on its own.
 */
#ifndef WEFT_FRAMING_H
#define WEFT_FRAMING_H

#include <stddef.h>
#include <stdint.h>

#include <weft/transport.h>

#include <weft/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/** A framer (opaque, owned by the caller). */
typedef struct weft_framer weft_framer;

/** Called once per complete frame: a line without its delimiter, a frame's payload without
 * its length header, a netstring's payload. FRAME (LEN bytes, LEN may be 0) is valid only
 * during the call. Return 0 to go on. A non-zero return stops the framer for good: feed
 * returns that value at once, the rest of the piece and what the framer holds are dropped,
 * and later feeds return WEFT_ECLOSED (return non-zero after closing the connection). The
 * callback may call weft_framer_set_raw_mode; it must not free the framer. */
typedef int (*weft_frame_fn)(void *arg, const uint8_t *frame, size_t len);

/** In raw mode, called with bytes as they come (LEN > 0, valid during the call). Returns how
 * many bytes it consumed: if it switched back to framing (weft_framer_set_raw_mode(f, NULL)),
 * the bytes after that count are framed; otherwise the return value is ignored and all LEN
 * bytes count as consumed. It must not free the framer. */
typedef size_t (*weft_raw_fn)(void *arg, const uint8_t *data, size_t len);

/** Byte order of a length header (weft_framer_new_prefixed). */
typedef enum weft_byte_order {
  WEFT_BIG_ENDIAN = 0,   /**< network order, the most significant byte first (the default) */
  WEFT_LITTLE_ENDIAN = 1 /**< the least significant byte first */
} weft_byte_order;

/** A line framer: frames end with DELIMITER (DELIMITER_LEN bytes, 1 to 16, e.g. "\r\n" with 2,
 * "\n" with 1); the delimiter is not part of the line. A line longer than MAX_LENGTH bytes
 * (1 or more, without the delimiter) stops the framer with WEFT_ETOOLONG, as soon as that
 * many bytes arrived with no delimiter, so memory stays bounded. DELIMITER is copied.
 * Errors: WEFT_EINVAL (NULL argument, DELIMITER_LEN out of range, MAX_LENGTH 0 or above
 * SIZE_MAX / 2), WEFT_ENOMEM. */
WEFT_EXTERN int weft_framer_new_lines(const void *delimiter, size_t delimiter_len,
                                      size_t max_length, weft_frame_fn on_frame, void *arg,
                                      weft_framer **out);

/** A length-prefixed framer: each frame is a PREFIX_SIZE-byte unsigned length (1, 2, 4 or 8)
 * in ORDER, then that many bytes. A length above MAX_LENGTH (hostile or not) stops the framer
 * with WEFT_ETOOLONG when the header is read, before any byte of the payload is buffered.
 * Errors: WEFT_EINVAL (NULL argument, another PREFIX_SIZE, ORDER not one of the two, MAX_LENGTH
 * above SIZE_MAX / 2), WEFT_ENOMEM. */
WEFT_EXTERN int weft_framer_new_prefixed(unsigned prefix_size, weft_byte_order order,
                                         size_t max_length, weft_frame_fn on_frame, void *arg,
                                         weft_framer **out);

/** A netstring framer (D. J. Bernstein's "LEN:DATA,", LEN in decimal without leading zeros).
 * A length above MAX_LENGTH stops it with WEFT_ETOOLONG when the length is read; a malformed
 * header or a missing ',' stops it with WEFT_EBADFRAME.
 * Errors: WEFT_EINVAL (NULL argument, MAX_LENGTH above SIZE_MAX / 2), WEFT_ENOMEM. */
WEFT_EXTERN int weft_framer_new_netstrings(size_t max_length, weft_frame_fn on_frame, void *arg,
                                           weft_framer **out);

/** Frees the framer and what it holds. NULL is ignored. Not from its own callbacks. */
WEFT_EXTERN void weft_framer_free(weft_framer *framer);

/** Feeds LEN bytes (call it from data_received with the piece received). Runs ON_FRAME for
 * every frame completed, or ON_RAW in raw mode. Returns 0; WEFT_ETOOLONG or WEFT_EBADFRAME
 * when the stream broke the framing (frames before the fault were delivered; the framer is
 * stopped: close the connection); the callback's non-zero value; WEFT_ECLOSED once stopped;
 * WEFT_EINVAL (NULL framer, or DATA NULL with LEN > 0); WEFT_ENOMEM (the bytes that could not
 * be buffered are lost and the framer is stopped). LEN 0 is a no-op. */
WEFT_EXTERN int weft_framer_feed(weft_framer *framer, const uint8_t *data, size_t len);

/** Switches to raw mode (ON_RAW not NULL): the bytes the framer holds, then the rest of the
 * piece being fed, then later pieces go to ON_RAW(ARG, ...) (ARG as given at creation). From
 * inside ON_FRAME the switch takes effect right after the current frame. With ON_RAW NULL,
 * switches back to framing: from inside ON_RAW, the bytes after its return value are framed.
 * Returns 0, WEFT_EINVAL (NULL framer), WEFT_ECLOSED (stopped). */
WEFT_EXTERN int weft_framer_set_raw_mode(weft_framer *framer, weft_raw_fn on_raw);

/** How many bytes the framer holds (part of a frame not yet complete). 0 for NULL. */
WEFT_EXTERN size_t weft_framer_buffered(const weft_framer *framer);

/** Changes the maximum length from the next frame on (the limits of the constructor apply).
 * Returns 0 or WEFT_EINVAL. */
WEFT_EXTERN int weft_framer_set_max_length(weft_framer *framer, size_t max_length);

/** Writes DATA as one length-prefixed frame (header then payload, in one write) on TRANSPORT.
 * Errors: WEFT_EINVAL (bad PREFIX_SIZE or ORDER, LEN not representable in PREFIX_SIZE bytes),
 * then as weft_transport_write_sequence. Reactor thread. */
WEFT_EXTERN int weft_write_prefixed(weft_transport *transport, unsigned prefix_size,
                                    weft_byte_order order, const void *data, size_t len);

/** Writes DATA as one netstring on TRANSPORT. Errors as weft_transport_write_sequence. */
WEFT_EXTERN int weft_write_netstring(weft_transport *transport, const void *data, size_t len);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_FRAMING_H */
