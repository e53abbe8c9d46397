/* Private: the endpoint's fields and helpers of lib/endpoint.c, shared with
 * lib/endpoint_parse.c and lib/reconnect.c (which copies a client endpoint's settings). */
#ifndef WEFT_ENDPOINT_INTERNAL_H
#define WEFT_ENDPOINT_INTERNAL_H

#include <weft/endpoint.h>

struct weft_endpoint {
  weft_endpoint_role role;
  char *host;                 /* client host, server interface; NULL: not set */
  int port;                   /* -1: not set */
  weft_cert_options *tls;     /* referenced; NULL: plain TCP */
  char *server_name;          /* client */
  char *bind_address;         /* client */
  double timeout;             /* client: connect time-out; 0: the default */
  double attempt_delay;       /* client: Happy Eyeballs attempt delay; -1: the default */
  int backlog;                /* server; 0: the default */
  int reuseport;              /* server */
  int dual_stack;             /* server: an IPv6 interface accepts IPv4 too */
  unsigned connection_limit;  /* server; 0: none */
  double write_timeout;       /* server; 0: none */
  unsigned proxy_versions;    /* server: PROXY header versions required; 0: none */
  char *proxy_sources;        /* server: trusted PROXY sources; NULL: any */
  double proxy_timeout;       /* server: PROXY header time-out; 0: the default */
  unsigned per_address_limit; /* server; 0: none */
  char *unix_path;            /* a Unix socket instead of host and port; NULL: none */
  int unix_mode;              /* server: the socket file's mode; -1: the umask's */
  int systemd;        /* server: serve a socket systemd passed (weft_endpoint_set_systemd) */
  int systemd_family; /* AF_INET, AF_INET6, AF_UNIX or AF_UNSPEC */
  int systemd_index;
  char *systemd_name; /* LISTEN_FDNAMES name; NULL: by index */
  int fd;             /* server: an inherited listening socket; -1: none */
};

/* 1 if S is an IPv4 or IPv6 literal (without brackets), else 0 (also for NULL). */
int weft__endpoint_is_ip(const char *s);

#endif
