/* The networks' tile kernels (bnn_model.c), written once for a vector of
 * BNN_VW doubles and included once per instruction set: the includer
 * defines BNN_VW (2, 4 or 8), BNN_KS (a name suffix), BNN_ATTR (the
 * functions' target attribute, or nothing), and for x86 BNN_SQRT(v),
 * BNN_MAX0(v) (a vector's square roots, its maximum with 0) and
 * optionally BNN_RSQRT(v) (its reciprocal square roots, to a few units in
 * the last place), BNN_RED4 and BNN_RED8 (sums of four and eight vectors
 * in one), or leaves them undefined for plain loops; the file undefines
 * them at its end. Tiles are column-major with leading dimension tr. No R
 * API. */
#define BNN_CAT2(a, b) a##b
#define BNN_CAT(a, b) BNN_CAT2(a, b)
#define BNN_V BNN_CAT(bnn_vec, BNN_KS)
#define BNN_LD BNN_CAT(bnn_ld, BNN_KS)
#define BNN_ST BNN_CAT(bnn_st, BNN_KS)

typedef double BNN_V __attribute__((vector_size(8 * BNN_VW)));
typedef long long BNN_CAT(bnn_ivec, BNN_KS) __attribute__((vector_size(8 * BNN_VW)));

BNN_ATTR static inline BNN_V BNN_LD(const double *p)
{
    BNN_V v;
    memcpy(&v, p, sizeof v);
    return v;
}

BNN_ATTR static inline void BNN_ST(double *p, BNN_V v)
{
    memcpy(p, &v, sizeof v);
}

/* Z = A W, V = A2 S2 (A, A2: tr x in; W, S2: in x out), 4 BNN_VW rows at
 * a time in registers */
BNN_ATTR static void BNN_CAT(k_fwd, BNN_KS)(ptrdiff_t tr, ptrdiff_t in, ptrdiff_t out,
                                            const double *A, const double *A2, const double *W,
                                            const double *S2, double *Z, double *V)
{
    const int VW = BNN_VW;
    for (ptrdiff_t o = 0; o < out; o++) {
        const double *wo = W + o * in, *so = S2 + o * in;
        double *Zo = Z + o * tr, *Vo = V + o * tr;
        ptrdiff_t r0 = 0;
        for (; r0 + 4 * VW <= tr; r0 += 4 * VW) {
            BNN_V z0 = {0}, z1 = z0, z2 = z0, z3 = z0, v0 = z0, v1 = z0, v2 = z0, v3 = z0;
            for (ptrdiff_t c = 0; c < in; c++) {
                const double *a = A + c * tr + r0, *b = A2 + c * tr + r0;
                const double wc = wo[c], sc = so[c];
                z0 += BNN_LD(a) * wc;
                z1 += BNN_LD(a + VW) * wc;
                z2 += BNN_LD(a + 2 * VW) * wc;
                z3 += BNN_LD(a + 3 * VW) * wc;
                v0 += BNN_LD(b) * sc;
                v1 += BNN_LD(b + VW) * sc;
                v2 += BNN_LD(b + 2 * VW) * sc;
                v3 += BNN_LD(b + 3 * VW) * sc;
            }
            BNN_ST(Zo + r0, z0);
            BNN_ST(Zo + r0 + VW, z1);
            BNN_ST(Zo + r0 + 2 * VW, z2);
            BNN_ST(Zo + r0 + 3 * VW, z3);
            BNN_ST(Vo + r0, v0);
            BNN_ST(Vo + r0 + VW, v1);
            BNN_ST(Vo + r0 + 2 * VW, v2);
            BNN_ST(Vo + r0 + 3 * VW, v3);
        }
        for (; r0 < tr; r0++) {
            double z = 0.0, v = 0.0;
            for (ptrdiff_t c = 0; c < in; c++) {
                z += A[c * tr + r0] * wo[c];
                v += A2[c * tr + r0] * so[c];
            }
            Zo[r0] = z;
            Vo[r0] = v;
        }
    }
}

/* C += A' G (A: tr x in, G: tr x out, C: in x out): four columns of A at
 * a time against each column of G, two vectors of rows a step (eight
 * independent sums, so that the adds' latency does not bind) */
BNN_ATTR static void BNN_CAT(k_tn, BNN_KS)(ptrdiff_t tr, ptrdiff_t in, ptrdiff_t out,
                                           const double *A, const double *G, double *C)
{
    const int VW = BNN_VW;
    const ptrdiff_t tr2 = tr - tr % (2 * VW);
    for (ptrdiff_t o = 0; o < out; o++) {
        const double *Go = G + o * tr;
        double *Co = C + o * in;
        ptrdiff_t c = 0;
        for (; c + 4 <= in; c += 4) {
            const double *a0 = A + c * tr, *a1 = a0 + tr, *a2 = a1 + tr, *a3 = a2 + tr;
            BNN_V s0 = {0}, s1 = s0, s2 = s0, s3 = s0, t0 = s0, t1 = s0, t2 = s0, t3 = s0;
            for (ptrdiff_t r = 0; r < tr2; r += 2 * VW) {
                const BNN_V g = BNN_LD(Go + r), h = BNN_LD(Go + r + VW);
                s0 += BNN_LD(a0 + r) * g;
                s1 += BNN_LD(a1 + r) * g;
                s2 += BNN_LD(a2 + r) * g;
                s3 += BNN_LD(a3 + r) * g;
                t0 += BNN_LD(a0 + r + VW) * h;
                t1 += BNN_LD(a1 + r + VW) * h;
                t2 += BNN_LD(a2 + r + VW) * h;
                t3 += BNN_LD(a3 + r + VW) * h;
            }
            s0 += t0;
            s1 += t1;
            s2 += t2;
            s3 += t3;
            double u0 = 0.0, u1 = 0.0, u2 = 0.0, u3 = 0.0;
            for (int j = 0; j < VW; j++) {
                u0 += s0[j];
                u1 += s1[j];
                u2 += s2[j];
                u3 += s3[j];
            }
            for (ptrdiff_t r = tr2; r < tr; r++) {
                u0 += a0[r] * Go[r];
                u1 += a1[r] * Go[r];
                u2 += a2[r] * Go[r];
                u3 += a3[r] * Go[r];
            }
            Co[c] += u0;
            Co[c + 1] += u1;
            Co[c + 2] += u2;
            Co[c + 3] += u3;
        }
        for (; c < in; c++) {
            const double *a = A + c * tr;
            BNN_V s0 = {0}, s1 = s0, s2 = s0, s3 = s0;
            ptrdiff_t r = 0;
            for (; r + 4 * VW <= tr; r += 4 * VW) {
                s0 += BNN_LD(a + r) * BNN_LD(Go + r);
                s1 += BNN_LD(a + r + VW) * BNN_LD(Go + r + VW);
                s2 += BNN_LD(a + r + 2 * VW) * BNN_LD(Go + r + 2 * VW);
                s3 += BNN_LD(a + r + 3 * VW) * BNN_LD(Go + r + 3 * VW);
            }
            s0 += s1 + (s2 + s3);
            double sum = 0.0;
            for (int j = 0; j < VW; j++) sum += s0[j];
            for (; r < tr; r++) sum += a[r] * Go[r];
            Co[c] += sum;
        }
    }
}

/* N = G W' (G: tr x out, W: in x out, N: tr x in) */
BNN_ATTR static void BNN_CAT(k_nt, BNN_KS)(ptrdiff_t tr, ptrdiff_t in, ptrdiff_t out,
                                           const double *G, const double *W, double *N)
{
    const int VW = BNN_VW;
    const ptrdiff_t trv = tr - tr % VW;
    for (ptrdiff_t c = 0; c < in; c++) {
        double *Nc = N + c * tr;
        for (ptrdiff_t r = 0; r < tr; r++) Nc[r] = 0.0;
        for (ptrdiff_t o = 0; o < out; o++) {
            const double *Go = G + o * tr, wc = W[c + o * in];
            for (ptrdiff_t r = 0; r < trv; r += VW) BNN_ST(Nc + r, BNN_LD(Nc + r) + BNN_LD(Go + r) * wc);
            for (ptrdiff_t r = trv; r < tr; r++) Nc[r] += Go[r] * wc;
        }
    }
}

/* d/d the pre-activation from da = d/d the activation's value a: da
 * act'(a) (relu: a > 0; tanh: 1 - a^2) */
BNN_ATTR static inline BNN_V BNN_CAT(bnn_dact, BNN_KS)(BNN_V da, BNN_V a, int relu)
{
    typedef BNN_CAT(bnn_ivec, BNN_KS) BNN_VI;
    const BNN_V zero = {0};
    return relu ? (BNN_V)((BNN_VI)da & (BNN_VI)(a > zero)) : da * (1.0 - a * a);
}

/* The backward pass through the activation over a column of a tile: da
 * = Gn + 2 A dVn (d/dA), g = da act'(A) (relu: A > 0; tanh: 1 - A^2),
 * then Gn = g, dVn = g Q, and the column's sums of g and g Q into *sg and
 * *sv (the bias's gradients); vector sums, so the adds' latency does not
 * bind */
BNN_ATTR static void BNN_CAT(k_back, BNN_KS)(ptrdiff_t tr, const double *A, double *Gn,
                                             double *dVn, const double *Q, int relu, double *sg,
                                             double *sv)
{
    const int VW = BNN_VW;
    const BNN_V zero = {0};
    BNN_V s0 = zero, s1 = zero;
    ptrdiff_t r = 0;
    for (; r + VW <= tr; r += VW) {
        const BNN_V a = BNN_LD(A + r), da = BNN_LD(Gn + r) + 2.0 * a * BNN_LD(dVn + r);
        const BNN_V g = BNN_CAT(bnn_dact, BNN_KS)(da, a, relu);
        const BNN_V v = g * BNN_LD(Q + r);
        BNN_ST(Gn + r, g);
        BNN_ST(dVn + r, v);
        s0 += g;
        s1 += v;
    }
    double t0 = 0.0, t1 = 0.0;
    for (int j = 0; j < VW; j++) {
        t0 += s0[j];
        t1 += s1[j];
    }
    for (; r < tr; r++) {
        const double a = A[r], da = Gn[r] + 2.0 * a * dVn[r];
        const double g = relu ? (a > 0.0 ? da : 0.0) : da * (1.0 - a * a);
        Gn[r] = g;
        dVn[r] = g * Q[r];
        t0 += g;
        t1 += dVn[r];
    }
    *sg = t0;
    *sv = t1;
}

/* a layer's column of a tile, given its means Z (A mu_W) and variances Q
 * (A^2 s2_W), the bias's mean mb and variance vb, and the noise e: Z =
 * Z + mb + sd e, Q = e / (2 sd) and (hidden layers) A = act(Z), A2 = A^2.
 * The square roots in vectors where the instruction set has them (sqrt()
 * itself does not vectorise: it may set errno). */
BNN_ATTR static void BNN_CAT(bnn_column, BNN_KS)(ptrdiff_t tr, double mb, double vb,
                                                 const double *e, double *Z, double *Q, double *A,
                                                 double *A2, int relu)
{
    ptrdiff_t r = 0;
    const int VW = BNN_VW;
    (void)VW;
#if defined(BNN_RSQRT)
    /* is = 1 / sd to a few units in the last place (BNN_RSQRT), then sd =
     * v is and Q = e is / 2 by products: no square root and no division,
     * each several times a product's time */
    for (; r + VW <= tr; r += VW) {
        const BNN_V v = BNN_LD(Q + r) + vb, is = BNN_RSQRT(v), er = BNN_LD(e + r);
        BNN_ST(Z + r, BNN_LD(Z + r) + mb + (v * is) * er);
        BNN_ST(Q + r, (0.5 * er) * is);
    }
#elif defined(BNN_SQRT)
    for (; r + VW <= tr; r += VW) {
        const BNN_V sv = BNN_SQRT(BNN_LD(Q + r) + vb), er = BNN_LD(e + r);
        BNN_ST(Z + r, BNN_LD(Z + r) + mb + sv * er);
        BNN_ST(Q + r, er / (2.0 * sv));
    }
#endif
    for (; r < tr; r++) {
        const double sv = sqrt(Q[r] + vb);
        Z[r] += mb + sv * e[r];
        Q[r] = e[r] / (2.0 * sv);
    }
    if (!A) return;
    r = 0;
    if (relu) {
#ifdef BNN_MAX0
        for (; r + VW <= tr; r += VW) {
            const BNN_V a = BNN_MAX0(BNN_LD(Z + r));
            BNN_ST(A + r, a);
            BNN_ST(A2 + r, a * a);
        }
#endif
        for (; r < tr; r++) {
            const double a = Z[r] > 0.0 ? Z[r] : 0.0;
            A[r] = a;
            A2[r] = a * a;
        }
    } else {
        for (; r < tr; r++) {
            const double a = tanh(Z[r]);
            A[r] = a;
            A2[r] = a * a;
        }
    }
}

/* ---- one hidden layer, fused (bnn_model.c's bnn_fused_*): a tile's
 * hidden units column by column, so that only their values and Q are
 * kept, and the output's sums and the backward pass come from them in the
 * same sweep (no tr x width arrays for A^2, the output's G W' or the
 * layered passes' reloads) */

/* a vector's elementwise act(z) (relu or tanh) */
BNN_ATTR static inline BNN_V BNN_CAT(bnn_act, BNN_KS)(BNN_V z, int relu)
{
    typedef BNN_CAT(bnn_ivec, BNN_KS) BNN_VI;
    const BNN_V zero = {0};
    if (relu) return (BNN_V)((BNN_VI)z & (BNN_VI)(z > zero));
    BNN_V a;
    for (int j = 0; j < BNN_VW; j++) a[j] = tanh(z[j]);
    return a;
}

/* a unit's column ops on a vector of rows: its pre-activation's mean z
 * and variance v (A mu_W, A^2 s2_W), the bias's mb, vb, the noise er: z
 * + mb + sd er, Q = er / (2 sd) into *q, as bnn_column */
BNN_ATTR static inline BNN_V BNN_CAT(bnn_draw, BNN_KS)(BNN_V z, BNN_V v, double mb, double vb, BNN_V er,
                                                       BNN_V *q)
{
    v += vb;
#if defined(BNN_RSQRT)
    const BNN_V is = BNN_RSQRT(v);
    *q = (0.5 * er) * is;
    return z + mb + (v * is) * er;
#else
    BNN_V sv;
#if defined(BNN_SQRT)
    sv = BNN_SQRT(v);
#else
    for (int j = 0; j < BNN_VW; j++) sv[j] = sqrt(v[j]);
#endif
    *q = er / (2.0 * sv);
    return z + mb + sv * er;
#endif
}

/* Hidden columns o .. o + 3 of a tile from its inputs A (tr x d; A2 their
 * squares), the columns' weight means W and variances S2 (d x 4, column
 * o's at W + j d), the biases' mb, vb [4] and the noise e (tr x 4,
 * leading dimension tr): the units' values into Ah and their Q into Qh
 * (tr x 4), and the output's mean and variance sums Zo, Vo [tr] += a w2[j]
 * and a^2 s22[j], column after column (the layered pass's order). Eight
 * independent sums over the inputs (named, so that they stay in
 * registers), so that the products' latency does not bind; the body
 * inlined once per activation. */
BNN_ATTR static inline __attribute__((always_inline)) void
BNN_CAT(k_ffwd4_body, BNN_KS)(ptrdiff_t tr, ptrdiff_t d, const double *A, const double *A2, const double *W,
                             const double *S2, const double *mb, const double *vb, const double *e,
                             double *Ah, double *Qh, const double *w2, const double *s22, double *Zo,
                             double *Vo, const int relu)
{
    const int VW = BNN_VW;
    ptrdiff_t r = 0;
    BNN_V q;
#define BNN_FCOL(j, z, v, r)                                                                                 \
    {                                                                                                        \
        const BNN_V a = BNN_CAT(bnn_act, BNN_KS)(                                                            \
            BNN_CAT(bnn_draw, BNN_KS)(z, v, mb[j], vb[j], BNN_LD(e + j * tr + r), &q), relu);                \
        BNN_ST(Ah + j * tr + r, a);                                                                          \
        BNN_ST(Qh + j * tr + r, q);                                                                          \
        zo += a * w2[j];                                                                                     \
        vo += (a * a) * s22[j];                                                                              \
    }
    /* the four columns' ends on rows r .. r + VW - 1, and the output's sums */
#define BNN_F4(r, z0, z1, z2, z3, v0, v1, v2, v3)                                                            \
    {                                                                                                        \
        BNN_V zo = BNN_LD(Zo + (r)), vo = BNN_LD(Vo + (r));                                                  \
        BNN_FCOL(0, z0, v0, r)                                                                               \
        BNN_FCOL(1, z1, v1, r)                                                                               \
        BNN_FCOL(2, z2, v2, r)                                                                               \
        BNN_FCOL(3, z3, v3, r)                                                                               \
        BNN_ST(Zo + (r), zo);                                                                                \
        BNN_ST(Vo + (r), vo);                                                                                \
    }
#if BNN_VW == 8
    /* two vectors of rows a step where there are 32 registers: each
     * weight loaded once for both */
    for (; r + 2 * VW <= tr; r += 2 * VW) {
        BNN_V z0 = {0}, z1 = z0, z2 = z0, z3 = z0, v0 = z0, v1 = z0, v2 = z0, v3 = z0;
        BNN_V x0 = z0, x1 = z0, x2 = z0, x3 = z0, u0 = z0, u1 = z0, u2 = z0, u3 = z0;
        for (ptrdiff_t c = 0; c < d; c++) {
            const BNN_V a = BNN_LD(A + c * tr + r), b = BNN_LD(A2 + c * tr + r);
            const BNN_V a1 = BNN_LD(A + c * tr + r + VW), b1 = BNN_LD(A2 + c * tr + r + VW);
            const double w0 = W[c], w1 = W[d + c], w2_ = W[2 * d + c], w3 = W[3 * d + c];
            const double t0 = S2[c], t1 = S2[d + c], t2 = S2[2 * d + c], t3 = S2[3 * d + c];
            z0 += a * w0;
            z1 += a * w1;
            z2 += a * w2_;
            z3 += a * w3;
            x0 += a1 * w0;
            x1 += a1 * w1;
            x2 += a1 * w2_;
            x3 += a1 * w3;
            v0 += b * t0;
            v1 += b * t1;
            v2 += b * t2;
            v3 += b * t3;
            u0 += b1 * t0;
            u1 += b1 * t1;
            u2 += b1 * t2;
            u3 += b1 * t3;
        }
        BNN_F4(r, z0, z1, z2, z3, v0, v1, v2, v3)
        BNN_F4(r + VW, x0, x1, x2, x3, u0, u1, u2, u3)
    }
#endif
    for (; r + VW <= tr; r += VW) {
        BNN_V z0 = {0}, z1 = z0, z2 = z0, z3 = z0, v0 = z0, v1 = z0, v2 = z0, v3 = z0;
        for (ptrdiff_t c = 0; c < d; c++) {
            const BNN_V a = BNN_LD(A + c * tr + r), b = BNN_LD(A2 + c * tr + r);
            z0 += a * W[c];
            z1 += a * W[d + c];
            z2 += a * W[2 * d + c];
            z3 += a * W[3 * d + c];
            v0 += b * S2[c];
            v1 += b * S2[d + c];
            v2 += b * S2[2 * d + c];
            v3 += b * S2[3 * d + c];
        }
        BNN_F4(r, z0, z1, z2, z3, v0, v1, v2, v3)
    }
#undef BNN_F4
#undef BNN_FCOL
    for (; r < tr; r++) {
        for (int j = 0; j < 4; j++) {
            double z = 0.0, v = 0.0;
            for (ptrdiff_t c = 0; c < d; c++) {
                z += A[c * tr + r] * W[j * d + c];
                v += A2[c * tr + r] * S2[j * d + c];
            }
            const double sv = sqrt(v + vb[j]), er = e[j * tr + r];
            z += mb[j] + sv * er;
            const double a = relu ? (z > 0.0 ? z : 0.0) : tanh(z);
            Ah[j * tr + r] = a;
            Qh[j * tr + r] = er / (2.0 * sv);
            Zo[r] += a * w2[j];
            Vo[r] += (a * a) * s22[j];
        }
    }
}

BNN_ATTR static void BNN_CAT(k_ffwd4, BNN_KS)(ptrdiff_t tr, ptrdiff_t d, const double *A, const double *A2,
                                              const double *W, const double *S2, const double *mb,
                                              const double *vb, const double *e, double *Ah, double *Qh,
                                              const double *w2, const double *s22, double *Zo, double *Vo,
                                              int relu)
{
    if (relu) BNN_CAT(k_ffwd4_body, BNN_KS)(tr, d, A, A2, W, S2, mb, vb, e, Ah, Qh, w2, s22, Zo, Vo, 1);
    else BNN_CAT(k_ffwd4_body, BNN_KS)(tr, d, A, A2, W, S2, mb, vb, e, Ah, Qh, w2, s22, Zo, Vo, 0);
}

/* as k_ffwd4 for one column */
BNN_ATTR static void BNN_CAT(k_ffwd1, BNN_KS)(ptrdiff_t tr, ptrdiff_t d, const double *A, const double *A2,
                                              const double *W, const double *S2, const double *mb,
                                              const double *vb, const double *e, double *Ah, double *Qh,
                                              const double *w2, const double *s22, double *Zo, double *Vo,
                                              int relu)
{
    const int VW = BNN_VW;
    ptrdiff_t r = 0;
    for (; r + 2 * VW <= tr; r += 2 * VW) {
        BNN_V z0 = {0}, z1 = z0, v0 = z0, v1 = z0;
        for (ptrdiff_t c = 0; c < d; c++) {
            z0 += BNN_LD(A + c * tr + r) * W[c];
            z1 += BNN_LD(A + c * tr + r + VW) * W[c];
            v0 += BNN_LD(A2 + c * tr + r) * S2[c];
            v1 += BNN_LD(A2 + c * tr + r + VW) * S2[c];
        }
        BNN_V q0, q1;
        const BNN_V a0 = BNN_CAT(bnn_act, BNN_KS)(BNN_CAT(bnn_draw, BNN_KS)(z0, v0, mb[0], vb[0], BNN_LD(e + r), &q0), relu);
        const BNN_V a1 =
            BNN_CAT(bnn_act, BNN_KS)(BNN_CAT(bnn_draw, BNN_KS)(z1, v1, mb[0], vb[0], BNN_LD(e + r + VW), &q1), relu);
        BNN_ST(Ah + r, a0);
        BNN_ST(Ah + r + VW, a1);
        BNN_ST(Qh + r, q0);
        BNN_ST(Qh + r + VW, q1);
        BNN_ST(Zo + r, BNN_LD(Zo + r) + a0 * w2[0]);
        BNN_ST(Zo + r + VW, BNN_LD(Zo + r + VW) + a1 * w2[0]);
        BNN_ST(Vo + r, BNN_LD(Vo + r) + (a0 * a0) * s22[0]);
        BNN_ST(Vo + r + VW, BNN_LD(Vo + r + VW) + (a1 * a1) * s22[0]);
    }
    for (; r < tr; r++) {
        double z = 0.0, v = 0.0;
        for (ptrdiff_t c = 0; c < d; c++) {
            z += A[c * tr + r] * W[c];
            v += A2[c * tr + r] * S2[c];
        }
        const double sv = sqrt(v + vb[0]), er = e[r];
        z += mb[0] + sv * er;
        const double a = relu ? (z > 0.0 ? z : 0.0) : tanh(z);
        Ah[r] = a;
        Qh[r] = er / (2.0 * sv);
        Zo[r] += a * w2[0];
        Vo[r] += (a * a) * s22[0];
    }
}

/* a vector's sum */
BNN_ATTR static inline double BNN_CAT(bnn_hsum, BNN_KS)(BNN_V v)
{
    double s = 0.0;
    for (int j = 0; j < BNN_VW; j++) s += v[j];
    return s;
}

/* the sums of four vectors (a vector's first four elements are a's,
 * b's, c's, d's sums), of eight (BNN_RED8, where the includer has it: its
 * elements the eight sums) */
BNN_ATTR static inline void BNN_CAT(bnn_sum4, BNN_KS)(BNN_V a, BNN_V b, BNN_V c, BNN_V d, double s[4])
{
#ifdef BNN_RED4
    const BNN_V r = BNN_RED4(a, b, c, d);
    for (int j = 0; j < 4; j++) s[j] = r[j];
#else
    s[0] = BNN_CAT(bnn_hsum, BNN_KS)(a);
    s[1] = BNN_CAT(bnn_hsum, BNN_KS)(b);
    s[2] = BNN_CAT(bnn_hsum, BNN_KS)(c);
    s[3] = BNN_CAT(bnn_hsum, BNN_KS)(d);
#endif
}

/* The backward pass's first sweep over a hidden column of a tile, from
 * the output's G (d/d its mean) and dV (d/d its variance) [tr], the
 * unit's values a and Q q [tr] and its outgoing weight's mean w2 and
 * variance s22: into s[0], s[1] the outgoing weight's a' G and (a^2)' dV;
 * g = (G w2 + 2 a dV s22) act'(a) into gb and dv = g q into vb [tr], and
 * their sums (the bias's) into s[2], s[3] */
BNN_ATTR static inline void BNN_CAT(bnn_fpass1, BNN_KS)(ptrdiff_t tr, const double *a, const double *q,
                                                        const double *G, const double *dV, double w2,
                                                        double s22, int relu, double *gb, double *vb,
                                                        double s[4])
{
    const int VW = BNN_VW;
    const BNN_V zero = {0};
    BNN_V so = zero, sv2 = zero, sg = zero, sv = zero;
    ptrdiff_t r = 0;
    for (; r + VW <= tr; r += VW) {
        const BNN_V av = BNN_LD(a + r), gv = BNN_LD(G + r), dv = BNN_LD(dV + r);
        so += av * gv;
        sv2 += (av * av) * dv;
        const BNN_V da = gv * w2 + 2.0 * av * (dv * s22);
        const BNN_V g = BNN_CAT(bnn_dact, BNN_KS)(da, av, relu);
        const BNN_V v = g * BNN_LD(q + r);
        BNN_ST(gb + r, g);
        BNN_ST(vb + r, v);
        sg += g;
        sv += v;
    }
    BNN_CAT(bnn_sum4, BNN_KS)(so, sv2, sg, sv, s);
    for (; r < tr; r++) {
        s[0] += a[r] * G[r];
        s[1] += (a[r] * a[r]) * dV[r];
        const double da = G[r] * w2 + 2.0 * a[r] * (dV[r] * s22);
        const double g = relu ? (a[r] > 0.0 ? da : 0.0) : da * (1.0 - a[r] * a[r]);
        gb[r] = g;
        vb[r] = g * q[r];
        s[2] += g;
        s[3] += vb[r];
    }
}

/* the eight sums x0 .. x3, y0 .. y3 (vectors) with the rows past the
 * vectors' (trv .. tr) added into C[0 .. nj), C2[0 .. nj) */
BNN_ATTR static inline void BNN_CAT(bnn_fsum8, BNN_KS)(BNN_V x0, BNN_V x1, BNN_V x2, BNN_V x3, BNN_V y0, BNN_V y1,
                                                       BNN_V y2, BNN_V y3, ptrdiff_t trv, ptrdiff_t tr,
                                                       const double *a0, const double *b0, const double *gb,
                                                       const double *vb, int nj, double *C, double *C2)
{
    double u[4], w[4];
#ifdef BNN_RED8
    const BNN_V sum = BNN_RED8(x0, x1, x2, x3, y0, y1, y2, y3);
    for (int j = 0; j < 4; j++) {
        u[j] = sum[j];
        w[j] = sum[4 + j];
    }
#else
    BNN_CAT(bnn_sum4, BNN_KS)(x0, x1, x2, x3, u);
    BNN_CAT(bnn_sum4, BNN_KS)(y0, y1, y2, y3, w);
#endif
    for (int j = 0; j < nj; j++) {
        for (ptrdiff_t r = trv; r < tr; r++) {
            u[j] += a0[j * tr + r] * gb[r];
            w[j] += b0[j * tr + r] * vb[r];
        }
        C[j] += u[j];
        C2[j] += w[j];
    }
}

/* The second sweep over one (two: `two`) hidden columns: the incoming
 * weights' A' g and A2' dv (g and dv in gb, vb; the second column's at +
 * tr) added to C, C2 [d] (the second column's at + d), four inputs at a
 * time, each input's vectors loaded once for both columns (two: 20
 * vectors live, for AVX-512's 32 registers). A, A2: tr x d
 * with columns up to a multiple of 4 (zeros past d). */
BNN_ATTR static inline __attribute__((always_inline)) void
BNN_CAT(bnn_fpass2, BNN_KS)(ptrdiff_t tr, ptrdiff_t d, const double *A, const double *A2, const double *gb,
                            const double *vb, double *C, double *C2, const int two)
{
    const int VW = BNN_VW;
    const BNN_V zero = {0};
    const ptrdiff_t trv = tr - tr % VW;
    for (ptrdiff_t c = 0; c < d; c += 4) {
        BNN_V x0 = zero, x1 = zero, x2 = zero, x3 = zero, y0 = zero, y1 = zero, y2 = zero, y3 = zero;
        BNN_V p0 = zero, p1 = zero, p2 = zero, p3 = zero, q0 = zero, q1 = zero, q2 = zero, q3 = zero;
        const double *a0 = A + c * tr, *b0 = A2 + c * tr;
        for (ptrdiff_t r = 0; r < trv; r += VW) {
            const BNN_V a_0 = BNN_LD(a0 + r), a_1 = BNN_LD(a0 + tr + r), a_2 = BNN_LD(a0 + 2 * tr + r),
                        a_3 = BNN_LD(a0 + 3 * tr + r);
            const BNN_V b_0 = BNN_LD(b0 + r), b_1 = BNN_LD(b0 + tr + r), b_2 = BNN_LD(b0 + 2 * tr + r),
                        b_3 = BNN_LD(b0 + 3 * tr + r);
            const BNN_V g = BNN_LD(gb + r), v = BNN_LD(vb + r);
            x0 += a_0 * g;
            x1 += a_1 * g;
            x2 += a_2 * g;
            x3 += a_3 * g;
            y0 += b_0 * v;
            y1 += b_1 * v;
            y2 += b_2 * v;
            y3 += b_3 * v;
            if (two) {
                const BNN_V h = BNN_LD(gb + tr + r), u = BNN_LD(vb + tr + r);
                p0 += a_0 * h;
                p1 += a_1 * h;
                p2 += a_2 * h;
                p3 += a_3 * h;
                q0 += b_0 * u;
                q1 += b_1 * u;
                q2 += b_2 * u;
                q3 += b_3 * u;
            }
        }
        const int nj = d - c < 4 ? (int)(d - c) : 4;
        BNN_CAT(bnn_fsum8, BNN_KS)(x0, x1, x2, x3, y0, y1, y2, y3, trv, tr, a0, b0, gb, vb, nj, C + c, C2 + c);
        if (two)
            BNN_CAT(bnn_fsum8, BNN_KS)(p0, p1, p2, p3, q0, q1, q2, q3, trv, tr, a0, b0, gb + tr, vb + tr, nj,
                                       C + d + c, C2 + d + c);
    }
}

/* The backward pass over hidden columns o (and o + 1: nc = 2) of a tile:
 * bnn_fpass1 on each (a, q at + tr for the second; w2, s22 [nc]; its
 * sums into s[4 ..]), then bnn_fpass2. gb, vb: 2 tr of scratch. */
BNN_ATTR static void BNN_CAT(k_fback, BNN_KS)(ptrdiff_t tr, ptrdiff_t d, const double *A, const double *A2,
                                              const double *a, const double *q, const double *G,
                                              const double *dV, const double *w2, const double *s22,
                                              int relu, int nc, double *gb, double *vb, double *C,
                                              double *C2, double s[8])
{
    for (int j = 0; j < nc; j++)
        BNN_CAT(bnn_fpass1, BNN_KS)(tr, a + j * tr, q + j * tr, G, dV, w2[j], s22[j], relu, gb + j * tr,
                                    vb + j * tr, s + 4 * j);
#if BNN_VW == 8
    /* both columns in one sweep where there are 32 registers */
    if (nc == 2) {
        BNN_CAT(bnn_fpass2, BNN_KS)(tr, d, A, A2, gb, vb, C, C2, 1);
        return;
    }
#endif
    for (int j = 0; j < nc; j++)
        BNN_CAT(bnn_fpass2, BNN_KS)(tr, d, A, A2, gb + j * tr, vb + j * tr, C + j * d, C2 + j * d, 0);
}

#undef BNN_CAT2
#undef BNN_CAT
#undef BNN_V
#undef BNN_LD
#undef BNN_ST
/* the includer's parameters, so that the next instruction set starts clean */
#undef BNN_VW
#undef BNN_KS
#undef BNN_ATTR
#undef BNN_SQRT
#undef BNN_RSQRT
#undef BNN_MAX0
#undef BNN_RED4
#undef BNN_RED8
