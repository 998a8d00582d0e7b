# The memory per count of pln() fits, for svir_pln_memory() (R/pln-fit.R):
# one fit per process at n = 20000, p = 300, under GNU time, whose maximum
# resident size (R's copies included) divided by n p doubles gives the
# doubles per count. From the repository root, with svir installed in LIB:
#
#   for k in full diag rank mb qem; do
#     /usr/bin/time -f "$k %M kB" Rscript dev/pln_memory.R $k LIB; done
#
# 2026-12-03 (2-core VM, OpenBLAS): full 2,233,580 kB, diagonal 2,042,736,
# rank 5 2,281,784, minibatches of 1000 742,100, QEM (rank 5) 826,576;
# with n p = 6e6 doubles (48 MB) that is about 46, 16 and 18 doubles per
# count for full-batch, minibatch and QEM fits.
args <- commandArgs(TRUE)
if (length(args) > 1) .libPaths(c(args[2], .libPaths()))
suppressMessages(library(svir))
set.seed(1)
n <- 20000
p <- 300
Y <- matrix(rpois(n * p, 2), n, p)
fam <- switch(args[1], full = pln(), diag = pln(covariance = "diagonal"), rank = pln(rank = 5),
              mb = pln(), qem = pln(rank = 5))
ctl <- if (args[1] == "mb") svi_control(batch_size = 1000, max_steps = 60) else
  svi_control(max_steps = 5)
fit <- suppressWarnings(svi_fit(Y ~ 1, list(Y = Y), family = fam, seed = 1, control = ctl,
                                method = if (args[1] == "qem") "qem" else "svi"))
