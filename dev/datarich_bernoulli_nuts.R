#!/usr/bin/env Rscript
# Which answer is off in bench/datarich.R's one failing default case:
# Bernoulli, y ~ x + (1 | g1) + (1 | g2), n = 10^4, 2000 x 10 levels (5 and
# 1000 rows per level), where svir's default put sd(g1) 4.8 approximate
# posterior sds (sd / sqrt(2 J)) above glmer's estimate. The same data
# (bench/datarich.R's simulate(), seed 20261204 + n), fitted by NUTS with
# svir's default priors (the Stan program from bench/nuts/glmm_stan.R),
# by svir's default and by glmer (Laplace, nAGQ = 1).
#
# Usage (from the repository root, with svir, lme4 and rstan installed):
#   Rscript dev/datarich_bernoulli_nuts.R [--lib=DIR]
# 4 chains x (1000 warmup + 1000) iterations, adapt_delta 0.9, seed 1;
# prints one table (posterior means and sds; glmer's estimates and SEs).
args <- commandArgs(trailingOnly = TRUE)
lib <- sub("^--lib=", "", grep("^--lib=", args, value = TRUE))
if (length(lib)) .libPaths(c(normalizePath(lib), .libPaths()))
suppressPackageStartupMessages({
  library(svir)
  library(lme4)
  library(rstan)
})
rstan_options(boost_lib = "/usr/include", auto_write = FALSE)
source("bench/nuts/glmm_stan.R")

n <- 1e4
J1 <- 2000
J2 <- 10
set.seed(20261204 + n)
g1 <- factor(sample.int(J1, n, replace = TRUE), levels = seq_len(J1))
g2 <- factor(sample.int(J2, n, replace = TRUE), levels = seq_len(J2))
x <- rnorm(n)
b1 <- rnorm(J1, 0, 0.5)
b2 <- rnorm(J2, 0, 0.3)
eta <- 0.3 + 0.5 * x + b1[g1] + b2[g2]
y <- rbinom(n, 1, plogis(eta))
d <- data.frame(y = y, x = x, g1 = droplevels(g1), g2 = droplevels(g2))
f <- y ~ x + (1 | g1) + (1 | g2)
cat(sprintf("sample sd of the simulated effects: g1 %.3f, g2 %.3f\n", sd(b1), sd(b2)))

t0 <- proc.time()[["elapsed"]]
fit <- svi_fit(f, d, family = binomial(), seed = 1)
t_svir <- proc.time()[["elapsed"]] - t0
cat("svir default:", fit$method, "-", fit$method_reason, sprintf("(%.1f s)\n", t_svir))
gm <- glmer(f, d, family = binomial())

sm <- stan_model_of(fit)
smod <- stan_model(model_code = sm$code)
t0 <- proc.time()[["elapsed"]]
sf <- sampling(smod, data = sm$data, chains = 4, cores = 2, iter = 2000, warmup = 1000,
               seed = 1, control = list(adapt_delta = 0.9), refresh = 0)
t_nuts <- proc.time()[["elapsed"]] - t0
dr <- stan_draws_svir(sf, sm)
div <- sum(vapply(get_sampler_params(sf, inc_warmup = FALSE), function(s) sum(s[, "divergent__"]), 0))

pars <- c("(Intercept)", "x", "sd_g1__(Intercept)", "sd_g2__(Intercept)")
nuts <- t(vapply(pars, function(p) {
  v <- dr[, , p]
  c(mean = mean(v), sd = sd(as.vector(v)), rhat = rstan::Rhat(v), ess = rstan::ess_bulk(v))
}, numeric(4)))
sv <- as.matrix(fit)[, pars]
vc <- as.data.frame(lme4::VarCorr(gm))
gl_est <- c(fixef(gm), vc$sdcor[vc$grp == "g1"], vc$sdcor[vc$grp == "g2"])
gl_se <- c(sqrt(diag(as.matrix(vcov(gm)))), NA, NA)
tab <- data.frame(param = pars, nuts_mean = nuts[, "mean"], nuts_sd = nuts[, "sd"],
                  rhat = nuts[, "rhat"], ess = nuts[, "ess"],
                  svir_mean = colMeans(sv), svir_sd = apply(sv, 2, sd),
                  svir_d = (colMeans(sv) - nuts[, "mean"]) / nuts[, "sd"],
                  svir_r = apply(sv, 2, sd) / nuts[, "sd"],
                  glmer = gl_est, glmer_se = gl_se,
                  glmer_d = (gl_est - nuts[, "mean"]) / nuts[, "sd"], row.names = NULL)
cat(sprintf("NUTS: %.0f s, %d divergences; svir default %.1f s\n", t_nuts, div, t_svir))
cat(sprintf("the issue's yardstick sd / sqrt(2 J) for sd(g1): %.4f\n", gl_est[3] / sqrt(2 * J1)))
print(tab, digits = 4)
