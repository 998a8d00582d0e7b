#!/usr/bin/env Rscript
# The cost of cutting Sigma's inverse into pieces (src/models/pln/pln_blas.c):
# pln()'s full-covariance objective at n = 200 and p = 2000, 3000 and 4000,
# where the p^3 inverse is most of the work, with the inverse as one LAPACK
# call (dpotrf + dpotri; the piece size set above p^3 / 3 flops) and as the
# blocked Cholesky, triangular inverse and product with interrupt polls
# between blocks (the default pieces of 1e9 flops). Medians of `reps`
# evaluations each, alternating; the objective must agree to 1e-10.
#
# Usage: Rscript bench/pln_inverse.R [--reps=3] [--lib=LIB]

file_arg <- grep("^--file=", commandArgs(FALSE), value = TRUE)
here <- if (length(file_arg)) dirname(normalizePath(sub("^--file=", "", file_arg[1]))) else "bench"
source(file.path(here, "args.R"))
a <- bench_args("usage: Rscript bench/pln_inverse.R [--reps=3] [--lib=LIB]", c(reps = "3", lib = ""))
if (nzchar(a$lib)) .libPaths(c(normalizePath(a$lib), .libPaths()))
suppressMessages(library(svir))
ev <- svir:::C_svir_pln_eval_r
pieces <- svir:::C_svir_pln_blas_flops_r
cat(sprintf("| p | one LAPACK call, s | blocked, s | ratio | objective equal |\n|---:|---:|---:|---:|---|\n"))
for (p in c(2000, 3000, 4000)) {
  set.seed(1)
  n <- 200
  X <- matrix(1, n, 1)
  Y <- matrix(as.double(rpois(n * p, 3)), n, p)
  dat <- list(Y = Y, X = X, P = solve(crossprod(X), t(X)), lgy = 0, cov = 0L, n = n, p = p, d = 1L)
  par <- c(log1p(Y) + rnorm(n * p, 0, 0.3), rep(log(0.3), n * p))
  timed <- function() {
    t0 <- proc.time()[["elapsed"]]
    r <- .Call(ev, dat, par)
    c(proc.time()[["elapsed"]] - t0, r$J)
  }
  res <- replicate(as.integer(a$reps), {
    old <- .Call(pieces, 1e15)
    one <- timed()
    .Call(pieces, old)
    c(one, timed())
  })
  t1 <- stats::median(res[1, ])
  t2 <- stats::median(res[3, ])
  cat(sprintf("| %d | %.2f | %.2f | %.2f | %s |\n", p, t1, t2, t2 / t1,
              isTRUE(all.equal(res[2, ], res[4, ], tolerance = 1e-10))))
}
cat(sprintf("\n%d cores; BLAS: %s\n", parallel::detectCores(), sessionInfo()$BLAS))
