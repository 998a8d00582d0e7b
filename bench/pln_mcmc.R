#!/usr/bin/env Rscript
# pln_mcmc() (the exact posterior of a Poisson-lognormal fit's B and Sigma
# by Metropolis within Gibbs; issue 16, point 7) against the NUTS reference
# inst/extdata/pln-mite-nuts.rds (bench/nuts/build_pln_ref.R: rstan NUTS,
# 4 chains x 2500 iterations after 500 warm-up, 361 s, smallest bulk ESS
# 861): vegan's mites, the 15 most abundant species, Y ~ water +
# offset(log total), svir's priors (B flat, Sigma ~ inverse-Wishart(16, I)).
# For each number of iterations and seed: the largest |z| over species, z =
# (svir's posterior mean - NUTS's) / NUTS's sd, for B and for Sigma's
# diagonal (the issue's bars: 0.5 and 1); the range of the posterior sds
# over NUTS's; the acceptance rates; the smallest bulk ESS and the largest
# R-hat over B and diag(Sigma) (posterior package, over the chains, 1000
# draws kept in all); the sampler's time (wall). The variational fit it starts from, for comparison.
# Usage (from the repository root, with svir installed):
#   Rscript bench/pln_mcmc.R [--lib=DIR] [--seeds=3] [--iter=5000,10000] [--out=DIR]
# (iterations per chain; pln_mcmc()'s default 4 chains, one thread each
# within OpenMP's limit: two on this machine)
file_arg <- grep("^--file=", commandArgs(FALSE), value = TRUE)
here <- if (length(file_arg)) dirname(normalizePath(sub("^--file=", "", file_arg[1]))) else "bench"
source(file.path(here, "args.R"))
a <- bench_args("usage: Rscript bench/pln_mcmc.R [--lib=DIR] [--seeds=3] [--iter=5000,10000] [--out=DIR]",
                c(lib = "", seeds = "3", iter = "5000,10000", out = file.path(here, "results")))
if (nzchar(a$lib)) .libPaths(c(normalizePath(a$lib), .libPaths()))
suppressPackageStartupMessages(library(svir))
ref <- readRDS(system.file("extdata", "pln-mite-nuts.rds", package = "svir"))
d <- svir:::svir_mite15()
f <- svi_fit(Y ~ water + offset(lib), d, family = pln(globals = "bayes"))
out <- character()
say <- function(...) {
  line <- sprintf(...)
  cat(line, "\n")
  out <<- c(out, line)
}
row <- function(label, B, S, sB, sS, extra) {
  say("| %s | %.2f | %.2f | %.2f-%.2f | %.2f-%.2f | %s |", label,
      max(abs((B - ref$B_mean) / ref$B_sd)), max(abs((S - ref$Sigma_mean) / ref$Sigma_sd)),
      min(sB / ref$B_sd), max(sB / ref$B_sd), min(sS / ref$Sigma_sd), max(sS / ref$Sigma_sd), extra)
}
say("| fit | max abs z, B | max abs z, diag(Sigma) | sd / NUTS sd, B | sd / NUTS sd, diag(Sigma) | notes |")
say("|---|---:|---:|---:|---:|---|")
sdB <- sqrt(outer(diag(f$XtXinv), diag(sigma(f))))
row("variational (pln(globals = \"bayes\"))", coef(f), diag(sigma(f)), sdB, pln_sigma_posterior(f)$sd,
    sprintf("%.2f s", f$time))
for (it in as.integer(strsplit(a$iter, ",")[[1]])) for (seed in seq_len(as.integer(a$seeds))) {
  fm <- suppressWarnings(pln_mcmc(f, iter = it, seed = seed, progress = FALSE))
  mc <- fm$mcmc
  row(sprintf("pln_mcmc, %d chains x %d iterations, seed %d", mc$chains, it, seed), coef(fm), diag(sigma(fm)),
      apply(mc$B, c(2, 3), sd), pln_sigma_posterior(fm)$sd,
      sprintf("%.1f s; acceptance %.2f rows, %.2f scale moves, %.2f covariate shifts; smallest ESS %.0f, largest R-hat %.3f",
              mc$time, mc$accept[["rows"]], mc$accept[["scale"]], mc$accept[["shift"]], mc$ess_min,
              mc$rhat_max))
}
say("")
say("NUTS reference: %d chains x %d iterations after %d warm-up, %.0f s, smallest bulk ESS %.0f, largest R-hat %.3f.",
    as.integer(ref$chains), ref$iter - ref$warmup, ref$warmup, ref$seconds, ref$ess_bulk_min, ref$rhat_max)
dir.create(a$out, showWarnings = FALSE, recursive = TRUE)
path <- file.path(a$out, sprintf("pln-mcmc-%s.md", format(Sys.Date())))
writeLines(c(sprintf("# pln_mcmc() against NUTS on the mites (%s)", format(Sys.Date())), "",
             sprintf("`Rscript bench/pln_mcmc.R --seeds=%s --iter=%s`; R %s; svir %s; one thread.", a$seeds,
                     a$iter, getRversion(), as.character(utils::packageVersion("svir"))), "", out), path)
cat("Wrote", path, "\n")
