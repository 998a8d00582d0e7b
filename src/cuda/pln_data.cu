/* The Poisson-lognormal model's data and work on the CUDA device: the
 * upload (once per fit), the buffers, and how much device memory a fit
 * needs (checked before any allocation, for a clear message). */
#include "cuda/pln_dev.cuh"


int pln_nblocks(ptrdiff_t L)
{
    const ptrdiff_t b = (L + PB - 1) / PB;
    return b < 1 ? 1 : b > PLN_DOT_BLOCKS ? PLN_DOT_BLOCKS : (int)b;
}

int pln_dalloc(svir_cuda_pln *x, double **ptr, ptrdiff_t count, char *err, size_t errlen)
{
    *ptr = NULL;
    if (count <= 0) return 0;
    if (x->ndb >= NDB) {
        snprintf(err, errlen, "svir internal error: too many device buffers");
        return 3;
    }
    void *p = NULL;
    if (svir_cuda_failed(cudaMalloc(&p, sizeof(double) * (size_t)count), "cudaMalloc", err, errlen))
        return 3;
    x->dbuf[x->ndb++] = p;
    *ptr = (double *)p;
    return 0;
}

static int dalloc_int(svir_cuda_pln *x, int **ptr, ptrdiff_t count, char *err, size_t errlen)
{
    double *p = NULL;
    const int st = pln_dalloc(x, &p, (count + 1) / 2, err, errlen);
    *ptr = (int *)p;
    return st;
}

static int halloc(svir_cuda_pln *x, double **ptr, ptrdiff_t count, char *err, size_t errlen)
{
    *ptr = NULL;
    if (count <= 0) return 0;
    *ptr = (double *)malloc(sizeof(double) * (size_t)count);
    if (!*ptr) {
        snprintf(err, errlen, "out of memory fitting the Poisson-lognormal model");
        return 2;
    }
    x->hbuf[x->nhb++] = *ptr;
    return 0;
}

void pln_free(svir_cuda_pln *x)
{
    if (!x) return;
    for (int k = 0; k < x->ndb; k++) cudaFree(x->dbuf[k]);
    for (int k = 0; k < x->nhb; k++) free(x->hbuf[k]);
    free(x);
}

static ptrdiff_t npar_of(const svir_pln_data *dat)
{
    const ptrdiff_t np = (ptrdiff_t)dat->n * dat->p;
    return 2 * np + (dat->cov == SVIR_PLN_RANK && !dat->Bfix ? (ptrdiff_t)dat->p * (dat->q + 1) : 0);
}

/* the device doubles pln_new allocates (its list, in the same order) */
static double dev_doubles(const svir_pln_data *dat, int fit)
{
    const double n = dat->n, p = dat->p, d = dat->d, np = n * p, L = (double)npar_of(dat);
    const int fixed = dat->Bfix != NULL, rank = dat->cov == SVIR_PLN_RANK && !fixed;
    const double q = rank ? dat->q : 0, nz = dat->Y ? 0.0 : dat->Yp[dat->p];
    double s = 0.0;
    s += dat->Y ? np : nz + (nz + 1) / 2 + (p + 2) / 2;                /* counts */
    s += dat->O ? np : dat->Orow ? n : 0.0;                           /* offsets */
    s += 2 * n * d + d * p;                                           /* X, P, B */
    s += np * (rank || fixed ? 2 : 1);                                /* R, T */
    s += 2 * np + 2 * p + 2 * p * (q + 1);                            /* A, S^2, omd, h0r */
    s += fit ? 2 * np : 0.0;                                          /* the candidate's */
    s += fit && !fixed && dat->d <= PREC_DMAX ? d * d : 0.0;          /* X'X */
    s += (dat->cov == SVIR_PLN_FULL || fixed) ? p * p : 0.0;          /* Omega */
    s += rank ? n * q + 2 * p * q + p : 0.0;                          /* NQ, GV */
    s += 3 * p + 2 * p + p * q + 3 * PLN_DOT_BLOCKS + 4;              /* cols, out, part, scal */
    /* the point, and an evaluation's gradient or L-BFGS's vectors (two
     * gradients, the candidate, the direction, the new y, the pairs) */
    s += fit ? (1 + 5 + 2 * PLN_MEM) * L : 2 * L;
    return s;
}

extern "C" double svir_cuda_pln_bytes(const svir_pln_data *dat, int fit)
{
    return 8.0 * dev_doubles(dat, fit);
}

extern "C" int svir_cuda_pln_mem(size_t *free_bytes, size_t *total_bytes)
{
    *free_bytes = *total_bytes = 0;
    if (cudaMemGetInfo(free_bytes, total_bytes) != cudaSuccess) {
        (void)cudaGetLastError();
        return 3;
    }
    return 0;
}

/* uploads dat and allocates the work; fit: with the optimiser's vectors */
int pln_new(const svir_pln_data *dat, int fit, svir_cuda_pln **out, char *err, size_t errlen)
{
    *out = NULL;
    if (dat->cov < 0 || dat->cov > 3 || dat->n < 1 || dat->p < 1 || dat->d < 0 ||
        (dat->cov == SVIR_PLN_RANK && (dat->q < 1 || dat->q > dat->p)) ||
        (!dat->Y && (!dat->Yp || !dat->Yi || !dat->Yx)) || (dat->d > 0 && (!dat->X || !dat->P)) ||
        (dat->Bfix == NULL) != (dat->Omfix == NULL)) {
        snprintf(err, errlen, "svir internal error: bad Poisson-lognormal data for the device");
        return 1;
    }
    /* enough device memory? (a clear message rather than a failed cudaMalloc) */
    size_t fr = 0, tot = 0;
    if (svir_cuda_failed(cudaMemGetInfo(&fr, &tot), "cudaMemGetInfo", err, errlen)) return 3;
    const double need = svir_cuda_pln_bytes(dat, fit);
    if (need > (double)fr) {
        snprintf(err, errlen, "the Poisson-lognormal %s needs %.2f GB of device memory, %.2f GB "
                 "are free (of %.2f GB)", fit ? "fit" : "evaluation", need / 1e9, fr / 1e9, tot / 1e9);
        return 3;
    }
    svir_cuda_pln *x = (svir_cuda_pln *)calloc(1, sizeof *x);
    if (!x) {
        snprintf(err, errlen, "out of memory fitting the Poisson-lognormal model");
        return 2;
    }
    const int n = dat->n, p = dat->p, d = dat->d;
    const ptrdiff_t np = (ptrdiff_t)n * p;
    x->n = n; x->p = p; x->d = d; x->cov = dat->cov; x->fit = fit;
    x->fixed = dat->Bfix != NULL;
    const int rank = dat->cov == SVIR_PLN_RANK && !x->fixed;
    x->q = rank ? dat->q : 0;
    const int q = x->q;
    x->np = np;
    x->L = npar_of(dat);
    x->nd = dat->nd;
    x->k0 = dat->k0;
    x->s0 = dat->s0;
    x->lgy = dat->lgy;
    x->logdet_om = dat->logdet_om;
    pln_args *a = &x->a;
    a->n = n; a->p = p; a->d = d; a->q = q; a->np = np;
    int st = 0;
    double *t;
#define DA(ptr, cnt)                                                                    \
    do {                                                                                \
        if ((st = pln_dalloc(x, &(ptr), (cnt), err, errlen))) goto fail;                   \
    } while (0)
#define UP(dst, src, cnt)                                                               \
    do {                                                                                \
        if ((cnt) > 0 && svir_cuda_failed(cudaMemcpy((void *)(dst), (src),             \
                                                     sizeof(*(src)) * (size_t)(cnt),   \
                                                     cudaMemcpyHostToDevice),          \
                                          "cudaMemcpy (upload)", err, errlen)) {       \
            st = 3;                                                                     \
            goto fail;                                                                  \
        }                                                                               \
    } while (0)
    if (dat->Y) {
        DA(t, np); UP(t, dat->Y, np); a->Y = t;
    } else {
        const ptrdiff_t nz = dat->Yp[p];
        int *ip;
        DA(t, nz); UP(t, dat->Yx, nz); a->Yx = t;
        if ((st = dalloc_int(x, &ip, nz, err, errlen))) goto fail;
        UP(ip, dat->Yi, nz); a->Yi = ip;
        if ((st = dalloc_int(x, &ip, (ptrdiff_t)p + 1, err, errlen))) goto fail;
        UP(ip, dat->Yp, (ptrdiff_t)p + 1); a->Yp = ip;
    }
    if (dat->O) {
        DA(t, np); UP(t, dat->O, np); a->O = t;
    } else if (dat->Orow) {
        DA(t, n); UP(t, dat->Orow, n); a->Orow = t;
    }
    if (d > 0) {
        DA(t, (ptrdiff_t)n * d); UP(t, dat->X, (ptrdiff_t)n * d); a->X = t;
        DA(t, (ptrdiff_t)n * d); UP(t, dat->P, (ptrdiff_t)n * d); a->P = t;
        DA(a->B, (ptrdiff_t)d * p);
        if (x->fixed) UP(a->B, dat->Bfix, (ptrdiff_t)d * p);
    }
    DA(a->R, np);
    if (rank || x->fixed) DA(a->T, np);
    for (int s = 0; s < 2; s++) {
        if (s == 1 && !fit) {
            x->A[1] = x->A[0]; x->S2[1] = x->S2[0]; x->omd[1] = x->omd[0]; x->h0r[1] = x->h0r[0];
            continue;
        }
        DA(x->A[s], np);
        DA(x->S2[s], np);
        DA(x->omd[s], p);
        DA(x->h0r[s], (ptrdiff_t)p * (q + 1));
    }
    /* X'X for H0's X part (pln_precond: not in the VE step, d <= 8), summed
     * as svir_pln_fit sums it */
    x->dx = fit && !x->fixed && d <= PREC_DMAX ? d : 0;
    if (x->dx > 0) {
        double *hx;
        if ((st = halloc(x, &hx, (ptrdiff_t)d * d, err, errlen))) goto fail;
        for (int r = 0; r < d; r++)
            for (int c = 0; c < d; c++) {
                double v = 0.0;
                for (int i = 0; i < n; i++) v += dat->X[(ptrdiff_t)r * n + i] * dat->X[(ptrdiff_t)c * n + i];
                hx[r * d + c] = v;
            }
        DA(x->XtX, (ptrdiff_t)d * d);
        UP(x->XtX, hx, (ptrdiff_t)d * d);
    }
    if (dat->cov == SVIR_PLN_FULL || x->fixed) DA(a->Om, (ptrdiff_t)p * p);
    if (x->fixed) UP(a->Om, dat->Omfix, (ptrdiff_t)p * p);
    if (rank) {
        DA(a->NQ, (ptrdiff_t)n * q);
        DA(x->GV, 2 * (ptrdiff_t)p * q + p);
        a->G = x->GV;
        a->V = x->GV + (ptrdiff_t)p * q;
        a->ipsi = x->GV + 2 * (ptrdiff_t)p * q;
    }
    DA(a->cols, 3 * (ptrdiff_t)p);
    DA(a->out, 2 * (ptrdiff_t)p + (ptrdiff_t)p * q);
    DA(x->part, 3 * PLN_DOT_BLOCKS);
    DA(x->scal, 4);
    DA(x->par, x->L);
    if (!fit) DA(x->g, x->L); /* a fit's gradients are L-BFGS's vectors */
#undef DA
#undef UP
    /* host work */
    if ((st = halloc(x, &x->hcols, 3 * (ptrdiff_t)p + 2 * p + (ptrdiff_t)p * q, err, errlen))) goto fail;
    if ((st = halloc(x, &x->homd, p, err, errlen))) goto fail;
    if ((st = halloc(x, &x->hh0r, (ptrdiff_t)p * (q + 1), err, errlen))) goto fail;
    if (dat->cov == SVIR_PLN_FULL || x->fixed)
        if ((st = halloc(x, &x->hOm, (ptrdiff_t)p * p, err, errlen))) goto fail;
    if (rank) {
        const ptrdiff_t pq = (ptrdiff_t)p * q;
        if ((st = halloc(x, &x->hW, pq + p, err, errlen))) goto fail;
        if ((st = halloc(x, &x->hsmall, 5 * pq + 2 * (ptrdiff_t)p + 3 * (ptrdiff_t)q * q, err, errlen)))
            goto fail;
        x->hG = x->hsmall;       /* G, V, 1 / psi: uploaded together */
        x->hV = x->hG + pq;
        x->hOW = x->hV + pq + p; /* after 1 / psi */
        x->hX2 = x->hOW + pq;
        x->hPQ = x->hX2 + pq;
        x->hK = x->hPQ + pq;
        x->hKmI = x->hK + (ptrdiff_t)q * q;
        x->hQs = x->hKmI + (ptrdiff_t)q * q;
        x->hgl = x->hQs + (ptrdiff_t)q * q;
    }
    if (x->fixed) {
        /* Omega_jj of the VE step, for both points */
        for (int j = 0; j < p; j++) x->homd[j] = dat->Omfix[(ptrdiff_t)j * p + j];
        for (int s = 0; s < (fit ? 2 : 1); s++)
            if (svir_cuda_failed(cudaMemcpy(x->omd[s], x->homd, sizeof(double) * p, cudaMemcpyHostToDevice),
                                 "cudaMemcpy (upload)", err, errlen)) {
                st = 3;
                goto fail;
            }
    }
    *out = x;
    return 0;
fail:
    pln_free(x);
    return st;
}

