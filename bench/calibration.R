#!/usr/bin/env Rscript
# svir's default fit against long NUTS runs (rstan) on six GLMMs.
#
# Usage (from the repository root, with svir installed):
#   Rscript bench/calibration.R [--lib=DIR] [--reps=3] [--out=DIR]
#
# The NUTS references are built by bench/nuts/build_refs.R (Stan programs
# with svir's default priors, in bench/nuts/) and kept in
# inst/extdata/glmm-nuts.rds (installed with the package: the tests and the
# vignette read it). For every global parameter this
# reports NUTS's posterior mean and sd, svir's for the default fit
# (method = "auto") and for SVI's mean-field guide, the distance of the
# means in NUTS sds and the ratio of the sds, and the fits' wall times
# (median over `reps` seeds; the accuracy numbers are from the first seed).
# The issue's bar: |mean difference| <= 0.3 NUTS sd, sd ratio in [0.75, 1.33].

args <- commandArgs(trailingOnly = TRUE)
get <- function(flag, default) {
  hit <- grep(paste0("^--", flag, "="), args, value = TRUE)
  if (length(hit)) sub(paste0("^--", flag, "="), "", hit[length(hit)]) else default
}
lib <- get("lib", "")
reps <- as.integer(get("reps", "3"))
file_arg <- grep("^--file=", commandArgs(FALSE), value = TRUE)
here <- if (length(file_arg)) dirname(normalizePath(sub("^--file=", "", file_arg[1]))) else "bench"
out_dir <- get("out", file.path(here, "results"))
if (nzchar(lib)) .libPaths(c(normalizePath(lib), .libPaths()))
suppressPackageStartupMessages(library(svir))

refs <- readRDS(file.path(here, "..", "inst", "extdata", "glmm-nuts.rds"))
source(file.path(here, "..", "tests", "testthat", "helper-calibration.R"))
models <- calibration_models()

fit_one <- function(mdl, seed, method = NULL) {
  args <- list(formula = mdl$formula, data = mdl$data, family = mdl$family, seed = seed)
  if (!is.null(method)) args <- c(args, method)
  t0 <- proc.time()[["elapsed"]]
  fit <- suppressWarnings(do.call(svi_fit, args))
  list(fit = fit, time = proc.time()[["elapsed"]] - t0)
}

lines <- c(sprintf("# svir's default fit against NUTS (%s)", format(Sys.Date())), "",
           sprintf("Machine: %s; R %s; BLAS: %s; svir %s. NUTS: %s.",
                   "this 2-core VM", getRversion(), basename(extSoftVersion()[["BLAS"]]),
                   as.character(utils::packageVersion("svir")),
                   "rstan, see inst/extdata/glmm-nuts.rds and bench/nuts/"),
           "", "Columns: NUTS mean (sd); svir default mean (sd); d = (mean - NUTS mean) / NUTS sd;",
           "r = sd / NUTS sd; the same for SVI mean-field. Bar: |d| <= 0.3, 0.75 <= r <= 1.33.", "")
worst <- list()
for (nm in names(models)) {
  mdl <- models[[nm]]
  if (is.null(refs[[nm]])) {
    message("no NUTS reference for ", nm, ": skipped (bench/nuts/build_refs.R --only=", nm, ")")
    next
  }
  ref <- refs[[nm]]$summary
  fits <- lapply(seq_len(reps), function(s) fit_one(mdl, s))
  svi <- fit_one(mdl, 1, list(method = "svi"))
  d0 <- as.matrix(fits[[1]]$fit)
  d1 <- as.matrix(svi$fit)
  tab <- do.call(rbind, lapply(seq_len(nrow(ref)), function(k) {
    p <- ref$param[k]
    m0 <- mean(d0[, p]); s0 <- sd(d0[, p]); m1 <- mean(d1[, p]); s1 <- sd(d1[, p])
    data.frame(param = p, nuts = sprintf("%.4g (%.3g)", ref$mean[k], ref$sd[k]),
               default = sprintf("%.4g (%.3g)", m0, s0),
               d = (m0 - ref$mean[k]) / ref$sd[k], r = s0 / ref$sd[k],
               svi = sprintf("%.4g (%.3g)", m1, s1),
               d_svi = (m1 - ref$mean[k]) / ref$sd[k], r_svi = s1 / ref$sd[k])
  }))
  worst[[nm]] <- c(max_d = max(abs(tab$d)), min_r = min(tab$r), max_r = max(tab$r))
  f0 <- fits[[1]]$fit
  lines <- c(lines, sprintf("## %s: `%s` (%s)", nm, deparse1(mdl$formula), refs[[nm]]$family), "",
             sprintf("Default: method %s (%s); k-hat %.2f; median wall time %.3f s over %d seeds. SVI mean-field: %.3f s.",
                     f0$method, f0$method_reason, f0$khat,
                     stats::median(vapply(fits, `[[`, 0, "time")), reps, svi$time), "",
             "| parameter | NUTS | svir default | d | r | SVI mean-field | d | r |",
             "|---|---|---|---|---|---|---|---|",
             sprintf("| %s | %s | %s | %.2f | %.2f | %s | %.2f | %.2f |", tab$param, tab$nuts,
                     tab$default, tab$d, tab$r, tab$svi, tab$d_svi, tab$r_svi), "")
}
w <- do.call(rbind, worst)
lines <- c(lines, "## Summary", "", "| model | max abs d | min r | max r |", "|---|---|---|---|",
           sprintf("| %s | %.2f | %.2f | %.2f |", rownames(w), w[, "max_d"], w[, "min_r"], w[, "max_r"]), "")
cat(lines, sep = "\n")
dir.create(out_dir, showWarnings = FALSE, recursive = TRUE)
writeLines(lines, file.path(out_dir, sprintf("calibration-%s.md", format(Sys.Date()))))
