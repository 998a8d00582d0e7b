#!/usr/bin/env python3
"""NumPyro's fit of a Bayesian neural network: the peer of svir's bnn() in bench/bnn.R.

The same model: hidden layers of --hidden widths (--act relu|tanh) and one output
eta; a layer with fan-in m has weights ~ N(0, sd 1/sqrt(m)) and biases ~ N(0, 1);
gaussian: y ~ N(eta, sigma), sigma ~ HalfNormal(1); binomial: y ~ Bernoulli(logits
eta). Fitted the standard NumPyro way in float64: AutoNormal (init_scale 0.1), Adam
at a constant step size, Trace_ELBO (1 particle), --batch rows a step through
numpyro.plate("data", n, subsample_size=B), so the loss is the full-data negative
ELBO estimate. Steps are the AOT-compiled svi.update, each timed after
block_until_ready(): compile_s (svi.init and compilation), loop_s, step_ms_median
(the steps after the 50th), elbo_final (minus the mean loss of the last 10%).
With --test: per test row the predictive mean and sd of y (noise included;
binomial: of the probability) and of eta, from --ndraws draws of Predictive.

Usage (CSV columns x1..xd, y, standardised by the caller; one JSON object to --out,
a summary line to stderr):
  bnn_numpyro.py --train TRAIN.csv [--test TEST.csv] --out RES.json [--family gaussian|binomial]
      [--hidden 50[,50]] [--act relu|tanh] [--batch 32] [--steps 2000] [--lr 0.01] [--seed 1]
      [--ndraws 1000] [--subsample plate|index] [--init uniform|sample|median] [--threads T]
  bnn_numpyro.py --synthetic 50000,10 --hidden 50 --batch 256 --steps 200 --timing-only --out RES.json
--synthetic N,D: N rows of D standard normal inputs, y = sin(x1) + N(0, 0.1^2), both
standardised, instead of --train.
"""
import argparse
import json
import os
import platform
import sys
import time

import numpy as np


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", help="training CSV (columns x1..xd, y)")
    p.add_argument("--test", help="test CSV (same columns); gives the posterior predictive")
    p.add_argument("--synthetic", help="N,D: simulated training data instead of --train")
    p.add_argument("--family", choices=["gaussian", "binomial"], default="gaussian")
    p.add_argument("--hidden", default="50", help="comma-separated widths of the hidden layers")
    p.add_argument("--act", choices=["relu", "tanh"], default="relu")
    p.add_argument("--batch", type=int, default=32, help="rows per step (>= n: the full data)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--ndraws", type=int, default=1000, help="posterior predictive draws")
    p.add_argument("--threads", type=int, default=0,
                   help="T > 0: pin to T CPUs (XLA sizes its pool by them); 1 also turns off Eigen's threads")
    p.add_argument("--subsample", choices=["plate", "index"], default="plate",
                   help="plate: numpyro.plate(subsample_size=B) (its CPU Fisher-Yates draw is a B-step "
                        "loop); index: B random rows with replacement, likelihood scaled by n/B")
    p.add_argument("--init", choices=["uniform", "sample", "median"], default="uniform",
                   help="AutoNormal's init_loc_fn: init_to_uniform (its default), init_to_sample "
                        "(a prior draw), init_to_median")
    p.add_argument("--timing-only", action="store_true", help="skip the prediction")
    p.add_argument("--out", required=True, help="JSON result file")
    a = p.parse_args(argv)
    if (a.train is None) == (a.synthetic is None):
        p.error("give exactly one of --train and --synthetic")
    if a.steps < 1 or a.batch < 1:
        p.error("--steps and --batch must be positive")
    a.hidden = [int(h) for h in a.hidden.split(",") if h.strip()]
    return a


def limit_threads(t):
    """Restrict XLA to t CPU threads; must run before jax is imported."""
    if t <= 0:
        return
    if hasattr(os, "sched_setaffinity"):  # XLA sizes its thread pool by the usable CPUs
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, cpus[:t])
    if t == 1:  # and keep Eigen's matrix products on the calling thread
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false").strip()


def load(args):
    """Training inputs and response (and the test set's, or None) as float64 arrays."""
    def read(f):
        import pandas as pd
        df = pd.read_csv(f)
        xs = sorted((c for c in df.columns if c.startswith("x")), key=lambda c: int(c[1:]))
        return df[xs].to_numpy(np.float64), df["y"].to_numpy(np.float64)
    if args.synthetic:
        n, d = (int(v) for v in args.synthetic.split(","))
        rng = np.random.default_rng(args.seed)
        X = rng.standard_normal((n, d))
        y = np.sin(X[:, 0]) + 0.1 * rng.standard_normal(n)
        X, y = (X - X.mean(0)) / X.std(0), (y - y.mean()) / y.std()
    else:
        X, y = read(args.train)
    return X, y, (read(args.test) if args.test else (None, None))


def make_model(hidden, act, family, subsample="plate"):
    """The network as a NumPyro model(X, y=None, batch=None): batch < n subsamples rows."""
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    f = jax.nn.relu if act == "relu" else jnp.tanh

    def model(X, y=None, batch=None):
        n, d = X.shape
        sizes = [d] + hidden + [1]
        layers = []
        for l, (m, k) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
            W = numpyro.sample(f"W{l}", dist.Normal(0.0, 1.0 / np.sqrt(m)).expand([m, k]).to_event(2))
            b = numpyro.sample(f"b{l}", dist.Normal(0.0, 1.0).expand([k]).to_event(1))
            layers.append((W, b))
        sigma = numpyro.sample("sigma", dist.HalfNormal(1.0)) if family == "gaussian" else None

        def likelihood(Xb, yb):
            h = Xb
            for W, b in layers[:-1]:
                h = f(h @ W + b)
            eta = numpyro.deterministic("eta", (h @ layers[-1][0] + layers[-1][1])[..., 0])
            lik = dist.Normal(eta, sigma) if family == "gaussian" else dist.Bernoulli(logits=eta)
            numpyro.sample("y", lik, obs=yb)

        sub = batch is not None and batch < n
        if sub and subsample == "index":
            # B rows drawn with replacement, their log-likelihood scaled by n/B
            idx = jax.random.randint(numpyro.prng_key(), (batch,), 0, n)
            with numpyro.handlers.scale(scale=n / batch), numpyro.plate("data", batch):
                likelihood(X[idx], None if y is None else y[idx])
        else:
            # the plate draws B rows without replacement and scales by n/B itself
            with numpyro.plate("data", n, subsample_size=batch if sub else None):
                likelihood(numpyro.subsample(X, event_dim=1),
                           None if y is None else numpyro.subsample(y, event_dim=0))
    return model


def fit(model, X, y, args):
    """SVI with a timed, compiled update loop; the guide, its parameters and the timings."""
    import jax
    import jax.numpy as jnp
    from numpyro.infer import SVI, Trace_ELBO, init_to_median, init_to_sample, init_to_uniform
    from numpyro.infer.autoguide import AutoNormal
    from numpyro.optim import Adam
    X, y = jnp.asarray(X), jnp.asarray(y)
    batch = args.batch if args.batch < X.shape[0] else None
    init = {"uniform": init_to_uniform, "sample": init_to_sample, "median": init_to_median}[args.init]
    guide = AutoNormal(model, init_loc_fn=init, init_scale=0.1)
    svi = SVI(model, guide, Adam(step_size=args.lr), Trace_ELBO())
    t0 = time.perf_counter()
    state = svi.init(jax.random.PRNGKey(args.seed), X, y, batch)
    # batch is static (it sets the plate's shapes): close over it, pass the data as arguments
    update = jax.jit(lambda s, X, y: svi.update(s, X, y, batch)).lower(state, X, y).compile()
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - t0
    losses, times = [], []
    t_loop = time.perf_counter()
    for _ in range(args.steps):
        t = time.perf_counter()
        state, loss = update(state, X, y)
        loss.block_until_ready()
        times.append(time.perf_counter() - t)
        losses.append(loss)
    loop_s = time.perf_counter() - t_loop
    losses = np.asarray(jax.device_get(losses), dtype=np.float64)
    skip = 50 if args.steps > 50 else 0  # warm-up steps left out of the median
    return guide, svi.get_params(state), {
        "compile_s": compile_s, "loop_s": loop_s,
        "step_ms_median": 1e3 * float(np.median(times[skip:])),
        "elbo_final": -float(np.mean(losses[-max(1, args.steps // 10):])), "loss_first": float(losses[0])}


def predict(model, guide, params, Xt, args):
    """Per test row: the predictive mean and sd of y (noise included; binomial: of the
    probability), and of eta."""
    import jax
    from numpyro.infer import Predictive
    pr = Predictive(model, guide=guide, params=params, num_samples=args.ndraws, return_sites=["y", "eta"])
    s = pr(jax.random.PRNGKey(args.seed + 1), jax.numpy.asarray(Xt))
    eta = np.asarray(s["eta"])
    yd = np.asarray(s["y"], dtype=np.float64) if args.family == "gaussian" else 1.0 / (1.0 + np.exp(-eta))
    return {"pred_mean": yd.mean(0).tolist(), "pred_sd": yd.std(0, ddof=1).tolist(),
            "eta_mean": eta.mean(0).tolist(), "eta_sd": eta.std(0, ddof=1).tolist()}


def main(argv=None):
    args = parse_args(argv)
    limit_threads(args.threads)
    import jax
    import numpyro
    jax.config.update("jax_enable_x64", True)  # float64, as svir
    X, y, (Xt, yt) = load(args)
    model = make_model(args.hidden, args.act, args.family, args.subsample)
    guide, params, res = fit(model, X, y, args)
    out = {"versions": {"numpyro": numpyro.__version__, "jax": jax.__version__,
                        "python": platform.python_version()},
           "dtype": "float64", "n": int(X.shape[0]), "d": int(X.shape[1]), "family": args.family,
           "hidden": args.hidden, "act": args.act, "batch": min(args.batch, int(X.shape[0])),
           "steps": args.steps, "lr": args.lr, "seed": args.seed, "init": args.init,
           "subsample": args.subsample, "threads": args.threads, "cpu_count": os.cpu_count(),
           "xla_flags": os.environ.get("XLA_FLAGS", ""), "device": str(jax.devices()[0]), **res}
    if Xt is not None and not args.timing_only:
        out.update(predict(model, guide, params, Xt, args))
        if args.family == "gaussian":  # test RMSE on the standardised scale, for the log line
            out["test_rmse"] = float(np.sqrt(np.mean((yt - np.asarray(out["pred_mean"])) ** 2)))
    with open(args.out, "w") as fh:
        json.dump(out, fh)
    rmse = " test RMSE %.3f" % out["test_rmse"] if "test_rmse" in out else ""
    print("numpyro bnn n=%d d=%d hidden=%s batch=%d steps=%d on %s: compile %.2f s, loop %.2f s, %.3f ms/step, "
          "ELBO %.6g%s" % (out["n"], out["d"], args.hidden, out["batch"], args.steps, out["device"],
                           res["compile_s"], res["loop_s"], res["step_ms_median"], res["elbo_final"], rmse),
          file=sys.stderr)


if __name__ == "__main__":
    main()
