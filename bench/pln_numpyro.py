#!/usr/bin/env python3
"""NumPyro's fit of the Poisson-lognormal model, for bench/pln.R.

The same model and variational family as svir's pln(): Z_i ~ N(X_i B, Sigma),
Y_ij ~ Poisson(exp(O_ij + Z_ij)), q(Z_i) = N(M_i, diag(S_i^2)), B and Sigma
point estimates (numpyro.param; Sigma full through its Cholesky factor, or
diagonal). SVI with Adam on the Monte Carlo ELBO (one particle), the
usual way to fit it in NumPyro. The closed-form ELBO of the final
parameters (the same formula svir maximises, not profiled) is reported so
that the two can be compared on one number.

Usage: pln_numpyro.py DIR STEPS LR   (DIR holds Y.bin, X.bin, O.bin as raw
little-endian doubles, column-major, and dims.txt "n p d cov")
Prints one JSON line.
"""
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import gammaln
from numpyro.infer import SVI, Trace_ELBO
from numpyro.optim import Adam

jax.config.update("jax_enable_x64", True)


def load(d):
    n, p, k, cov = [int(v) for v in open(os.path.join(d, "dims.txt")).read().split()]
    rd = lambda name, shape: np.fromfile(os.path.join(d, name), dtype="<f8").reshape(shape, order="F")
    return rd("Y.bin", (n, p)), rd("X.bin", (n, k)), rd("O.bin", (n, p)), cov


def main():
    d, steps, lr = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    Y, X, O, cov = load(d)
    n, p = Y.shape
    k = X.shape[1]
    Y, X, O = jnp.asarray(Y), jnp.asarray(X), jnp.asarray(O)
    B0 = jnp.linalg.lstsq(X, jnp.log1p(Y) - O)[0]

    def model():
        B = numpyro.param("B", B0)
        if cov == 0:
            L = numpyro.param("L", 0.5 * jnp.eye(p), constraint=dist.constraints.lower_cholesky)
            prior = dist.MultivariateNormal(X @ B, scale_tril=L)
        else:
            sd = numpyro.param("sd", 0.5 * jnp.ones(p), constraint=dist.constraints.positive)
            prior = dist.Normal(X @ B, sd).to_event(1)
        with numpyro.plate("rows", n):
            Z = numpyro.sample("Z", prior)
            numpyro.sample("Y", dist.Poisson(jnp.exp(O + Z)).to_event(1), obs=Y)

    def guide():
        M = numpyro.param("M", jnp.log1p(Y) - O)
        S = numpyro.param("S", 0.1 * jnp.ones((n, p)), constraint=dist.constraints.positive)
        with numpyro.plate("rows", n):
            numpyro.sample("Z", dist.Normal(M, S).to_event(1))

    svi = SVI(model, guide, Adam(lr), Trace_ELBO())
    t0 = time.time()
    res = svi.run(jax.random.PRNGKey(0), steps, progress_bar=False)
    jax.block_until_ready(res.params)
    secs = time.time() - t0  # JIT compilation included (a few seconds)
    P = res.params
    M, S, B = P["M"], P["S"], P["B"]
    Sig = P["L"] @ P["L"].T if cov == 0 else jnp.diag(P["sd"] ** 2)
    Om = jnp.linalg.inv(Sig)
    R = M - X @ B
    A = jnp.exp(O + M + S ** 2 / 2)
    _, logdet = jnp.linalg.slogdet(Sig)
    elbo = (jnp.sum(Y * (O + M) - A - gammaln(Y + 1) + jnp.log(S))
            - n / 2 * logdet - 0.5 * jnp.sum((R @ Om) * R) - 0.5 * jnp.sum(S ** 2 * jnp.diag(Om)[None, :])
            + n * p / 2)
    print(json.dumps({"steps": steps, "lr": lr, "seconds": secs,
                      "elbo_closed_form": float(elbo), "loss_last": float(res.losses[-1]),
                      "device": str(jax.devices()[0])}))


if __name__ == "__main__":
    main()
