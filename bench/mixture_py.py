#!/usr/bin/env python3
"""Count mixtures (issue 17): the Python peers of bench/mixture.R.

Usage (normally called by bench/mixture.R with --fits=...,scvi,plnmix):
  python bench/mixture_py.py --dir=DIR --fit=scvi|plnmix [--K=5] [--seed=1]
                             [--threads=2] [--mem-gb=0]

DIR holds what bench/mixture.R wrote: counts.mtx (cells x genes, Matrix
Market) and cells.csv (columns batch, sf: each cell's batch and size factor).
What is run, one fit per call (so that the peak memory is the fit's own):
  scvi:   scvi-tools' SCVI on the raw counts (setup_anndata with
          batch_key = "batch"; the model's defaults: 10 latent dimensions, its
          own observed library sizes, not the simulated size factors), trained
          on the CPU with train()'s defaults (max_epochs by scvi's heuristic,
          min(400, 20000 / n x 400)); then scanpy's neighbours on the latent
          means (use_rep = "X_scVI", defaults) and Leiden at its default
          resolution (1): the number of clusters is Leiden's own;
  plnmix: pyPLNmodels' PlnMixture(endog, n_cluster = K, exog = the batch
          indicator, offsets = log size factor of each cell, repeated over the
          genes), fit() with its defaults (maxiter 400, tol 1e-6, lr 0.01;
          it starts from a PlnDiag fit and a Gaussian mixture).
Reported, in DIR/<fit>-labels.csv (one label per cell, column "label") and
DIR/<fit>-result.csv (columns time, peak_mb, info, versions): the wall time
of the fit (from the counts in memory to the labels: building the AnnData
or the tensors, training, latent space, neighbours and Leiden; imports and
reading the files excluded, and stated in info), the process's peak
resident set (ru_maxrss, so it includes the imports), and notes (epochs,
number of clusters, import and read times). Torch runs on --threads threads;
--mem-gb > 0 caps the process's address space (RLIMIT_AS) at that many GB, so
that a fit too large for the machine fails with an allocation error.
"""
import argparse
import os
import resource
import sys
import time

t_start = time.perf_counter()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--fit", required=True, choices=["scvi", "plnmix"])
    ap.add_argument("--K", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mem-gb", type=float, default=0)
    a = ap.parse_args()
    if a.mem_gb > 0:
        lim = int(a.mem_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(v, str(a.threads))

    import numpy as np
    import pandas as pd
    import scipy.io
    import scipy.sparse
    import torch

    torch.set_num_threads(a.threads)
    if a.fit == "scvi":
        import anndata
        import scanpy as sc
        import scvi
        import leidenalg
        versions = (f"torch {torch.__version__}, scvi-tools {scvi.__version__}, "
                    f"scanpy {sc.__version__}, anndata {anndata.__version__}, "
                    f"leidenalg {leidenalg.version}")
    else:
        import pyPLNmodels
        from pyPLNmodels import PlnMixture
        from importlib.metadata import version
        versions = f"torch {torch.__version__}, pyPLNmodels {version('pyPLNmodels')}"
    t_import = time.perf_counter() - t_start

    t0 = time.perf_counter()
    Y = scipy.sparse.csr_matrix(scipy.io.mmread(os.path.join(a.dir, "counts.mtx")))
    cells = pd.read_csv(os.path.join(a.dir, "cells.csv"))
    t_read = time.perf_counter() - t0
    n, p = Y.shape

    np.random.seed(a.seed)
    torch.manual_seed(a.seed)
    t0 = time.perf_counter()
    if a.fit == "scvi":
        scvi.settings.seed = a.seed
        torch.set_num_threads(a.threads)
        ad = anndata.AnnData(X=Y.astype(np.float32))
        ad.obs["batch"] = pd.Categorical(cells["batch"].astype(str).values)
        ad.obs_names = [f"c{i}" for i in range(n)]
        scvi.model.SCVI.setup_anndata(ad, batch_key="batch")
        model = scvi.model.SCVI(ad)
        model.train(accelerator="cpu", devices=1)
        epochs = len(model.history["elbo_train"])
        print(f"scvi: trained {epochs} epochs in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        # scanpy's neighbour graph calls getnnz(), which scipy's sparse
        # arrays no longer have (it failed at 10^4 cells after 40 minutes
        # of training, 2026-12-05); the arrays' own _getnnz is the same
        if not hasattr(scipy.sparse.csr_array, "getnnz"):
            scipy.sparse.csr_array.getnnz = lambda self, axis=None: self._getnnz(axis=axis)
        ad.obsm["X_scVI"] = model.get_latent_representation()
        sc.pp.neighbors(ad, use_rep="X_scVI")
        sc.tl.leiden(ad)
        labels = ad.obs["leiden"].astype(int).to_numpy() + 1
        info = f"scVI {epochs} epochs, Leiden {len(np.unique(labels))} clusters"
    else:
        endog = torch.from_numpy(Y.toarray().astype(np.float64))
        exog = torch.from_numpy((cells["batch"].astype(str).values == "B").astype(np.float64)[:, None])
        offsets = torch.from_numpy(np.repeat(np.log(cells["sf"].to_numpy())[:, None], p, axis=1))
        model = PlnMixture(endog, n_cluster=a.K, exog=exog, offsets=offsets)
        model.fit()
        labels = np.asarray(model.clusters) + 1
        info = f"PlnMixture n_cluster = {a.K}, {model._elbo_criterion_monitor.iteration_number} iterations"
    t_fit = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    info += f"; imports {t_import:.0f} s, reading {t_read:.1f} s (not in the time)"

    pd.DataFrame({"label": labels}).to_csv(os.path.join(a.dir, f"{a.fit}-labels.csv"), index=False)
    pd.DataFrame({"time": [t_fit], "peak_mb": [peak_mb], "info": [info], "versions": [versions]}).to_csv(
        os.path.join(a.dir, f"{a.fit}-result.csv"), index=False)
    print(f"{a.fit}: {t_fit:.1f} s, peak {peak_mb:.0f} MB; {info}", file=sys.stderr)


if __name__ == "__main__":
    main()
