/* tls_keys.c: key pairs and X.509 certificates in memory (generation, PEM in and out), and the
 * PEM readers the options' loaders share. Every function here is thread-safe and leaves the
 * OpenSSL error queue empty. */
#include "config.h"

#include <arpa/inet.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <weft/tls.h>

#include "tls_keys-internal.h"

/* --- OpenSSL error text and PEM readers ------------------------------------------------- */

const char *weft__openssl_reason(char *buf, size_t size) {
  const char *data = NULL;
  int flags = 0;
  unsigned long e = ERR_get_error_all(NULL, NULL, NULL, &data, &flags);

  if (size == 0)
    return buf;
  if (e == 0) {
    snprintf(buf, size, "no detail from OpenSSL");
  } else if (ERR_SYSTEM_ERROR(e)) {
    /* OpenSSL gives no text for system errors (ERR_reason_error_string returns NULL) */
    snprintf(buf, size, "%s", strerror((int)ERR_GET_REASON(e)));
  } else {
    const char *reason = ERR_reason_error_string(e);
    if (reason == NULL)
      ERR_error_string_n(e, buf, size);
    else if (data != NULL && (flags & ERR_TXT_STRING) && data[0] != '\0')
      snprintf(buf, size, "%s (%s)", reason, data);
    else
      snprintf(buf, size, "%s", reason);
  }
  ERR_clear_error();
  return buf;
}

/* Never prompt on a terminal for an encrypted key: weft takes unencrypted PEM only. U, when
 * set, records that a passphrase was asked for. */
static int no_passphrase(char *buf, int size, int rwflag, void *u) {
  (void)buf;
  (void)size;
  (void)rwflag;
  if (u != NULL)
    *(int *)u = 1;
  return -1;
}

int weft__pem_read_key(BIO *bio, EVP_PKEY **out, char *why, size_t why_size) {
  int encrypted = 0;
  ERR_clear_error();
  *out = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, &encrypted);
  if (*out != NULL)
    return 0;
  unsigned long e = ERR_peek_error();
  if (encrypted) {
    snprintf(why, why_size, "the key is encrypted; weft loads unencrypted PEM keys only");
    ERR_clear_error();
  } else if (ERR_GET_LIB(e) == ERR_LIB_OSSL_DECODER && ERR_GET_REASON(e) == ERR_R_UNSUPPORTED) {
    snprintf(why, why_size,
             "no PEM private key found (no \"BEGIN ... PRIVATE KEY\" block "
             "OpenSSL can decode)");
    ERR_clear_error();
  } else {
    weft__openssl_reason(why, why_size);
  }
  return WEFT_EPEM;
}

int weft__pem_read_certs(BIO *bio, STACK_OF(X509) * *out, char *why, size_t why_size) {
  STACK_OF(X509) *certs = sk_X509_new_null();
  if (certs == NULL) {
    snprintf(why, why_size, "out of memory");
    return WEFT_ENOMEM;
  }
  ERR_clear_error();
  for (;;) {
    X509 *x = PEM_read_bio_X509_AUX(bio, NULL, no_passphrase, NULL);
    if (x == NULL)
      break;
    if (!sk_X509_push(certs, x)) {
      X509_free(x);
      sk_X509_pop_free(certs, X509_free);
      snprintf(why, why_size, "out of memory");
      ERR_clear_error();
      return WEFT_ENOMEM;
    }
  }
  /* The loop ends on "no start line" once the input is used up; anything else is a fault. */
  unsigned long e = ERR_peek_last_error();
  int clean_end =
      sk_X509_num(certs) > 0 &&
      (e == 0 || (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE));
  if (!clean_end) {
    if (sk_X509_num(certs) == 0 && ERR_GET_LIB(e) == ERR_LIB_PEM &&
        ERR_GET_REASON(e) == PEM_R_NO_START_LINE) {
      snprintf(why, why_size, "no PEM certificate found (no \"BEGIN CERTIFICATE\" line)");
      ERR_clear_error();
    } else {
      weft__openssl_reason(why, why_size);
    }
    sk_X509_pop_free(certs, X509_free);
    return WEFT_EPEM;
  }
  ERR_clear_error();
  *out = certs;
  return 0;
}

/* A read-only memory BIO over LEN bytes of PEM, or NULL (EINVAL when LEN does not fit). */
static int mem_bio(const char *pem, size_t len, BIO **out) {
  *out = NULL;
  if (pem == NULL || len > INT_MAX)
    return WEFT_EINVAL;
  if (len == 0)
    return WEFT_EPEM;
  *out = BIO_new_mem_buf(pem, (int)len);
  if (*out == NULL) {
    ERR_clear_error();
    return WEFT_ENOMEM;
  }
  return 0;
}

/* --- Keys --------------------------------------------------------------------------------- */

int weft_key_generate(weft_key_type type, int bits, EVP_PKEY **out) {
  if (out == NULL)
    return WEFT_EINVAL;
  *out = NULL;
  EVP_PKEY *key = NULL;
  switch (type) {
    case WEFT_KEY_EC_P256:
      key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
      break;
    case WEFT_KEY_ED25519:
      key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
      break;
    case WEFT_KEY_RSA:
      if (bits == 0)
        bits = 2048;
      if (bits < 2048 || bits > 16384)
        return WEFT_EINVAL;
      key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)bits);
      break;
    default:
      return WEFT_EINVAL;
  }
  if (key == NULL) {
    ERR_clear_error();
    return WEFT_ETLS;
  }
  *out = key;
  return 0;
}

/* --- Certificates ----------------------------------------------------------------------- */

/* Checks the subjectAltName entries before anything is allocated. */
static int check_san(const weft_cert_spec *spec) {
  if ((spec->dns_count > 0 && spec->dns_names == NULL) ||
      (spec->ip_count > 0 && spec->ip_addresses == NULL))
    return WEFT_EINVAL;
  for (size_t i = 0; i < spec->dns_count; i++) {
    const char *name = spec->dns_names[i];
    if (name == NULL || name[0] == '\0' || strlen(name) > 253)
      return WEFT_EINVAL;
    for (const char *p = name; *p != '\0'; p++) {
      if (*p <= 0x20 || *p >= 0x7f) /* IA5String, and no spaces: a DNS name */
        return WEFT_EINVAL;
    }
  }
  for (size_t i = 0; i < spec->ip_count; i++) {
    unsigned char bin[16];
    const char *ip = spec->ip_addresses[i];
    if (ip == NULL || (inet_pton(AF_INET, ip, bin) != 1 && inet_pton(AF_INET6, ip, bin) != 1))
      return WEFT_EINVAL;
  }
  return 0;
}

static int add_san(X509 *x, const weft_cert_spec *spec) {
  if (spec->dns_count == 0 && spec->ip_count == 0)
    return 0;
  GENERAL_NAMES *names = sk_GENERAL_NAME_new_null();
  if (names == NULL)
    return WEFT_ENOMEM;
  int rc = WEFT_ENOMEM;
  for (size_t i = 0; i < spec->dns_count + spec->ip_count; i++) {
    GENERAL_NAME *gen = GENERAL_NAME_new();
    ASN1_STRING *value = i < spec->dns_count ? ASN1_IA5STRING_new() : ASN1_OCTET_STRING_new();
    if (gen == NULL || value == NULL) {
      GENERAL_NAME_free(gen);
      ASN1_STRING_free(value);
      goto done;
    }
    int ok;
    if (i < spec->dns_count) {
      ok = ASN1_STRING_set(value, spec->dns_names[i], -1);
    } else {
      unsigned char bin[16];
      const char *ip = spec->ip_addresses[i - spec->dns_count];
      int len = inet_pton(AF_INET, ip, bin) == 1 ? 4 : 16;
      if (len == 16)
        (void)inet_pton(AF_INET6, ip, bin); /* checked by check_san */
      ok = ASN1_OCTET_STRING_set(value, bin, len);
    }
    GENERAL_NAME_set0_value(gen, i < spec->dns_count ? GEN_DNS : GEN_IPADD, value);
    if (!ok || !sk_GENERAL_NAME_push(names, gen)) {
      GENERAL_NAME_free(gen);
      goto done;
    }
  }
  rc =
      X509_add1_ext_i2d(x, NID_subject_alt_name, names, 0, X509V3_ADD_DEFAULT) == 1 ? 0 : WEFT_ETLS;
done:
  GENERAL_NAMES_free(names);
  return rc;
}

static int add_ext(X509 *x, X509V3_CTX *v3, int nid, const char *value) {
  X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, v3, nid, value);
  if (ext == NULL)
    return WEFT_ETLS;
  int ok = X509_add_ext(x, ext, -1);
  X509_EXTENSION_free(ext);
  return ok ? 0 : WEFT_ENOMEM;
}

static int set_serial(X509 *x, long serial) {
  if (serial > 0)
    return ASN1_INTEGER_set(X509_get_serialNumber(x), serial) ? 0 : WEFT_ENOMEM;
  /* 64 random bits, top bit cleared so the DER integer stays positive, never zero */
  unsigned char bytes[8];
  if (RAND_bytes(bytes, sizeof bytes) != 1)
    return WEFT_ETLS;
  bytes[0] = (unsigned char)((bytes[0] & 0x7f) | 0x01);
  BIGNUM *bn = BN_bin2bn(bytes, sizeof bytes, NULL);
  if (bn == NULL)
    return WEFT_ENOMEM;
  ASN1_INTEGER *ai = BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
  BN_free(bn);
  return ai != NULL ? 0 : WEFT_ENOMEM;
}

static int set_subject(X509 *x, const weft_cert_spec *spec) {
  X509_NAME *name = X509_get_subject_name(x);
  if (spec->common_name != NULL &&
      !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                  (const unsigned char *)spec->common_name, -1, -1, 0))
    return WEFT_EINVAL;
  if (spec->organization != NULL &&
      !X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                                  (const unsigned char *)spec->organization, -1, -1, 0))
    return WEFT_EINVAL;
  return 0;
}

/* Fills X (already holding its public key) and signs it. */
static int fill_cert(X509 *x, const weft_cert_spec *spec, EVP_PKEY *key, EVP_PKEY *signer,
                     X509 *issuer) {
  long not_before = spec->not_before != 0 ? spec->not_before : -60;
  long not_after = spec->not_after != 0 ? spec->not_after : 365L * 24 * 3600;
  int rc;

  if (!X509_set_version(x, 2) || !X509_set_pubkey(x, key))
    return WEFT_ENOMEM;
  if ((rc = set_serial(x, spec->serial)) != 0 || (rc = set_subject(x, spec)) != 0)
    return rc;
  if (!X509_set_issuer_name(x, issuer != NULL ? X509_get_subject_name(issuer)
                                              : X509_get_subject_name(x)))
    return WEFT_ENOMEM;
  if (X509_gmtime_adj(X509_getm_notBefore(x), not_before) == NULL ||
      X509_gmtime_adj(X509_getm_notAfter(x), not_after) == NULL)
    return WEFT_EINVAL;

  X509V3_CTX v3;
  X509V3_set_ctx(&v3, issuer != NULL ? issuer : x, x, NULL, NULL, 0);
  if (!X509V3_set_issuer_pkey(&v3, signer))
    return WEFT_ENOMEM;
  int is_rsa = EVP_PKEY_get_base_id(key) == EVP_PKEY_RSA;
  const char *usage = spec->is_ca ? "critical,keyCertSign,cRLSign"
                      : is_rsa    ? "critical,digitalSignature,keyEncipherment"
                                  : "critical,digitalSignature";
  if ((rc = add_ext(x, &v3, NID_basic_constraints,
                    spec->is_ca ? "critical,CA:TRUE" : "critical,CA:FALSE")) != 0 ||
      (rc = add_ext(x, &v3, NID_key_usage, usage)) != 0 ||
      (!spec->is_ca && (rc = add_ext(x, &v3, NID_ext_key_usage, "serverAuth,clientAuth")) != 0) ||
      (rc = add_san(x, spec)) != 0 ||
      (rc = add_ext(x, &v3, NID_subject_key_identifier, "hash")) != 0)
    return rc;
  /* The authority key id names the signer's subject key id; an outside issuer certificate
   * without one simply gets no authority key id. */
  if ((issuer == NULL || X509_get0_subject_key_id(issuer) != NULL) &&
      (rc = add_ext(x, &v3, NID_authority_key_identifier, "keyid:always")) != 0)
    return rc;

  /* Ed25519 (and Ed448) sign the whole message: no separate digest */
  int id = EVP_PKEY_get_base_id(signer);
  const EVP_MD *md = (id == EVP_PKEY_ED25519 || id == EVP_PKEY_ED448) ? NULL : EVP_sha256();
  return X509_sign(x, signer, md) > 0 ? 0 : WEFT_ETLS;
}

void weft_cert_spec_init(weft_cert_spec *spec) {
  if (!spec)
    return;
  memset(spec, 0, sizeof *spec);
  spec->size = sizeof *spec;
}

int weft_cert_generate(const weft_cert_spec *spec, EVP_PKEY *key, EVP_PKEY *issuer_key,
                       X509 *issuer_cert, X509 **out) {
  static const weft_cert_spec defaults;
  if (out == NULL)
    return WEFT_EINVAL;
  *out = NULL;
  if (key == NULL || (issuer_key == NULL) != (issuer_cert == NULL))
    return WEFT_EINVAL;
  if (spec == NULL)
    spec = &defaults;
  long not_before = spec->not_before != 0 ? spec->not_before : -60;
  long not_after = spec->not_after != 0 ? spec->not_after : 365L * 24 * 3600;
  if (spec->serial < 0 || not_after <= not_before)
    return WEFT_EINVAL;
  int rc = check_san(spec);
  if (rc != 0)
    return rc;
  if (issuer_cert != NULL && X509_check_private_key(issuer_cert, issuer_key) != 1) {
    ERR_clear_error();
    return WEFT_EINVAL;
  }

  X509 *x = X509_new();
  if (x == NULL) {
    ERR_clear_error();
    return WEFT_ENOMEM;
  }
  rc = fill_cert(x, spec, key, issuer_key != NULL ? issuer_key : key, issuer_cert);
  ERR_clear_error();
  if (rc != 0) {
    X509_free(x);
    return rc;
  }
  *out = x;
  return 0;
}

/* --- PEM ---------------------------------------------------------------------------------- */

int weft_key_from_pem(const char *pem, size_t len, EVP_PKEY **out) {
  if (out == NULL)
    return WEFT_EINVAL;
  *out = NULL;
  BIO *bio;
  int rc = mem_bio(pem, len, &bio);
  if (rc != 0)
    return rc;
  char why[160];
  EVP_PKEY *key;
  rc = weft__pem_read_key(bio, &key, why, sizeof why);
  BIO_free(bio);
  if (rc == 0)
    *out = key;
  return rc;
}

int weft_cert_from_pem(const char *pem, size_t len, X509 **out) {
  if (out == NULL)
    return WEFT_EINVAL;
  *out = NULL;
  BIO *bio;
  int rc = mem_bio(pem, len, &bio);
  if (rc != 0)
    return rc;
  ERR_clear_error();
  X509 *x = PEM_read_bio_X509(bio, NULL, no_passphrase, NULL);
  BIO_free(bio);
  ERR_clear_error();
  if (x == NULL)
    return WEFT_EPEM;
  *out = x;
  return 0;
}

/* Copies a memory BIO's contents into a malloc'd NUL-terminated string. */
static int bio_to_string(BIO *bio, char **out, size_t *len) {
  char *data = NULL;
  long n = BIO_get_mem_data(bio, &data);
  if (n <= 0 || data == NULL)
    return WEFT_ETLS;
  char *copy = malloc((size_t)n + 1);
  if (copy == NULL)
    return WEFT_ENOMEM;
  memcpy(copy, data, (size_t)n);
  copy[n] = '\0';
  *out = copy;
  if (len != NULL)
    *len = (size_t)n;
  return 0;
}

static int to_pem(void *object, int is_key, char **out, size_t *len) {
  if (out == NULL)
    return WEFT_EINVAL;
  *out = NULL;
  if (len != NULL)
    *len = 0;
  if (object == NULL)
    return WEFT_EINVAL;
  BIO *bio = BIO_new(BIO_s_mem());
  if (bio == NULL) {
    ERR_clear_error();
    return WEFT_ENOMEM;
  }
  int ok = is_key ? PEM_write_bio_PrivateKey(bio, object, NULL, NULL, 0, NULL, NULL)
                  : PEM_write_bio_X509(bio, object);
  int rc = ok ? bio_to_string(bio, out, len) : WEFT_ETLS;
  BIO_free(bio);
  ERR_clear_error();
  return rc;
}

int weft_key_to_pem(EVP_PKEY *key, char **out, size_t *len) {
  return to_pem(key, 1, out, len);
}

int weft_cert_to_pem(X509 *x509, char **out, size_t *len) {
  return to_pem(x509, 0, out, len);
}
