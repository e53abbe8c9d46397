/* Private: helpers of lib/endpoint.c shared with lib/endpoint_parse.c. */
#ifndef WEFT_ENDPOINT_INTERNAL_H
#define WEFT_ENDPOINT_INTERNAL_H

/* 1 if S is an IPv4 or IPv6 literal (without brackets), else 0 (also for NULL). */
int weft__endpoint_is_ip(const char *s);

#endif
