#!/usr/bin/env Rscript
# svir's PLN-PCA (pln(rank = q), issue 15) against pyPLNmodels' PlnPCA, the
# same model and variational family, in one run.
#
# Usage (from the repository root, with svir installed and pyPLNmodels in
# the Python given by --python):
#   Rscript bench/pln_pca.R [--reps=3] [--python=python3] [--lib=DIR] [--out=DIR]
#
# Data: pyPLNmodels' oaks (116 samples x 114 OTUs, its offsets; rank 3),
# and simulated PLN-PCA data (one covariate and an intercept, log-normal
# depths as offsets) at n x p = 2000 x 200 (rank 5) and 20000 x 500
# (rank 10). Each tool fits every data set --reps times with its default
# settings; reported: the median wall time (svir's whole svi_fit() call;
# pyPLNmodels' model construction and fit(), 2 torch threads), the
# iterations, and the ELBO of each tool's final parameters, both computed by
# svir's objective in double precision (so the two are on one scale), and
# for the simulated data the errors of B and Sigma = C C' against the truth
# (Sigma: relative Frobenius). The Markdown report goes to stdout and to
# <out>/pln-pca-<date>.md.

file_arg <- grep("^--file=", commandArgs(FALSE), value = TRUE)
here <- if (length(file_arg)) dirname(normalizePath(sub("^--file=", "", file_arg[1]))) else "bench"
source(file.path(here, "args.R"))
a <- bench_args("usage: Rscript bench/pln_pca.R [--reps=3] [--python=python3] [--lib=DIR] [--out=DIR]",
                c(reps = "3", python = "python3", lib = "", out = file.path(here, "results")))
reps <- as.integer(a$reps)
if (nzchar(a$lib)) .libPaths(c(normalizePath(a$lib), .libPaths()))
suppressPackageStartupMessages(library(svir))
tmp <- tempfile("plnpca")
dir.create(tmp)
py <- function(...) {
  st <- system2(a$python, c(file.path(here, "pln_pca.py"), ...), stdout = FALSE, stderr = FALSE)
  if (st != 0) stop("pyPLNmodels failed: ", paste(c(a$python, ...), collapse = " "))
}
wr <- function(x, f) writeBin(as.double(x), file.path(tmp, f))
rd <- function(f, n, m) matrix(readBin(file.path(tmp, f), "double", n * m), n, m)

# ---- the data ----------------------------------------------------------------
py("export", tmp)
dm <- scan(file.path(tmp, "oaks.dims"), quiet = TRUE)
oaks <- list(Y = rd("oaks.Y", dm[1], dm[2]), O = rd("oaks.O", dm[1], dm[2]))
oaks$X <- matrix(1, dm[1], 1)
sim <- function(n, p, q, seed) {
  set.seed(seed)
  x <- rnorm(n)
  C <- matrix(rnorm(p * q, 0, 1 / sqrt(q)), p, q)
  B <- rbind(runif(p, -1, 1), runif(p, -0.5, 0.5))
  X <- cbind(1, x)
  O <- matrix(log(5) + rnorm(n, 0, 0.3), n, p)
  Z <- X %*% B + matrix(rnorm(n * q), n) %*% t(C)
  list(Y = matrix(as.double(rpois(n * p, exp(O + Z))), n, p), O = O, X = X, B = B, Sigma = tcrossprod(C))
}
sets <- list(oaks = c(oaks, rank = 3),
             sim2000 = c(sim(2000, 200, 5, 1), rank = 5),
             sim20000 = c(sim(20000, 500, 10, 2), rank = 10))

# svir's ELBO at parameters (M, S, C, B) of the PLN-PCA objective
elbo_at <- function(s, M, S, C, B) {
  n <- nrow(s$Y)
  p <- ncol(s$Y)
  dat <- list(Y = s$Y, O = s$O, X = s$X, P = matrix(0, ncol(s$X), n),
              lgy = sum(lgamma(s$Y + 1)), cov = svir:::svir_codes$pln_cov[["pca"]],
              q = ncol(C), n = n, p = p, d = ncol(s$X))
  .Call(svir:::C_svir_pln_eval_r, dat, c(M, log(S), C, B))$J
}

rows <- list()
for (nm in names(sets)) {
  s <- sets[[nm]]
  q <- s$rank
  n <- nrow(s$Y)
  p <- ncol(s$Y)
  # svir: the design without an intercept column of its own (X is given)
  dd <- list(Y = s$Y, O = s$O, X = s$X)
  t_svir <- numeric(reps)
  for (r in seq_len(reps)) {
    t0 <- proc.time()[["elapsed"]]
    f <- svi_fit(Y ~ 0 + X + offset(O), dd, family = pln(rank = q))
    t_svir[r] <- proc.time()[["elapsed"]] - t0
  }
  e_svir <- elbo_at(s, f$factors$mean, f$factors$sd, f$loadings, f$coefficients)
  wr(s$Y, paste0(nm, ".Y"))
  wr(s$O, paste0(nm, ".O"))
  wr(s$X, paste0(nm, ".X"))
  writeLines(paste(n, p, ncol(s$X)), file.path(tmp, paste0(nm, ".dims")))
  py("fit", tmp, nm, q, reps)
  t_pyp <- scan(file.path(tmp, paste0(nm, ".pyp.times")), quiet = TRUE)
  it_pyp <- scan(file.path(tmp, paste0(nm, ".pyp.iters")), quiet = TRUE)
  # every PlnPCA fit's ELBO (each starts at random); the errors of the one
  # with the median ELBO
  pf <- lapply(seq_len(reps) - 1L, function(r) {
    f0 <- function(x) paste0(nm, ".pyp", r, ".", x)
    M <- rd(f0("M"), n, q)
    S <- abs(rd(f0("S"), n, q)) # its sqrt variance may carry a sign
    C <- rd(f0("C"), p, q)
    B <- rd(f0("B"), ncol(s$X), p)
    list(B = B, C = C, elbo = elbo_at(s, M, S, C, B))
  })
  ep_all <- vapply(pf, `[[`, 0, "elbo")
  pm <- pf[[order(ep_all)[ceiling(length(ep_all) / 2)]]]
  e_pyp <- median(ep_all)
  pB <- pm$B
  pC <- pm$C
  err <- function(B, C) {
    if (is.null(s$B)) return(c(NA, NA))
    c(max(abs(B - s$B)), norm(tcrossprod(C) - s$Sigma, "F") / norm(s$Sigma, "F"))
  }
  es <- err(f$coefficients, f$loadings)
  ep <- err(pB, pC)
  rows[[nm]] <- data.frame(
    data = sprintf("%s (%d x %d, rank %d)", nm, n, p, q),
    svir_s = median(t_svir), pyp_s = median(t_pyp), ratio = median(t_pyp) / median(t_svir),
    svir_iter = f$steps, pyp_iter = it_pyp, svir_elbo = e_svir, pyp_elbo = e_pyp,
    pyp_best = max(ep_all), pyp_worst = min(ep_all),
    svir_B = es[1], pyp_B = ep[1], svir_Sigma = es[2], pyp_Sigma = ep[2])
}
tab <- do.call(rbind, rows)
fmt <- function(x, d) ifelse(is.na(x), "-", formatC(x, format = "f", digits = d, big.mark = ","))
blas <- tryCatch(sessionInfo()$BLAS, error = function(e) "?")
lines <- c(
  sprintf("# PLN-PCA: svir against pyPLNmodels' PlnPCA (%s)", format(Sys.Date())), "",
  sprintf("svir %s (R %s, BLAS %s); pyPLNmodels %s, torch %s (2 threads); %d fits each, medians.",
          utils::packageVersion("svir"), getRversion(), blas,
          system2(a$python, c("-c", shQuote("import pyPLNmodels; print(pyPLNmodels.__version__)")), stdout = TRUE),
          system2(a$python, c("-c", shQuote("import torch; print(torch.__version__)")), stdout = TRUE), reps),
  sprintf("Machine: %s, %s cores.", Sys.info()[["nodename"]], parallel::detectCores()), "",
  "| data | svir s | PlnPCA s | PlnPCA / svir | iterations svir / PlnPCA | ELBO svir | ELBO PlnPCA median [worst, best] | max abs B error svir / PlnPCA | Sigma error svir / PlnPCA |",
  "|---|---|---|---|---|---|---|---|---|",
  sprintf("| %s | %s | %s | %s | %d / %d | %s | %s [%s, %s] | %s / %s | %s / %s |", tab$data,
          fmt(tab$svir_s, 2), fmt(tab$pyp_s, 2), fmt(tab$ratio, 1), tab$svir_iter, tab$pyp_iter,
          fmt(tab$svir_elbo, 1), fmt(tab$pyp_elbo, 1), fmt(tab$pyp_worst, 1), fmt(tab$pyp_best, 1),
          fmt(tab$svir_B, 3), fmt(tab$pyp_B, 3), fmt(tab$svir_Sigma, 3), fmt(tab$pyp_Sigma, 3)), "",
  "Both ELBOs are svir's objective (double precision) at each tool's final parameters;",
  "svir's fit is deterministic, PlnPCA starts at random (its errors are of the fit with the median ELBO).")
cat(lines, sep = "\n")
dir.create(a$out, showWarnings = FALSE, recursive = TRUE)
writeLines(lines, file.path(a$out, sprintf("pln-pca-%s.md", format(Sys.Date()))))
