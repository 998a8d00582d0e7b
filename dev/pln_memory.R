# The memory per count of pln() fits, for svir_pln_memory() (R/pln-fit.R):
# one fit per process at n = 20000, p = 300, under GNU time, whose maximum
# resident size (R's copies included) divided by n p doubles gives the
# doubles per count. From the repository root, with svir installed in LIB:
#
#   for k in full diag rank mb qem pca; do
#     /usr/bin/time -f "$k %M kB" Rscript dev/pln_memory.R $k LIB; done
#
# 2026-12-03 (2-core VM, OpenBLAS): full 2,233,580 kB, diagonal 2,042,736,
# rank 5 2,281,784, minibatches of 1000 742,100, QEM (rank 5) 826,576;
# with n p = 6e6 doubles (48 MB) that is about 46, 16 and 18 doubles per
# count for full-batch, minibatch and QEM fits. (rank 5 was then the model
# with residual variances, now pln(rank = 5, residual = TRUE).)
#
# PLN-PCA (pln(rank = 5), issue 15) holds no n x p array; its peak is the
# counts and R itself. Two more kinds show it against the data's size:
#   pca      the dense n = 20000, p = 300 matrix above, rank 5;
#   pcasparse  a sparse 2e5 x 2000 matrix (5% non-zero; dense it would be
#            3.2 GB), rank 10, and `base`, the same script without the fit.
# 2026-12-03 (this VM): pca 489,720 kB (against 2,275,064 for `rank`, the
# factor model, in the same session); pcasparse 1,889,616 kB against base
# 1,221,484 kB.
# Minibatch fits keep no n x p layer either (streamed variational EM,
# issue 15): `mbsparse` is the sparse matrix above with pln(rank = 10,
# residual = TRUE) in batches of 1000 (5 steps). 2026-12-04 (this VM):
# mbsparse 1,655,856 kB against base 1,221,516 kB (the build before
# refused it: its estimate was 16 doubles per count, 51 GB); mb 552,212 kB
# against 735,284 kB for the build before.
args <- commandArgs(TRUE)
if (length(args) > 1) .libPaths(c(args[2], .libPaths()))
suppressMessages(library(svir))
set.seed(1)
if (args[1] %in% c("pcasparse", "mbsparse", "base")) {
  n <- 200000
  p <- 2000
  nz <- n * p * 0.05
  Y <- Matrix::sparseMatrix(i = sample.int(n, nz, TRUE), j = sample.int(p, nz, TRUE),
                            x = as.double(rpois(nz, 2) + 1), dims = c(n, p))
  Y <- Y[, Matrix::colSums(Y) > 0]
  cat("counts:", format(object.size(Y), units = "MB"), "\n")
  if (args[1] == "base") quit(save = "no")
  fit <- if (args[1] == "pcasparse") {
    svi_fit(Y ~ 1, family = pln(rank = 10), control = svi_control(max_steps = 5))
  } else {
    suppressWarnings(svi_fit(Y ~ 1, family = pln(rank = 10, residual = TRUE),
                             control = svi_control(batch_size = 1000, max_steps = 5)))
  }
  cat("fit:", format(object.size(fit), units = "MB"), "(the counts included)\n")
  quit(save = "no")
}
n <- 20000
p <- 300
Y <- matrix(rpois(n * p, 2), n, p)
fam <- switch(args[1], full = pln(), diag = pln(covariance = "diagonal"),
              rank = pln(rank = 5, residual = TRUE), mb = pln(),
              qem = pln(rank = 5, residual = TRUE), pca = pln(rank = 5))
ctl <- if (args[1] == "mb") svi_control(batch_size = 1000, max_steps = 60) else
  svi_control(max_steps = 5)
fit <- suppressWarnings(svi_fit(Y ~ 1, list(Y = Y), family = fam, seed = 1, control = ctl,
                                method = if (args[1] == "qem") "qem" else "svi"))
