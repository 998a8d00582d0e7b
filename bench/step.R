#!/usr/bin/env Rscript
# Where an svir fit's time goes on lme4::InstEval (one thread): the
# optimisation steps, the pass over the posterior draws kept in the fit
# (one full-data log density each, for PSIS k-hat), and the R side (model
# frame, lme4::mkReTrms, glm.fit starting values, post-processing).
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
run <- function(ndraws, seed) {
  t0 <- proc.time()[["elapsed"]]
  fit <- svi_fit(f, d, seed = seed, control = svi_control(threads = 1, ndraws = ndraws))
  c(total = proc.time()[["elapsed"]] - t0, engine = fit$time, steps = fit$steps)
}
invisible(run(1, 1)) # warm-up
r1 <- t(sapply(seq_len(reps), function(i) run(1, 100 + i)))
r1000 <- t(sapply(seq_len(reps), function(i) run(1000, 100 + i)))
med <- function(x) stats::median(x)
steps_s <- med(r1[, "engine"])
ms_step <- med(1000 * r1[, "engine"] / r1[, "steps"])
draws_s <- med(r1000[, "engine"]) - steps_s
r_side <- med(r1000[, "total"] - r1000[, "engine"])
cat(sprintf("InstEval, one thread, %d repeats (medians), %s\n", reps, format(Sys.time(), "%Y-%m-%d")))
cat(sprintf("  steps: %.0f, %.2f s (%.2f ms/step)\n", med(r1[, "steps"]), steps_s, ms_step))
cat(sprintf("  posterior-draw pass (1000 draws): %.2f s\n", draws_s))
cat(sprintf("  R side: %.2f s\n", r_side))
cat(sprintf("  whole svi_fit() with defaults: %.2f s\n", med(r1000[, "total"])))
# the floor: 36 bytes per observation (y, two X columns, three group indices)
cat(sprintf("  bytes per step: %.2f MB\n", 36 * nrow(d) / 1e6))
