#!/usr/bin/env Rscript
# svir benchmark: Gaussian GLMMs against lme4::lmer and rstan (ADVI, NUTS).
#
# Usage (from the repository root, with svir installed):
#   Rscript bench/glmm.R [--reps-sleep=5] [--reps-insteval=3] [--nuts]
#                        [--only=sleepstudy|insteval] [--no-vb] [--lib=DIR]
#                        [--out=DIR]
# The same settings can come from the environment: SVIR_BENCH_REPS_SLEEP,
# SVIR_BENCH_REPS_INSTEVAL, SVIR_BENCH_NUTS=1, SVIR_BENCH_ONLY,
# SVIR_BENCH_NO_VB=1, SVIR_BENCH_LIB, SVIR_BENCH_OUT (arguments win).
#
# For each dataset it fits, in one run and interleaved within each repeat:
#   svir mean-field and full-rank (default settings; also mean-field with two
#   threads), rstan::vb (ADVI mean-field, default settings, and again with
#   tol_rel_obj = 0.001 and 0.0001 for an accuracy closer to svir's) on the same model
#   written in Stan (non-centred random effects, svir's default priors read
#   from prior_summary() of an svir fit and passed as data; compiled once,
#   outside the timing) and lme4::lmer (REML).
# Every repeat uses a different seed. Reported: the median wall time of the
# fitting call, its ratio to svir mean-field and to lmer, the largest
# |fixed effect - lmer's| / lmer's standard error (median over repeats), the
# random-effect standard deviations next to lmer's, and (with --nuts, on
# sleepstudy) the posterior sds of the fixed effects next to NUTS's.
# The Markdown report goes to stdout and to <out>/glmm-<date>.md
# (default <out>: bench/results next to this script).

# ---- settings ------------------------------------------------------------

bench_args <- function() {
  a <- commandArgs(trailingOnly = TRUE)
  get <- function(flag, env, default) {
    hit <- grep(paste0("^--", flag, "(=|$)"), a, value = TRUE)
    if (length(hit)) {
      v <- sub(paste0("^--", flag, "=?"), "", hit[length(hit)])
      return(if (nzchar(v)) v else "1")
    }
    v <- Sys.getenv(env)
    if (nzchar(v)) v else default
  }
  known <- c("reps-sleep", "reps-insteval", "nuts", "only", "no-vb", "lib", "out", "help")
  bad <- setdiff(sub("^--([^=]*).*$", "\\1", setdiff(a, "-h")), known)
  if (length(bad) || any(a %in% c("--help", "-h"))) {
    cat("usage: Rscript bench/glmm.R [--reps-sleep=5] [--reps-insteval=3] [--nuts]\n",
        "                            [--only=sleepstudy|insteval] [--no-vb] [--lib=DIR] [--out=DIR]\n")
    quit(status = if (length(bad)) 2L else 0L)
  }
  file_arg <- grep("^--file=", commandArgs(FALSE), value = TRUE)
  here <- if (length(file_arg)) dirname(normalizePath(sub("^--file=", "", file_arg[1]))) else "bench"
  flag <- function(x) tolower(x) %in% c("1", "true", "yes")
  list(
    reps_sleep = as.integer(get("reps-sleep", "SVIR_BENCH_REPS_SLEEP", "5")),
    reps_inst = as.integer(get("reps-insteval", "SVIR_BENCH_REPS_INSTEVAL", "3")),
    nuts = flag(get("nuts", "SVIR_BENCH_NUTS", "0")),
    only = get("only", "SVIR_BENCH_ONLY", ""),
    vb = !flag(get("no-vb", "SVIR_BENCH_NO_VB", "0")),
    lib = get("lib", "SVIR_BENCH_LIB", ""),
    out = get("out", "SVIR_BENCH_OUT", file.path(here, "results"))
  )
}

opt <- bench_args()
stopifnot(opt$reps_sleep >= 1, opt$reps_inst >= 1)
if (nzchar(opt$lib)) .libPaths(c(normalizePath(opt$lib), .libPaths()))
suppressPackageStartupMessages({
  library(svir)
  library(lme4)
})
have_rstan <- requireNamespace("rstan", quietly = TRUE)
if (!have_rstan && (opt$vb || opt$nuts)) {
  message("rstan is not installed: the rstan rows are skipped")
  opt$vb <- opt$nuts <- FALSE
}
if (have_rstan) {
  suppressPackageStartupMessages(library(rstan))
  # Debian's rstan finds Boost only when told where it is
  if (dir.exists("/usr/include/boost")) rstan::rstan_options(boost_lib = "/usr/include")
}

say <- function(...) message(sprintf(...))
t_start <- Sys.time()
load_start <- readLines("/proc/loadavg", warn = FALSE)[1]

# ---- the same model in Stan -------------------------------------------------

# One Stan sampling statement for a prior row of prior_summary(); its numbers
# become data named <name>_df, <name>_loc, <name>_scale, <name>_rate, <name>_eta.
stan_prior <- function(param, d, name) {
  num <- function(suffix, value) {
    stats::setNames(list(value), paste0(name, "_", suffix))
  }
  switch(d$dist,
    flat = list(stmt = character(), data = list()),
    normal = list(stmt = sprintf("%s ~ normal(%s_loc, %s_scale);", param, name, name),
                  data = c(num("loc", d$location), num("scale", d$scale))),
    half_normal = list(stmt = sprintf("%s ~ normal(0, %s_scale);", param, name),
                       data = num("scale", d$scale)),
    student_t = list(stmt = sprintf("%s ~ student_t(%s_df, %s_loc, %s_scale);",
                                    param, name, name, name),
                     data = c(num("df", d$df), num("loc", d$location), num("scale", d$scale))),
    half_student_t = list(stmt = sprintf("%s ~ student_t(%s_df, 0, %s_scale);", param, name, name),
                          data = c(num("df", d$df), num("scale", d$scale))),
    exponential = list(stmt = sprintf("%s ~ exponential(%s_rate);", param, name),
                       data = num("rate", d$rate)),
    lkj = list(stmt = sprintf("%s ~ lkj_corr_cholesky(%s_eta);", param, name),
               data = num("eta", d$eta)),
    stop("no Stan translation for a ", d$dist, " prior")
  )
}

# Writes the Stan program (brms-style: centred predictors, the intercept's
# prior on the centred intercept, non-centred random effects) for the model
# of an svir gaussian fit, and its data, priors taken from prior_summary(fit).
stan_model_of <- function(fit) {
  stopifnot(family(fit)$family == "gaussian", fit$scaling$has_intercept)
  ps <- prior_summary(fit)
  dists <- attr(ps, "dist")
  prior_of <- function(cls, coef = "", group = "") {
    k <- which(ps$class == cls & ps$coef == coef & ps$group == group)
    if (length(k) != 1L) stop("no single prior row for ", cls, " ", coef, " ", group)
    dists[[k]]
  }
  X <- fit$X
  P <- ncol(X) - 1L
  stopifnot(colnames(X)[1] == "(Intercept)", P >= 1L)
  xm <- fit$scaling$x_center[-1]
  Xc <- sweep(unclass(X)[, -1, drop = FALSE], 2L, xm, "-")
  attr(Xc, "assign") <- attr(Xc, "contrasts") <- NULL
  N <- nrow(X)
  dat <- list(N = N, P = P, y = as.numeric(fit$y), Xc = Xc, x_mean = as.array(xm))
  dcl <- c("int<lower=1> N;", "int<lower=1> P;", "vector[N] y;", "matrix[N, P] Xc;",
           "vector[P] x_mean;")
  par <- c("real Intercept;", "vector[P] b;", "real<lower=0> sigma;")
  mdl <- c("vector[N] mu = Intercept + Xc * b;")  # declarations (Stan 2.21: first in a block)
  upd <- character()                                   # statements
  pri <- character()
  gq <- c("real b_Intercept = Intercept - dot_product(x_mean, b);")
  keep <- c("b_Intercept", "b", "sigma")
  names_sd <- character()
  add_prior <- function(param, d, name) {
    pr <- stan_prior(param, d, name)
    for (nm in names(pr$data)) {
      dcl <<- c(dcl, sprintf("real%s %s;", if (grepl("_(scale|rate|eta|df)$", nm)) "<lower=0>" else "", nm))
    }
    dat[names(pr$data)] <<- pr$data
    pri <<- c(pri, pr$stmt)
  }
  add_prior("Intercept", prior_of("Intercept"), "p_Intercept")
  for (k in seq_len(P)) add_prior(sprintf("b[%d]", k), prior_of("b", colnames(X)[k + 1]), sprintf("p_b%d", k))
  add_prior("sigma", prior_of("sigma"), "p_sigma")
  lik <- "y ~ normal(mu, sigma);"
  for (t in seq_along(fit$re)) {
    tm <- fit$re[[t]]
    q <- length(tm$cnms)
    J <- tm$ngroups
    ones <- vapply(seq_len(q), function(c) all(tm$Z[, c] == 1), TRUE)
    dat[[sprintf("J_%d", t)]] <- J
    dat[[sprintf("g_%d", t)]] <- as.integer(tm$group)
    dcl <- c(dcl, sprintf("int<lower=1> J_%d;", t), sprintf("int<lower=1, upper=J_%d> g_%d[N];", t, t))
    if (!all(ones)) {
      dat[[sprintf("Z_%d", t)]] <- unname(as.matrix(tm$Z))
      dcl <- c(dcl, sprintf("matrix[N, %d] Z_%d;", q, t))
    }
    for (c in seq_len(q)) {
      add_prior(sprintf("sd_%d[%d]", t, c), prior_of("sd", tm$cnms[c], tm$grpvar), sprintf("p_sd%d_%d", t, c))
      names_sd <- c(names_sd, stats::setNames(sprintf("sd_%d[%d]", t, c),
                                              paste0("sd_", tm$grpvar, "__", tm$cnms[c])))
    }
    par <- c(par, sprintf("vector<lower=0>[%d] sd_%d;", q, t), sprintf("matrix[%d, J_%d] z_%d;", q, t, t))
    pri <- c(pri, sprintf("to_vector(z_%d) ~ std_normal();", t))
    keep <- c(keep, sprintf("sd_%d", t))
    cor <- isTRUE(tm$correlated) && q > 1L
    if (cor) {
      par <- c(par, sprintf("cholesky_factor_corr[%d] L_%d;", q, t))
      add_prior(sprintf("L_%d", t), prior_of("cor", "", tm$grpvar), sprintf("p_cor%d", t))
      mdl <- c(mdl, sprintf("matrix[J_%d, %d] r_%d = (diag_pre_multiply(sd_%d, L_%d) * z_%d)';",
                            t, q, t, t, t, t))
      gq <- c(gq, sprintf("corr_matrix[%d] Cor_%d = multiply_lower_tri_self_transpose(L_%d);", q, t, t))
      keep <- c(keep, sprintf("Cor_%d", t))
    } else {
      mdl <- c(mdl, sprintf("matrix[J_%d, %d] r_%d = (diag_pre_multiply(sd_%d, z_%d))';", t, q, t, t, t))
    }
    for (c in seq_len(q)) {
      upd <- c(upd, if (ones[c]) sprintf("mu += r_%d[g_%d, %d];", t, t, c)
                    else sprintf("mu += r_%d[g_%d, %d] .* Z_%d[, %d];", t, t, c, t, c))
    }
  }
  ind <- function(x) paste0("  ", x, collapse = "\n")
  code <- paste0(
    "// generated by bench/glmm.R from an svir fit: ", deparse1(formula(fit)), "\n",
    "data {\n", ind(dcl), "\n}\n",
    "parameters {\n", ind(par), "\n}\n",
    "model {\n", ind(mdl), "\n", ind(upd), "\n", ind(pri), "\n  ", lik, "\n}\n",
    "generated quantities {\n", ind(gq), "\n}\n")
  list(code = code, data = dat, keep = keep, names_sd = names_sd,
       fixef_names = colnames(X))
}

# Fixed effects, their posterior sds and the random-effect sds (posterior
# means) from a stanfit of stan_model_of().
stan_summary <- function(sf, sm) {
  ex <- rstan::extract(sf, pars = sm$keep, permuted = TRUE)
  beta <- cbind(ex$b_Intercept, ex$b)
  colnames(beta) <- sm$fixef_names
  sds <- sapply(names(sm$names_sd), function(nm) {
    m <- regmatches(sm$names_sd[[nm]], regexec("^sd_([0-9]+)\\[([0-9]+)\\]$", sm$names_sd[[nm]]))[[1]]
    mean(as.matrix(ex[[paste0("sd_", m[2])]])[, as.integer(m[3])])
  })
  list(beta = colMeans(beta), beta_sd = apply(beta, 2L, stats::sd),
       sd = c(sds, sigma = mean(ex$sigma)))
}

# ---- one dataset --------------------------------------------------------------

lmer_summary <- function(m) {
  vc <- as.data.frame(lme4::VarCorr(m))
  vc <- vc[is.na(vc$var2), ]
  nm <- ifelse(vc$grp == "Residual", "sigma", paste0("sd_", vc$grp, "__", vc$var1))
  cf <- summary(m)$coefficients
  list(beta = cf[, "Estimate"], se = cf[, "Std. Error"], sd = stats::setNames(vc$sdcor, nm))
}

svir_summary <- function(fit) {
  vc <- as.data.frame(VarCorr(fit))
  vc <- vc[is.na(vc$var2), ]
  nm <- ifelse(vc$grp == "Residual", "sigma", paste0("sd_", vc$grp, "__", vc$var1))
  list(beta = fixef(fit), beta_sd = sqrt(diag(vcov(fit))), sd = stats::setNames(vc$sdcor, nm),
       steps = fit$steps, engine = fit$time, stop = fit$stop_reason, khat = fit$khat)
}

# Evaluates expr with its printed output (rstan's chatter) discarded.
quiet <- function(expr) {
  val <- NULL
  utils::capture.output(val <- expr, type = "output")
  val
}

timed <- function(expr) {
  warn <- character()
  t0 <- proc.time()[["elapsed"]]
  val <- withCallingHandlers(
    tryCatch(expr, error = function(e) structure(conditionMessage(e), class = "bench_error")),
    warning = function(w) {
      warn <<- c(warn, conditionMessage(w))
      invokeRestart("muffleWarning")
    })
  list(value = val, time = proc.time()[["elapsed"]] - t0, warnings = unique(warn))
}

run_dataset <- function(label, formula, data, reps, nuts = FALSE) {
  say("== %s: %d observations, %d repeats", label, nrow(data), reps)
  ref <- lmer_summary(lme4::lmer(formula, data = data))
  # an svir fit whose prior_summary() gives the Stan model its priors
  fit0 <- suppressWarnings(svi_fit(formula, data = data, seed = 1))
  say("svi_fit()'s defaults ran method = \"%s\" (%s)", fit0$method,
      if (is.null(fit0$method_reason)) "" else fit0$method_reason)
  sm <- NULL
  use_vb <- opt$vb
  if (opt$vb || nuts) {
    sm <- stan_model_of(fit0)
    say("compiling the Stan model (not timed)")
    t0 <- proc.time()[["elapsed"]]
    smod <- tryCatch(suppressMessages(rstan::stan_model(model_code = sm$code,
                                                        model_name = paste0("svir_bench_", label))),
                     error = function(e) {
                       say("  the Stan model did not compile: %s", conditionMessage(e))
                       NULL
                     })
    say("  compiled in %.0f s", proc.time()[["elapsed"]] - t0)
    if (is.null(smod)) use_vb <- nuts <- FALSE
  }
  methods <- c("svir meanfield", "svir fullrank", "svir meanfield, 2 threads",
               if (use_vb) c("rstan::vb (ADVI meanfield)", "rstan::vb (tol_rel_obj = 0.001)",
                             "rstan::vb (tol_rel_obj = 0.0001)"),
               "lme4::lmer (REML)")
  res <- list()
  for (r in seq_len(reps)) {
    seed <- 1000L + r
    for (m in methods) {
      out <- switch(m,
        "svir meanfield" = timed(svi_fit(formula, data = data, seed = seed)),
        "svir fullrank" = timed(svi_fit(formula, data = data, seed = seed, guide = "fullrank")),
        "svir meanfield, 2 threads" = timed(svi_fit(formula, data = data, seed = seed,
                                                    control = svi_control(threads = 2))),
        "rstan::vb (ADVI meanfield)" = timed(quiet(rstan::vb(
          smod, data = sm$data, seed = seed, algorithm = "meanfield", pars = sm$keep,
          refresh = 0))),
        # ADVI at a tolerance that lets it approach svir's accuracy
        "rstan::vb (tol_rel_obj = 0.001)" = timed(quiet(rstan::vb(
          smod, data = sm$data, seed = seed, algorithm = "meanfield", pars = sm$keep,
          refresh = 0, tol_rel_obj = 0.001))),
        "rstan::vb (tol_rel_obj = 0.0001)" = timed(quiet(rstan::vb(
          smod, data = sm$data, seed = seed, algorithm = "meanfield", pars = sm$keep,
          refresh = 0, tol_rel_obj = 0.0001))),
        "lme4::lmer (REML)" = timed(lme4::lmer(formula, data = data))
      )
      val <- out$value
      s <- if (inherits(val, "bench_error")) {
        NULL
      } else if (startsWith(m, "svir")) {
        svir_summary(val)
      } else if (startsWith(m, "rstan")) {
        if (inherits(val, "stanfit") && length(val@sim$samples)) stan_summary(val, sm) else NULL
      } else {
        lmer_summary(val)
      }
      z <- if (is.null(s)) NA_real_ else max(abs(s$beta[names(ref$beta)] - ref$beta) / ref$se)
      say("  rep %d  %-28s %7.2f s  max|dbeta|/se = %.3f%s", r, m, out$time, z,
          if (inherits(val, "bench_error")) paste0("  ERROR: ", val) else "")
      res[[length(res) + 1L]] <- list(method = m, rep = r, time = out$time, z = z, s = s,
                                      warnings = out$warnings,
                                      error = if (inherits(val, "bench_error")) as.character(val))
    }
  }
  nuts_res <- NULL
  if (nuts) {
    say("  NUTS: 4 chains x 1000 iterations")
    out <- timed(quiet(rstan::sampling(smod, data = sm$data, chains = 4, iter = 1000, seed = 1,
                                       pars = sm$keep, refresh = 0,
                                       cores = min(4L, parallel::detectCores()))))
    if (!inherits(out$value, "bench_error")) {
      nuts_res <- c(stan_summary(out$value, sm), list(time = out$time, warnings = out$warnings))
    } else {
      nuts_res <- list(error = as.character(out$value))
    }
  }
  list(label = label, n = nrow(data), ref = ref, res = res, methods = methods, nuts = nuts_res,
       stan_code = if (!is.null(sm)) sm$code,
       default_method = sprintf("%s (%s)", fit0$method,
                                if (is.null(fit0$method_reason)) "" else fit0$method_reason))
}

# ---- report ------------------------------------------------------------------------

fmt <- function(x, d = 2) ifelse(is.na(x), "NA", formatC(x, format = "f", digits = d))
fmt_g <- function(x, d = 3) ifelse(is.na(x), "NA", formatC(x, format = "g", digits = d, flag = "#"))

med_of <- function(res, m, f) {
  v <- unlist(lapply(Filter(function(e) e$method == m, res), f))
  if (length(v)) stats::median(v, na.rm = TRUE) else NA_real_
}

report_dataset <- function(d) {
  res <- d$res
  t_of <- function(m) med_of(res, m, function(e) if (is.null(e$error)) e$time else NA)
  t_mf <- t_of("svir meanfield")
  t_lm <- t_of("lme4::lmer (REML)")
  lines <- c(
    sprintf("### %s (n = %d, %d repeats)", d$label, d$n, length(unique(vapply(res, `[[`, 1L, "rep")))),
    "",
    sprintf("\"svir meanfield\" is `svi_fit()` with no method or guide given; its default ran method = %s.",
            d$default_method),
    "",
    "| method | median time (s) | min time (s) | ratio to svir-meanfield | ratio to lmer | max abs(dbeta)/SE | notes |",
    "|---|---:|---:|---:|---:|---:|---|")
  for (m in d$methods) {
    tm <- t_of(m)
    z <- med_of(res, m, function(e) e$z)
    rr <- Filter(function(e) e$method == m, res)
    note <- character()
    if (startsWith(m, "svir")) {
      steps <- med_of(res, m, function(e) e$s$steps)
      eng <- med_of(res, m, function(e) e$s$engine)
      stops <- table(unlist(lapply(rr, function(e) e$s$stop)))
      kh <- med_of(res, m, function(e) e$s$khat)
      note <- c(note, sprintf("%.0f steps, engine %.2f s (%.2f ms/step)", steps, eng, 1000 * eng / steps),
                paste0("stop: ", paste(sprintf("%s %d/%d", names(stops), stops, length(rr)), collapse = ", ")),
                sprintf("k-hat %.2f", kh))
    }
    zs <- vapply(rr, function(e) e$z, 0)
    if (length(zs) > 1L) note <- c(note, paste0("per repeat max abs(dbeta)/SE: ", paste(fmt(zs, 2), collapse = ", ")))
    errs <- unique(unlist(lapply(rr, `[[`, "error")))
    if (length(errs)) note <- c(note, paste0("errors: ", paste(errs, collapse = "; ")))
    w <- unique(unlist(lapply(rr, `[[`, "warnings")))
    if (length(w)) {
      w <- gsub("[\r\n|]+", " ", w)
      w <- substr(w, 1, 90)
      note <- c(note, paste0(length(w), " distinct warning(s), e.g. \"", w[1], "\""))
    }
    tmin <- suppressWarnings(min(unlist(lapply(rr, function(e) if (is.null(e$error)) e$time))))
    lines <- c(lines, sprintf("| %s | %s | %s | %s | %s | %s | %s |", m, fmt(tm, 3), fmt(tmin, 3),
                              fmt(tm / t_mf, 2), fmt(tm / t_lm, 2), fmt(z, 3),
                              paste(note, collapse = "; ")))
  }
  # random-effect sds and sigma
  sdn <- names(d$ref$sd)
  lines <- c(lines, "",
             sprintf("Random-effect standard deviations and sigma (%s; posterior means, lmer: REML estimates; median over repeats):", d$label),
             "",
             paste0("| method | ", paste(sdn, collapse = " | "), " |"),
             paste0("|---|", paste(rep("---:", length(sdn)), collapse = "|"), "|"),
             paste0("| lme4::lmer (REML) | ", paste(fmt_g(d$ref$sd, 4), collapse = " | "), " |"))
  for (m in setdiff(d$methods, "lme4::lmer (REML)")) {
    v <- vapply(sdn, function(k) med_of(res, m, function(e) if (!is.null(e$s)) e$s$sd[[k]] else NA), 0)
    lines <- c(lines, paste0("| ", m, " | ", paste(fmt_g(v, 4), collapse = " | "), " |"))
  }
  if (!is.null(d$nuts)) {
    nu <- d$nuts
    lines <- c(lines, "")
    if (!is.null(nu$error)) {
      lines <- c(lines, paste0("NUTS failed: ", nu$error))
    } else {
      bn <- names(d$ref$beta)
      lines <- c(lines,
        sprintf("Posterior sd of the fixed effects vs NUTS (%s; rstan::sampling, 4 chains x 1000 iterations, %.1f s; ratio = method's sd / NUTS's sd, median over repeats):", d$label, nu$time),
        "",
        paste0("| method | ", paste(sprintf("sd(%s)", bn), collapse = " | "), " | ",
               paste(sprintf("ratio %s", bn), collapse = " | "), " | max abs(beta - NUTS mean)/NUTS sd |"),
        paste0("|---|", paste(rep("---:", 2 * length(bn) + 1), collapse = "|"), "|"),
        paste0("| NUTS | ", paste(fmt_g(nu$beta_sd[bn], 4), collapse = " | "), " | ",
               paste(rep("1", length(bn)), collapse = " | "), " | 0 |"),
        paste0("| lme4::lmer (REML), SE | ", paste(fmt_g(d$ref$se[bn], 4), collapse = " | "), " | ",
               paste(fmt(d$ref$se[bn] / nu$beta_sd[bn], 2), collapse = " | "), " | ",
               fmt(max(abs(d$ref$beta[bn] - nu$beta[bn]) / nu$beta_sd[bn]), 3), " |"))
      for (m in setdiff(d$methods, "lme4::lmer (REML)")) {
        sdv <- vapply(bn, function(k) med_of(res, m, function(e) if (!is.null(e$s)) e$s$beta_sd[[k]] else NA), 0)
        zz <- med_of(res, m, function(e) if (!is.null(e$s)) max(abs(e$s$beta[bn] - nu$beta[bn]) / nu$beta_sd[bn]) else NA)
        lines <- c(lines, paste0("| ", m, " | ", paste(fmt_g(sdv, 4), collapse = " | "), " | ",
                                 paste(fmt(sdv / nu$beta_sd[bn], 2), collapse = " | "), " | ",
                                 fmt(zz, 3), " |"))
      }
      nsd <- nu$sd
      lines <- c(lines, "", paste0("NUTS posterior means of the sds: ",
                                   paste(sprintf("%s = %s", names(nsd), fmt_g(nsd, 4)), collapse = ", "), "."))
      if (length(nu$warnings)) lines <- c(lines, paste0("NUTS warnings: ", paste(gsub("\n", " ", nu$warnings), collapse = "; ")))
    }
  }
  c(lines, "")
}

targets_lines <- function(d) {
  if (is.null(d)) return(character())
  res <- d$res
  t_of <- function(m) med_of(res, m, function(e) if (is.null(e$error)) e$time else NA)
  z_of <- function(m) med_of(res, m, function(e) e$z)
  t_mf <- t_of("svir meanfield"); t_fr <- t_of("svir fullrank")
  t_vb <- t_of("rstan::vb (ADVI meanfield)"); t_lm <- t_of("lme4::lmer (REML)")
  yesno <- function(x) if (is.na(x)) "n/a" else if (x) "met" else "MISSED"
  c(sprintf("Targets on %s:", d$label), "",
    sprintf("* svir >= 20x faster than rstan::vb at equal or better accuracy: meanfield %sx (max abs(dbeta)/SE %s vs %s), fullrank %sx (%s): %s / %s.",
            fmt(t_vb / t_mf, 1), fmt(z_of("svir meanfield"), 3), fmt(z_of("rstan::vb (ADVI meanfield)"), 3),
            fmt(t_vb / t_fr, 1), fmt(z_of("svir fullrank"), 3),
            yesno(t_vb / t_mf >= 20 && z_of("svir meanfield") <= z_of("rstan::vb (ADVI meanfield)")),
            yesno(t_vb / t_fr >= 20 && z_of("svir fullrank") <= z_of("rstan::vb (ADVI meanfield)"))),
    vapply(c("0.001", "0.0001"), function(tol) {
      m <- sprintf("rstan::vb (tol_rel_obj = %s)", tol)
      t_v <- t_of(m)
      sprintf("* the same against rstan::vb at tol_rel_obj = %s (max abs(dbeta)/SE %s): meanfield %sx, fullrank %sx: %s / %s.",
              tol, fmt(z_of(m), 3), fmt(t_v / t_mf, 1), fmt(t_v / t_fr, 1),
              yesno(t_v / t_mf >= 20 && z_of("svir meanfield") <= z_of(m)),
              yesno(t_v / t_fr >= 20 && z_of("svir fullrank") <= z_of(m)))
    }, ""),
    sprintf("* svir within 3x of lmer's time: meanfield %sx, fullrank %sx of lmer: %s / %s.",
            fmt(t_mf / t_lm, 2), fmt(t_fr / t_lm, 2), yesno(t_mf / t_lm <= 3), yesno(t_fr / t_lm <= 3)),
    "")
}

# ---- run -------------------------------------------------------------------------

want <- function(x) !nzchar(opt$only) || tolower(opt$only) == x
out <- list()
# warm-up (not timed): loads code paths of all methods
invisible(suppressWarnings(svi_fit(Reaction ~ Days + (Days | Subject), data = lme4::sleepstudy, seed = 1)))
invisible(lme4::lmer(Reaction ~ Days + (Days | Subject), data = lme4::sleepstudy))
if (want("sleepstudy")) {
  out$sleep <- run_dataset("sleepstudy", Reaction ~ Days + (Days | Subject), lme4::sleepstudy,
                           opt$reps_sleep, nuts = opt$nuts)
}
if (want("insteval")) {
  out$inst <- run_dataset("InstEval", y ~ service + (1 | s) + (1 | d) + (1 | dept), lme4::InstEval,
                          opt$reps_inst)
}

# The commit of the repository holding this script (the installed svir may
# have been built from another tree: the note says so).
git_note <- function() {
  here <- grep("^--file=", commandArgs(FALSE), value = TRUE)
  root <- if (length(here)) dirname(dirname(normalizePath(sub("^--file=", "", here[1])))) else "."
  h <- tryCatch(suppressWarnings(system2("git", c("-C", shQuote(root), "rev-parse", "--short", "HEAD"),
                                         stdout = TRUE, stderr = FALSE)), error = function(e) character())
  if (!length(h)) return("")
  dirty <- tryCatch(suppressWarnings(system2("git", c("-C", shQuote(root), "status", "--porcelain", "--untracked-files=no"),
                                             stdout = TRUE, stderr = FALSE)), error = function(e) character())
  sprintf("; repository of this script at %s%s", h[1], if (length(dirty)) " with uncommitted changes" else "")
}

si <- utils::sessionInfo()
blas <- if (!is.null(si$BLAS)) si$BLAS else "unknown"
lapack <- if (!is.null(si$LAPACK)) si$LAPACK else "unknown"
cpu <- tryCatch(sub(".*: ", "", grep("^model name", readLines("/proc/cpuinfo"), value = TRUE)[1]),
                error = function(e) "unknown")
nproc <- tryCatch(system("nproc", intern = TRUE), error = function(e) as.character(parallel::detectCores()))
load_end <- readLines("/proc/loadavg", warn = FALSE)[1]
today <- format(Sys.Date())
report <- c(
  sprintf("## svir GLMM benchmark, %s", today), "",
  "Wall time of the fitting call (svi_fit(), rstan::vb() without compilation, lmer()), median over repeats with different seeds;",
  "max abs(dbeta)/SE: largest difference of a fixed effect (posterior mean) from lmer's estimate, in lmer's standard errors, median over repeats.",
  "svir rows use default settings (threads: one per 100,000 observations in a step) unless named; rstan::vb uses its defaults (ADVI meanfield, iter = 10000, tol_rel_obj = 0.01), and again with tol_rel_obj = 0.001 and 0.0001, on the same model and priors.",
  "",
  unlist(lapply(out, report_dataset)),
  targets_lines(out$inst),
  "Notes:", "",
  sprintf("* machine: %s, nproc = %s; %s; BLAS: %s; LAPACK: %s", cpu, nproc, R.version.string, blas, lapack),
  sprintf("* OpenMP environment: OMP_NUM_THREADS=%s, OMP_WAIT_POLICY=%s",
          Sys.getenv("OMP_NUM_THREADS", "(unset)"), Sys.getenv("OMP_WAIT_POLICY", "(unset)")),
  sprintf("* packages: svir %s (installed at %s%s), lme4 %s%s", utils::packageVersion("svir"),
          dirname(find.package("svir")), git_note(), utils::packageVersion("lme4"),
          if (have_rstan) paste0(", rstan ", utils::packageVersion("rstan")) else ""),
  sprintf("* date: %s; total run time %.1f min; load average at start %s, at end %s (the machine is shared: timings are noisy)",
          format(t_start, "%Y-%m-%d %H:%M %Z"), as.numeric(difftime(Sys.time(), t_start, units = "mins")),
          sub("^(\\S+ \\S+ \\S+).*", "\\1", load_start), sub("^(\\S+ \\S+ \\S+).*", "\\1", load_end)),
  sprintf("* command: Rscript bench/glmm.R %s", paste(commandArgs(trailingOnly = TRUE), collapse = " ")),
  "")
cat(report, sep = "\n")
dir.create(opt$out, showWarnings = FALSE, recursive = TRUE)
path <- file.path(opt$out, sprintf("glmm-%s.md", today))
stan_code <- unlist(lapply(out, function(d) if (!is.null(d$stan_code))
  c(sprintf("Stan program for %s (rstan rows):", d$label), "", "```stan", d$stan_code, "```", "")))
writeLines(c(report, stan_code), path)
message("written: ", path)
