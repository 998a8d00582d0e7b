#!/usr/bin/env Rscript
# Count mixtures (issue 17) on DirichletMultinomial's own Twins data: svir's
# count_mixture(dist = "dirmult") against DirichletMultinomial::dmn, the EM
# of Holmes, Harris and Quince (2012), choosing the number of clusters.
#
# Usage (from the repository root, with svir and DirichletMultinomial
# installed):
#   Rscript bench/mixture_twins.R [--lib=DIR] [--Ks=1:7] [--seeds=1]
#                                 [--tag=] [--out=bench/results]
# (--tag adds -TAG to the report's name.)
#
# The data: the package's extdata/Twins.csv (Turnbaugh et al.'s gut
# microbiome of twins, 130 genus-level taxa x 278 samples), read as the
# package vignette reads it and transposed to samples x taxa (278 x 130).
# What is run, per seed (seeds 1..--seeds):
#   dmn: DirichletMultinomial::dmn(count, k, seed = seed) for each k in
#     --Ks, one after the other (the vignette's mclapply would use both
#     cores; here it runs serially), k chosen by the smallest laplace()
#     (Holmes et al. report 4); also the choice among k >= 2 only;
#   svir: svi_fit(Y ~ 1, d, family = count_mixture(K = Ks, dist =
#     "dirmult"), seed = seed), its defaults otherwise (nstart = 3), K chosen
#     by the fit's criterion (fit$K; the table fit$criteria is reported).
#     When the installed svir rejects K = 1 (versions that require K >= 2),
#     the error is reported and the fit is rerun with the Ks >= 2;
#   svir at dmn's k: the same with K fixed at dmn's chosen k (to separate
#     the labels' agreement from the choice of K).
# Reported: each method's chosen k and total wall time (dmn's over all k,
# and per k; svir's the one svi_fit() call over all K); the adjusted Rand
# index (ARI) of svir's labels (clusters(fit)) against dmn's MAP labels
# (max.col of mixture(fit)) at dmn's chosen k, at dmn's best k >= 2, and at
# svir's chosen K; and against the labels of the package's stored fit
# (data(fit), Holmes et al.'s, k = 4); svir's table of criteria. Medians
# over seeds go to stdout and <out>/mixture-twins-<date>.md, with the BLAS
# that ran.
file_arg <- grep("^--file=", commandArgs(FALSE), value = TRUE)
here <- if (length(file_arg)) dirname(normalizePath(sub("^--file=", "", file_arg[1]))) else "bench"
source(file.path(here, "args.R"))
a <- bench_args(
  "usage: Rscript bench/mixture_twins.R [--lib=DIR] [--Ks=1:7] [--seeds=1] [--tag=TAG] [--out=DIR]",
  c(lib = "", Ks = "1:7", seeds = "1", tag = "", out = file.path(here, "results")))
if (nzchar(a$lib)) .libPaths(c(normalizePath(a$lib), .libPaths()))
Ks <- as.integer(eval(parse(text = a$Ks)))
suppressPackageStartupMessages({
  library(svir)
  library(DirichletMultinomial)
})
# adjusted_rand(), shared with the tests
source(file.path(here, "..", "tests", "testthat", "helper-sim.R"))
ari <- adjusted_rand

fl <- system.file(package = "DirichletMultinomial", "extdata", "Twins.csv")
count <- t(as.matrix(read.csv(fl, row.names = 1)))
d <- data.frame(row.names = rownames(count))
d$Y <- count
cat(sprintf("Twins: %d samples x %d taxa, %.0f%% zeros, sample totals %d to %d\n",
            nrow(count), ncol(count), 100 * mean(count == 0), min(rowSums(count)), max(rowSums(count))))
env <- new.env()
utils::data("fit", package = "DirichletMultinomial", envir = env)
stored <- env$fit
stored_lap <- vapply(stored, laplace, 0)
stored_k <- which.min(stored_lap)
stored_z <- max.col(mixture(stored[[stored_k]]))

timed <- function(expr) {
  t0 <- proc.time()[["elapsed"]]
  v <- tryCatch(expr, error = function(e) e)
  list(value = v, time = proc.time()[["elapsed"]] - t0)
}
fmt <- function(x, d = 3) if (is.na(x)) "NA" else formatC(x, format = "f", digits = d)

rows <- list()
notes <- character()
crit_lines <- character()
dmn_lines <- character()
for (seed in seq_len(as.integer(a$seeds))) {
  # dmn over the Ks, one after the other, each k timed
  t_k <- numeric(length(Ks))
  r_dmn <- timed(lapply(seq_along(Ks), function(i) {
    t0 <- proc.time()[["elapsed"]]
    f <- dmn(count, k = Ks[i], verbose = FALSE, seed = seed)
    t_k[i] <<- proc.time()[["elapsed"]] - t0
    f
  }))
  fits <- r_dmn$value
  lap <- vapply(fits, laplace, 0)
  k_dmn <- Ks[which.min(lap)]
  two <- Ks >= 2
  k_dmn2 <- Ks[two][which.min(lap[two])]
  z_dmn <- function(k) max.col(mixture(fits[[match(k, Ks)]]))
  cat(sprintf("seed %d: dmn over k = %s: %.1f s (per k: %s); laplace %s; chosen k = %d (among k >= 2: %d)\n",
              seed, a$Ks, r_dmn$time, paste(sprintf("%.1f", t_k), collapse = ", "),
              paste(sprintf("%.1f", lap), collapse = ", "), k_dmn, k_dmn2))
  dmn_lines <- c(dmn_lines, sprintf("| %d | %s | %s | %s |", seed, paste(Ks, collapse = ", "),
                                    paste(sprintf("%.1f", lap), collapse = ", "),
                                    paste(sprintf("%.1f", t_k), collapse = ", ")))

  Ks_svir <- Ks
  r_svir <- timed(svi_fit(Y ~ 1, d, family = count_mixture(K = Ks_svir, dist = "dirmult"), seed = seed))
  if (inherits(r_svir$value, "error") && min(Ks) < 2) {
    msg <- conditionMessage(r_svir$value)
    cat("  svir with K =", a$Ks, "failed:", msg, "\n  rerun with K >= 2\n")
    notes <- c(notes, sprintf("seed %d: the installed svir rejected K = %s (%s); svir ran K = %s instead.",
                              seed, a$Ks, gsub("\n", " ", msg), paste(range(Ks[two]), collapse = ":")))
    Ks_svir <- Ks[two]
    r_svir <- timed(svi_fit(Y ~ 1, d, family = count_mixture(K = Ks_svir, dist = "dirmult"), seed = seed))
  }
  if (inherits(r_svir$value, "error")) stop("svir failed: ", conditionMessage(r_svir$value))
  f <- r_svir$value
  z_svir <- clusters(f)
  crit_lines <- c(crit_lines, sprintf("seed %d (svir, K = %s):", seed, paste(range(Ks_svir), collapse = ":")),
                  "```", utils::capture.output(print(f$criteria, row.names = FALSE)), "```")
  print(f$criteria, row.names = FALSE)
  # svir with K fixed at dmn's choice: the labels' agreement apart from
  # the choice of K
  r_fix <- timed(svi_fit(Y ~ 1, d, family = count_mixture(K = max(k_dmn, 2L), dist = "dirmult"), seed = seed))
  z_fix <- if (inherits(r_fix$value, "error")) NULL else clusters(r_fix$value)
  r <- data.frame(seed = seed, k_dmn = k_dmn, k_dmn2 = k_dmn2, K_svir = f$K,
                  Ks_svir = paste(range(Ks_svir), collapse = ":"),
                  t_dmn = r_dmn$time, t_svir = r_svir$time,
                  ari_dmn = ari(z_svir, z_dmn(k_dmn)),
                  ari_dmn2 = ari(z_svir, z_dmn(k_dmn2)),
                  ari_sameK = if (f$K %in% Ks) ari(z_svir, z_dmn(f$K)) else NA_real_,
                  ari_stored = ari(z_svir, stored_z),
                  t_fix = r_fix$time,
                  ari_fix = if (is.null(z_fix)) NA_real_ else ari(z_fix, z_dmn(max(k_dmn, 2L))),
                  dmn_vs_stored = ari(z_dmn(k_dmn), stored_z))
  rows[[length(rows) + 1L]] <- r
  cat(sprintf("  svir: %.1f s; chosen K = %d; ARI vs dmn at k = %d: %s, at k = %d: %s, at K = %d: %s; vs the stored fit (k = %d): %s\n",
              r$t_svir, f$K, k_dmn, fmt(r$ari_dmn), k_dmn2, fmt(r$ari_dmn2), f$K, fmt(r$ari_sameK),
              stored_k, fmt(r$ari_stored)))
  cat(sprintf("  svir with K = %d given: %.1f s, ARI vs dmn at k = %d: %s\n", max(k_dmn, 2L), r$t_fix,
              max(k_dmn, 2L), fmt(r$ari_fix)))
  cat(sprintf("  cluster sizes: svir %s; svir at K = %d %s; dmn (k = %d) %s\n",
              paste(sort(tabulate(z_svir), TRUE), collapse = " "), max(k_dmn, 2L),
              paste(sort(tabulate(z_fix), TRUE), collapse = " "),
              k_dmn, paste(sort(tabulate(z_dmn(k_dmn)), TRUE), collapse = " ")))
}
res <- do.call(rbind, rows)
med <- function(x) stats::median(x)
blas <- extSoftVersion()[["BLAS"]]
lines <- c(sprintf("# Count mixtures on the Twins data: svir against DirichletMultinomial (%s)", format(Sys.Date())), "",
           sprintf("`Rscript bench/mixture_twins.R --Ks=%s --seeds=%s`; date %s; R %s, BLAS %s; svir %s, DirichletMultinomial %s; %d samples x %d taxa; OMP_NUM_THREADS=%s.",
                   a$Ks, a$seeds, format(Sys.time(), "%Y-%m-%d %H:%M"), getRversion(), blas,
                   as.character(utils::packageVersion("svir")),
                   as.character(utils::packageVersion("DirichletMultinomial")), nrow(count), ncol(count),
                   Sys.getenv("OMP_NUM_THREADS", "unset")), "",
           "Per seed:", "",
           "| seed | dmn's k (min Laplace) | dmn's k among k >= 2 | svir's K (K range) | dmn time (s) | svir time (s) | ARI svir vs dmn at dmn's k | vs dmn's k >= 2 | vs dmn at svir's K | vs the stored fit (k = 4) | dmn vs the stored fit |",
           "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
           sprintf("| %d | %d | %d | %d (%s) | %.1f | %.1f | %s | %s | %s | %s | %s |", res$seed, res$k_dmn, res$k_dmn2,
                   res$K_svir, res$Ks_svir, res$t_dmn, res$t_svir, vapply(res$ari_dmn, fmt, ""),
                   vapply(res$ari_dmn2, fmt, ""), vapply(res$ari_sameK, fmt, ""), vapply(res$ari_stored, fmt, ""),
                   vapply(res$dmn_vs_stored, fmt, "")), "",
           sprintf("Medians over %d seed(s): dmn %.1f s, svir %.1f s (svir / dmn %.2f); ARI svir vs dmn at dmn's k %s.",
                   nrow(res), med(res$t_dmn), med(res$t_svir), med(res$t_svir) / med(res$t_dmn), fmt(med(res$ari_dmn))),
           sprintf("svir with K fixed at dmn's k: %.1f s, ARI against dmn's labels at that k %s (medians).",
                   med(res$t_fix), fmt(med(res$ari_fix))), "",
           "dmn per k (Laplace, seconds):", "", "| seed | k | Laplace | time (s) |", "|---:|---|---|---|", dmn_lines, "",
           sprintf("The package's stored fits (data(fit), Holmes et al.'s): Laplace %s, smallest at k = %d.",
                   paste(sprintf("%.1f", stored_lap), collapse = ", "), stored_k),
           if (length(notes)) c("", notes), "", "svir's criteria:", "", crit_lines)
dir.create(a$out, showWarnings = FALSE, recursive = TRUE)
path <- file.path(a$out, sprintf("mixture-twins-%s%s.md", format(Sys.Date()), if (nzchar(a$tag)) paste0("-", a$tag) else ""))
writeLines(lines, path)
writeLines(lines)
