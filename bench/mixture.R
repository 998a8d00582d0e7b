#!/usr/bin/env Rscript
# Count mixtures (issue 17): svir's count_mixture() against R's peers on the
# same simulated single-cell-like counts, in one run: adjusted Rand index
# against the simulated labels, and wall time.
#
# Usage (from the repository root, with svir installed):
#   Rscript bench/mixture.R [--lib=DIR] [--n=1000] [--p=200] [--K=5]
#                           [--seeds=2] [--fits=svir,flexmix,mclust,kmeans,dmn]
#                           [--Ks=] [--out=bench/results]
#
# The counts: K clusters of unequal sizes (shares proportional to 1..K),
# cluster log-means around a gene baseline with 10 raised genes per cluster,
# negative binomial (size 2), library sizes over a tenfold range, a batch
# covariate with gene effects; about 85-90% zeros at the defaults. Fits:
#   svir: svi_fit(Y ~ batch + offset(log(sf)), family = count_mixture(K),
#     nstart = 1) (negative binomial; the batch and the library sizes in
#     the model); with --Ks=6:10 also count_mixture(K = 6:10), K chosen by
#     the fit's criterion ("svir-K"; its chosen K and table of criteria
#     reported);
#   flexmix: a multivariate Poisson mixture (FLXMCmvpois, k = K; no
#     offsets or covariates in that driver);
#   mclust: Gaussian mixtures on 10 principal components of log(1 + counts
#     / size factor) (Mclust, G = K, its default covariance models);
#   kmeans: k-means on the same components (25 starts), the graph-free
#     stand-in for Seurat's PCA-based clustering;
#   dmn: DirichletMultinomial::dmn (k = K), Holmes et al.'s EM.
#   oracle: each row's most probable cluster under the true parameters
#     (the simulation's), the best any method can do on average.
# Medians over the seeds go to stdout and <out>/mixture-<date>.md.
file_arg <- grep("^--file=", commandArgs(FALSE), value = TRUE)
here <- if (length(file_arg)) dirname(normalizePath(sub("^--file=", "", file_arg[1]))) else "bench"
source(file.path(here, "args.R"))
a <- bench_args(
  paste("usage: Rscript bench/mixture.R [--lib=DIR] [--n=1000] [--p=200] [--K=5] [--seeds=2]",
        "[--fits=svir,flexmix,mclust,kmeans,dmn] [--Ks=FROM:TO] [--out=DIR]"),
  c(lib = "", n = "1000", p = "200", K = "5", seeds = "2", fits = "svir,flexmix,mclust,kmeans,dmn",
    Ks = "", out = file.path(here, "results")))
if (nzchar(a$lib)) .libPaths(c(normalizePath(a$lib), .libPaths()))
fits <- strsplit(a$fits, ",", fixed = TRUE)[[1]]
Ks <- if (nzchar(a$Ks)) eval(parse(text = a$Ks)) else NULL
if (!is.null(Ks)) fits <- c(fits, "svir-K")
chosen <- integer()
crit_lines <- character()
suppressPackageStartupMessages({
  library(svir)
  if ("mclust" %in% fits) library(mclust) # Mclust() looks up mclustBIC() on the search path
})
n <- as.integer(a$n)
p <- as.integer(a$p)
K <- as.integer(a$K)

# adjusted_rand(), shared with the tests
source(file.path(here, "..", "tests", "testthat", "helper-sim.R"))
ari <- adjusted_rand

simulate <- function(seed) {
  set.seed(seed)
  share <- seq_len(K) / sum(seq_len(K))
  z <- sample.int(K, n, replace = TRUE, prob = share)
  base <- rnorm(p, -2.5, 1)
  mu <- matrix(base, K, p, byrow = TRUE) + matrix(rnorm(K * p, 0, 0.2), K, p)
  for (k in seq_len(K)) {
    up <- sample.int(p, 10)
    mu[k, up] <- mu[k, up] + 2
  }
  sf <- exp(runif(n, log(0.3), log(3)))
  batch <- factor(sample(c("A", "B"), n, replace = TRUE))
  gam <- rnorm(p, 0, 0.3)
  eta <- log(sf) + outer(batch == "B", gam) + mu[z, ]
  attr(eta, "gam") <- gam
  Y <- matrix(rnbinom(n * p, size = 2, mu = exp(eta)), n, dimnames = list(NULL, paste0("g", seq_len(p))))
  d <- data.frame(batch, sf)
  d$Y <- Y
  # the oracle: each row's most probable cluster under the true parameters
  ll <- vapply(seq_len(K), function(k) {
    e <- exp(log(sf) + outer(batch == "B", attr(eta, "gam")) + matrix(mu[k, ], n, p, byrow = TRUE))
    rowSums(matrix(dnbinom(Y, size = 2, mu = e, log = TRUE), n)) + log(share[k])
  }, numeric(n))
  list(d = d, z = z, oracle = max.col(ll))
}

timed <- function(expr) {
  t0 <- proc.time()[["elapsed"]]
  v <- tryCatch(expr, error = function(e) e)
  list(value = v, time = proc.time()[["elapsed"]] - t0)
}

pcs_of <- function(Y, sf) {
  L <- log1p(Y / sf)
  L <- L[, apply(L, 2L, stats::var) > 0, drop = FALSE]
  sv <- svd(scale(L, scale = FALSE), nu = 10, nv = 0)
  sv$u %*% diag(sv$d[1:10])
}

rows <- list()
for (seed in seq_len(as.integer(a$seeds))) {
  s <- simulate(seed)
  Y <- s$d$Y
  cat(sprintf("seed %d: %d x %d, %d clusters (sizes %s), %.0f%% zeros; the oracle's ARI %.3f\n",
              seed, n, p, K, paste(tabulate(s$z, K), collapse = " "), 100 * mean(Y == 0),
              ari(s$oracle, s$z)))
  rows[[length(rows) + 1L]] <- data.frame(seed = seed, method = "oracle", time = 0,
                                          ari = ari(s$oracle, s$z), error = "")
  run <- list(
    svir = function() clusters(svi_fit(Y ~ batch + offset(log(sf)), s$d,
                                       family = count_mixture(K = K, nstart = 1), seed = seed)),
    "svir-K" = function() {
      f <- svi_fit(Y ~ batch + offset(log(sf)), s$d, family = count_mixture(K = Ks, nstart = 1),
                   seed = seed)
      chosen[seed] <<- f$K
      crit_lines <<- c(crit_lines, sprintf("seed %d:", seed), "```",
                       utils::capture.output(print(f$criteria, row.names = FALSE)), "```")
      print(f$criteria)
      clusters(f)
    },
    flexmix = function() {
      f <- flexmix::flexmix(Y ~ 1, k = K, model = flexmix::FLXMCmvpois(),
                            control = list(iter.max = 200))
      flexmix::clusters(f)
    },
    mclust = function() mclust::Mclust(pcs_of(Y, s$d$sf), G = K, verbose = FALSE)$classification,
    kmeans = function() stats::kmeans(pcs_of(Y, s$d$sf), K, nstart = 25)$cluster,
    dmn = function() {
      f <- DirichletMultinomial::dmn(Y, k = K, verbose = FALSE, seed = seed)
      max.col(DirichletMultinomial::mixture(f))
    })
  for (m in fits) {
    r <- timed(run[[m]]())
    ok <- !inherits(r$value, "error")
    rows[[length(rows) + 1L]] <- data.frame(seed = seed, method = m, time = r$time,
                                            ari = if (ok) ari(r$value, s$z) else NA_real_,
                                            error = if (ok) "" else conditionMessage(r$value))
    cat(sprintf("  %-8s %7.1f s  ARI %s\n", m, r$time,
                if (ok) sprintf("%.3f", ari(r$value, s$z)) else paste("failed:", conditionMessage(r$value))))
  }
}
res <- do.call(rbind, rows)
med <- do.call(rbind, lapply(split(res, res$method), function(r)
  data.frame(method = r$method[1], time = stats::median(r$time), ari = stats::median(r$ari),
             ari_min = min(r$ari))))
med <- med[match(c("oracle", fits), med$method), ]
t_svir <- med$time[med$method == "svir"]
lines <- c(sprintf("# Count mixtures against R's peers (%s)", format(Sys.Date())), "",
           sprintf("`Rscript bench/mixture.R --n=%d --p=%d --K=%d --seeds=%s%s`; R %s, BLAS %s; svir %s.",
                   n, p, K, a$seeds, if (nzchar(a$Ks)) paste0(" --Ks=", a$Ks) else "", getRversion(), basename(extSoftVersion()[["BLAS"]]),
                   as.character(utils::packageVersion("svir"))), "",
           "| method | median time (s) | time / svir's | median ARI | worst ARI |",
           "|---|---:|---:|---:|---:|",
           sprintf("| %s | %.1f | %.2f | %.3f | %.3f |", med$method, med$time,
                   med$time / if (length(t_svir)) t_svir else NA, med$ari, med$ari_min))
if (length(chosen)) {
  lines <- c(lines, "", sprintf("svir-K: K chosen from %s: %s (seeds %s).", a$Ks,
                                paste(chosen, collapse = ", "), paste(seq_along(chosen), collapse = ", ")),
             "", crit_lines)
}
dir.create(a$out, showWarnings = FALSE, recursive = TRUE)
path <- file.path(a$out, sprintf("mixture-%s.md", format(Sys.Date())))
writeLines(lines, path)
writeLines(lines)
