#!/usr/bin/env Rscript
# svir under separation: binomial GLMMs whose data separate (complete:
# y = (x > 0); quasi: a factor level whose responses are all 1), svir
# against rstan NUTS on the same model and priors, in one run.
#
# Usage (from the repository root, with svir installed):
#   Rscript bench/separation.R [--reps=3] [--nuts-iter=4000] [--fixture] [--lib=DIR] [--out=DIR]
#
# For each data set and each of `reps` seeds: svir mean-field and
# full-rank with default settings, and Stan's ADVI (mean-field and
# full-rank, tol_rel_obj = 1e-4 instead of its 0.01, which stops it
# early here; the same model). Then NUTS (4 chains of `nuts-iter`
# iterations, half warm-up) on the same model written in Stan, with the
# priors read from the svir fit's prior summary (the intercept's prior is
# on the intercept of the centred predictors, as svir puts it). Reported:
# the posterior means, sds and 95% intervals of the fixed effects and the
# random-effect sd (its mean), the distance from NUTS in NUTS posterior
# sds, the ratio of the sds, and wall times. The coefficient the data do
# not bound has svir's grid posterior (R/separation.R).
# With --fixture the data and NUTS's summaries are written to
# tests/testthat/fixtures/separation-nuts.rds, the reference of
# tests/testthat/test-fuzz.R. The Markdown report goes to stdout and to
# <out>/separation-<date>.md (default <out>: bench/results).

file_arg <- grep("^--file=", commandArgs(FALSE), value = TRUE)
here <- if (length(file_arg)) dirname(normalizePath(sub("^--file=", "", file_arg[1]))) else "bench"
source(file.path(here, "args.R"))
a <- bench_args("usage: Rscript bench/separation.R [--reps=3] [--nuts-iter=4000] [--fixture] [--lib=DIR] [--out=DIR]",
                c(reps = "3", "nuts-iter" = "4000", fixture = "0", lib = "", out = file.path(here, "results")))
opt <- list(reps = as.integer(a$reps), iter = as.integer(a[["nuts-iter"]]), fixture = a$fixture == "1",
            lib = a$lib, out = a$out, here = here)
if (nzchar(opt$lib)) .libPaths(c(normalizePath(opt$lib), .libPaths()))
suppressPackageStartupMessages({
  library(svir)
  library(rstan)
})
if (dir.exists("/usr/include/boost")) rstan::rstan_options(boost_lib = "/usr/include")
t_start <- Sys.time()

# ---- the data sets --------------------------------------------------------
set.seed(20261203)
n <- 200
complete <- data.frame(x = round(rnorm(n), 3), g = factor(sample(10, n, TRUE)))
complete$y <- as.integer(complete$x > 0)
n <- 300
quasi <- data.frame(f = factor(sample(c("a", "b", "c"), n, TRUE)), g = factor(sample(15, n, TRUE)))
quasi$y <- rbinom(n, 1, 0.4)
quasi$y[quasi$f == "c"] <- 1L
cases <- list(complete = list(data = complete, formula = y ~ x + (1 | g)),
              quasi = list(data = quasi, formula = y ~ f + (1 | g)))

stan_code <- "
data {
  int<lower=1> N; int<lower=1> K; int<lower=1> J;
  matrix[N, K] Xc; vector[K] xbar; int<lower=0, upper=1> y[N];
  int<lower=1, upper=J> g[N];
  real icpt_df; real icpt_scale; vector[K] b_scale; real sd_df; real sd_scale;
}
parameters { real a_c; vector[K] beta; real<lower=0> sd_g; vector[J] z; }
model {
  a_c ~ student_t(icpt_df, 0, icpt_scale);
  beta ~ normal(0, b_scale);
  sd_g ~ student_t(sd_df, 0, sd_scale);
  z ~ std_normal();
  y ~ bernoulli_logit(a_c + Xc * beta + sd_g * z[g]);
}
generated quantities { real a = a_c - dot_product(xbar, beta); }
"
sm <- rstan::stan_model(model_code = stan_code)

rows <- list()
fixture <- list()
for (cn in names(cases)) {
  cs <- cases[[cn]]
  fits <- list()
  times <- list()
  for (r in seq_len(opt$reps)) {
    for (gd in c("meanfield", "fullrank")) {
      t0 <- proc.time()[["elapsed"]]
      fit <- suppressWarnings(svi_fit(cs$formula, cs$data, family = binomial(), guide = gd,
                                      seed = r, control = svi_control(progress = FALSE)))
      times[[gd]] <- c(times[[gd]], proc.time()[["elapsed"]] - t0)
      ci <- confint(fit, names(fixef(fit)))
      fits[[gd]] <- rbind(fits[[gd]], c(fixef(fit), sqrt(diag(vcov(fit))),
                                        sd_g = attr(VarCorr(fit)$g, "stddev")[[1]],
                                        lo = ci[, 1], hi = ci[, 2]))
    }
  }
  pars <- names(fixef(fit))
  dist <- attr(fit$prior, "dist")
  cls <- fit$prior$class
  X <- stats::model.matrix(lme4::nobars(cs$formula), cs$data)[, -1, drop = FALSE]
  xbar <- colMeans(X)
  sdat <- list(N = nrow(X), K = ncol(X), J = nlevels(cs$data$g), Xc = sweep(X, 2, xbar),
               xbar = as.array(xbar), y = cs$data$y, g = as.integer(cs$data$g),
               icpt_df = dist[[which(cls == "Intercept")]]$df,
               icpt_scale = dist[[which(cls == "Intercept")]]$scale,
               b_scale = as.array(vapply(dist[cls == "b"], function(d) d$scale, 1)),
               sd_df = dist[[which(cls == "sd")]]$df, sd_scale = dist[[which(cls == "sd")]]$scale)
  t0 <- proc.time()[["elapsed"]]
  nuts <- rstan::sampling(sm, data = sdat, chains = 4, iter = opt$iter, seed = 1, refresh = 0,
                          control = list(adapt_delta = 0.95))
  t_nuts <- proc.time()[["elapsed"]] - t0
  dr <- as.matrix(nuts, pars = c("a", "beta", "sd_g"))
  colnames(dr) <- c(pars, "sd_g")
  ss <- rstan::summary(nuts, pars = c("a", "beta", "sd_g"))$summary
  ref <- data.frame(mean = colMeans(dr), sd = apply(dr, 2, stats::sd),
                    median = apply(dr, 2, stats::median),
                    q2.5 = apply(dr, 2, stats::quantile, 0.025),
                    q97.5 = apply(dr, 2, stats::quantile, 0.975),
                    n_eff = ss[, "n_eff"], Rhat = ss[, "Rhat"], row.names = colnames(dr))
  fixture[[cn]] <- list(data = cs$data, formula = cs$formula, nuts = ref)
  # Stan's ADVI on the same model (mean-field; full-rank over every
  # parameter, the random effects too), for the same seeds
  for (alg in c("meanfield", "fullrank")) {
    nm <- paste0("ADVI_", alg)
    for (r in seq_len(opt$reps)) {
      t0 <- proc.time()[["elapsed"]]
      v <- suppressWarnings(suppressMessages(
        rstan::vb(sm, data = sdat, algorithm = alg, seed = r, refresh = 0, output_samples = 4000,
                  tol_rel_obj = 1e-4)))
      times[[nm]] <- c(times[[nm]], proc.time()[["elapsed"]] - t0)
      dv <- as.matrix(v, pars = c("a", "beta", "sd_g"))
      sdv <- apply(dv, 2, stats::sd)
      qv <- apply(dv[, seq_along(pars), drop = FALSE], 2, stats::quantile, c(0.025, 0.975))
      fits[[nm]] <- rbind(fits[[nm]], c(colMeans(dv)[seq_along(pars)], sdv[seq_along(pars)],
                                        sd_g = mean(dv[, ncol(dv)]), lo = qv[1, ], hi = qv[2, ]))
    }
  }
  for (gd in names(fits)) {
    m <- apply(fits[[gd]], 2, stats::median)
    k <- length(pars)
    est <- c(m[seq_len(k)], m[["sd_g"]])
    esd <- c(m[k + seq_len(k)], NA)
    lo <- c(m[2 * k + 1 + seq_len(k)], NA)
    hi <- c(m[3 * k + 1 + seq_len(k)], NA)
    rows[[length(rows) + 1L]] <- data.frame(
      data = cn, guide = if (startsWith(gd, "ADVI")) sub("_", " ", gd) else paste("svir", gd),
      parameter = c(pars, "sd_g"),
      svir = ifelse(is.na(lo), sprintf("%.3f", est), sprintf("%.3f (%.3f) [%.2f, %.2f]", est, esd, lo, hi)),
      ratio = ifelse(is.na(esd), "", sprintf("%.2f", esd / ref$sd)),
      nuts = sprintf("%.3f (%.3f) [%.2f, %.2f]", ref$mean, ref$sd, ref$q2.5, ref$q97.5),
      z = sprintf("%+.2f", (est - ref$mean) / ref$sd),
      svir_s = sprintf("%.2f", stats::median(times[[gd]])), nuts_s = sprintf("%.0f", t_nuts))
  }
}
tab <- do.call(rbind, rows)

md <- c(sprintf("# Separation: svir against NUTS (%s)", format(Sys.Date())), "",
        sprintf("Machine: %s; %d cores; R %s; BLAS: %s.", Sys.info()[["nodename"]],
                parallel::detectCores(), getRversion(), extSoftVersion()[["BLAS"]]),
        sprintf("svir and Stan's ADVI (tol_rel_obj = 1e-4): %d seeds, medians; NUTS: 4 chains x %d iterations, adapt_delta 0.95.",
                opt$reps, opt$iter), "",
        "| data | method | parameter | mean (sd) [95%] | NUTS mean (sd) [95%] | (mean - NUTS) / NUTS sd | sd / NUTS sd | s per fit | NUTS s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
        sprintf("| %s | %s | %s | %s | %s | %s | %s | %s | %s |", tab$data, tab$guide, tab$parameter,
                tab$svir, tab$nuts, tab$z, tab$ratio, tab$svir_s, tab$nuts_s), "",
        sprintf("Total %.0f s.", as.numeric(difftime(Sys.time(), t_start, units = "secs"))))
cat(md, sep = "\n")
dir.create(opt$out, showWarnings = FALSE, recursive = TRUE)
writeLines(md, file.path(opt$out, sprintf("separation-%s.md", format(Sys.Date()))))
if (opt$fixture) {
  saveRDS(fixture, file.path(opt$here, "..", "tests", "testthat", "fixtures", "separation-nuts.rds"))
}
