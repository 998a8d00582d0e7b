#!/usr/bin/env Rscript
# svir benchmark: zero-inflated negative binomial GLMM on glmmTMB's
# Salamanders (count ~ mined + (1 | site), ziformula = ~ mined, NB2), svir
# against glmmTMB (maximum likelihood) and rstan NUTS (the exact posterior
# under svir's default priors), in one run.
#
# Usage (from the repository root, with svir installed):
#   Rscript bench/zi.R [--reps=5] [--nuts-iter=4000] [--fixture] [--lib=DIR] [--out=DIR]
#
# For each of `reps` seeds (interleaved): svir mean-field, full-rank and QEM
# with default settings, and glmmTMB. Then NUTS (4 chains of `nuts-iter`
# iterations, half warm-up; compiled outside the timing) on the same model
# written in Stan with the priors read from the svir fit's prior summary.
# Reported: posterior means (median over seeds) and sds next to glmmTMB's
# estimates and standard errors and NUTS's posterior means and sds, the
# differences in glmmTMB standard errors and in NUTS posterior sds, and the
# median wall times. With --fixture the NUTS summary is written to
# tests/testthat/fixtures/salamanders-zinb-nuts.rds, the reference of
# tests/testthat/test-zi.R. The Markdown report goes to stdout and to
# <out>/zi-<date>.md (default <out>: bench/results next to this script).

file_arg <- grep("^--file=", commandArgs(FALSE), value = TRUE)
here <- if (length(file_arg)) dirname(normalizePath(sub("^--file=", "", file_arg[1]))) else "bench"
source(file.path(here, "args.R"))
a <- bench_args("usage: Rscript bench/zi.R [--reps=5] [--nuts-iter=4000] [--fixture] [--lib=DIR] [--out=DIR]",
                c(reps = "5", "nuts-iter" = "4000", fixture = "0", lib = "", out = file.path(here, "results")))
opt <- list(reps = as.integer(a$reps), iter = as.integer(a[["nuts-iter"]]), fixture = a$fixture == "1",
            lib = a$lib, out = a$out, here = here)
if (nzchar(opt$lib)) .libPaths(c(normalizePath(opt$lib), .libPaths()))
suppressPackageStartupMessages({
  library(svir)
  library(glmmTMB)
  library(rstan)
})
if (dir.exists("/usr/include/boost")) rstan::rstan_options(boost_lib = "/usr/include")
say <- function(...) message(sprintf(...))
t_start <- Sys.time()
load_start <- readLines("/proc/loadavg", warn = FALSE)[1]

data("Salamanders", package = "glmmTMB", envir = environment())
d <- Salamanders
form <- count ~ mined + (1 | site)
pars <- c("(Intercept)", "minedno", "zi_(Intercept)", "zi_minedno")

# ---- svir and glmmTMB, interleaved over seeds ---------------------------
svir_row <- function(fit) {
  stats::setNames(c(fixef(fit), fixef(fit, component = "zi"), sqrt(diag(vcov(fit))),
                    sqrt(diag(vcov(fit, component = "zi")))),
                  c(paste0("mean.", pars), paste0("sd.", pars)))
}
configs <- list(
  meanfield = list(guide = "meanfield", method = "svi"),
  fullrank = list(guide = "fullrank", method = "svi"),
  qem = list(guide = "meanfield", method = "qem"))
res <- list()
times <- list()
for (r in seq_len(opt$reps)) {
  for (nm in names(configs)) {
    cf <- configs[[nm]]
    t0 <- proc.time()[["elapsed"]]
    fit <- svi_fit(form, d, family = negbin(), ziformula = ~mined, guide = cf$guide,
                   method = cf$method, seed = r, control = svi_control(progress = FALSE))
    times[[nm]] <- c(times[[nm]], proc.time()[["elapsed"]] - t0)
    res[[nm]] <- rbind(res[[nm]], svir_row(fit))
    if (r == 1L && nm == "meanfield") prior_tab <- fit$prior
  }
  t0 <- proc.time()[["elapsed"]]
  ref <- glmmTMB(form, zi = ~mined, family = nbinom2, data = d)
  times$glmmTMB <- c(times$glmmTMB, proc.time()[["elapsed"]] - t0)
  say("repeat %d of %d done", r, opt$reps)
}
tmb <- list(est = c(fixef(ref)$cond, fixef(ref)$zi),
            se = c(sqrt(diag(vcov(ref)$cond)), sqrt(diag(vcov(ref)$zi))))

# ---- NUTS on the same model and priors ------------------------------------
# svir's default priors, read from its prior summary: the intercepts' on
# the scale of centred predictors (as svir and brms put them)
pd <- attr(prior_tab, "dist")
get_dist <- function(cls, coef = "") pd[[which(prior_tab$class == cls & prior_tab$coef == coef)]]
chk <- function(x, dist) stopifnot(identical(x$dist, dist))
p_int <- get_dist("Intercept"); chk(p_int, "student_t")
p_b <- get_dist("b", "minedno"); chk(p_b, "normal")
p_sd <- get_dist("sd", "(Intercept)"); chk(p_sd, "half_student_t")
p_phi <- get_dist("phi"); chk(p_phi, "exponential")
p_zint <- get_dist("zi", "(Intercept)"); chk(p_zint, "student_t")
p_zb <- get_dist("zi", "minedno"); chk(p_zb, "normal")
stan_code <- "
data {
  int N; int J; int y[N]; vector[N] x; int g[N]; real xm;
  vector[3] p_int; vector[2] p_b; vector[2] p_sd; real p_phi; vector[3] p_zint; vector[2] p_zb;
}
parameters { real a; real b; real ga; real gb; real<lower=0> sd_g; real<lower=0> phi; vector[J] z; }
model {
  vector[N] eta = a + b * (x - xm) + sd_g * z[g];
  vector[N] etaz = ga + gb * (x - xm);
  a ~ student_t(p_int[1], p_int[2], p_int[3]);
  b ~ normal(p_b[1], p_b[2]);
  ga ~ student_t(p_zint[1], p_zint[2], p_zint[3]);
  gb ~ normal(p_zb[1], p_zb[2]);
  sd_g ~ student_t(p_sd[1], 0, p_sd[2]);
  phi ~ exponential(p_phi);
  z ~ std_normal();
  for (i in 1:N) {
    if (y[i] == 0)
      target += log_sum_exp(log_inv_logit(etaz[i]),
                            log1m_inv_logit(etaz[i]) + neg_binomial_2_log_lpmf(0 | eta[i], phi));
    else
      target += log1m_inv_logit(etaz[i]) + neg_binomial_2_log_lpmf(y[i] | eta[i], phi);
  }
}
generated quantities { real b0 = a - b * xm; real g0 = ga - gb * xm; }
"
x <- as.numeric(d$mined == "no")
sdat <- list(N = nrow(d), J = nlevels(d$site), y = d$count, x = x, g = as.integer(d$site),
             xm = mean(x), p_int = c(p_int$df, p_int$location, p_int$scale),
             p_b = c(p_b$location, p_b$scale), p_sd = c(p_sd$df, p_sd$scale), p_phi = p_phi$rate,
             p_zint = c(p_zint$df, p_zint$location, p_zint$scale),
             p_zb = c(p_zb$location, p_zb$scale))
say("compiling the Stan model")
sm <- rstan::stan_model(model_code = stan_code)
t0 <- proc.time()[["elapsed"]]
nuts <- rstan::sampling(sm, sdat, chains = 4, cores = min(4L, parallel::detectCores()),
                        iter = opt$iter, seed = 1, refresh = 0)
times$NUTS <- proc.time()[["elapsed"]] - t0
ns <- rstan::summary(nuts, pars = c("b0", "b", "g0", "gb"))$summary
nuts_ref <- data.frame(mean = ns[, "mean"], sd = ns[, "sd"], q2.5 = ns[, "2.5%"],
                       q25 = ns[, "25%"], median = ns[, "50%"], q75 = ns[, "75%"],
                       q97.5 = ns[, "97.5%"], n_eff = ns[, "n_eff"], Rhat = ns[, "Rhat"],
                       row.names = pars)
# the random effects' sd: NUTS's posterior mean against glmmTMB's estimate
sd_nuts <- rstan::summary(nuts, pars = "sd_g")$summary[1, "mean"]
sd_tmb <- attr(glmmTMB::VarCorr(ref)$cond$site, "stddev")[[1]]
if (opt$fixture) {
  fx <- file.path(dirname(opt$here), "tests", "testthat", "fixtures")
  dir.create(fx, showWarnings = FALSE, recursive = TRUE)
  attr(nuts_ref, "made_by") <- sprintf("bench/zi.R: rstan %s NUTS, 4 chains x %d iterations, seed 1, %s",
                                       utils::packageVersion("rstan"), opt$iter, format(Sys.Date()))
  saveRDS(nuts_ref, file.path(fx, "salamanders-zinb-nuts.rds"), version = 2)
  say("wrote %s", file.path(fx, "salamanders-zinb-nuts.rds"))
}

# ---- report -----------------------------------------------------------------
fmt <- function(v, d = 3) formatC(v, digits = d, format = "f")
row_of <- function(nm) {
  m <- apply(res[[nm]][, paste0("mean.", pars), drop = FALSE], 2, stats::median)
  s <- apply(res[[nm]][, paste0("sd.", pars), drop = FALSE], 2, stats::median)
  list(mean = m, sd = s)
}
lines <- c(
  sprintf("## svir zero-inflated NB GLMM, glmmTMB::Salamanders, %s", format(Sys.Date())), "",
  "`count ~ mined + (1 | site)`, `ziformula = ~ mined`, NB2. svir: posterior mean (sd), median over seeds 1..reps.",
  "dTMB: (estimate - glmmTMB's) / glmmTMB's standard error; dNUTS: (estimate - NUTS mean) / NUTS posterior sd.", "",
  "| parameter | glmmTMB est (SE) | NUTS mean (sd) | NUTS dTMB | method | svir mean (sd) | dTMB | dNUTS |",
  "|---|---|---|---|---|---|---|---|")
for (k in seq_along(pars)) {
  for (nm in names(configs)) {
    ro <- row_of(nm)
    lines <- c(lines, sprintf("| %s | %s (%s) | %s (%s) | %s | %s | %s (%s) | %s | %s |",
      pars[k], fmt(tmb$est[k]), fmt(tmb$se[k]), fmt(nuts_ref$mean[k]), fmt(nuts_ref$sd[k]),
      fmt((nuts_ref$mean[k] - tmb$est[k]) / tmb$se[k], 2), nm, fmt(ro$mean[k]), fmt(ro$sd[k]),
      fmt((ro$mean[k] - tmb$est[k]) / tmb$se[k], 2),
      fmt((ro$mean[k] - nuts_ref$mean[k]) / nuts_ref$sd[k], 2)))
  }
}
med <- vapply(times, stats::median, numeric(1))
lines <- c(lines, "", "| fit | median wall time (s) | ratio to svir meanfield |", "|---|---|---|",
           sprintf("| %s | %s | %s |", names(med), fmt(med, 2), fmt(med / med[["meanfield"]], 1)), "",
           sprintf("NUTS: %d chains x %d iterations; n_eff %s; Rhat max %s.", 4L, opt$iter,
                   paste(round(nuts_ref$n_eff), collapse = ", "), fmt(max(nuts_ref$Rhat), 3)),
           "", "NUTS's posterior quantiles (2.5%, 25%, 50%, 75%, 97.5%):", "",
           sprintf("* %s: %s", pars, apply(nuts_ref[, c("q2.5", "q25", "median", "q75", "q97.5")],
                                             1, function(v) paste(fmt(v), collapse = ", "))),
           "", sprintf("The site sd: NUTS posterior mean %s, glmmTMB %s.", fmt(sd_nuts), fmt(sd_tmb)))
si <- utils::sessionInfo()
cpu <- tryCatch(sub(".*: ", "", grep("^model name", readLines("/proc/cpuinfo"), value = TRUE)[1]),
                error = function(e) "unknown")
lines <- c(lines, "", "Notes:", "",
  sprintf("* machine: %s, nproc = %s; %s; BLAS: %s", cpu, parallel::detectCores(), R.version.string,
          if (is.null(si$BLAS)) "unknown" else si$BLAS),
  sprintf("* packages: svir %s (at %s), glmmTMB %s, rstan %s", utils::packageVersion("svir"),
          dirname(find.package("svir")), utils::packageVersion("glmmTMB"), utils::packageVersion("rstan")),
  sprintf("* date: %s; run time %.1f min; load average at start %s, at end %s",
          format(t_start, "%Y-%m-%d %H:%M %Z"), as.numeric(difftime(Sys.time(), t_start, units = "mins")),
          sub("^(\\S+ \\S+ \\S+).*", "\\1", load_start),
          sub("^(\\S+ \\S+ \\S+).*", "\\1", readLines("/proc/loadavg", warn = FALSE)[1])),
  sprintf("* command: Rscript bench/zi.R %s", paste(commandArgs(trailingOnly = TRUE), collapse = " ")), "")
cat(lines, sep = "\n")
dir.create(opt$out, showWarnings = FALSE, recursive = TRUE)
writeLines(lines, file.path(opt$out, sprintf("zi-%s.md", format(Sys.Date()))))
