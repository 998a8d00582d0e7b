/* Adam over an array (core/svir_adam.h). */
#include "core/svir_adam.h"
#include "core/svir_philox.h" /* SVIR_BM_VEC and the SSE2 vector types */

#include <string.h>

void svir_adam(double *par, double *mom, double *vel, const double *g, ptrdiff_t n,
               double lr, double bc1, double bc2)
{
    /* lr (m / bc1) / (sqrt(v / bc2) + eps), with the bias corrections taken
     * out of the loop: one division and one square root per parameter */
    double a, sb;
    svir_adam_consts(lr, bc1, bc2, &a, &sb);
    ptrdiff_t k = 0;
#ifdef SVIR_BM_VEC
    /* two parameters at a time in SSE2 registers (the scalar loop's square
     * root cannot be vectorised by the compiler under -fmath-errno); the
     * same operations lane by lane, so the same numbers */
    for (; k + 2 <= n; k += 2) {
        svir_v2d m0, v0, g0, p0;
        memcpy(&m0, mom + k, sizeof m0);
        memcpy(&v0, vel + k, sizeof v0);
        memcpy(&g0, g + k, sizeof g0);
        memcpy(&p0, par + k, sizeof p0);
        const svir_v2d mk = SVIR_ADAM_B1 * m0 + (1.0 - SVIR_ADAM_B1) * g0;
        const svir_v2d vk = SVIR_ADAM_B2 * v0 + (1.0 - SVIR_ADAM_B2) * g0 * g0;
        p0 += a * mk / (svir_v2_sqrt(vk) * sb + SVIR_ADAM_EPS);
        memcpy(mom + k, &mk, sizeof mk);
        memcpy(vel + k, &vk, sizeof vk);
        memcpy(par + k, &p0, sizeof p0);
    }
#endif
    for (; k < n; k++) svir_adam1(par, mom, vel, g, k, a, sb);
}
