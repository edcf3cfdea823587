/* MySQL text-protocol row packets -> one Arrow binary array's buffers per column, in C (docs/adr/0024).
 * The same work as formats/mysql_text.text_columns (numpy) and the per-row loop of
 * mysql_conn.TextRows.chunks, which stay as the fallback and the reference.
 *
 * packet_starts(buf, pos, starts) -> pos
 *   Appends to the list starts the start of every whole packet header from pos (while pos <= len - 4)
 *   and returns the position after the last one (past the end when its payload has not all arrived).
 *
 * split_columns(data, starts, ncols) -> [(validity or None, null_count, offsets, values)] * ncols
 *   data: the row packets back to back; starts: int64 buffer of each row's start. A row packet is a
 *   3-byte length, a sequence byte, then per column a length-encoded string (one byte < 0xFB, or 0xFC
 *   and 2, 0xFD and 3, 0xFE and 8 little-endian bytes) or 0xFB for NULL. A header of 0xFFFFFF is a long
 *   row whose packets were joined: it runs to the end of data. validity is an Arrow bitmap, offsets
 *   int32. Every length is checked against its row's end; a malformed row is a ValueError whose
 *   message formats/mysql_text.py turns into a FormatError.
 *
 * split_binary(data, starts, codes) -> [(validity or None, null_count, offsets or None, values)] * ncols
 *   The same for the binary row packets of a prepared SELECT (COM_STMT_EXECUTE): a 4-byte header, 0x00,
 *   a NULL bitmap of (ncols + 9) / 8 bytes (bit j + 2 for column j), then each non-NULL value as its
 *   declared type sends it. codes holds one byte a column: 0 a length-encoded string (DECIMAL, texts,
 *   bytes, BIT, ENUM, SET, JSON) -> offsets and values as above; 1, 2, 4 or 8 a little-endian fixed-size
 *   value (integers at their width, DOUBLE) -> values of n * width bytes (zero for NULL), offsets None;
 *   'D' DATE -> int32 days since 1970-01-01; 'T' DATETIME/TIMESTAMP -> int64 microseconds since
 *   1970-01-01 00:00:00; 'M' TIME -> int64 signed microseconds. A zero or impossible date is a ValueError
 *   "zero or invalid date value '...' cannot be backed up" (the dates Arrow's text cast refuses).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_PACKET 0xFFFFFF

static PyObject *packet_starts(PyObject *self, PyObject *args) {
    Py_buffer buf;
    Py_ssize_t pos;
    PyObject *starts;
    if (!PyArg_ParseTuple(args, "y*nO!", &buf, &pos, &PyList_Type, &starts))
        return NULL;
    const unsigned char *b = (const unsigned char *)buf.buf;
    Py_ssize_t limit = buf.len - 4;
    while (pos >= 0 && pos <= limit) {
        PyObject *v = PyLong_FromSsize_t(pos);
        if (v == NULL || PyList_Append(starts, v) < 0) {
            Py_XDECREF(v);
            PyBuffer_Release(&buf);
            return NULL;
        }
        Py_DECREF(v);
        pos += 4 + (Py_ssize_t)(b[pos] | (b[pos + 1] << 8) | (b[pos + 2] << 16));
    }
    PyBuffer_Release(&buf);
    return PyLong_FromSsize_t(pos);
}

/* The end of row i's packet (a MAX_PACKET header: a joined long row, to the end of data), checked to
 * start and end inside data and to be followed by row i + 1; -1 with a ValueError otherwise. */
static int64_t row_end(const unsigned char *d, Py_ssize_t dlen, const int64_t *starts, Py_ssize_t i, Py_ssize_t n) {
    int64_t s = starts[i];
    if (s < 0 || s + 4 > dlen) {
        PyErr_Format(PyExc_ValueError, "a row packet of the result starts outside the data (row %zd of %zd)", i + 1, n);
        return -1;
    }
    int64_t plen = d[s] | (d[s + 1] << 8) | ((int64_t)d[s + 2] << 16);
    int64_t end = plen == MAX_PACKET ? dlen : s + 4 + plen;
    if (end > dlen) {
        PyErr_Format(PyExc_ValueError, "a row packet of the result runs past the data (row %zd of %zd)", i + 1, n);
        return -1;
    }
    if (i + 1 < n && starts[i + 1] != end) {
        PyErr_SetString(PyExc_ValueError, "row packets of the result are not contiguous");
        return -1;
    }
    return end;
}

/* A column's output buffers: int32 offsets for n values (when with_offsets, else None), values of
 * size bytes (zeroed when fixed, i.e. without offsets) and an Arrow validity bitmap when it has nulls
 * (cleared, else None). 0, or -1 with every one released. */
static int new_buffers(Py_ssize_t n, Py_ssize_t size, int with_offsets, Py_ssize_t nulls, PyObject **offsets,
                       PyObject **values, PyObject **validity) {
    *offsets = with_offsets ? PyBytes_FromStringAndSize(NULL, (Py_ssize_t)sizeof(int32_t) * (n + 1))
                            : (Py_INCREF(Py_None), Py_None);
    *values = PyBytes_FromStringAndSize(NULL, size);
    *validity = nulls ? PyBytes_FromStringAndSize(NULL, (n + 7) / 8) : (Py_INCREF(Py_None), Py_None);
    if (!*offsets || !*values || !*validity) {
        Py_CLEAR(*offsets);
        Py_CLEAR(*values);
        Py_CLEAR(*validity);
        return -1;
    }
    if (nulls)
        memset(PyBytes_AS_STRING(*validity), 0, (size_t)((n + 7) / 8));
    if (!with_offsets)
        memset(PyBytes_AS_STRING(*values), 0, (size_t)size);
    return 0;
}

enum { LENENC_OK = 0, LENENC_NULL = 1, LENENC_INVALID = 2, LENENC_SHORT = 3 };

/* The length-encoded string at pos (pos < end): its prefix's size and its length (-1 for the 0xFB of
 * a text row's NULL: LENENC_NULL), LENENC_INVALID for 0xFF, LENENC_SHORT when prefix or length runs
 * past end. */
static int lenenc(const unsigned char *d, int64_t pos, int64_t end, int64_t *size, int64_t *len) {
    unsigned first = d[pos];
    *size = 1;
    *len = 0;
    if (first < 0xFB) {
        *len = first;
        return LENENC_OK;
    }
    if (first == 0xFB) {
        *len = -1;
        return LENENC_NULL;
    }
    if (first == 0xFF)
        return LENENC_INVALID;
    int width = first == 0xFC ? 2 : first == 0xFD ? 3 : 8;
    if (pos + 1 + width > end)
        return LENENC_SHORT;
    uint64_t v = 0;
    for (int b = width - 1; b >= 0; b--)
        v = (v << 8) | d[pos + 1 + b];
    if (v > (uint64_t)(end - pos))
        return LENENC_SHORT;
    *len = (int64_t)v;
    *size = 1 + width;
    return LENENC_OK;
}

/* Per value of n rows x ncols columns: where it starts and its length (-1: NULL); per column: the
 * bytes of its values and its NULLs. 0, or -1 with MemoryError (work_free frees what was allocated). */
static int work_alloc(Py_ssize_t n, Py_ssize_t ncols, int64_t **vstart, int64_t **vlen, int64_t **total,
                      Py_ssize_t **nulls) {
    *vstart = PyMem_Malloc(sizeof(int64_t) * (size_t)(n * ncols + 1));
    *vlen = PyMem_Malloc(sizeof(int64_t) * (size_t)(n * ncols + 1));
    *total = PyMem_Calloc((size_t)ncols, sizeof(int64_t));
    *nulls = PyMem_Calloc((size_t)ncols, sizeof(Py_ssize_t));
    if (!*vstart || !*vlen || !*total || !*nulls) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static void work_free(int64_t *vstart, int64_t *vlen, int64_t *total, Py_ssize_t *nulls) {
    PyMem_Free(vstart);
    PyMem_Free(vlen);
    PyMem_Free(total);
    PyMem_Free(nulls);
}

static PyObject *split_columns(PyObject *self, PyObject *args) {
    Py_buffer data, sb;
    Py_ssize_t ncols;
    if (!PyArg_ParseTuple(args, "y*y*n", &data, &sb, &ncols))
        return NULL;
    PyObject *result = NULL;
    int64_t *vstart = NULL, *vlen = NULL, *total = NULL;
    Py_ssize_t *nulls = NULL;
    Py_ssize_t n = sb.len / (Py_ssize_t)sizeof(int64_t);
    const int64_t *starts = (const int64_t *)sb.buf;
    const unsigned char *d = (const unsigned char *)data.buf;
    Py_ssize_t dlen = data.len;
    if (ncols < 1 || sb.len % (Py_ssize_t)sizeof(int64_t)) {
        PyErr_SetString(PyExc_ValueError, "split_columns: ncols must be positive and starts an int64 buffer");
        goto done;
    }
    if (work_alloc(n, ncols, &vstart, &vlen, &total, &nulls) < 0)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t s = starts[i], end = row_end(d, dlen, starts, i, n);
        if (end < 0)
            goto done;
        int64_t pos = s + 4;
        for (Py_ssize_t j = 0; j < ncols; j++) {
            if (pos >= end) {
                PyErr_Format(PyExc_ValueError, "a row packet of the result ends before its column %zd of %zd", j + 1, ncols);
                goto done;
            }
            int64_t size, len;
            int got = lenenc(d, pos, end, &size, &len);
            if (got == LENENC_INVALID) {
                PyErr_Format(PyExc_ValueError, "a row packet of the result has an invalid length in column %zd", j + 1);
                goto done;
            }
            if (got == LENENC_SHORT) {
                PyErr_Format(PyExc_ValueError, "a row packet of the result does not hold exactly %zd values", ncols);
                goto done;
            }
            vstart[i * ncols + j] = pos + size;
            vlen[i * ncols + j] = len;
            if (len < 0) {
                nulls[j]++;
                len = 0;
            }
            total[j] += len;
            pos += size + len;
        }
        if (pos != end) {
            PyErr_Format(PyExc_ValueError, "a row packet of the result does not hold exactly %zd values", ncols);
            goto done;
        }
    }
    result = PyList_New(ncols);
    if (result == NULL)
        goto done;
    for (Py_ssize_t j = 0; j < ncols; j++) {
        if (total[j] > INT32_MAX) {
            PyErr_SetString(PyExc_ValueError, "a column's values exceed 2 GiB in one chunk");
            Py_CLEAR(result);
            goto done;
        }
        PyObject *offsets, *values, *validity;
        if (new_buffers(n, (Py_ssize_t)total[j], 1, nulls[j], &offsets, &values, &validity) < 0) {
            Py_CLEAR(result);
            goto done;
        }
        int32_t *o = (int32_t *)PyBytes_AS_STRING(offsets);
        char *v = PyBytes_AS_STRING(values);
        uint8_t *bits = validity != Py_None ? (uint8_t *)PyBytes_AS_STRING(validity) : NULL;
        int32_t at = 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            o[i] = at;
            int64_t len = vlen[i * ncols + j];
            if (len < 0)
                continue;
            if (bits)
                bits[i >> 3] |= (uint8_t)(1u << (i & 7));
            memcpy(v + at, d + vstart[i * ncols + j], (size_t)len);
            at += (int32_t)len;
        }
        o[n] = at;
        PyObject *t = Py_BuildValue("(NnNN)", validity, nulls[j], offsets, values);
        if (t == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, j, t);
    }
done:
    work_free(vstart, vlen, total, nulls);
    PyBuffer_Release(&data);
    PyBuffer_Release(&sb);
    return result;
}

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static int valid_date(unsigned y, unsigned m, unsigned d) {
    static const unsigned char dim[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m < 1 || m > 12 || d < 1)
        return 0;
    unsigned leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return d <= dim[m - 1] + (m == 2 ? leap : 0);
}

static int fixed_width(char code) { return code == 1 || code == 2 || code == 4 || code == 8 ? code : 0; }

static PyObject *split_binary(PyObject *self, PyObject *args) {
    Py_buffer data, sb, cb;
    if (!PyArg_ParseTuple(args, "y*y*y*", &data, &sb, &cb))
        return NULL;
    PyObject *result = NULL;
    int64_t *vstart = NULL, *vlen = NULL, *total = NULL;
    Py_ssize_t *nulls = NULL;
    Py_ssize_t ncols = cb.len;
    const char *codes = (const char *)cb.buf;
    Py_ssize_t n = sb.len / (Py_ssize_t)sizeof(int64_t);
    const int64_t *starts = (const int64_t *)sb.buf;
    const unsigned char *d = (const unsigned char *)data.buf;
    Py_ssize_t dlen = data.len;
    Py_ssize_t nullmap = (ncols + 9) / 8;
    if (ncols < 1 || sb.len % (Py_ssize_t)sizeof(int64_t)) {
        PyErr_SetString(PyExc_ValueError, "split_binary: codes must not be empty and starts an int64 buffer");
        goto done;
    }
    for (Py_ssize_t j = 0; j < ncols; j++) {
        char c = codes[j];
        if (c != 0 && !fixed_width(c) && c != 'D' && c != 'T' && c != 'M') {
            PyErr_Format(PyExc_ValueError, "split_binary: unknown code %d for column %zd", (int)c, j + 1);
            goto done;
        }
    }
    if (work_alloc(n, ncols, &vstart, &vlen, &total, &nulls) < 0)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t s = starts[i], end = row_end(d, dlen, starts, i, n);
        if (end < 0)
            goto done;
        if (s + 5 + nullmap > end || d[s + 4] != 0) {
            PyErr_Format(PyExc_ValueError, "a binary row packet of the result has no row header (row %zd of %zd)", i + 1, n);
            goto done;
        }
        const unsigned char *bitmap = d + s + 5;
        int64_t pos = s + 5 + nullmap;
        for (Py_ssize_t j = 0; j < ncols; j++) {
            int64_t *at = vstart + i * ncols + j, *len = vlen + i * ncols + j;
            if (bitmap[(j + 2) >> 3] & (1u << ((j + 2) & 7))) {
                *len = -1;
                nulls[j]++;
                continue;
            }
            char c = codes[j];
            int64_t size = 0, l = 0;
            if (fixed_width(c)) {
                l = c;
            } else if (c == 'D' || c == 'T' || c == 'M') {
                if (pos >= end)
                    goto short_row;
                l = d[pos];
                size = 1;
                if (c == 'M' ? (l != 0 && l != 8 && l != 12) : (l != 0 && l != 4 && l != 7 && l != 11)) {
                    PyErr_Format(PyExc_ValueError, "a binary row packet of the result has an invalid temporal length %d in column %zd", (int)l, j + 1);
                    goto done;
                }
            } else {
                if (pos >= end)
                    goto short_row;
                int got = lenenc(d, pos, end, &size, &l);
                if (got == LENENC_INVALID || got == LENENC_NULL) {
                    PyErr_Format(PyExc_ValueError, "a row packet of the result has an invalid length in column %zd", j + 1);
                    goto done;
                }
                if (got == LENENC_SHORT)
                    goto short_row;
                total[j] += l;
            }
            if (pos + size + l > end)
                goto short_row;
            *at = pos + size;
            *len = l;
            pos += size + l;
        }
        if (pos != end)
            goto short_row;
    }
    result = PyList_New(ncols);
    if (result == NULL)
        goto done;
    for (Py_ssize_t j = 0; j < ncols; j++) {
        char c = codes[j];
        int width = fixed_width(c) ? c : c == 'D' ? 4 : c == 0 ? 0 : 8;
        if (total[j] > INT32_MAX) {
            PyErr_SetString(PyExc_ValueError, "a column's values exceed 2 GiB in one chunk");
            Py_CLEAR(result);
            goto done;
        }
        PyObject *offsets, *values, *validity;
        if (new_buffers(n, width ? (Py_ssize_t)width * n : (Py_ssize_t)total[j], !width, nulls[j], &offsets, &values,
                        &validity) < 0) {
            Py_CLEAR(result);
            goto done;
        }
        char *v = PyBytes_AS_STRING(values);
        uint8_t *bits = validity != Py_None ? (uint8_t *)PyBytes_AS_STRING(validity) : NULL;
        int32_t *o = width ? NULL : (int32_t *)PyBytes_AS_STRING(offsets);
        int32_t at = 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            if (o)
                o[i] = at;
            int64_t len = vlen[i * ncols + j];
            if (len < 0)
                continue;
            if (bits)
                bits[i >> 3] |= (uint8_t)(1u << (i & 7));
            const unsigned char *p = d + vstart[i * ncols + j];
            if (o) {
                memcpy(v + at, p, (size_t)len);
                at += (int32_t)len;
            } else if (fixed_width(c)) {
                memcpy(v + (size_t)i * (size_t)width, p, (size_t)width);
            } else if (c == 'M') {
                int64_t us = 0;
                if (len >= 8) {
                    uint32_t days = (uint32_t)p[1] | (uint32_t)p[2] << 8 | (uint32_t)p[3] << 16 | (uint32_t)p[4] << 24;
                    us = ((((int64_t)days * 24 + p[5]) * 60 + p[6]) * 60 + p[7]) * 1000000;
                    if (len == 12)
                        us += (int64_t)((uint32_t)p[8] | (uint32_t)p[9] << 8 | (uint32_t)p[10] << 16 | (uint32_t)p[11] << 24);
                    if (p[0])
                        us = -us;
                }
                memcpy(v + (size_t)i * 8, &us, 8);
            } else {
                unsigned y = len ? (unsigned)(p[0] | p[1] << 8) : 0, m = len ? p[2] : 0, dd = len ? p[3] : 0;
                unsigned h = len >= 7 ? p[4] : 0, mi = len >= 7 ? p[5] : 0, sec = len >= 7 ? p[6] : 0;
                if (!valid_date(y, m, dd)) {
                    if (c == 'D')
                        PyErr_Format(PyExc_ValueError, "zero or invalid date value '%04u-%02u-%02u' cannot be backed up", y, m, dd);
                    else
                        PyErr_Format(PyExc_ValueError, "zero or invalid date value '%04u-%02u-%02u %02u:%02u:%02u' cannot be backed up",
                                     y, m, dd, h, mi, sec);
                    Py_DECREF(offsets);
                    Py_DECREF(values);
                    Py_DECREF(validity);
                    Py_CLEAR(result);
                    goto done;
                }
                int64_t days = days_from_civil(y, m, dd);
                if (c == 'D') {
                    int32_t v32 = (int32_t)days;
                    memcpy(v + (size_t)i * 4, &v32, 4);
                } else {
                    int64_t us = ((days * 24 + h) * 60 + mi) * 60 + sec;
                    us *= 1000000;
                    if (len == 11)
                        us += (int64_t)((uint32_t)p[7] | (uint32_t)p[8] << 8 | (uint32_t)p[9] << 16 | (uint32_t)p[10] << 24);
                    memcpy(v + (size_t)i * 8, &us, 8);
                }
            }
        }
        if (o)
            o[n] = at;
        PyObject *t = Py_BuildValue("(NnNN)", validity, nulls[j], offsets, values);
        if (t == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, j, t);
    }
    goto done;
short_row:
    PyErr_Format(PyExc_ValueError, "a binary row packet of the result does not hold exactly %zd values", ncols);
done:
    work_free(vstart, vlen, total, nulls);
    PyBuffer_Release(&data);
    PyBuffer_Release(&sb);
    PyBuffer_Release(&cb);
    return result;
}

static PyMethodDef methods[] = {
    {"packet_starts", packet_starts, METH_VARARGS,
     "packet_starts(buf, pos, starts) -> pos: append every whole packet's start from pos to starts."},
    {"split_columns", split_columns, METH_VARARGS,
     "split_columns(data, starts, ncols) -> [(validity, null_count, offsets, values)]: each column's buffers."},
    {"split_binary", split_binary, METH_VARARGS,
     "split_binary(data, starts, codes) -> [(validity, null_count, offsets, values)]: binary rows' columns."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_mysqltext", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__mysqltext(void) { return PyModule_Create(&module); }
