/** @file
 * weft/weft.h: includes every public weft header. */
#ifndef WEFT_WEFT_H
#define WEFT_WEFT_H

#include <weft/common.h>

#include <weft/error.h>
#include <weft/reactor.h>
#include <weft/protocol.h>
#include <weft/transport.h>
#include <weft/endpoint.h>
#include <weft/tls.h>
#include <weft/reconnect.h>
#include <weft/alloc.h>
#include <weft/version.h>
#include <weft/framing.h>
#include <weft/log.h>
#include <weft/timeout.h>
#include <weft/testing.h>
#include <weft/producer.h>

#endif /* WEFT_WEFT_H */
