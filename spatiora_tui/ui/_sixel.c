/* The sixel body of a palette image, in C: the compiled half of ui/sixel_encoder.py.
 *
 * Per band of six pixel rows:
 * 1. each colour's sixels across the band (per column, the bits of its pixels there);
 * 2. each colour's spans: its set columns, cut where GAP or more unset ones lie between;
 * 3. the spans laid out in passes, each pass a left-to-right line of spans that do not overlap,
 *    taken greedily in order of start (the longest first where two start together). Within a
 *    pass a span costs its colour select (only when the colour changes), the unset sixels
 *    before it and its own sixels; passes are joined by `$` and the band ends in `-`.
 * The first pass of each band is drawn solid: its spans set all the band's pixels over their
 * width, in runs that `!N` shortens, and later passes draw the other colours' pixels over them
 * (a sixel's unset bits leave a pixel as it is). That is the same picture in 20-29% fewer bytes
 * than one row per colour (docs/terminals.md), which ui/sixel_encoder.py's numpy fallback writes.
 * Runs of RLE_FROM or more equal sixels are written `!N<sixel>`.
 *
 * tests/unit/test_sixel_encoder.py decodes the output and compares it with the quantized image
 * and with the numpy encoder's, pixel for pixel. It is built at install when a C compiler is
 * there (pyproject.toml marks it optional); `spatiora doctor` says which encoder runs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SIXEL_BASE 0x3F
#define RLE_FROM 4
/* Unset columns from which a colour's span is cut in two. Measured on noise-like and smooth
 * 512x512 frames for 2-16: 3-4 gave the fewest bytes (smooth frames the same for all). */
#define GAP 4

typedef struct {
    char *data;
    size_t size;
    size_t capacity;
} Buffer;

typedef struct {
    int32_t start, end; /* columns [start, end) */
    int32_t colour;
} Span;

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

/* Decimal digits of n, written at p; returns how many. */
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

/* The sixels of row[start, end), run-length encoded; unset ones as `?`. */
static inline size_t put_sixels(char *p, const uint8_t *row, int32_t start, int32_t end) {
    char *from = p;
    for (int32_t x = start; x < end;) {
        uint8_t value = row[x];
        int32_t run = x + 1;
        while (run < end && row[run] == value) run++;
        p += put_repeat(p, (unsigned)(run - x), (char)(SIXEL_BASE + value));
        x = run;
    }
    return (size_t)(p - from);
}

/* The spans of one colour's row, appended at spans; returns how many. */
static size_t find_spans(const uint8_t *row, int32_t width, int32_t colour, Span *spans) {
    size_t count = 0;
    int32_t x = 0, start = -1, last = -1;
    while (x < width) {
        if (!row[x]) {
            uint64_t word;
            if (x + 8 <= width && (memcpy(&word, row + x, 8), word == 0))
                x += 8; /* a noisy frame's rows are mostly unset: skip them 8 at a time */
            else
                x++;
            continue;
        }
        if (start >= 0 && x - last - 1 >= GAP) {
            spans[count++] = (Span){start, last + 1, colour};
            start = -1;
        }
        if (start < 0) start = x;
        last = x++;
    }
    if (start >= 0) spans[count++] = (Span){start, last + 1, colour};
    return count;
}

/* Stable counting sort of spans by key (0 <= key <= largest) into sorted. */
static void sort_spans(const Span *spans, size_t count, Span *sorted, size_t *tally, int32_t largest, int by_length) {
    memset(tally, 0, sizeof *tally * (size_t)(largest + 2));
    for (size_t i = 0; i < count; i++) {
        int32_t key = by_length ? largest - (spans[i].end - spans[i].start) : spans[i].start;
        tally[key + 1]++;
    }
    for (int32_t k = 0; k <= largest; k++) tally[k + 1] += tally[k];
    for (size_t i = 0; i < count; i++) {
        int32_t key = by_length ? largest - (spans[i].end - spans[i].start) : spans[i].start;
        sorted[tally[key]++] = spans[i];
    }
}

static PyObject *encode_body(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t width_arg, height_arg;
    int colours;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*nni", &view, &width_arg, &height_arg, &colours)) return NULL;
    if (width_arg <= 0 || height_arg <= 0 || width_arg > (1 << 24) || height_arg > (1 << 24) || colours <= 0 ||
        colours > 256 || view.len != width_arg * height_arg) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "expected width*height palette indices and 1-256 colours");
        return NULL;
    }
    const int32_t width = (int32_t)width_arg, height = (int32_t)height_arg;
    const uint8_t *indices = view.buf;
    /* A colour's spans in a band: at most one per GAP + 1 columns, and one more. */
    size_t most_spans = (size_t)colours * ((size_t)width / (GAP + 1) + 1);
    uint8_t *rows = calloc((size_t)colours * (size_t)width, 1); /* per colour: its sixels */
    Span *spans = malloc(sizeof(Span) * most_spans);
    Span *sorted = malloc(sizeof(Span) * most_spans);
    size_t *tally = malloc(sizeof(size_t) * ((size_t)(width > 256 ? width : 256) + 2));
    int16_t next_ending[256]; /* per pass (at most 256: a column has at most 256 colours) */
    int16_t *ends_at = malloc(sizeof(int16_t) * ((size_t)width + 1)); /* per column: a pass ending there */
    uint16_t *pass_of = malloc(sizeof(uint16_t) * most_spans);
    Buffer out = {NULL, 0, 0};
    int failed = !rows || !spans || !sorted || !tally || !pass_of || !ends_at;
    if (ends_at) memset(ends_at, 0xFF, sizeof(int16_t) * ((size_t)width + 1));
    uint8_t present[256];
    int current = -1; /* the colour selected: it holds across passes and bands */

    Py_BEGIN_ALLOW_THREADS
    for (int32_t top = 0; top < height && !failed; top += 6) {
        int band_rows = height - top < 6 ? height - top : 6;
        char solid = (char)(SIXEL_BASE + (1 << band_rows) - 1);
        memset(present, 0, sizeof present);
        for (int pixel = 0; pixel < band_rows; pixel++) {
            const uint8_t *line = indices + (size_t)(top + pixel) * (size_t)width;
            uint8_t bit = (uint8_t)(1u << pixel);
            for (int32_t x = 0; x < width; x++) {
                uint8_t c = line[x];
                if (c >= colours) continue; /* an index past the palette: not drawn */
                present[c] = 1;
                rows[(size_t)c * (size_t)width + (size_t)x] |= bit;
            }
        }
        size_t count = 0;
        for (int c = 0; c < colours; c++)
            if (present[c]) count += find_spans(rows + (size_t)c * (size_t)width, width, c, spans + count);
        /* In order of start, the longest first, then by colour: two stable sorts. */
        sort_spans(spans, count, sorted, tally, width, 1);
        sort_spans(sorted, count, spans, tally, width, 0);

        /* Each span to the first pass it fits after (start at or past that pass's end): the
         * same passes as taking greedy lines one after another, in one sweep. The passes free
         * at a span's start are a bitset; a pass joins it at the column its last span ends. */
        uint64_t free_passes[4] = {0, 0, 0, 0};
        int passes = 0;
        int32_t column = 0; /* passes ending at columns below this are in free_passes */
        for (size_t i = 0; i < count; i++) {
            for (; column <= spans[i].start; column++)
                for (int16_t q = ends_at[column]; q >= 0; q = next_ending[q]) free_passes[q >> 6] |= 1ull << (q & 63);
            int pass = -1;
            for (int word = 0; word < 4 && pass < 0; word++)
                if (free_passes[word]) pass = word * 64 + __builtin_ctzll(free_passes[word]);
            if (pass < 0)
                pass = passes++;
            else
                free_passes[pass >> 6] &= ~(1ull << (pass & 63));
            next_ending[pass] = ends_at[spans[i].end];
            ends_at[spans[i].end] = (int16_t)pass;
            pass_of[i] = (uint16_t)pass;
        }
        for (int32_t x = 0; x <= width; x++) ends_at[x] = -1;
        /* The spans pass by pass, each pass in order of start (a stable counting sort). */
        memset(tally, 0, sizeof *tally * (size_t)(passes + 1));
        for (size_t i = 0; i < count; i++) tally[pass_of[i] + 1]++;
        for (int k = 0; k < passes; k++) tally[k + 1] += tally[k];
        for (size_t i = 0; i < count; i++) sorted[tally[pass_of[i]]++] = spans[i];

        if (passes == 0) { /* no pixel of the palette in this band: only its end */
            if (reserve(&out, 1)) failed = 1;
            else out.data[out.size++] = '-';
        }
        size_t from = 0;
        for (int pass = 0; pass < passes && !failed; pass++) {
            int32_t cursor = 0;
            for (size_t i = from; i < tally[pass]; i++) {
                Span span = sorted[i];
                /* `#ccc`, the gap's `!N?`, at most one byte a column (or `!N` and one), `$`. */
                if (reserve(&out, 16 + 2 * (size_t)(span.end - span.start))) {
                    failed = 1;
                    break;
                }
                char *p = out.data + out.size;
                if (span.colour != current) {
                    *p++ = '#';
                    p += put_number(p, (unsigned)span.colour);
                    current = span.colour;
                }
                if (span.start > cursor) p += put_repeat(p, (unsigned)(span.start - cursor), SIXEL_BASE);
                if (pass == 0)
                    p += put_repeat(p, (unsigned)(span.end - span.start), solid);
                else
                    p += put_sixels(p, rows + (size_t)span.colour * (size_t)width, span.start, span.end);
                out.size = (size_t)(p - out.data);
                cursor = span.end;
            }
            if (!failed) out.data[out.size++] = pass + 1 < passes ? '$' : '-'; /* room: reserved above */
            from = tally[pass];
        }
        for (int c = 0; c < colours; c++)
            if (present[c]) memset(rows + (size_t)c * (size_t)width, 0, (size_t)width);
    }
    Py_END_ALLOW_THREADS

    PyBuffer_Release(&view);
    free(rows);
    free(spans);
    free(sorted);
    free(tally);
    free(pass_of);
    free(ends_at);
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
     "(its bands, no header)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_sixel", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__sixel(void) { return PyModule_Create(&module); }
