#!/usr/bin/env Rscript
# Count mixtures (issue 17) against flexmix on flexmix's own model: a
# mixture of independent Poissons per column (FLXMCmvpois), no offsets or
# covariates. In one run per seed: svir's count_mixture(K, dist =
# "poisson", nstart = 3) and flexmix::stepFlexmix(k = K, nrep = 3) (EM from
# 3 random starts, the best log-likelihood kept), each timed; then
#   ARI of each against the simulated labels and against each other;
#   the cluster rates: after matching the clusters (the permutation with
#   the largest overlap of labels), the largest and the median absolute
#   difference of log rates between the two fits, and each fit's against
#   the truth;
#   each fit's log-likelihood at its own estimates (svir: logLik(), the
#   posterior means; flexmix: its maximum) per row.
# Medians over the seeds and the per-seed rows go to stdout and
# <out>/mixture-flexmix-<date>.md, with the BLAS that ran.
#
# Usage (from the repository root, with svir installed):
#   Rscript bench/mixture_flexmix.R [--lib=DIR] [--n=2000] [--p=50] [--K=4]
#                                   [--seeds=3] [--out=bench/results]
file_arg <- grep("^--file=", commandArgs(FALSE), value = TRUE)
here <- if (length(file_arg)) dirname(normalizePath(sub("^--file=", "", file_arg[1]))) else "bench"
source(file.path(here, "args.R"))
a <- bench_args("usage: Rscript bench/mixture_flexmix.R [--lib=DIR] [--n=2000] [--p=50] [--K=4] [--seeds=3] [--out=DIR]",
                c(lib = "", n = "2000", p = "50", K = "4", seeds = "3", out = file.path(here, "results")))
if (nzchar(a$lib)) .libPaths(c(normalizePath(a$lib), .libPaths()))
suppressPackageStartupMessages({
  library(svir)
  library(flexmix)
})
source(file.path(here, "..", "tests", "testthat", "helper-sim.R")) # adjusted_rand()
n <- as.integer(a$n)
p <- as.integer(a$p)
K <- as.integer(a$K)

# K clusters of shares proportional to 1..K; log rates around a column
# level (N(0.5, 0.7)) with cluster deviations N(0, 0.6)
simulate <- function(seed) {
  set.seed(seed)
  share <- seq_len(K) / sum(seq_len(K))
  z <- sample.int(K, n, replace = TRUE, prob = share)
  level <- rnorm(p, 0.5, 0.7)
  lr <- matrix(level, K, p, byrow = TRUE) + matrix(rnorm(K * p, 0, 0.6), K, p)
  Y <- matrix(rpois(n * p, exp(lr[z, ])), n, dimnames = list(NULL, paste0("c", seq_len(p))))
  keep <- rowSums(Y) > 0
  list(Y = Y[keep, ], z = z[keep], lr = lr)
}

# the permutation of b's labels that best matches a's (K! candidates)
perms <- function(v) if (length(v) <= 1L) list(v) else
  do.call(c, lapply(seq_along(v), function(i) lapply(perms(v[-i]), function(r) c(v[i], r))))
match_to <- function(a, b) {
  tab <- table(factor(a, seq_len(K)), factor(b, seq_len(K)))
  best <- NULL
  for (q in perms(seq_len(K))) {
    s <- sum(tab[cbind(seq_len(K), q)])
    if (is.null(best) || s > best$s) best <- list(s = s, q = q)
  }
  best$q # cluster k of a is cluster q[k] of b
}

timed <- function(expr) {
  t0 <- proc.time()[["elapsed"]]
  v <- expr
  list(value = v, time = proc.time()[["elapsed"]] - t0)
}

rows <- list()
for (seed in seq_len(as.integer(a$seeds))) {
  s <- simulate(seed)
  d <- data.frame(row.names = seq_len(nrow(s$Y)))
  d$Y <- s$Y
  sv <- timed(suppressWarnings(svi_fit(Y ~ 1, d, family = count_mixture(K = K, dist = "poisson", nstart = 3),
                                       seed = seed, control = svi_control(progress = FALSE))))
  fx <- timed(suppressWarnings(stepFlexmix(s$Y ~ 1, k = K, nrep = 3, model = FLXMCmvpois(),
                                           verbose = FALSE)))
  f <- fx$value
  zs <- svir::clusters(sv$value)
  zf <- flexmix::clusters(f)
  kf <- f@k # flexmix drops components that empty out
  lr_s <- coef(sv$value)                       # K x p log rates
  lr_f <- t(log(parameters(f)))                # k x p
  # the truth's clusters as reference for both
  q_s <- match_to(s$z, zs)
  row <- data.frame(seed = seed, n = nrow(s$Y), svir_s = sv$time, flexmix_s = fx$time,
                    ari_svir = adjusted_rand(zs, s$z), ari_flexmix = adjusted_rand(zf, s$z),
                    ari_between = adjusted_rand(zs, zf), flexmix_k = kf,
                    ll_svir = as.numeric(logLik(sv$value)) / nrow(s$Y),
                    ll_flexmix = as.numeric(logLik(f)) / nrow(s$Y),
                    lr_svir_truth = max(abs(lr_s[q_s, ] - s$lr)))
  if (kf == K) {
    q_f <- match_to(s$z, zf)
    dd <- abs(lr_s[q_s, ] - lr_f[q_f, ])
    row$lr_between_max <- max(dd)
    row$lr_between_median <- stats::median(dd)
    row$lr_flexmix_truth <- max(abs(lr_f[q_f, ] - s$lr))
  } else {
    row$lr_between_max <- row$lr_between_median <- row$lr_flexmix_truth <- NA_real_
  }
  rows[[length(rows) + 1L]] <- row
  cat(sprintf("seed %d: svir %.1f s ARI %.3f | flexmix %.1f s ARI %.3f (k %d) | between: ARI %.3f, log rates max %.3f median %.4f | loglik/row svir %.4f flexmix %.4f\n",
              seed, sv$time, row$ari_svir, fx$time, row$ari_flexmix, kf, row$ari_between,
              row$lr_between_max, row$lr_between_median, row$ll_svir, row$ll_flexmix))
}
tab <- do.call(rbind, rows)
med <- vapply(tab[, -1], stats::median, numeric(1), na.rm = TRUE)
blas <- tryCatch(sessionInfo()$BLAS, error = function(e) NA_character_)
lines <- c(
  sprintf("# Count mixtures against flexmix on Poisson mixtures (%s)", format(Sys.Date())),
  "",
  sprintf("`Rscript bench/mixture_flexmix.R --n=%d --p=%d --K=%d --seeds=%s`; %s; BLAS %s; svir %s, flexmix %s; %d cores.",
          n, p, K, a$seeds, R.version.string, blas, as.character(utils::packageVersion("svir")),
          as.character(utils::packageVersion("flexmix")), parallel::detectCores()),
  "",
  "Per seed:", "", "```", utils::capture.output(print(tab, digits = 4, row.names = FALSE)), "```", "",
  "Medians over the seeds:", "", "```", utils::capture.output(print(round(med, 4))), "```", "",
  sprintf("svir / flexmix time ratio (median of the seeds' ratios): %.2f",
          stats::median(tab$svir_s / tab$flexmix_s)))
cat(lines, sep = "\n")
dir.create(a$out, showWarnings = FALSE, recursive = TRUE)
writeLines(lines, file.path(a$out, sprintf("mixture-flexmix-%s.md", format(Sys.Date()))))
