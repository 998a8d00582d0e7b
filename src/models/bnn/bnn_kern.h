/* The networks' tile kernels (bnn_model.c), written once for a vector of
 * BNN_VW doubles and included once per instruction set: the includer
 * defines BNN_VW (2 or 4), BNN_KS (a name suffix), BNN_ATTR (the
 * functions' target attribute, or nothing), and for x86 BNN_SQRT(v),
 * BNN_MAX0(v) (a vector's square roots, its maximum with 0), or leaves
 * them undefined for plain loops. Tiles are column-major with leading
 * dimension tr. No R API. */
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

/* The backward pass through the activation over a column of a tile: da
 * = Gn + 2 A dVn (d/dA), g = da act'(A) (relu: A > 0; tanh: 1 - A^2),
 * then Gn = g, dVn = g Q, and the column's sums of g and g Q into *sg and
 * *sv (the bias's gradients); vector sums, so the adds' latency does not
 * bind */
BNN_ATTR static void BNN_CAT(k_back, BNN_KS)(ptrdiff_t tr, const double *A, double *Gn,
                                             double *dVn, const double *Q, int relu, double *sg,
                                             double *sv)
{
    typedef BNN_CAT(bnn_ivec, BNN_KS) BNN_VI;
    const int VW = BNN_VW;
    const BNN_V zero = {0};
    BNN_V s0 = zero, s1 = zero;
    ptrdiff_t r = 0;
    for (; r + VW <= tr; r += VW) {
        const BNN_V a = BNN_LD(A + r), da = BNN_LD(Gn + r) + 2.0 * a * BNN_LD(dVn + r);
        const BNN_V g = relu ? (BNN_V)((BNN_VI)da & (BNN_VI)(a > zero)) : da * (1.0 - a * a);
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
#ifdef BNN_SQRT
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

#undef BNN_CAT2
#undef BNN_CAT
#undef BNN_V
#undef BNN_LD
#undef BNN_ST
