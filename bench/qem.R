#!/usr/bin/env Rscript
# svir benchmark (issue 4): QEM against SVI on two-level GLMMs.
#
# Usage (from the repository root, with svir installed):
#   Rscript bench/qem.R [--seeds=5] [--only=cbpp|salamanders|radon]
#                       [--K=8,16,32] [--eval-K=16] [--eval-reps=4]
#                       [--threads=1] [--lib=DIR] [--out=DIR]
#
# For each dataset and seed it fits, in one run: SVI with the mean-field and
# the full-rank guide (default settings) and QEM with each K (default
# settings otherwise), every fit keeping its path (svi_control(keep_path =):
# SVI's average iterate every 10 steps, QEM's proposal every iteration) with
# the wall time since its loop began.
#
# The yardstick is one bound for every guide: the K-sample tree bound log
# P-hat (svir:::svir_path_bound(), K = --eval-K, the mean of --eval-reps
# estimates, the same random numbers for every guide; SVI's coupled guide is
# evaluated with its coupling). It is QEM's objective and, for any guide, a
# lower bound on log p(y) at least as tight as the ELBO. Per seed, `best` is
# the largest bound of the fits' final guides (estimated with 8 times the
# estimates, so that its noise is small); each fit's "time to 1 nat" is the first
# kept guide whose bound is within 1 nat of `best` (found on a coarse grid
# of the path, then refined between the last two grid points). Reported:
# medians over seeds of the iterations and seconds to 1 nat, the ratio of the
# fastest SVI guide's median seconds to them (among the SVI guides that get
# within 1 nat in at least half the seeds), how many seeds reached it, iterations and seconds to the
# stopping rule, the final guide's gap to `best`, its ELBO (K = 1) and the
# fit's PSIS k-hat (of the posterior draws it keeps).
# The Markdown report goes to stdout and to <out>/qem-<date>.md.

bench_args <- function() {
  a <- commandArgs(trailingOnly = TRUE)
  get <- function(flag, default) {
    hit <- grep(paste0("^--", flag, "(=|$)"), a, value = TRUE)
    if (length(hit)) sub(paste0("^--", flag, "=?"), "", hit[length(hit)]) else default
  }
  known <- c("seeds", "only", "K", "eval-K", "eval-reps", "threads", "lib", "out", "help")
  bad <- setdiff(sub("^--([^=]*).*$", "\\1", setdiff(a, "-h")), known)
  if (length(bad) || any(a %in% c("--help", "-h"))) {
    cat("usage: Rscript bench/qem.R [--seeds=5] [--only=cbpp|salamanders|radon] [--K=8,16,32]\n",
        "         [--eval-K=16] [--eval-reps=4] [--threads=1] [--lib=DIR] [--out=DIR]\n")
    quit(status = if (length(bad)) 2L else 0L)
  }
  file_arg <- grep("^--file=", commandArgs(FALSE), value = TRUE)
  here <- if (length(file_arg)) dirname(normalizePath(sub("^--file=", "", file_arg[1]))) else "bench"
  list(
    seeds = as.integer(get("seeds", "5")),
    only = get("only", ""),
    K = as.integer(strsplit(get("K", "8,16,32"), ",")[[1]]),
    eval_K = as.integer(get("eval-K", "16")),
    eval_reps = as.integer(get("eval-reps", "4")),
    threads = as.integer(get("threads", "1")),
    lib = get("lib", ""),
    out = get("out", file.path(here, "results"))
  )
}

a <- bench_args()
if (nzchar(a$lib)) .libPaths(c(a$lib, .libPaths()))
suppressPackageStartupMessages(library(svir))

# ---- data ----------------------------------------------------------------

# radon-like: 4 states x 150 counties, 1 to ~20 houses per county; log radon
# on the floor of measurement, the county's log uranium and the state.
sim_radon <- function(seed = 20261122) {
  set.seed(seed)
  ns <- 4L
  nc <- 150L
  J <- ns * nc
  state <- rep(seq_len(ns), each = nc)
  u <- stats::rnorm(J, 0, 0.5)
  a_state <- c(1.2, 1.5, 0.9, 1.3)
  alpha <- a_state[state] + 0.7 * u + stats::rnorm(J, 0, 0.3)
  nj <- 1L + stats::rpois(J, 8)
  county <- rep(seq_len(J), nj)
  floor <- stats::rbinom(length(county), 1, 0.3)
  y <- alpha[county] - 0.6 * floor + stats::rnorm(length(county), 0, 0.75)
  data.frame(log_radon = y, floor = floor, uranium = u[county],
             state = factor(state[county]), county = factor(county))
}

datasets <- list(
  cbpp = list(
    formula = cbind(incidence, size - incidence) ~ period + (1 | herd),
    data = function() lme4::cbpp, family = binomial()),
  salamanders = list(
    formula = count ~ mined + spp + (1 | site),
    data = function() {
      e <- new.env()
      utils::data("Salamanders", package = "glmmTMB", envir = e)
      e$Salamanders
    },
    family = poisson()),
  radon = list(
    formula = log_radon ~ state + floor + uranium + (1 | county),
    data = sim_radon, family = gaussian())
)
if (nzchar(a$only)) datasets <- datasets[strsplit(a$only, ",")[[1]]]

methods <- c(list(
  "SVI mean-field" = list(method = "svi", guide = "meanfield", keep = 10L),
  "SVI full-rank" = list(method = "svi", guide = "fullrank", keep = 10L)),
  stats::setNames(lapply(a$K, function(k) list(method = "qem", guide = "meanfield", keep = 1L, K = k)),
                  paste0("QEM K = ", a$K)))

# ---- the yardstick ---------------------------------------------------------

bound_of <- function(fit, idx, K = a$eval_K, reps = a$eval_reps) {
  svir:::svir_path_bound(fit, K = K, reps = reps, seed = 1, which = idx)$bound
}

# the coarse grid of a path, with its bounds
coarse <- function(fit) {
  np <- length(fit$path$step)
  idx <- unique(c(round(seq(1, np, length.out = min(np, 20L))), np))
  list(idx = idx, bound = bound_of(fit, idx))
}

# the first kept guide within 1 nat of best: its index, or NA
first_within <- function(fit, cg, best) {
  hit <- which(cg$bound >= best - 1)
  if (!length(hit)) return(NA_integer_)
  h <- hit[1]
  if (h == 1L) return(cg$idx[1])
  lo <- cg$idx[h - 1L] + 1L
  hi <- cg$idx[h] - 1L
  if (hi >= lo) {
    fine <- bound_of(fit, lo:hi)
    f <- which(fine >= best - 1)
    if (length(f)) return((lo:hi)[f[1]])
  }
  cg$idx[h]
}

# ---- runs ----------------------------------------------------------------

fit_one <- function(ds, dat, m, seed) {
  ctl <- svi_control(keep_path = m$keep, threads = a$threads, progress = FALSE,
                     K = if (is.null(m$K)) 32L else m$K)
  suppressWarnings(svi_fit(ds$formula, dat, family = ds$family, guide = m$guide,
                           method = m$method, control = ctl, seed = seed))
}

rows <- list()
for (dn in names(datasets)) {
  ds <- datasets[[dn]]
  dat <- ds$data()
  for (s in seq_len(a$seeds)) {
    fits <- lapply(methods, function(m) fit_one(ds, dat, m, seed = 1000 + s))
    cgs <- lapply(fits, coarse)
    # each fit's final guide, with 8 times the estimates (a maximum over many
    # noisy values would be biased upwards)
    final <- vapply(fits, function(f) bound_of(f, length(f$path$step), reps = 8L * a$eval_reps), 0)
    best <- max(final)
    for (mn in names(methods)) {
      f <- fits[[mn]]
      i <- first_within(f, cgs[[mn]], best)
      np <- length(f$path$step)
      rows[[length(rows) + 1L]] <- data.frame(
        dataset = dn, n = nrow(dat), seed = s, method = mn,
        it_1nat = if (is.na(i)) NA else f$path$step[i],
        sec_1nat = if (is.na(i)) NA else f$path$time[i],
        it_stop = f$steps, sec_stop = f$path$time[np],
        stop = f$stop_reason,
        gap_final = best - final[[mn]],
        elbo_final = bound_of(f, np, K = 1L, reps = 64L),
        khat = f$khat,
        best = best)
    }
    cat(sprintf("%s seed %d done\n", dn, s), file = stderr())
  }
}
res <- do.call(rbind, rows)

# ---- report ----------------------------------------------------------------

med <- function(x) if (all(is.na(x))) NA else stats::median(x, na.rm = TRUE)
fmt <- function(x, d = 3) ifelse(is.na(x), "-", formatC(x, digits = d, format = "g"))
lines <- c(
  sprintf("# QEM against SVI (bench/qem.R), %s", format(Sys.Date())),
  "",
  sprintf("Machine: %s; R %s; BLAS %s; svir %s; %d thread(s); %d seeds; yardstick: the tree bound with K = %d, mean of %d estimates.",
          paste(Sys.info()[c("sysname", "machine")], collapse = " "), getRversion(),
          if (is.null(utils::sessionInfo()$BLAS)) "unknown" else utils::sessionInfo()$BLAS,
          utils::packageVersion("svir"), a$threads, a$seeds, a$eval_K, a$eval_reps),
  "")
for (dn in unique(res$dataset)) {
  r <- res[res$dataset == dn, ]
  # the reference: the SVI guide that gets within 1 nat soonest (median over
  # the seeds, among the guides that do in at least half of them)
  svi <- grep("^SVI", names(methods), value = TRUE)
  ok <- vapply(svi, function(mn) mean(!is.na(r$sec_1nat[r$method == mn])) >= 0.5, TRUE)
  tsvi <- vapply(svi, function(mn) med(r$sec_1nat[r$method == mn]), 0)
  ref <- if (any(ok)) min(tsvi[ok]) else NA
  ref_name <- if (any(ok)) svi[ok][which.min(tsvi[ok])] else "none"
  lines <- c(lines, sprintf("## %s (n = %d)", dn, r$n[1]), "",
             sprintf("Best bound (median over seeds): %.2f. Reference SVI: %s.", med(r$best), ref_name), "",
             "| method | iterations to 1 nat | seconds to 1 nat | reference SVI / this | reached | iterations to stop | seconds to stop | final gap (nats) | final ELBO | k-hat |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
  for (mn in names(methods)) {
    x <- r[r$method == mn, ]
    t1 <- med(x$sec_1nat)
    lines <- c(lines, sprintf("| %s | %s | %s | %s | %d/%d | %s | %s | %s | %s | %s |", mn,
                              fmt(med(x$it_1nat)), fmt(t1), fmt(ref / t1, 2),
                              sum(!is.na(x$sec_1nat)), nrow(x), fmt(med(x$it_stop)),
                              fmt(med(x$sec_stop)), fmt(med(x$gap_final), 2),
                              fmt(med(x$elbo_final), 5), fmt(med(x$khat), 2)))
  }
  lines <- c(lines, "")
}
cat(lines, sep = "\n")
dir.create(a$out, showWarnings = FALSE, recursive = TRUE)
out <- file.path(a$out, sprintf("qem-%s.md", format(Sys.Date())))
writeLines(lines, out)
cat("written to", out, "\n", file = stderr())
