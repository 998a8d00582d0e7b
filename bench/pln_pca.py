"""pyPLNmodels' PlnPCA on the data of bench/pln_pca.R (called by it).

  python bench/pln_pca.py export DIR
      writes pyPLNmodels' oaks data (endog, offsets: 116 x 114) to DIR as
      raw float64 (column-major) with their dims in DIR/oaks.dims
  python bench/pln_pca.py fit DIR NAME RANK REPS
      fits PlnPCA (default settings: maxiter 400, lr 0.01, tol 1e-6) REPS
      times to DIR/NAME.{Y,O,X} (raw float64, column-major; dims in
      NAME.dims: n p d) and writes each fit's parameters (NAME.pyp<r>.M,
      .S: n x q; .C: p x q; .B: d x p, float64 column-major) and the wall
      times (NAME.pyp.times) to DIR.
"""
import sys
import time

import numpy as np
import torch


def read(path, n, m):
    return np.fromfile(path, dtype=np.float64).reshape((m, n)).T


def write(path, a):
    np.asarray(a, dtype=np.float64).T.tofile(path)


def main():
    torch.set_num_threads(2)
    from pyPLNmodels import PlnPCA, load_oaks

    cmd, d = sys.argv[1], sys.argv[2]
    if cmd == "export":
        oaks = load_oaks()
        Y = np.asarray(oaks["endog"], dtype=np.float64)
        O = np.asarray(oaks["offsets"], dtype=np.float64)
        write(f"{d}/oaks.Y", Y)
        write(f"{d}/oaks.O", O)
        with open(f"{d}/oaks.dims", "w") as f:
            f.write(f"{Y.shape[0]} {Y.shape[1]}\n")
        return
    name, rank, reps = sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    n, p, dd = (int(v) for v in open(f"{d}/{name}.dims").read().split())
    Y = read(f"{d}/{name}.Y", n, p)
    O = read(f"{d}/{name}.O", n, p)
    X = read(f"{d}/{name}.X", n, dd)
    times = []
    for r in range(reps):
        t0 = time.perf_counter()
        m = PlnPCA(Y, exog=X, offsets=O, add_const=False, rank=rank)
        m.fit()
        times.append(time.perf_counter() - t0)
        # every fit's parameters (its start is random): NAME.pyp<r>.*
        write(f"{d}/{name}.pyp{r}.M", m.latent_mean.detach().numpy())
        write(f"{d}/{name}.pyp{r}.S", m.latent_sqrt_variance.detach().numpy())
        write(f"{d}/{name}.pyp{r}.C", m.components.detach().numpy())
        write(f"{d}/{name}.pyp{r}.B", m.coef.detach().numpy())
    np.savetxt(f"{d}/{name}.pyp.times", np.array(times))
    with open(f"{d}/{name}.pyp.iters", "w") as f:
        f.write(f"{m.optim_details['Number of iterations done']}\n")


if __name__ == "__main__":
    main()
