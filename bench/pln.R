#!/usr/bin/env Rscript
# svir benchmark (issue 5): the Poisson-lognormal model on the CPU at the
# sizes of PLNmodels' published timings, with NumPyro's SVI on the same data
# in the same run.
#
# Usage (from the repository root, with svir installed):
#   Rscript bench/pln.R [--reps=3] [--numpyro-steps=500] [--no-numpyro]
#                       [--lib=DIR] [--out=DIR]
#
# Two data sets, simulated here at the sizes of PLNmodels' benchmarks
# (PLNmodels' own data are not available offline): n = 3918, p = 500 fitted
# with a diagonal covariance, and n = 880, p = 259 with a full covariance
# (its latent covariance of rank 5 plus a diagonal), one covariate plus an
# intercept, log-normal sequencing depths as offsets. PLNmodels' published
# times for these sizes are 5.7-37 s and 3.5-11.7 s; issue 5's targets are
# 5 s and 3 s at a converged ELBO.
#
# Reported: svir's median wall time over --reps fits (each the whole
# svi_fit() call), its iterations and final ELBO, and its ELBO trace (the
# gap to the final ELBO after 5, 10, 20 and 40 iterations); NumPyro's SVI
# (bench/pln_numpyro.py: the same model and variational family, Adam 0.01,
# one-particle Monte Carlo ELBO, --numpyro-steps steps) with its wall time
# (JIT compilation included) and the closed-form ELBO of its final
# parameters, to compare with svir's at the same point of the same model. The Markdown report goes to
# stdout and to <out>/pln-<date>.md.

args <- commandArgs(trailingOnly = TRUE)
get <- function(flag, default) {
  hit <- grep(paste0("^--", flag, "(=|$)"), args, value = TRUE)
  if (length(hit)) sub(paste0("^--", flag, "=?"), "", hit[length(hit)]) else default
}
file_arg <- grep("^--file=", commandArgs(FALSE), value = TRUE)
here <- if (length(file_arg)) dirname(normalizePath(sub("^--file=", "", file_arg[1]))) else "bench"
reps <- as.integer(get("reps", "3"))
np_steps <- as.integer(get("numpyro-steps", "500"))
use_np <- !length(grep("^--no-numpyro$", args))
lib <- get("lib", "")
out_dir <- get("out", file.path(here, "results"))
if (nzchar(lib)) .libPaths(c(lib, .libPaths()))
suppressPackageStartupMessages(library(svir))

sim <- function(n, p, full, seed) {
  set.seed(seed)
  x <- rnorm(n)
  B <- rbind(rnorm(p, 0, 1), rnorm(p, 0, 0.3))
  L <- if (full) {
    W <- matrix(rnorm(p * 5, 0, 0.3), p)
    t(chol(W %*% t(W) + diag(0.3, p)))
  } else {
    diag(sqrt(runif(p, 0.2, 0.8)))
  }
  Z <- cbind(1, x) %*% B + matrix(rnorm(n * p), n) %*% t(L)
  depth <- exp(rnorm(n, 0, 0.5))
  Y <- matrix(rpois(n * p, depth * exp(Z)), n)
  d <- data.frame(x = x, depth = depth)
  d$Y <- Y[, colSums(Y) > 0]
  d
}

cases <- list(
  list(name = "n = 3918, p = 500, diagonal", n = 3918, p = 500, full = FALSE, seed = 1,
       cov = "diagonal", peer = "5.7-37 s", target = 5),
  list(name = "n = 880, p = 259, full", n = 880, p = 259, full = TRUE, seed = 2,
       cov = "full", peer = "3.5-11.7 s", target = 3))

np_run <- function(d, cov) {
  dir <- tempfile("pln")
  dir.create(dir)
  Y <- d$Y
  storage.mode(Y) <- "double"
  writeBin(as.double(Y), file.path(dir, "Y.bin"), endian = "little")
  writeBin(as.double(cbind(1, d$x)), file.path(dir, "X.bin"), endian = "little")
  writeBin(as.double(matrix(log(d$depth), nrow(Y), ncol(Y))), file.path(dir, "O.bin"),
           endian = "little")
  writeLines(paste(nrow(Y), ncol(Y), 2, if (cov == "full") 0 else 1), file.path(dir, "dims.txt"))
  # a clean environment: Python started from R here did not see its
  # site-packages (found 2026-11-22 on the development VM)
  res <- suppressWarnings(system2("env", c("-i", paste0("HOME=", Sys.getenv("HOME")),
                                           paste0("PATH=", Sys.getenv("PATH")), "python3",
                                           file.path(here, "pln_numpyro.py"), dir, np_steps, 0.01),
                                  stdout = TRUE, stderr = FALSE))
  js <- grep("^\\{", res, value = TRUE)
  if (!length(js)) return(NULL)
  v <- regmatches(js, gregexpr("\"[a-z_]+\": [-0-9.e]+", js))[[1]]
  stats::setNames(as.numeric(sub(".*: ", "", v)), sub("\"([a-z_]+)\".*", "\\1", v))
}

lines <- c(sprintf("# The Poisson-lognormal model on the CPU (bench/pln.R), %s", format(Sys.Date())), "",
           sprintf("Machine: %s; R %s; BLAS %s (OPENBLAS_NUM_THREADS=%s); svir %s at %s; %d reps; NumPyro: %s.",
                   paste(Sys.info()[c("sysname", "machine")], collapse = " "), getRversion(),
                   if (is.null(utils::sessionInfo()$BLAS)) "unknown" else utils::sessionInfo()$BLAS,
                   Sys.getenv("OPENBLAS_NUM_THREADS", "(unset)"),
                   utils::packageVersion("svir"), dirname(find.package("svir")), reps,
                   if (use_np) sprintf("%d Adam steps (lr 0.01)", np_steps) else "not run"), "",
           "| data | svir median s | iterations | ELBO | gap after 5 / 10 / 20 / 40 iterations | PLNmodels (published) | target | NumPyro s | NumPyro closed-form ELBO |",
           "|---|---:|---:|---:|---|---|---:|---:|---:|")
for (cs in cases) {
  d <- sim(cs$n, cs$p, cs$full, cs$seed)
  times <- numeric(reps)
  for (r in seq_len(reps)) {
    t0 <- proc.time()[["elapsed"]]
    fit <- svi_fit(Y ~ x + offset(log(depth)), d, family = pln(covariance = cs$cov))
    times[r] <- proc.time()[["elapsed"]] - t0
  }
  tr <- fit$trace
  gap <- vapply(c(5, 10, 20, 40), function(k) if (k <= length(tr)) fit$elbo - tr[k] else 0, 0)
  npr <- if (use_np) np_run(d, cs$cov) else NULL
  lines <- c(lines, sprintf("| %s | %.2f | %d | %.1f | %s | %s | %g s | %s | %s |", cs$name,
                            stats::median(times), fit$steps, fit$elbo,
                            paste(formatC(gap, format = "g", digits = 3), collapse = " / "),
                            cs$peer, cs$target,
                            if (is.null(npr)) "-" else sprintf("%.1f", npr[["seconds"]]),
                            if (is.null(npr)) "-" else sprintf("%.1f", npr[["elbo_closed_form"]])))
  cat(sprintf("%s done\n", cs$name), file = stderr())
}
cat(lines, sep = "\n")
dir.create(out_dir, showWarnings = FALSE, recursive = TRUE)
out <- file.path(out_dir, sprintf("pln-%s.md", format(Sys.Date())))
writeLines(lines, out)
cat("written to", out, "\n", file = stderr())
