/* Optional accelerator for vis_eval's RLE work (see vis_eval/rle_accel.py, which loads it with ctypes).
 *
 * Compressed RLE "counts" strings (the COCO format): each run length is written as a little-endian
 * sequence of 5-bit groups, one character 48 + group per group; bit 0x20 of a character means "more
 * groups follow"; on the last group, bit 0x10 is the sign. From the fourth run on, the stored value
 * is the difference to the run two positions earlier. Run lengths are unsigned 32-bit, each delta
 * added modulo 2**32; runs alternate 0-runs and 1-runs, starting with a 0-run, in column-major order.
 *
 * The definitions (which strings are well formed, what their area and run total are) are those of
 * the pure NumPy path, vis_eval.rle._run_sums, so both give identical numbers:
 *   - a character outside '0'..'o' makes the string malformed and reads as '0';
 *   - a string whose last character says "more groups follow" is malformed (that character reads '0');
 *   - a number's groups past the twelfth (60 bits) must be zero padding (the end character too);
 *   - a run of 2**31 pixels or more (after the modulo 2**32 delta addition) is malformed.
 *
 * Plain C: the functions take pointers to buffers owned by NumPy arrays / bytes objects. The module
 * init function only makes the shared library importable (to locate it); it exposes no functions.
 */
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct {
    const uint8_t *p, *end;
    uint32_t prev1, prev2; /* the two previous run lengths */
    int64_t k;             /* index of the next run */
    int ok;
} Decoder;

/* Next run length of the string (returns 0 at its end). */
static inline int next_run(Decoder *d, uint32_t *run) {
    if (d->p >= d->end) return 0;
    uint64_t x = 0;
    unsigned u0 = (unsigned)(uint8_t)(*d->p - 48);
    if (u0 < 32) { /* a number of one character (the common case) */
        d->p++;
        x = (uint64_t)(int64_t)((int)(u0 ^ 16) - 16);
        goto have_x;
    }
    int g = 0; /* continuation characters read so far */
    for (;;) {
        unsigned u = (unsigned)(uint8_t)(*d->p - 48);
        if (u > 63) {
            d->ok = 0;
            u = 0;
        }
        if (d->p + 1 == d->end && u >= 32) { /* truncated */
            d->ok = 0;
            u = 0;
        }
        d->p++;
        int shift = 5 * (g < 12 ? g : 12);
        if (u >= 32) {
            if (g >= 12 && u != 32) d->ok = 0;
            x += (uint64_t)(u - 32) << shift;
            g++;
            continue;
        }
        int64_t last = u < 16 ? (int64_t)u : (int64_t)u - 32;
        if (g >= 12 && last != 0) d->ok = 0;
        x += (uint64_t)last << shift;
        break;
    }
have_x:;
    uint32_t c = (uint32_t)x;
    if (d->k > 2) c += d->prev2;
    if (c >= 0x80000000u) d->ok = 0;
    d->prev2 = d->prev1;
    d->prev1 = c;
    d->k++;
    *run = c;
    return 1;
}

static inline void decoder_init(Decoder *d, const uint8_t *buf, int64_t a, int64_t b) {
    d->p = buf + a;
    d->end = buf + b;
    d->prev1 = d->prev2 = 0;
    d->k = 0;
    d->ok = 1;
}

/* Per string i (characters buf[off[i]:off[i+1]]): area (sum of the 1-runs), total (sum of all
 * runs), ok (well formed), and lo / hi: the first foreground pixel and one past the last one
 * (column-major index; lo = hi = 0 for an empty mask). */
void vis_rle_stats(const uint8_t *buf, const int64_t *off, int64_t n, int64_t *area, int64_t *total,
                   uint8_t *ok, int64_t *lo, int64_t *hi) {
    for (int64_t i = 0; i < n; i++) {
        Decoder d;
        decoder_init(&d, buf, off[i], off[i + 1]);
        int64_t pos = 0, fg = 0, first = -1, last = 0;
        uint32_t run;
        int one = 0;
        while (next_run(&d, &run)) {
            int64_t r = (int64_t)(int32_t)run; /* as the pure path's int32 sums */
            if (one) {
                fg += r;
                if (run && run < 0x80000000u) {
                    if (first < 0) first = pos;
                    last = pos + r;
                }
            }
            pos += r;
            one = !one;
        }
        area[i] = fg;
        total[i] = pos;
        ok[i] = (uint8_t)d.ok;
        lo[i] = first < 0 ? 0 : first;
        hi[i] = first < 0 ? 0 : last;
    }
}

/* Foreground intervals [s[k], e[k]) of one well-formed mask (column-major pixel indices); returns
 * their number. s and e have room for (characters + 1) / 2 + 1 intervals. */
static int64_t fg_intervals(const uint8_t *buf, int64_t a, int64_t b, int64_t *s, int64_t *e) {
    Decoder d;
    decoder_init(&d, buf, a, b);
    uint32_t run;
    int64_t pos = 0, n = 0;
    int one = 0;
    while (next_run(&d, &run)) {
        if (one && run) {
            s[n] = pos;
            e[n] = pos + run;
            n++;
        }
        pos += run;
        one = !one;
    }
    return n;
}

/* Common foreground pixels of two sorted interval lists. */
static int64_t overlap(const int64_t *as, const int64_t *ae, int64_t na, const int64_t *bs,
                       const int64_t *be, int64_t nb) {
    if (na == 0 || nb == 0 || ae[na - 1] <= bs[0] || be[nb - 1] <= as[0]) return 0;
    int64_t i = 0, j = 0, inter = 0;
    while (i < na && j < nb) {
        int64_t lo = as[i] > bs[j] ? as[i] : bs[j];
        int64_t hi = ae[i] < be[j] ? ae[i] : be[j];
        if (lo < hi) inter += hi - lo;
        if (ae[i] < be[j])
            i++;
        else
            j++;
    }
    return inter;
}

/* Intersections of all (a, b) mask pairs of each group q: masks ia[ga[q]:ga[q+1]] of the strings
 * (abuf, aoff) with masks ib[gb[q]:gb[q+1]] of (bbuf, boff), written row by row (a-major) group
 * after group into out. The masks must be well formed, all those of a group of one size (checked
 * by the caller). Each mask is decoded once. Returns 0, or -1 when out of memory. */
int vis_rle_group_intersections(const uint8_t *abuf, const int64_t *aoff, const int64_t *ia,
                                const int64_t *ga, const uint8_t *bbuf, const int64_t *boff,
                                const int64_t *ib, const int64_t *gb, int64_t n_groups, int64_t *out) {
    int64_t cap = 0;
    int64_t *s = NULL, *e = NULL;
    int64_t *start = NULL, *count = NULL;
    int64_t cap_masks = 0;
    int64_t o = 0;
    for (int64_t q = 0; q < n_groups; q++) {
        int64_t na = ga[q + 1] - ga[q], nb = gb[q + 1] - gb[q];
        int64_t need = 0;
        for (int64_t k = ga[q]; k < ga[q + 1]; k++) need += (aoff[ia[k] + 1] - aoff[ia[k]] + 1) / 2 + 1;
        for (int64_t k = gb[q]; k < gb[q + 1]; k++) need += (boff[ib[k] + 1] - boff[ib[k]] + 1) / 2 + 1;
        if (need > cap) {
            cap = need > 2 * cap ? need : 2 * cap;
            int64_t *s2 = (int64_t *)realloc(s, (size_t)cap * sizeof(int64_t));
            if (s2) s = s2;
            int64_t *e2 = (int64_t *)realloc(e, (size_t)cap * sizeof(int64_t));
            if (e2) e = e2;
            if (!s2 || !e2) goto oom;
        }
        if (na + nb > cap_masks) {
            cap_masks = 2 * (na + nb);
            int64_t *st2 = (int64_t *)realloc(start, (size_t)cap_masks * sizeof(int64_t));
            if (st2) start = st2;
            int64_t *ct2 = (int64_t *)realloc(count, (size_t)cap_masks * sizeof(int64_t));
            if (ct2) count = ct2;
            if (!st2 || !ct2) goto oom;
        }
        int64_t used = 0;
        for (int64_t k = 0; k < na + nb; k++) {
            int64_t m = k < na ? ia[ga[q] + k] : ib[gb[q] + k - na];
            const uint8_t *buf = k < na ? abuf : bbuf;
            const int64_t *off = k < na ? aoff : boff;
            start[k] = used;
            count[k] = fg_intervals(buf, off[m], off[m + 1], s + used, e + used);
            used += count[k];
        }
        for (int64_t i = 0; i < na; i++)
            for (int64_t j = na; j < na + nb; j++)
                out[o++] = overlap(s + start[i], e + start[i], count[i], s + start[j], e + start[j], count[j]);
    }
    free(s);
    free(e);
    free(start);
    free(count);
    return 0;
oom:
    free(s);
    free(e);
    free(start);
    free(count);
    return -1;
}

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_rle_accel",
    "Optional C accelerator of vis_eval's RLE work, loaded with ctypes by vis_eval.rle_accel.", -1, NULL,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__rle_accel(void) { return PyModule_Create(&module); }
