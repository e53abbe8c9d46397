/* Private: the size rule of the structures the caller allocates (see "API and ABI stability" in
 * doc/guide.md). Such a struct's first member is `size_t size`; 0, or anything smaller than the
 * 1.0 layout, means the 1.0 layout; members added later are appended, and the library reads one
 * only when the caller's SIZE covers it. A SIZE larger than this library's struct (a program
 * built against newer headers) is fine: the tail is ignored.
 *
 * When a member is appended to one of these structs, leave its WEFT__V1_END_* line alone (it
 * names the last 1.0 member) and read the new member only under WEFT__HAS_MEMBER. */
#ifndef WEFT_ABI_INTERNAL_H
#define WEFT_ABI_INTERNAL_H

#include <stddef.h>

/* The macros below name the structs only when expanded: include the public header of the
 * struct you use them on. */

/* The offset just past MEMBER of TYPE. */
#define WEFT__END_OF(type, member) (offsetof(type, member) + sizeof(((type *)0)->member))

/* The end of each growable struct's 1.0 layout: just past its last 1.0 member. */
#define WEFT__V1_END_weft_protocol_ops WEFT__END_OF(weft_protocol_ops, connection_lost)
#define WEFT__V1_END_weft_factory WEFT__END_OF(weft_factory, data)
#define WEFT__V1_END_weft_reconnect_options WEFT__END_OF(weft_reconnect_options, user_data)
#define WEFT__V1_END_weft_cert_spec WEFT__END_OF(weft_cert_spec, serial)
#define WEFT__V1_END_weft_allocator WEFT__END_OF(weft_allocator, user_data)

/* How many bytes of the caller's struct at PTR exist: its SIZE, but at least the 1.0 layout. */
#define WEFT__CALLER_SIZE(ptr, type)                                                               \
  ((size_t)(ptr)->size > (size_t)(WEFT__V1_END_##type) ? (size_t)(ptr)->size                       \
                                                       : (size_t)(WEFT__V1_END_##type))

/* 1 if the caller's struct at PTR (of TYPE, a growable weft struct) has MEMBER: always for the
 * 1.0 members, and for a later one when its SIZE covers the member. */
#define WEFT__HAS_MEMBER(ptr, type, member)                                                        \
  (WEFT__END_OF(type, member) <= WEFT__CALLER_SIZE(ptr, type))

/* How many bytes of the caller's struct at PTR this library may copy into its own TYPE: the
 * caller's size, capped at sizeof(TYPE) (a newer caller's tail is ignored). */
#define WEFT__KNOWN_SIZE(ptr, type)                                                                \
  (WEFT__CALLER_SIZE(ptr, type) < sizeof(type) ? WEFT__CALLER_SIZE(ptr, type) : sizeof(type))

#endif
