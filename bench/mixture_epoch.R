#!/usr/bin/env Rscript
# Count mixtures at 10^5 cells (issue 17): the time and peak memory of one
# epoch of SVI on sparse counts.
#
# Usage (from the repository root, with svir installed):
#   Rscript bench/mixture_epoch.R [--lib=DIR] [--n=100000] [--p=2000] [--K=10]
#                                 [--out=bench/results]
#
# The counts: bench/mixture.R's kind (K clusters with shares proportional
# to 1..K, 10 raised genes per cluster, NB size 2, library sizes over a
# tenfold range, a batch with gene effects), drawn in blocks of 10^4 rows
# and kept as a dgCMatrix. One fit, svi_fit(Y ~ batch + offset(log(sf)),
# family = count_mixture(K, nstart = 1)), allowed one epoch (n / B steps
# of its default minibatches of B rows; its stopping rule may end it
# sooner). Reported: the time of a step (the engine's draws, observations,
# backward and update over the steps run) times the steps of an epoch, the
# whole
# fit's time (the starts' principal components and k-means, the
# responsibilities and the final ELBO over all rows), and the R process's
# peak resident set from before the counts were drawn (VmHWM).
file_arg <- grep("^--file=", commandArgs(FALSE), value = TRUE)
here <- if (length(file_arg)) dirname(normalizePath(sub("^--file=", "", file_arg[1]))) else "bench"
source(file.path(here, "args.R"))
a <- bench_args("usage: Rscript bench/mixture_epoch.R [--lib=DIR] [--n=100000] [--p=2000] [--K=10] [--out=DIR]",
                c(lib = "", n = "100000", p = "2000", K = "10", out = file.path(here, "results")))
if (nzchar(a$lib)) .libPaths(c(normalizePath(a$lib), .libPaths()))
suppressPackageStartupMessages({
  library(svir)
  library(Matrix)
})
n <- as.integer(a$n)
p <- as.integer(a$p)
K <- as.integer(a$K)
peak_mb <- function() {
  l <- grep("^VmHWM:", readLines("/proc/self/status"), value = TRUE)
  as.numeric(gsub("[^0-9]", "", l)) / 1024
}
# sim_sc_params() and adjusted_rand(), shared with the tests
source(file.path(here, "..", "tests", "testthat", "helper-sim.R"))
set.seed(1)
sp <- sim_sc_params(n, p, K, base = -2.5, noise = 0.2, nup = 10)
z <- sp$z
mu <- sp$mu
sf <- sp$sf
batch <- sp$batch
gam <- sp$gam
blocks <- split(seq_len(n), ceiling(seq_len(n) / 1e4))
Y <- do.call(rbind, lapply(blocks, function(i) {
  e <- log(sf[i]) + outer(batch[i] == "B", gam) + mu[z[i], ]
  Matrix(matrix(rnbinom(length(e), size = 2, mu = exp(e)), length(i)), sparse = TRUE)
}))
colnames(Y) <- paste0("g", seq_len(p))
keep <- Matrix::rowSums(Y) > 0
d <- data.frame(batch, sf)[keep, ]
d$Y <- Y[keep, ]
n <- nrow(d)
zeros <- 1 - length(d$Y@x) / (as.double(n) * p)
gc()
base <- peak_mb()
B <- as.integer(min(256, max(64, ceiling(2e5 / (p * K))))) # svi_fit()'s default
steps <- ceiling(n / B)
t0 <- proc.time()[["elapsed"]]
fit <- suppressWarnings(svi_fit(Y ~ batch + offset(log(sf)), d, family = count_mixture(K = K, nstart = 1),
                                seed = 1, control = svi_control(max_steps = steps)))
total <- proc.time()[["elapsed"]] - t0
ts <- fit$engine$time_split
epoch <- sum(ts[c("draw", "observations", "backward", "update")])
peak <- peak_mb()
blas <- tryCatch(extSoftVersion()[["BLAS"]], error = function(e) "")
lines <- c(
  sprintf("# Count mixtures: one epoch at %d cells (%s)", n, format(Sys.Date())), "",
  sprintf("`Rscript bench/mixture_epoch.R --n=%d --p=%d --K=%d`; R %s, BLAS %s; %s cores.", as.integer(a$n), p, K,
          getRversion(), blas, parallel::detectCores()), "",
  sprintf("- %d cells (of %s drawn; rows without counts dropped) x %d genes, K = %d, %.1f%% zeros, dgCMatrix (%.0f MB).",
          n, a$n, p, K, 100 * zeros, as.numeric(utils::object.size(d$Y)) / 2^20),
  sprintf("- Minibatches of %d rows: an epoch is %d steps. The fit ran %d steps (%s) in %.1f s, %.1f ms a step (observations %.1f s): %.1f s an epoch.",
          fit$control$batch_size, steps, fit$steps, fit$stop_reason, epoch, 1000 * epoch / fit$steps,
          ts[["observations"]], epoch / fit$steps * steps),
  sprintf("- The whole fit: %.1f s (the starts, the steps, the responsibilities and the final ELBO over all rows).", total),
  sprintf("- Peak resident set of the R process: %.0f MB (%.0f MB before the fit, with the counts).", peak, base),
  sprintf("- ARI against the simulated labels at the end: %.3f.",
          adjusted_rand(clusters(fit), z[keep])))
cat(lines, sep = "\n")
dir.create(a$out, showWarnings = FALSE, recursive = TRUE)
writeLines(lines, file.path(a$out, sprintf("mixture-epoch-%s.md", format(Sys.Date()))))
