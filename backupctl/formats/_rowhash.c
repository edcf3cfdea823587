/* The SHA-256 of every row's mysql-row-v1 document, built from Arrow string columns in one C loop
 * (docs/adr/0024). Python's formats/parquet.row_hashes joins the document with Arrow and hashes it with
 * hashlib, one call per row: that loop was ~1 us a row, a third of a snapshot's client CPU.
 *
 * sha256_docs(n, fields, tail) -> bytes of 32 * n
 *   fields: sequence of (head: bytes, offsets: buffer of int32, data: buffer, validity: buffer or None,
 *           offset: int, escape: bool) -- an Arrow string array's buffers and its offset.
 *   Row i's document is, for every field in order: head, then "null" when the validity bit of
 *   offset + i is clear, else '"' + data[offsets[offset + i]:offsets[offset + i + 1]] + '"';
 *   then tail. The caller passes canonical texts; with escape, a value is written as orjson writes the
 *   inside of a JSON string (formats/parquet._json_escaped): '"' and '\\' escaped, bytes below 0x20
 *   as \b \t \n \f \r or \u00xx, everything else as it is.
 *
 * SHA-256 is OpenSSL's SHA256_Init/Update/Final from the libcrypto that Python's hashlib uses (found with dlopen, so
 * building needs no OpenSSL headers); without it the import fails and Python's path is used.
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

typedef struct {
    const char *head;
    Py_ssize_t head_len;
    Py_buffer offsets, data, validity;
    int has_validity;
    Py_ssize_t offset;
    int escape;
} field_t;

static char *json_escaped(char *p, const unsigned char *s, size_t len) {
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        unsigned char c = s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            *p++ = (char)c;
            continue;
        }
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
        PyBuffer_Release(&f[j].offsets);
        PyBuffer_Release(&f[j].data);
        if (f[j].has_validity)
            PyBuffer_Release(&f[j].validity);
    }
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
    char *buf = NULL;
    size_t cap = 0;
    int oom = 0;
    for (; ready < k; ready++) {
        PyObject *t = PySequence_Fast_GET_ITEM(seq, ready);
        PyObject *validity;
        field_t *x = &f[ready];
        if (!PyArg_ParseTuple(t, "y#y*y*Onp", &x->head, &x->head_len, &x->offsets, &x->data, &validity, &x->offset,
                              &x->escape))
            goto done;
        if (validity != Py_None) {
            if (PyObject_GetBuffer(validity, &x->validity, PyBUF_SIMPLE) < 0) {
                PyBuffer_Release(&x->offsets);
                PyBuffer_Release(&x->data);
                goto done;
            }
            x->has_validity = 1;
        }
        /* every row's offsets and validity bit must lie inside the buffers given */
        if (x->offset < 0 || (x->offset + n + 1) * (Py_ssize_t)sizeof(int32_t) > x->offsets.len ||
            (x->has_validity && (x->offset + n + 7) / 8 > x->validity.len)) {
            ready++;
            PyErr_SetString(PyExc_ValueError, "a field's buffers are shorter than its rows");
            goto done;
        }
    }
    out = PyBytes_FromStringAndSize(NULL, 32 * n);
    if (out == NULL)
        goto done;
    unsigned char *digests = (unsigned char *)PyBytes_AS_STRING(out);
    for (Py_ssize_t j = 0; j < k; j++) {  /* value ends must lie inside the data buffer */
        const int32_t *o = (const int32_t *)f[j].offsets.buf + f[j].offset;
        for (Py_ssize_t i = 0; i <= n; i++) {
            if (o[i] < 0 || (Py_ssize_t)o[i] > f[j].data.len || (i && o[i] < o[i - 1])) {
                PyErr_SetString(PyExc_ValueError, "a field's offsets point outside its data");
                Py_CLEAR(out);
                goto done;
            }
        }
    }
    Py_BEGIN_ALLOW_THREADS
    _Alignas(16) unsigned char ctx[256];
    for (Py_ssize_t i = 0; i < n; i++) {
        size_t need = (size_t)tail_len;
        for (Py_ssize_t j = 0; j < k; j++) {
            const int32_t *o = (const int32_t *)f[j].offsets.buf + f[j].offset + i;
            need += (size_t)f[j].head_len + 4 + (size_t)(o[1] - o[0]) * (f[j].escape ? 6 : 1);
        }
        if (need > cap) {
            size_t grow = need * 2;
            char *nb = realloc(buf, grow);
            if (nb == NULL) {
                oom = 1;
                break;
            }
            buf = nb;
            cap = grow;
        }
        char *p = buf;
        for (Py_ssize_t j = 0; j < k; j++) {
            field_t *x = &f[j];
            Py_ssize_t at = x->offset + i;
            memcpy(p, x->head, (size_t)x->head_len);
            p += x->head_len;
            if (x->has_validity && !(((const uint8_t *)x->validity.buf)[at >> 3] & (1u << (at & 7)))) {
                memcpy(p, "null", 4);
                p += 4;
                continue;
            }
            const int32_t *o = (const int32_t *)x->offsets.buf + at;
            size_t len = (size_t)(o[1] - o[0]);
            *p++ = '"';
            if (x->escape) {
                p = json_escaped(p, (const unsigned char *)x->data.buf + o[0], len);
            } else {
                memcpy(p, (const char *)x->data.buf + o[0], len);
                p += len;
            }
            *p++ = '"';
        }
        memcpy(p, tail, (size_t)tail_len);
        p += tail_len;
        sha256_init(ctx);
        sha256_update(ctx, buf, (size_t)(p - buf));
        sha256_final(digests + 32 * i, ctx);
    }
    Py_END_ALLOW_THREADS
    if (oom) {
        Py_CLEAR(out);
        PyErr_NoMemory();
    }
done:
    free(buf);
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
