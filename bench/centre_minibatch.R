#!/usr/bin/env Rscript
# Partial centring with minibatches (issue 16, point 1): a Poisson GLMM with
# 1000 levels of about 20 rows crossed with 20 levels of about 1000, 20,000
# rows, SVI with batch_size = 2000, centred ("auto") against non-centred
# ("none"), and glmer on the same data. Prints the sds, the fixed effects
# and each sd's z in the issue's yardstick (sd / sqrt(2 J)).
#
# Usage (from the repository root, with svir installed):
#   Rscript bench/centre_minibatch.R [--lib=DIR] [--seeds=1]
file_arg <- grep("^--file=", commandArgs(FALSE), value = TRUE)
here <- if (length(file_arg)) dirname(normalizePath(sub("^--file=", "", file_arg[1]))) else "bench"
source(file.path(here, "args.R"))
a <- bench_args("usage: Rscript bench/centre_minibatch.R [--lib=DIR] [--seeds=1]",
                c(lib = "", seeds = "1"))
if (nzchar(a$lib)) .libPaths(c(normalizePath(a$lib), .libPaths()))
suppressPackageStartupMessages(library(svir))
set.seed(1)
n <- 20000
g2 <- factor(sample.int(20, n, TRUE))
g1 <- factor(sample.int(1000, n, TRUE))
x <- rnorm(n)
y <- rpois(n, exp(0.3 + 0.5 * x + rnorm(1000, 0, 0.5)[g1] + rnorm(20, 0, 0.3)[g2]))
d <- data.frame(y, x, g1, g2)
ref <- as.data.frame(lme4::VarCorr(lme4::glmer(y ~ x + (1 | g1) + (1 | g2), d, family = poisson())))
cat(sprintf("glmer: sd(g1) %.3f, sd(g2) %.3f\n", ref$sdcor[1], ref$sdcor[2]))
J <- c(1000, 20)
for (seed in seq_len(as.integer(a$seeds))) for (cen in c("auto", "none")) {
  f <- suppressWarnings(svi_fit(y ~ x + (1 | g1) + (1 | g2), d, family = poisson(), method = "svi",
                                seed = seed, control = svi_control(batch_size = 2000, centre = cen)))
  s <- as.data.frame(VarCorr(f))$sdcor[1:2]
  z <- (s - ref$sdcor[1:2]) / (ref$sdcor[1:2] / sqrt(2 * J))
  cat(sprintf("seed %d centre %-4s lambda %s: sd(g1) %.3f (z %.1f), sd(g2) %.3f (z %.1f), %d steps\n",
              seed, cen, paste(format(f$centre), collapse = " "), s[1], z[1], s[2], z[2], f$steps))
}
