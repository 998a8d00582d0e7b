#!/usr/bin/env python3
"""NumPyro SVI on issue 3's GPU benchmark model, the peer svir-cuda is measured
against (bench/README.md, "GPU").

Poisson GLMM: N observations, an intercept and p - 1 standard-normal
covariates, two crossed random intercepts with J1 and J2 levels,
    eta_i = x_i beta + sd1 z1[g1_i] + sd2 z2[g2_i],  y_i ~ Poisson(exp(eta_i)),
non-centred like svir (z ~ N(0, 1)), beta ~ N(0, 2.5), sd ~ HalfNormal(2.5).
Guide: AutoNormal (mean-field), Adam. Full batch, and minibatches of the
observations (a subsampled plate, the likelihood scaled by N / B; all random
effects update every step, as NumPyro does).

The data come from numpy with a fixed seed; --save DIR writes them as raw
little-endian arrays (y, X column-major, g1, g2 as int32, and a JSON header)
so that another program can fit the same numbers.

Reports, per setting: steps, wall seconds of the timed steps (compilation
excluded: the scan is compiled ahead of time), steps/s, the ELBO (minus the
mean loss over the last 10% of steps), the ELBO along the way and, with
--target, the first step at which the mean ELBO of the last 100 steps
reaches the target (svir-cuda's ELBO on the same data, say).

Usage:
  python3 bench/gpu_glmm.py                      # issue 3's size: N = 10^7
  python3 bench/gpu_glmm.py --n 100000 --j1 1000 --j2 100 --steps 200   # smoke
"""
import argparse
import json
import os
import sys
import time

import numpy as np


def simulate(n, p, j1, j2, seed):
    rng = np.random.default_rng(seed)
    X = np.empty((n, p))
    X[:, 0] = 1.0
    X[:, 1:] = rng.standard_normal((n, p - 1))
    beta = np.concatenate([[0.5], rng.normal(0.0, 0.2, p - 1)])
    g1 = rng.integers(0, j1, n).astype(np.int32)
    g2 = rng.integers(0, j2, n).astype(np.int32)
    b1 = rng.normal(0.0, 0.5, j1)
    b2 = rng.normal(0.0, 0.3, j2)
    eta = X @ beta + b1[g1] + b2[g2]
    y = rng.poisson(np.exp(eta)).astype(np.float64)
    return y, X, g1, g2


def save(path, y, X, g1, g2, j1, j2):
    os.makedirs(path, exist_ok=True)
    y.astype("<f8").tofile(os.path.join(path, "y.bin"))
    np.asfortranarray(X).astype("<f8").ravel(order="F").tofile(os.path.join(path, "X.bin"))
    g1.astype("<i4").tofile(os.path.join(path, "g1.bin"))
    g2.astype("<i4").tofile(os.path.join(path, "g2.bin"))
    with open(os.path.join(path, "header.json"), "w") as f:
        json.dump({"n": int(len(y)), "p": int(X.shape[1]), "j1": j1, "j2": j2,
                   "family": "poisson", "X": "column-major float64"}, f)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--p", type=int, default=10)
    ap.add_argument("--j1", type=int, default=100_000)
    ap.add_argument("--j2", type=int, default=1_000)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=100_000, help="minibatch size (0: skip)")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--save", default="", help="write the data to this directory")
    ap.add_argument("--out", default="", help="append the result lines (JSON) to this file")
    ap.add_argument("--init", default="uniform", choices=["uniform", "median"],
                    help="AutoNormal's init_loc_fn: NumPyro's default init_to_uniform, or "
                         "init_to_median (the prior's median: 0 for the random effects)")
    ap.add_argument("--target", type=float, default=None,
                    help="also report the first step at which the mean ELBO of the last 100 "
                         "steps reaches this value (e.g. svir-cuda's, from gpucheck --data)")
    a = ap.parse_args()

    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal
    from numpyro.infer.initialization import init_to_median, init_to_uniform

    jax.config.update("jax_enable_x64", True)  # svir computes in double precision
    t0 = time.time()
    y, X, g1, g2 = simulate(a.n, a.p, a.j1, a.j2, a.seed)
    if a.save:
        save(a.save, y, X, g1, g2, a.j1, a.j2)
    t_sim = time.time() - t0
    dev = jax.devices()[0]
    yd, Xd, g1d, g2d = (jax.device_put(v, dev) for v in (y, X, g1, g2))

    def model(y, X, g1, g2, batch=None):
        n, p = X.shape
        beta = numpyro.sample("beta", dist.Normal(0.0, 2.5).expand([p]).to_event(1))
        sd1 = numpyro.sample("sd1", dist.HalfNormal(2.5))
        sd2 = numpyro.sample("sd2", dist.HalfNormal(2.5))
        z1 = numpyro.sample("z1", dist.Normal(0.0, 1.0).expand([a.j1]).to_event(1))
        z2 = numpyro.sample("z2", dist.Normal(0.0, 1.0).expand([a.j2]).to_event(1))
        with numpyro.plate("obs", n, subsample_size=batch) as idx:
            eta = X[idx] @ beta + sd1 * z1[g1[idx]] + sd2 * z2[g2[idx]]
            numpyro.sample("y", dist.Poisson(jnp.exp(eta)), obs=y[idx])

    results = []
    settings = [("full batch", None)] + ([("minibatch %d" % a.batch, a.batch)] if a.batch else [])
    for label, batch in settings:
        guide = AutoNormal(model, init_loc_fn=init_to_median if a.init == "median"
                           else init_to_uniform)
        svi = SVI(model, guide, numpyro.optim.Adam(a.lr), Trace_ELBO())
        key = jax.random.PRNGKey(a.seed)
        state = svi.init(key, yd, Xd, g1d, g2d, batch=batch)

        @jax.jit
        def run(state):
            def body(s, _):
                s, loss = svi.update(s, yd, Xd, g1d, g2d, batch=batch)
                return s, loss
            return jax.lax.scan(body, state, None, length=a.steps)

        t0 = time.time()
        compiled = run.lower(state).compile()  # ahead of time: the timing below runs only
        t_compile = time.time() - t0
        t0 = time.time()
        s_end, losses = compiled(state)
        losses = np.asarray(jax.block_until_ready(losses))
        el = time.time() - t0
        tail = max(1, a.steps // 10)
        elbo_run = -np.convolve(losses, np.ones(100) / 100, mode="valid")  # ends at step 100..
        reached = None
        if a.target is not None:
            hit = np.nonzero(elbo_run >= a.target)[0]
            reached = int(hit[0]) + 100 if hit.size else None
        res = {"tool": "numpyro", "setting": label, "init": a.init, "device": str(dev),
               "n": a.n, "p": a.p,
               "j1": a.j1, "j2": a.j2, "steps": a.steps, "seconds": el,
               "steps_per_s": a.steps / el, "elbo": float(-np.mean(losses[-tail:])),
               "compile_s": t_compile, "lr": a.lr, "target": a.target,
               "target_reached_at_step": reached,
               "elbo_at": {int(k): float(elbo_run[k - 100])
                           for k in np.linspace(100, a.steps, 11).astype(int)} if a.steps >= 100 else {},
               "jax": jax.__version__, "numpyro": numpyro.__version__}
        results.append(res)
        print("numpyro %-18s %s, init %s: %d steps in %.3f s = %.1f steps/s, ELBO %.1f (compile "
              "%.1f s)" % (label, dev, a.init, a.steps, el, a.steps / el, res["elbo"], t_compile))
        if res["elbo_at"]:
            print("  ELBO (mean of the last 100 steps) at step: " +
                  ", ".join("%d: %.4g" % kv for kv in res["elbo_at"].items()))
        if a.target is not None:
            print("  target ELBO %.1f reached at step %s (%s)" %
                  (a.target, reached, "%.3f s at the rate above" % (reached * el / a.steps)
                   if reached else "not within %d steps" % a.steps))
        sys.stdout.flush()
    print("data: N = %d, p = %d, J1 = %d, J2 = %d (simulated in %.1f s)" %
          (a.n, a.p, a.j1, a.j2, t_sim))
    if a.out:
        with open(a.out, "a") as f:
            for r in results:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
