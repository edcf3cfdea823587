/* The SHA-256 of every row's mysql-row-v1 document, built from Arrow arrays in one C loop
 * (docs/adr/0024). Python's formats/parquet.row_hashes joins the document with Arrow and hashes it with
 * hashlib, one call per row: that loop was ~1 us a row, a third of a snapshot's client CPU.
 *
 * sha256_docs(n, fields, tail) -> bytes of 32 * n
 *   fields: sequence of (head: bytes, kind: int, offsets: buffer of int32 or None, data: buffer,
 *           validity: buffer or None, offset: int, scale: int) -- an Arrow array's buffers and offset.
 *   Row i's document is, for every field in order: head, then "null" when the validity bit of
 *   offset + i is clear, else '"' + the value's canonical text + '"'; then tail. By kind:
 *     TEXT      data[offsets[offset + i]:offsets[offset + i + 1]] as it is (already canonical);
 *     JSON_TEXT the same, written as orjson writes the inside of a JSON string
 *               (formats/parquet._json_escaped): '"' and '\\' escaped, bytes below 0x20 as \b \t \n
 *               \f \r or \u00xx, everything else as it is;
 *     BASE64    standard base64 of those bytes, '=' padded (parquet.base64_texts);
 *     FLOAT_TEXT Arrow's text of a double (pc.cast to string) laid out as Python's repr() (float_repr_of);
 *     DECIMAL   canonical_number of the decimal256 data[offset + i] with scale: its unscaled integer's
 *               digits without trailing zeros, 'e', then (trailing zeros - scale); 0 is "0"
 *               (parquet._decimal_canonical).
 *     INT, UINT the decimal text of the (un)signed integer data[offset + i], "scale" bytes wide
 *               (1, 2, 4 or 8: what Arrow's cast to string writes);
 *     DATE      date32 data[offset + i] (days from 1970-01-01) as YYYY-MM-DD;
 *     MICROS    timestamp[us] data[offset + i] as YYYY-MM-DD HH:MM:SS.ffffff (Arrow's cast to string);
 *               the caller passes only years 0001-9999 (formats/parquet._c_field checks).
 *
 * SHA-256 is OpenSSL's SHA256_Init/Update/Final from the libcrypto that Python's hashlib uses (found with
 * dlopen, so building needs no OpenSSL headers); without it the import fails and Python's path is used.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <stdint.h>
#include <string.h>

/* OpenSSL's low-level SHA-256 (SHA256_CTX is 112 bytes; 256 are given). Not the one-shot SHA256():
 * in OpenSSL 3 it fetches the algorithm from a provider on every call, ~0.5 us a row. */
typedef int (*sha256_init_fn)(void *);
typedef int (*sha256_update_fn)(void *, const void *, size_t);
typedef int (*sha256_final_fn)(unsigned char *, void *);
static sha256_init_fn sha256_init = NULL;
static sha256_update_fn sha256_update = NULL;
static sha256_final_fn sha256_final = NULL;

/* FLOAT_TEXT: repr() of a double from Arrow's text of it (PyOS_double_to_string took ~1 us a value) */
enum { K_TEXT = 0, K_JSON_TEXT = 1, K_BASE64 = 2, K_FLOAT_TEXT = 3, K_DECIMAL = 4, K_INT = 5, K_UINT = 6, K_DATE = 7,
       K_MICROS = 8 };

static char *uint_of(char *p, uint64_t v) {
    char rev[24];
    int nd = 0;
    do {
        rev[nd++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (nd)
        *p++ = rev[--nd];
    return p;
}

static char *int_of(char *p, int64_t v) {
    if (v < 0) {
        *p++ = '-';
        return uint_of(p, (uint64_t)0 - (uint64_t)v);
    }
    return uint_of(p, (uint64_t)v);
}

static char *digits_of(char *p, unsigned v, int width) {  /* zero-padded to width */
    for (int d = width - 1; d >= 0; d--) {
        p[d] = (char)('0' + v % 10);
        v /= 10;
    }
    return p + width;
}

/* YYYY-MM-DD of a day count from 1970-01-01 (H. Hinnant's civil_from_days) */
static char *date_of(char *p, int64_t z) {
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = (int64_t)yoe + era * 400;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    unsigned d = doy - (153 * mp + 2) / 5 + 1;
    unsigned m = mp < 10 ? mp + 3 : mp - 9;
    y += m <= 2;
    p = digits_of(p, (unsigned)y, 4);
    *p++ = '-';
    p = digits_of(p, m, 2);
    *p++ = '-';
    return digits_of(p, d, 2);
}

static int64_t int_at(const void *buf, Py_ssize_t at, int width) {
    switch (width) {
    case 1: return ((const int8_t *)buf)[at];
    case 2: return ((const int16_t *)buf)[at];
    case 4: return ((const int32_t *)buf)[at];
    default: return ((const int64_t *)buf)[at];
    }
}

static uint64_t uint_at(const void *buf, Py_ssize_t at, int width) {
    switch (width) {
    case 1: return ((const uint8_t *)buf)[at];
    case 2: return ((const uint16_t *)buf)[at];
    case 4: return ((const uint32_t *)buf)[at];
    default: return ((const uint64_t *)buf)[at];
    }
}

typedef struct {
    const char *head;
    Py_ssize_t head_len;
    int kind;
    Py_buffer offsets, data, validity;
    int has_offsets, has_validity;
    Py_ssize_t offset;
    int scale;
} field_t;

static char *base64_of(char *p, const unsigned char *s, size_t len) {
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = ((uint32_t)s[i] << 16) | ((uint32_t)s[i + 1] << 8) | s[i + 2];
        *p++ = abc[v >> 18]; *p++ = abc[(v >> 12) & 63]; *p++ = abc[(v >> 6) & 63]; *p++ = abc[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)s[i] << 16;
        *p++ = abc[v >> 18]; *p++ = abc[(v >> 12) & 63]; *p++ = '='; *p++ = '=';
    } else if (len - i == 2) {
        uint32_t v = ((uint32_t)s[i] << 16) | ((uint32_t)s[i + 1] << 8);
        *p++ = abc[v >> 18]; *p++ = abc[(v >> 12) & 63]; *p++ = abc[(v >> 6) & 63]; *p++ = '=';
    }
    return p;
}

/* canonical_number of a decimal256 (32 bytes, little-endian two's complement) with its scale */
static char *decimal_of(char *p, const unsigned char *v, int scale) {
    uint64_t w[4];
    for (int j = 0; j < 4; j++) {
        uint64_t x = 0;
        for (int b = 7; b >= 0; b--)
            x = (x << 8) | v[8 * j + b];
        w[j] = x;
    }
    int neg = (int)(w[3] >> 63);
    if (neg) {
        for (int j = 0; j < 4; j++)
            w[j] = ~w[j];
        for (int j = 0; j < 4; j++)
            if (++w[j] != 0)
                break;
    }
    char rev[96];  /* digits, least significant first (2^255 has 77) */
    int nd = 0;
    if (!(w[1] | w[2] | w[3])) {  /* up to 19-20 digits: 64-bit arithmetic */
        for (uint64_t r = w[0]; r != 0; r /= 10)
            rev[nd++] = (char)('0' + r % 10);
        w[0] = 0;
    }
    const uint64_t e19 = 10000000000000000000ULL;
    while (w[0] | w[1] | w[2] | w[3]) {
        unsigned __int128 rem = 0;
        for (int j = 3; j >= 0; j--) {
            unsigned __int128 cur = (rem << 64) | w[j];
            w[j] = (uint64_t)(cur / e19);
            rem = cur % e19;
        }
        uint64_t r = (uint64_t)rem;
        int last = !(w[0] | w[1] | w[2] | w[3]);
        for (int d = 0; d < 19 && (!last || r != 0); d++) {
            rev[nd++] = (char)('0' + r % 10);
            r /= 10;
        }
    }
    if (nd == 0) {
        *p++ = '0';
        return p;
    }
    int tz = 0;
    while (rev[tz] == '0')
        tz++;
    if (neg)
        *p++ = '-';
    for (int d = nd - 1; d >= tz; d--)
        *p++ = rev[d];
    int e = tz - scale;  /* 'e' and the exponent (sprintf took ~100 ns) */
    *p++ = 'e';
    if (e < 0) {
        *p++ = '-';
        e = -e;
    }
    return uint_of(p, (uint64_t)e);
}

static unsigned char json_plain[256];  /* 1: a byte written as it is inside a JSON string */

/* The end of the run of plain bytes (json_plain) from i: eight bytes at a time while none of them can be
 * '"', '\\' or below 0x20 (a word test that never misses one and may flag a plain word: then that word is
 * checked byte by byte), then byte by byte. The byte-at-a-time loop alone was a third of sha256_docs' time
 * on the bench table's texts (perf). */
static size_t plain_run(const unsigned char *s, size_t i, size_t len) {
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    for (;;) {
        while (i + 8 <= len) {
            uint64_t w, q, b;
            memcpy(&w, s + i, 8);
            q = w ^ (ones * '"');
            b = w ^ (ones * '\\');
            /* a byte below 0x20 (bytes from 0x80 never flag), or a zero byte of q or b */
            if ((((w - ones * 0x20) & ~w) | ((q - ones) & ~q) | ((b - ones) & ~b)) & highs)
                break;
            i += 8;
        }
        size_t end = i + 8 < len ? i + 8 : len;
        while (i < end && json_plain[s[i]])
            i++;
        if (i < end || i == len)
            return i;  /* a byte to escape at i, or the end */
    }
}

static char *json_escaped(char *p, const unsigned char *s, size_t len) {
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        size_t run = plain_run(s, i, len);  /* bytes written as they are, copied at once */
        memcpy(p, s + i, run - i);
        p += run - i;
        if (run == len)
            break;
        i = run;
        unsigned char c = s[i];
        *p++ = '\\';
        switch (c) {
        case '"': *p++ = '"'; break;
        case '\\': *p++ = '\\'; break;
        case 0x08: *p++ = 'b'; break;
        case 0x09: *p++ = 't'; break;
        case 0x0A: *p++ = 'n'; break;
        case 0x0C: *p++ = 'f'; break;
        case 0x0D: *p++ = 'r'; break;
        default:
            *p++ = 'u'; *p++ = '0'; *p++ = '0';
            *p++ = hex[c >> 4]; *p++ = hex[c & 15];
        }
    }
    return p;
}

static void release_fields(field_t *f, Py_ssize_t k) {
    for (Py_ssize_t j = 0; j < k; j++) {
        if (f[j].has_offsets)
            PyBuffer_Release(&f[j].offsets);
        PyBuffer_Release(&f[j].data);
        if (f[j].has_validity)
            PyBuffer_Release(&f[j].validity);
    }
}

static int is_valid(const field_t *x, Py_ssize_t at) {
    return !x->has_validity || (((const uint8_t *)x->validity.buf)[at >> 3] & (1u << (at & 7)));
}

/* Python's repr() of a double from Arrow's text of it (pc.cast to string: the same shortest round-trip
 * digits, in positional or exponent notation by other rules). The digits and the position of the decimal
 * point (value = 0.DIGITS x 10^decpt) are read off the text, then laid out as repr does: positional when
 * -4 < decpt <= 16 ("0.0001", "1000000000000000.0", ".0" on integral values), else d[.ddd]e+XX / e-XX.
 * At most 17 digits are kept and 5 exponent digits read: at most 36 bytes are written. */
static char *float_repr_of(char *p, const unsigned char *s, size_t len) {
    /* The common texts are repr's already, or lack only ".0": positional (no exponent) with at most 16
     * digits before the point (decpt <= 16) and not "0.0000..." (decpt <= -4: repr uses an exponent) */
    size_t sign = len && s[0] == '-';
    if (len > sign && (s[sign] < '0' || s[sign] > '9')) {  /* "inf", "-inf", "nan": repr's too */
        memcpy(p, s, len < 8 ? len : 8);
        return p + (len < 8 ? len : 8);
    }
    if (len > sign && len <= 40 && !memchr(s, 'e', len)) {
        const unsigned char *dot = memchr(s, '.', len);
        if (dot == NULL && len - sign <= 16) {
            memcpy(p, s, len);
            memcpy(p + len, ".0", 2);
            return p + len + 2;
        }
        if (dot != NULL && (size_t)(dot - s) - sign <= 16 && !(len - sign >= 6 && memcmp(s + sign, "0.0000", 6) == 0)) {
            memcpy(p, s, len);
            return p + len;
        }
    }
    const unsigned char *end = s + len;
    char digits[17];
    int nd = 0, point = 0, leading = 1;
    long decpt = 0;
    if (s < end && *s == '-')
        *p++ = '-', s++;
    for (; s < end && *s != 'e' && *s != 'E'; s++) {
        if (*s == '.') {
            point = 1;
        } else if (leading && *s == '0') {
            decpt -= point;
        } else {
            leading = 0;
            if (nd < 17)
                digits[nd++] = (char)*s;
            decpt += !point;
        }
    }
    if (s < end) {
        int neg = 0, ne = 0;
        long e = 0;
        s++;
        if (s < end && (*s == '+' || *s == '-'))
            neg = *s++ == '-';
        for (; s < end && ne < 5; s++, ne++)
            e = e * 10 + (*s - '0');
        decpt += neg ? -e : e;
    }
    while (nd && digits[nd - 1] == '0')
        nd--;
    if (nd == 0) {
        memcpy(p, "0.0", 3);
        return p + 3;
    }
    if (decpt > -4 && decpt <= 16) {
        if (decpt <= 0) {
            *p++ = '0', *p++ = '.';
            for (long z = decpt; z < 0; z++)
                *p++ = '0';
            memcpy(p, digits, (size_t)nd);
            return p + nd;
        }
        if (decpt >= nd) {
            memcpy(p, digits, (size_t)nd);
            p += nd;
            for (long z = nd; z < decpt; z++)
                *p++ = '0';
            *p++ = '.', *p++ = '0';
            return p;
        }
        memcpy(p, digits, (size_t)decpt);
        p += decpt;
        *p++ = '.';
        memcpy(p, digits + decpt, (size_t)(nd - decpt));
        return p + (nd - decpt);
    }
    *p++ = digits[0];
    if (nd > 1) {
        *p++ = '.';
        memcpy(p, digits + 1, (size_t)(nd - 1));
        p += nd - 1;
    }
    long x = decpt - 1;
    *p++ = 'e';
    *p++ = x < 0 ? '-' : '+';
    uint64_t ax = (uint64_t)(x < 0 ? -x : x);
    if (ax < 10)
        *p++ = '0';
    return uint_of(p, ax);
}

/* The rows' documents and hashes (runs without the GIL); -1: out of memory */
static int hash_rows(field_t *f, Py_ssize_t k, Py_ssize_t n, const char *tail, Py_ssize_t tail_len,
                     unsigned char *digests) {
    _Alignas(16) unsigned char ctx[256];
    char *buf = NULL;
    size_t cap = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        size_t need = (size_t)tail_len;
        for (Py_ssize_t j = 0; j < k; j++) {
            size_t len = 0;
            if (f[j].has_offsets) {
                const int32_t *o = (const int32_t *)f[j].offsets.buf + f[j].offset + i;
                len = (size_t)(o[1] - o[0]);
            }
            switch (f[j].kind) {
            case K_JSON_TEXT: len *= 6; break;
            case K_BASE64: len = 4 * ((len + 2) / 3); break;
            case K_DECIMAL: len = 100; break;
            case K_INT: case K_UINT: case K_DATE: case K_MICROS: len = 32; break;
            case K_FLOAT_TEXT: len = 48; break;
            }
            need += (size_t)f[j].head_len + 4 + len;
        }
        if (need > cap) {
            char *nb = realloc(buf, need * 2);
            if (nb == NULL) {
                free(buf);
                return -1;
            }
            buf = nb;
            cap = need * 2;
        }
        char *p = buf;
        for (Py_ssize_t j = 0; j < k; j++) {
            field_t *x = &f[j];
            Py_ssize_t at = x->offset + i;
            memcpy(p, x->head, (size_t)x->head_len);
            p += x->head_len;
            if (!is_valid(x, at)) {
                memcpy(p, "null", 4);
                p += 4;
                continue;
            }
            *p++ = '"';
            if (x->kind == K_DECIMAL) {
                p = decimal_of(p, (const unsigned char *)x->data.buf + 32 * at, x->scale);
            } else if (x->kind == K_INT) {
                p = int_of(p, int_at(x->data.buf, at, x->scale));
            } else if (x->kind == K_UINT) {
                p = uint_of(p, uint_at(x->data.buf, at, x->scale));
            } else if (x->kind == K_DATE) {
                p = date_of(p, ((const int32_t *)x->data.buf)[at]);
            } else if (x->kind == K_MICROS) {
                int64_t us = ((const int64_t *)x->data.buf)[at];
                int64_t days = us >= 0 ? us / 86400000000LL : -((-us + 86400000000LL - 1) / 86400000000LL);
                int64_t in_day = us - days * 86400000000LL;
                p = date_of(p, days);
                *p++ = ' ';
                p = digits_of(p, (unsigned)(in_day / 3600000000LL), 2);
                *p++ = ':';
                p = digits_of(p, (unsigned)(in_day / 60000000LL % 60), 2);
                *p++ = ':';
                p = digits_of(p, (unsigned)(in_day / 1000000LL % 60), 2);
                *p++ = '.';
                p = digits_of(p, (unsigned)(in_day % 1000000LL), 6);
            } else {
                const int32_t *o = (const int32_t *)x->offsets.buf + at;
                const unsigned char *s = (const unsigned char *)x->data.buf + o[0];
                size_t len = (size_t)(o[1] - o[0]);
                if (x->kind == K_JSON_TEXT) {
                    p = json_escaped(p, s, len);
                } else if (x->kind == K_FLOAT_TEXT) {
                    p = float_repr_of(p, s, len);
                } else if (x->kind == K_BASE64) {
                    p = base64_of(p, s, len);
                } else {
                    memcpy(p, s, len);
                    p += len;
                }
            }
            *p++ = '"';
        }
        memcpy(p, tail, (size_t)tail_len);
        p += tail_len;
        sha256_init(ctx);
        sha256_update(ctx, buf, (size_t)(p - buf));
        sha256_final(digests + 32 * i, ctx);
    }
    free(buf);
    return 0;
}

/* Every value the rows read lies inside the buffers given; else a ValueError and -1. */
static int check_field(const field_t *x, Py_ssize_t n) {
    if (x->offset < 0 || (x->has_validity && (x->offset + n + 7) / 8 > x->validity.len))
        goto short_;
    switch (x->kind) {
    case K_TEXT: case K_JSON_TEXT: case K_BASE64: case K_FLOAT_TEXT: {
        if (!x->has_offsets || (x->offset + n + 1) * (Py_ssize_t)sizeof(int32_t) > x->offsets.len)
            goto short_;
        const int32_t *o = (const int32_t *)x->offsets.buf + x->offset;
        for (Py_ssize_t i = 0; i <= n; i++) {
            if (o[i] < 0 || (Py_ssize_t)o[i] > x->data.len || (i && o[i] < o[i - 1])) {
                PyErr_SetString(PyExc_ValueError, "a field's offsets point outside its data");
                return -1;
            }
        }
        return 0;
    }
    case K_DECIMAL:
        if (x->scale < -100 || x->scale > 100) {
            PyErr_SetString(PyExc_ValueError, "a decimal scale out of range");
            return -1;
        }
        return (x->offset + n) * 32 > x->data.len ? (PyErr_SetString(PyExc_ValueError, "a field's buffers are shorter than its rows"), -1) : 0;
    case K_INT: case K_UINT:
        if (x->scale != 1 && x->scale != 2 && x->scale != 4 && x->scale != 8) {
            PyErr_SetString(PyExc_ValueError, "an integer width other than 1, 2, 4 or 8 bytes");
            return -1;
        }
        return (x->offset + n) * x->scale > x->data.len ? (PyErr_SetString(PyExc_ValueError, "a field's buffers are shorter than its rows"), -1) : 0;
    case K_DATE:
        return (x->offset + n) * 4 > x->data.len ? (PyErr_SetString(PyExc_ValueError, "a field's buffers are shorter than its rows"), -1) : 0;
    case K_MICROS:
        return (x->offset + n) * 8 > x->data.len ? (PyErr_SetString(PyExc_ValueError, "a field's buffers are shorter than its rows"), -1) : 0;
    default:
        PyErr_SetString(PyExc_ValueError, "unknown field kind");
        return -1;
    }
short_:
    PyErr_SetString(PyExc_ValueError, "a field's buffers are shorter than its rows");
    return -1;
}

static PyObject *sha256_docs(PyObject *self, PyObject *args) {
    Py_ssize_t n;
    PyObject *fields_obj;
    const char *tail;
    Py_ssize_t tail_len;
    if (!PyArg_ParseTuple(args, "nOy#", &n, &fields_obj, &tail, &tail_len))
        return NULL;
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "n must not be negative");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(fields_obj, "fields must be a sequence");
    if (seq == NULL)
        return NULL;
    Py_ssize_t k = PySequence_Fast_GET_SIZE(seq);
    field_t *f = PyMem_Calloc(k ? (size_t)k : 1, sizeof(field_t));
    if (f == NULL) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    Py_ssize_t ready = 0;
    PyObject *out = NULL;
    for (; ready < k; ready++) {
        PyObject *t = PySequence_Fast_GET_ITEM(seq, ready);
        PyObject *offsets, *validity;
        field_t *x = &f[ready];
        if (!PyArg_ParseTuple(t, "y#iOy*Oni", &x->head, &x->head_len, &x->kind, &offsets, &x->data, &validity,
                              &x->offset, &x->scale))
            goto done;
        if (offsets != Py_None) {
            if (PyObject_GetBuffer(offsets, &x->offsets, PyBUF_SIMPLE) < 0) {
                PyBuffer_Release(&x->data);
                goto done;
            }
            x->has_offsets = 1;
        }
        if (validity != Py_None) {
            if (PyObject_GetBuffer(validity, &x->validity, PyBUF_SIMPLE) < 0) {
                if (x->has_offsets)
                    PyBuffer_Release(&x->offsets);
                PyBuffer_Release(&x->data);
                goto done;
            }
            x->has_validity = 1;
        }
        if (check_field(x, n) < 0) {
            ready++;
            goto done;
        }
    }
    out = PyBytes_FromStringAndSize(NULL, 32 * n);
    if (out == NULL)
        goto done;
    unsigned char *digests = (unsigned char *)PyBytes_AS_STRING(out);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = hash_rows(f, k, n, tail, tail_len, digests);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        Py_CLEAR(out);
        PyErr_NoMemory();
    }
done:
    release_fields(f, ready);
    PyMem_Free(f);
    Py_DECREF(seq);
    return out;
}

static PyMethodDef methods[] = {
    {"sha256_docs", sha256_docs, METH_VARARGS,
     "sha256_docs(n, fields, tail) -> bytes: the SHA-256 (32 bytes each) of n rows' documents."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_rowhash", NULL, -1, methods};

PyMODINIT_FUNC PyInit__rowhash(void) {
    for (int c = 0; c < 256; c++)
        json_plain[c] = c >= 0x20 && c != '"' && c != '\\';
    static const char *names[] = {"libcrypto.so.3", "libcrypto.so.1.1", "libcrypto.so", "libcrypto.dylib", NULL};
    for (int i = 0; names[i] != NULL && sha256_final == NULL; i++) {
        void *h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (h == NULL)
            continue;
        sha256_init = (sha256_init_fn)dlsym(h, "SHA256_Init");
        sha256_update = (sha256_update_fn)dlsym(h, "SHA256_Update");
        sha256_final = (sha256_final_fn)dlsym(h, "SHA256_Final");
        if (sha256_init == NULL || sha256_update == NULL)
            sha256_final = NULL;
    }
    if (sha256_final == NULL) {
        PyErr_SetString(PyExc_ImportError, "no libcrypto with SHA256_Init/Update/Final found");
        return NULL;
    }
    return PyModule_Create(&module);
}
