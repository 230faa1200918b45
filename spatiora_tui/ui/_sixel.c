/* The sixel body of a palette image, in C: the compiled half of ui/sixel_encoder.py.
 *
 * sixel_encoder.encode_paletted builds the same bytes with whole-array numpy operations; this
 * walks each band once instead: per column, each of its six pixels sets its bit in its colour's
 * row; then each colour present in the band, in ascending order, is written as `#c`, its runs of
 * equal sixels (`!N<s>` from RLE_FROM equal ones on) with the unset gaps before them, and `$`,
 * the band's last row ending in `-`. Trailing unset sixels are not written. The output is byte
 * for byte the numpy encoder's (tests/unit/test_sixel_encoder.py compares the two).
 *
 * It is built at install when a C compiler is there (setup.py marks it optional); without it the
 * numpy encoder is used, and `spatiora doctor` says which.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SIXEL_BASE 0x3F
#define RLE_FROM 4

typedef struct {
    char *data;
    size_t size;
    size_t capacity;
} Buffer;

static int reserve(Buffer *out, size_t more) {
    if (out->size + more <= out->capacity) return 0;
    size_t capacity = out->capacity ? out->capacity : 65536;
    while (capacity < out->size + more) capacity *= 2;
    char *grown = realloc(out->data, capacity);
    if (!grown) return -1;
    out->data = grown;
    out->capacity = capacity;
    return 0;
}

/* Decimal digits of n (n >= 0), written at p; returns how many. */
static inline size_t put_number(char *p, unsigned n) {
    char digits[10];
    size_t count = 0;
    do {
        digits[count++] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    for (size_t i = 0; i < count; i++) p[i] = digits[count - 1 - i];
    return count;
}

/* `count` times the byte `sixel`: as themselves below RLE_FROM, else `!count<sixel>`. */
static inline size_t put_repeat(char *p, unsigned count, char sixel) {
    if (count < RLE_FROM) {
        memset(p, sixel, count);
        return count;
    }
    p[0] = '!';
    size_t used = 1 + put_number(p + 1, count);
    p[used] = sixel;
    return used + 1;
}

static PyObject *encode_body(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t width, height;
    int colours;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*nni", &view, &width, &height, &colours)) return NULL;
    if (width <= 0 || height <= 0 || colours <= 0 || colours > 256 || view.len != width * height) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "expected width*height palette indices and 1-256 colours");
        return NULL;
    }
    const uint8_t *indices = view.buf;
    uint8_t *rows = calloc((size_t)colours * (size_t)width, 1); /* per colour: its sixels */
    Buffer out = {NULL, 0, 0};
    int failed = rows == NULL;
    uint8_t present[256];

    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t top = 0; top < height && !failed; top += 6) {
        int band_rows = (int)(height - top < 6 ? height - top : 6);
        memset(present, 0, sizeof present);
        for (int pixel = 0; pixel < band_rows; pixel++) {
            const uint8_t *line = indices + (top + pixel) * width;
            uint8_t bit = (uint8_t)(1u << pixel);
            for (Py_ssize_t x = 0; x < width; x++) {
                uint8_t c = line[x];
                if (c >= colours) continue; /* an index past the palette: not drawn */
                present[c] = 1;
                rows[(size_t)c * (size_t)width + (size_t)x] |= bit;
            }
        }
        int last = -1;
        for (int c = 0; c < colours; c++)
            if (present[c]) last = c;
        for (int c = 0; c <= last; c++) {
            if (!present[c]) continue;
            uint8_t *row = rows + (size_t)c * (size_t)width;
            /* At most: `#ccc`, per column one byte or per run of >= 4 `!N` and its byte, `$`. */
            if (reserve(&out, 6 + 2 * (size_t)width + 8)) {
                failed = 1;
                break;
            }
            char *p = out.data + out.size;
            *p++ = '#';
            p += put_number(p, (unsigned)c);
            Py_ssize_t x = 0, gap_from = 0;
            while (x < width) {
                uint8_t value = row[x];
                if (!value) {
                    uint64_t word;
                    if (x + 8 <= width && (memcpy(&word, row + x, 8), word == 0))
                        x += 8; /* a noisy frame's rows are mostly unset: skip them 8 at a time */
                    else
                        x++;
                    continue;
                }
                Py_ssize_t end = x + 1;
                while (end < width && row[end] == value) end++;
                if (x > gap_from) p += put_repeat(p, (unsigned)(x - gap_from), SIXEL_BASE);
                p += put_repeat(p, (unsigned)(end - x), (char)(SIXEL_BASE + value));
                gap_from = x = end;
            }
            *p++ = c == last ? '-' : '$';
            out.size = (size_t)(p - out.data);
            memset(row, 0, (size_t)width);
        }
    }
    Py_END_ALLOW_THREADS

    PyBuffer_Release(&view);
    free(rows);
    if (failed) {
        free(out.data);
        return PyErr_NoMemory();
    }
    PyObject *result = PyBytes_FromStringAndSize(out.data ? out.data : "", (Py_ssize_t)out.size);
    free(out.data);
    return result;
}

static PyMethodDef methods[] = {
    {"encode_body", encode_body, METH_VARARGS,
     "encode_body(indices, width, height, colours) -> bytes: the sixel data of a palette image "
     "(bands of colour rows, no header)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_sixel", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__sixel(void) { return PyModule_Create(&module); }
