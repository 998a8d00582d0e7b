#!/usr/bin/env Rscript
# Simulation-based calibration (Talts et al. 2018) of svir's DEFAULT fit:
# svi_fit(formula, data, family, prior = <the simulation's prior>, seed = s),
# with no method, guide or control, so method = "auto" picks what it picks
# for a model of this size (fit$method is recorded for every fit).
#
# Usage (from the repository root, with svir installed):
#   Rscript bench/sbc.R [--lib=DIR] [--reps=200]
#                       [--families=gaussian,binomial,poisson,negbin] [--out=bench/results]
#
# Model, for every family: y ~ x + (1 | g), J = 12 groups of 6 observations
# (n = 72), x ~ N(0, 1) drawn afresh each replicate and then centred exactly
# (x <- x - mean(x)), so that svir's intercept prior, which is on the
# intercept of the centred predictors (brms convention), is the prior of
# the reported "(Intercept)". Binomial: cbind(y, 10 - y), 10 trials.
#
# The true parameters are drawn from EXACTLY the prior passed to every fit
# (explicit, proper and moderately informative, so that the simulated data
# stay sensible; svir's defaults are data-dependent for the gaussian family
# and very wide elsewhere):
#   intercept normal(0, 1), b normal(0, 1), sd half_normal(0.5),
#   sigma half_normal(1) (gaussian), phi exponential(0.1) (negbin, svir's
#   default phi prior, mean 10).
# The data are drawn from the model given them: eta = a + b x + sd_g z_g,
# z_g ~ N(0, 1).
#
# For each fit and parameter: whether the true value lies in the central
# 50% and 90% intervals of the draws (as.matrix(fit)), and its rank among
# the draws (ties, from the importance resampling, broken at random):
# uniform on 0..S if the fit is calibrated. Reported per family: coverage
# with its binomial Monte Carlo standard error, a chi-square test of
# uniformity of the ranks in 10 bins (exact bin probabilities for S + 1
# rank values), the methods used, median k-hat and median time.
# The Markdown report goes to stdout and <out>/sbc-<date>.md; the raw
# per-replicate results to <out>/sbc-<date>.rds (written after each family).

file_arg <- grep("^--file=", commandArgs(FALSE), value = TRUE)
here <- if (length(file_arg)) dirname(normalizePath(sub("^--file=", "", file_arg[1]))) else "bench"
source(file.path(here, "args.R"))
a <- bench_args(
  "usage: Rscript bench/sbc.R [--lib=DIR] [--reps=200] [--families=gaussian,binomial,poisson,negbin] [--out=DIR]",
  c(lib = "", reps = "200", families = "gaussian,binomial,poisson,negbin",
    out = file.path(here, "results"))
)
opt <- list(lib = a$lib, reps = as.integer(a$reps),
            families = strsplit(a$families, ",", fixed = TRUE)[[1]], out = a$out)
if (nzchar(opt$lib)) .libPaths(c(normalizePath(opt$lib), .libPaths()))
suppressPackageStartupMessages(library(svir))
dir.create(opt$out, showWarnings = FALSE, recursive = TRUE)
stamp <- format(Sys.Date())
rds_path <- file.path(opt$out, sprintf("sbc-%s.rds", stamp))
md_path <- file.path(opt$out, sprintf("sbc-%s.md", stamp))
t_start <- Sys.time()

J <- 12L
n_per <- 6L
n <- J * n_per
trials <- 10L

# ---- the priors: the same objects drive the simulation and the fit --------
pri <- list(intercept = c(0, 1), b = c(0, 1), sd = 0.5, sigma = 1, phi_rate = 0.1)
prior_for <- function(family) {
  switch(family,
    gaussian = svi_prior(intercept = normal(pri$intercept[1], pri$intercept[2]),
                         b = normal(pri$b[1], pri$b[2]), sd = half_normal(pri$sd),
                         sigma = half_normal(pri$sigma)),
    negbin = svi_prior(intercept = normal(pri$intercept[1], pri$intercept[2]),
                       b = normal(pri$b[1], pri$b[2]), sd = half_normal(pri$sd),
                       phi = exponential(pri$phi_rate)),
    svi_prior(intercept = normal(pri$intercept[1], pri$intercept[2]),
              b = normal(pri$b[1], pri$b[2]), sd = half_normal(pri$sd))
  )
}
family_obj <- function(family) {
  switch(family, gaussian = gaussian(), binomial = binomial(), poisson = poisson(),
         negbin = negbin(), stop("unknown family ", family))
}
formula_for <- function(family) {
  if (family == "binomial") cbind(y, 10 - y) ~ x + (1 | g) else y ~ x + (1 | g)
}
par_names <- function(family) {
  c("(Intercept)", "x", "sd_g__(Intercept)",
    switch(family, gaussian = "sigma", negbin = "phi", character()))
}

draw_truth <- function(family) {
  th <- c("(Intercept)" = rnorm(1, pri$intercept[1], pri$intercept[2]),
          x = rnorm(1, pri$b[1], pri$b[2]),
          "sd_g__(Intercept)" = abs(rnorm(1, 0, pri$sd)))
  if (family == "gaussian") th["sigma"] <- abs(rnorm(1, 0, pri$sigma))
  if (family == "negbin") th["phi"] <- rexp(1, pri$phi_rate)
  th
}

simulate_data <- function(family, th) {
  g <- factor(rep(seq_len(J), each = n_per))
  x <- rnorm(n)
  x <- x - mean(x)
  z <- rnorm(J)
  eta <- th[["(Intercept)"]] + th[["x"]] * x + th[["sd_g__(Intercept)"]] * z[as.integer(g)]
  y <- switch(family,
    gaussian = rnorm(n, eta, th[["sigma"]]),
    binomial = rbinom(n, trials, plogis(eta)),
    poisson = rpois(n, exp(eta)),
    negbin = rnbinom(n, size = th[["phi"]], mu = exp(eta))
  )
  data.frame(y = y, x = x, g = g)
}

# Rank of the true value among the draws, ties broken at random: 0..S.
rank_of <- function(draws, truth) {
  lt <- sum(draws < truth)
  eq <- sum(draws == truth)
  lt + if (eq > 0) sample.int(eq + 1L, 1L) - 1L else 0L
}

one_rep <- function(family, r, prior) {
  set.seed(1e6 * match(family, c("gaussian", "binomial", "poisson", "negbin")) + r)
  th <- draw_truth(family)
  d <- simulate_data(family, th)
  pn <- par_names(family)
  warns <- character()
  t0 <- proc.time()[["elapsed"]]
  fit <- tryCatch(
    withCallingHandlers(
      svi_fit(formula_for(family), d, family = family_obj(family), prior = prior, seed = r),
      warning = function(w) {
        warns <<- c(warns, conditionMessage(w))
        invokeRestart("muffleWarning")
      }),
    error = function(e) e
  )
  elapsed <- proc.time()[["elapsed"]] - t0
  base <- data.frame(family = family, rep = r, param = pn, truth = unname(th[pn]),
                     ok = FALSE, method = NA_character_, khat = NA_real_,
                     khat_marginal = NA_real_, time = elapsed, n_draws = NA_integer_,
                     rank = NA_integer_, in50 = NA, in90 = NA, post_mean = NA_real_,
                     post_sd = NA_real_, n_warn = length(warns),
                     warn = if (length(warns)) paste(unique(warns), collapse = " | ") else "",
                     error = "", ysum = sum(d$y), stringsAsFactors = FALSE)
  if (inherits(fit, "error")) {
    base$error <- conditionMessage(fit)
    return(base)
  }
  m <- tryCatch(as.matrix(fit), error = function(e) e)
  if (inherits(m, "error") || !all(pn %in% colnames(m))) {
    base$error <- if (inherits(m, "error")) conditionMessage(m) else "draws lack a parameter"
    return(base)
  }
  base$ok <- TRUE
  base$method <- as.character(fit$method)
  base$khat <- if (is.null(fit$khat)) NA_real_ else as.double(fit$khat)[1]
  km <- fit$laplace$khat_marginal
  base$khat_marginal <- if (is.null(km)) NA_real_ else as.double(km)[1]
  base$n_draws <- nrow(m)
  for (k in seq_along(pn)) {
    dr <- m[, pn[k]]
    tr <- base$truth[k]
    q <- stats::quantile(dr, c(0.05, 0.25, 0.75, 0.95), names = FALSE)
    base$rank[k] <- rank_of(dr, tr)
    base$in50[k] <- tr >= q[2] && tr <= q[3]
    base$in90[k] <- tr >= q[1] && tr <= q[4]
    base$post_mean[k] <- mean(dr)
    base$post_sd[k] <- stats::sd(dr)
  }
  base
}

# Chi-square test of uniform ranks on 0..S in 10 bins (exact bin probabilities).
rank_chisq <- function(rank, S, bins = 10L) {
  rank <- rank[!is.na(rank)]
  if (length(rank) < bins) return(NA_real_)
  b <- pmin(floor(rank * bins / (S + 1)), bins - 1)
  vals <- 0:S
  p <- tabulate(pmin(floor(vals * bins / (S + 1)), bins - 1) + 1L, bins) / (S + 1)
  obs <- tabulate(b + 1L, bins)
  suppressWarnings(stats::chisq.test(obs, p = p)$p.value)
}

fmt_cov <- function(x) {
  x <- x[!is.na(x)]
  p <- mean(x)
  sprintf("%.1f (%.1f)", 100 * p, 100 * sqrt(p * (1 - p) / length(x)))
}

family_report <- function(res, family) {
  rf <- res[res$family == family, ]
  per_fit <- rf[!duplicated(rf$rep), ]
  okf <- per_fit[per_fit$ok, ]
  pn <- par_names(family)
  S <- if (nrow(okf)) stats::median(okf$n_draws) else NA
  rows <- vapply(pn, function(p) {
    x <- rf[rf$param == p & rf$ok, ]
    sprintf("| `%s` | %s | %s | %.3f | %s |", p, fmt_cov(x$in50), fmt_cov(x$in90),
            rank_chisq(x$rank, S),
            paste(tabulate(pmin(floor(x$rank * 10 / (S + 1)), 9) + 1L, 10), collapse = " "))
  }, "")
  meth <- table(okf$method)
  bad <- per_fit[!per_fit$ok, ]
  fail_line <- if (nrow(bad)) {
    sp <- split(bad$rep, bad$error)
    paste0("Failed fits (replicate: error): ",
           paste(sprintf("%s: `%s`", vapply(sp, paste, "", collapse = ", "), names(sp)), collapse = "; "), ".")
  } else character()
  hi <- okf$rep[!is.na(okf$khat) & okf$khat > 0.7]
  hi_line <- if (length(hi)) sprintf("Replicates with k-hat above 0.7: %s.", paste(hi, collapse = ", ")) else character()
  c(sprintf("### %s", family), "",
    sprintf("Fits: %d of %d succeeded (%d failed); methods: %s; draws per fit: %s.",
            nrow(okf), nrow(per_fit), sum(!per_fit$ok),
            paste(sprintf("%s %d", names(meth), as.integer(meth)), collapse = ", "),
            paste(unique(okf$n_draws), collapse = ", ")),
    sprintf("k-hat: median %.2f, 90%% quantile %.2f, max %.2f, %d fits above 0.7 (%d above 0.5).",
            stats::median(okf$khat, na.rm = TRUE),
            stats::quantile(okf$khat, 0.9, na.rm = TRUE, names = FALSE),
            max(okf$khat, na.rm = TRUE), sum(okf$khat > 0.7, na.rm = TRUE),
            sum(okf$khat > 0.5, na.rm = TRUE)),
    sprintf("Time per fit: median %.2f s, 90%% quantile %.2f s, max %.2f s; fits with warnings: %d.",
            stats::median(per_fit$time), stats::quantile(per_fit$time, 0.9, names = FALSE),
            max(per_fit$time), sum(per_fit$n_warn > 0)),
    fail_line, hi_line,
    "",
    "| parameter | 50% coverage, % (MCSE) | 90% coverage, % (MCSE) | rank chi-square p (10 bins) | rank histogram (10 bins) |",
    "|---|---|---|---|---|",
    rows, "")
}

write_report <- function(res, final = FALSE) {
  fams <- unique(res$family)
  el <- as.double(difftime(Sys.time(), t_start, units = "mins"))
  lines <- c(
    sprintf("# svir simulation-based calibration, %s", stamp), "",
    sprintf("`Rscript bench/sbc.R --reps=%d --families=%s`; svir %s from %s; R %s; %s.",
            opt$reps, paste(opt$families, collapse = ","),
            as.character(utils::packageVersion("svir")),
            dirname(find.package("svir")), getRversion(), Sys.info()[["nodename"]]),
    sprintf("Total run time: %.1f minutes%s.", el, if (final) "" else " (so far; run incomplete)"),
    "",
    "Model `y ~ x + (1 | g)`, 12 groups x 6 observations, x ~ N(0, 1) centred exactly",
    "in each replicate, binomial with 10 trials (`cbind(y, 10 - y)`). Each replicate",
    "draws the truth from the prior below, the data from the model, and fits",
    "`svi_fit(formula, data, family, prior = <that prior>, seed = r)` (default",
    "method, guide and control). Priors (simulation = fit): intercept normal(0, 1),",
    "b normal(0, 1), sd half_normal(0.5), sigma half_normal(1), phi exponential(0.1).",
    "Coverage: share of fits whose central 50% / 90% interval of `as.matrix(fit)`",
    "contains the true value (nominal 50 / 90; binomial MCSE of the observed share in",
    "brackets). Rank: number of draws below the truth (ties at random), uniform if",
    "calibrated; chi-square test in 10 bins. Rank histograms: a U shape means",
    "intervals too narrow, a hump too wide, a slope a bias.", "",
    unlist(lapply(fams, function(f) family_report(res, f))))
  writeLines(lines, md_path)
  lines
}

prior_lines <- character()
all_res <- list()
for (family in opt$families) {
  prior <- prior_for(family)
  cat(sprintf("[%s] %s: %d replicates\n", format(Sys.time(), "%H:%M:%S"), family, opt$reps))
  res_f <- vector("list", opt$reps)
  for (r in seq_len(opt$reps)) {
    res_f[[r]] <- one_rep(family, r, prior)
    if (r == 1L || r %% 25L == 0L) {
      x <- res_f[[r]]
      cat(sprintf("  [%s] rep %d: ok=%s method=%s khat=%.2f time=%.2fs%s\n",
                  format(Sys.time(), "%H:%M:%S"), r, x$ok[1], x$method[1], x$khat[1], x$time[1],
                  if (nzchar(x$error[1])) paste0(" error: ", x$error[1]) else ""))
    }
  }
  all_res[[family]] <- do.call(rbind, res_f)
  res <- do.call(rbind, all_res)
  rownames(res) <- NULL
  saveRDS(list(results = res, priors = pri, J = J, n_per = n_per, trials = trials,
               svir_version = as.character(utils::packageVersion("svir")),
               date = stamp), rds_path)
  invisible(write_report(res, final = FALSE))
}
res <- do.call(rbind, all_res)
rownames(res) <- NULL
lines <- write_report(res, final = TRUE)
cat("\n")
writeLines(lines)
