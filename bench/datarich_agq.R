#!/usr/bin/env Rscript
# The reference for the data-poor factor of bench/datarich.R's smallest
# design (n = 10^4, g1 2000 levels of 5 rows crossed with g2 10 levels of
# 1000), Poisson and Bernoulli: glmer's Laplace fit of y ~ x + (1 | g1) +
# (1 | g2) is biased for sd(g1) with so few rows per level (Bernoulli:
# 0.506 against 0.549 by quadrature; NUTS with svir's priors 0.547,
# dev/datarich_bernoulli_nuts.R). Adaptive Gauss-Hermite quadrature takes
# one grouping factor, so g2 (1000 rows per level) enters as fixed effects:
# y ~ x + g2 + (1 | g1), nAGQ = 25. Each fit takes about 45 s here, too long
# for the tests, which read the result from
# tests/testthat/fixtures/datarich-agq.rds (test-window.R).
#
# Usage (from the repository root): Rscript bench/datarich_agq.R [--lib=DIR]
file_arg <- grep("^--file=", commandArgs(FALSE), value = TRUE)
here <- if (length(file_arg)) dirname(normalizePath(sub("^--file=", "", file_arg[1]))) else "bench"
source(file.path(here, "args.R"))
a <- bench_args("usage: Rscript bench/datarich_agq.R [--lib=DIR]", c(lib = ""))
if (nzchar(a$lib)) .libPaths(c(normalizePath(a$lib), .libPaths()))
suppressPackageStartupMessages({
  library(svir) # helper-sim.R reads svir::negbin()
  library(lme4)
})
source(file.path(here, "..", "tests", "testthat", "helper-sim.R"))
ref <- do.call(rbind, lapply(c("poisson", "binomial"), function(family) {
  d <- sim_datarich(family, 1e4, 2000, 10)
  fam <- get(family)()
  t0 <- proc.time()[["elapsed"]]
  agq <- suppressWarnings(glmer(y ~ x + g2 + (1 | g1), d, family = fam, nAGQ = 25L))
  t_agq <- proc.time()[["elapsed"]] - t0
  lap <- as.data.frame(VarCorr(suppressWarnings(glmer(y ~ x + (1 | g1) + (1 | g2), d, family = fam))))
  r <- data.frame(family = family, sd_g1_agq = as.data.frame(VarCorr(agq))$sdcor[1],
                  sd_g1_laplace = lap$sdcor[lap$grp == "g1"], sd_g2_laplace = lap$sdcor[lap$grp == "g2"],
                  agq_seconds = t_agq)
  print(r)
  r
}))
attr(ref, "made") <- sprintf("bench/datarich_agq.R on %s; lme4 %s, R %s", format(Sys.Date()),
                             utils::packageVersion("lme4"), getRversion())
path <- file.path(here, "..", "tests", "testthat", "fixtures", "datarich-agq.rds")
saveRDS(ref, path)
cat("Wrote", normalizePath(path), "\n")
