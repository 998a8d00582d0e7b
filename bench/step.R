#!/usr/bin/env Rscript
# Where an svir fit's time goes on lme4::InstEval (one thread, default
# settings): the engine's own phase timers (fit$time_split: drawing the
# globals and random effects, the pass over the observations, the backward
# pass, the optimiser's update; the pass over the 1,000 posterior draws kept
# for PSIS k-hat) and the R side (model frame, grouping factors, starting
# values, post-processing: the whole svi_fit() call minus the engine's time).
# Usage: Rscript bench/step.R [--reps=5] [--lib=DIR]
a <- commandArgs(trailingOnly = TRUE)
arg <- function(flag, default) {
  hit <- grep(paste0("^--", flag, "="), a, value = TRUE)
  if (length(hit)) sub(paste0("^--", flag, "="), "", hit[1]) else default
}
reps <- as.integer(arg("reps", "5"))
lib <- arg("lib", "")
if (nzchar(lib)) .libPaths(c(lib, .libPaths()))
suppressPackageStartupMessages(library(svir))

f <- y ~ service + (1 | s) + (1 | d) + (1 | dept)
d <- lme4::InstEval
run <- function(seed) {
  t0 <- proc.time()[["elapsed"]]
  fit <- svi_fit(f, d, seed = seed, control = svi_control(threads = 1))
  total <- proc.time()[["elapsed"]] - t0
  c(total = total, engine = fit$time, steps = fit$steps, fit$time_split)
}
invisible(run(1)) # warm-up
r <- t(sapply(seq_len(reps), function(i) run(100 + i)))
med <- function(x) stats::median(x)
st <- med(r[, "steps"])
blas <- utils::sessionInfo()$BLAS
cat(sprintf("InstEval, one thread, %d repeats (medians), %s, svir %s at %s; BLAS %s\n", reps,
            format(Sys.time(), "%Y-%m-%d"), utils::packageVersion("svir"),
            dirname(find.package("svir")), if (is.null(blas)) "unknown" else blas))
cat(sprintf("  steps: %.0f\n", st))
per <- function(col) med(1000 * r[, col] / r[, "steps"])
phases <- c(draw = "draws of globals and random effects",
            observations = "pass over the observations",
            backward = "backward pass to the variational parameters",
            update = "Adam, window averages, stopping rule")
for (ph in names(phases)) {
  cat(sprintf("  %-46s %.3f ms/step  %.2f s\n", phases[[ph]], per(ph), med(r[, ph])))
}
steps_s <- med(rowSums(r[, names(phases), drop = FALSE]))
cat(sprintf("  %-46s %.3f ms/step  %.2f s\n", "all steps",
            med(1000 * rowSums(r[, names(phases), drop = FALSE]) / r[, "steps"]), steps_s))
cat(sprintf("  %-46s %.2f s\n", "posterior-draw pass (1000 draws)", med(r[, "posterior_draws"])))
cat(sprintf("  %-46s %.2f s\n", "rest of the engine call (setup, results)",
            med(r[, "engine"] - rowSums(r[, c(names(phases), "posterior_draws"), drop = FALSE]))))
cat(sprintf("  %-46s %.2f s\n", "R side", med(r[, "total"] - r[, "engine"])))
cat(sprintf("  %-46s %.2f s\n", "whole svi_fit()", med(r[, "total"])))
# the floor: 36 bytes per observation (y, two X columns, three group indices);
# the intercept column is not read, and the departments ride on their
# instructors (fold_init() in glmm_svi.c): 24 bytes are read per step
cat(sprintf("  bytes per step: %.2f MB (%.2f MB read: not the intercept column, nor dept's index)\n",
            36 * nrow(d) / 1e6, 24 * nrow(d) / 1e6))
